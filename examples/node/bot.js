// A small trading bot that never places an order riskgate did not allow.
//
// For each order: CheckTrade with a deadline; only if it is allowed, place the (simulated)
// order; then ReportOutcome with the permit. Fail closed: if the gate is unreachable, too slow
// or answers with an error, the order is not placed. ReportOutcome is retried with the same
// permit, which counts once however often it arrives.
//
//   node bot.js --addr 127.0.0.1:50051 --account desk-a:momo --orders 20 --fail-every 2
//
// With a cluster, give every node: --addr 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051. Calls
// go to the node believed to lead; a standby answers UNAVAILABLE naming the leader in the
// `riskgate-leader` metadata, and the call is retried there once, within its deadline. A
// decision of an older leader epoch than one already seen is refused (not placed).
//
// Prints one line per order and a JSON summary last.
'use strict';

const { grpc, v1, credentials, metadata, arg } = require('./riskgate');

const addrs = arg('addr', '127.0.0.1:50051')
  .split(',')
  .map((a) => a.trim())
  .filter(Boolean);
const account = arg('account');
const orders = Number(arg('orders', '10'));
const failEvery = Number(arg('fail-every', '0'));
const deadlineMs = Number(arg('deadline-ms', '50'));
const token = arg('token');
const REPORT_ATTEMPTS = 3;

if (!account) {
  console.error('--account is required');
  process.exit(2);
}

const gates = new Map(addrs.map((a) => [a, new v1.GateService(a, credentials())]));
let current = addrs[0];
let newestEpoch = 0n;

function once(method, request, deadline) {
  return new Promise((resolve, reject) => {
    gates.get(current)[method](request, metadata(token), { deadline }, (error, answer) =>
      error ? reject(error) : resolve(answer),
    );
  });
}

/** Follows a refusal: to the leader it names, or to the next node. */
function follow(error) {
  const named = error.metadata && error.metadata.get('riskgate-leader')[0];
  if (named && gates.has(String(named))) {
    current = String(named);
  } else {
    current = addrs[(addrs.indexOf(current) + 1) % addrs.length];
  }
}

async function call(method, request) {
  const deadline = Date.now() + deadlineMs;
  for (let attempt = 0; ; attempt += 1) {
    try {
      const answer = await once(method, request, deadline);
      const epoch = BigInt(answer.epoch || 0);
      if (epoch > 0n && epoch < newestEpoch) {
        throw new Error(`decision of epoch ${epoch}, older than epoch ${newestEpoch}`);
      }
      if (epoch > newestEpoch) newestEpoch = epoch;
      return answer;
    } catch (error) {
      if (error.code !== grpc.status.UNAVAILABLE || attempt === 1) throw error;
      follow(error);
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The venue, simulated: every `failEvery`-th order is rejected. */
async function placeOrder(n) {
  await sleep(1);
  return !(failEvery && n % failEvery === 0);
}

async function report(permit, ok, orderId) {
  const request = {
    account_id: account,
    permit_id: permit,
    outcome: ok ? 'OUTCOME_SUCCESS' : 'OUTCOME_FAILURE',
    failure_kind: ok ? 'FAILURE_KIND_UNSPECIFIED' : 'FAILURE_KIND_ORDER_REJECTED',
    order_id: orderId,
    detail: ok ? '' : 'rejected by the venue',
  };
  for (let attempt = 0; attempt < REPORT_ATTEMPTS; attempt += 1) {
    try {
      return await call('ReportOutcome', request);
    } catch (error) {
      // Safe to retry with the same permit: it counts once.
      const retry = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(error.code);
      if (!retry) throw error;
      await sleep(50 * (attempt + 1));
    }
  }
  return null;
}

async function main() {
  const summary = { placed: 0, not_placed: 0, failed: 0, unreported: 0 };
  for (let n = 1; n <= orders; n += 1) {
    let check;
    try {
      check = await call('CheckTrade', { account_id: account });
    } catch (error) {
      // Unreachable, too slow or refused: fail closed.
      summary.not_placed += 1;
      const why = error.code === undefined ? error.message : `gate ${grpc.status[error.code]}: ${error.details}`;
      console.log(`order ${n} not placed: ${why}`);
      continue;
    }
    if (!check.allowed) {
      summary.not_placed += 1;
      console.log(`order ${n} not placed: ${check.reason}`);
      continue;
    }
    const ok = await placeOrder(n);
    summary.placed += 1;
    if (!ok) summary.failed += 1;
    const answer = await report(check.permit_id, ok, `${account}-${n}`);
    if (answer === null) summary.unreported += 1;
    console.log(`order ${n} placed (${ok ? 'filled' : 'rejected'})`);
  }
  console.log(JSON.stringify(summary));
  for (const gate of gates.values()) gate.close();
}

main().catch((error) => {
  console.error(`bot failed: ${error.message}`);
  process.exit(1);
});
