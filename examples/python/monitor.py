"""Follows every breaker change, and never misses one.

Starts with a snapshot, then follows events. After a disconnect (the server restarting, or
ending a watcher that fell behind) it resumes after the last sequence it saw; when the server
no longer has that history (OUT_OF_RANGE) it reads the snapshot again.

    python monitor.py --addr 127.0.0.1:50051 [--exit-after N]

Prints `snapshot <n> breakers as of <seq>`, and `event <seq> <account> <from> -> <to> <cause>`.
"""

import argparse
import time

import grpc

from riskgate_client import channel, pb, rpc


def name(enum, value):
    return enum.Name(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--exit-after", type=int, default=0, help="events to print, then exit")
    parser.add_argument("--token")
    args = parser.parse_args()
    last = None  # the last sequence seen; None: read a snapshot
    events = 0
    while True:
        monitor = rpc.MonitorServiceStub(channel(args.addr, args.token))
        request = pb.WatchEventsRequest()
        if last is not None:
            request.after_sequence = last
        breakers = 0
        try:
            for message in monitor.WatchEvents(request):
                kind = message.WhichOneof("kind")
                if kind == "snapshot":
                    breakers += 1
                elif kind == "snapshot_complete":
                    last = message.snapshot_complete.as_of_sequence
                    print(f"snapshot {breakers} breakers as of {last}", flush=True)
                elif kind == "event":
                    e = message.event
                    last = e.sequence
                    who = e.account_id or ("group " + e.group if e.group else "firm")
                    print(
                        f"event {e.sequence} {who} {name(pb.BreakerState, e.from_state)} -> "
                        f"{name(pb.BreakerState, e.to_state)} {name(pb.TransitionCause, e.cause)}",
                        flush=True,
                    )
                    events += 1
                    if args.exit_after and events >= args.exit_after:
                        return
                elif kind == "heartbeat":
                    last = message.heartbeat.sequence
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                print(f"history gone ({error.details()}); reading the snapshot again", flush=True)
                last = None
            else:
                print(f"disconnected ({error.code().name}); resuming after {last}", flush=True)
                time.sleep(0.2)


if __name__ == "__main__":
    main()
