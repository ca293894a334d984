"""A small trading bot that never places an order riskgate did not allow.

For each order: CheckTrade with a deadline; only if it is allowed, place the (simulated)
order; then ReportOutcome with the permit. Fail closed: if the gate is unreachable, too slow
or answers with an error, the order is not placed. ReportOutcome is retried with the same
permit, which counts once however often it arrives.

    python bot.py --addr 127.0.0.1:50051 --account desk-a:momo --orders 20 --fail-every 2

With a cluster, give every node: --addr 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051; calls
follow the leader (riskgate_client.Leader).

Prints one line per order and a JSON summary last.
"""

import argparse
import json
import time

import grpc

from riskgate_client import Leader, StaleEpoch, pb

REPORT_ATTEMPTS = 3


def place_order(n, fail_every):
    """The venue, simulated: every `fail_every`-th order is rejected."""
    time.sleep(0.001)
    return not (fail_every and n % fail_every == 0)


def report(gate, account, permit, ok, deadline, order_id):
    request = pb.ReportOutcomeRequest(
        account_id=account,
        permit_id=permit,
        outcome=pb.OUTCOME_SUCCESS if ok else pb.OUTCOME_FAILURE,
        failure_kind=pb.FAILURE_KIND_UNSPECIFIED if ok else pb.FAILURE_KIND_ORDER_REJECTED,
        order_id=order_id,
        detail="" if ok else "rejected by the venue",
    )
    for attempt in range(REPORT_ATTEMPTS):
        try:
            return gate.call("ReportOutcome", request, deadline)
        except grpc.RpcError as error:
            # Safe to retry with the same permit: it counts once.
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--account", required=True)
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--deadline-ms", type=int, default=50)
    parser.add_argument("--token")
    args = parser.parse_args()
    deadline = args.deadline_ms / 1000
    gate = Leader(args.addr, args.token)
    summary = {"placed": 0, "not_placed": 0, "failed": 0, "unreported": 0}
    for n in range(1, args.orders + 1):
        order_id = f"{args.account}-{n}"
        try:
            check = gate.call("CheckTrade", pb.CheckTradeRequest(account_id=args.account), deadline)
        except grpc.RpcError as error:
            # Unreachable, too slow or refused: fail closed.
            summary["not_placed"] += 1
            print(f"order {n} not placed: gate {error.code().name}: {error.details()}", flush=True)
            continue
        except StaleEpoch as stale:
            summary["not_placed"] += 1
            print(f"order {n} not placed: {stale}", flush=True)
            continue
        if not check.allowed:
            summary["not_placed"] += 1
            print(f"order {n} not placed: {check.reason}", flush=True)
            continue
        ok = place_order(n, args.fail_every)
        summary["placed"] += 1
        summary["failed"] += 0 if ok else 1
        answer = report(gate, args.account, check.permit_id, ok, deadline, order_id)
        if answer is None:
            summary["unreported"] += 1
        print(f"order {n} placed ({'filled' if ok else 'rejected'})", flush=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
