// Follows every breaker change, and never misses one.
//
// Starts with a snapshot, then follows events. After a disconnect (the server restarting, or
// ending a watcher that fell behind) it resumes after the last sequence it saw; when the server
// no longer has that history (OUT_OF_RANGE) it reads the snapshot again.
//
//   node monitor.js --addr 127.0.0.1:50051 [--exit-after N]
//
// Prints `snapshot <n> breakers as of <seq>`, and `event <seq> <account> <from> -> <to> <cause>`.
'use strict';

const { grpc, v1, credentials, metadata, arg } = require('./riskgate');

const addr = arg('addr', '127.0.0.1:50051');
const exitAfter = Number(arg('exit-after', '0'));
const token = arg('token');

let last = null; // the last sequence seen; null: read a snapshot
let events = 0;

function follow() {
  const monitor = new v1.MonitorService(addr, credentials());
  const request = last === null ? {} : { after_sequence: String(last) };
  const stream = monitor.WatchEvents(request, metadata(token));
  let breakers = 0;
  let ended = false;
  const reconnect = (why, outOfRange) => {
    if (ended) return;
    ended = true;
    monitor.close();
    if (outOfRange) {
      console.log(`history gone (${why}); reading the snapshot again`);
      last = null;
    } else {
      console.log(`disconnected (${why}); resuming after ${last}`);
    }
    setTimeout(follow, 200);
  };
  stream.on('data', (message) => {
    switch (message.kind) {
      case 'snapshot':
        breakers += 1;
        break;
      case 'snapshot_complete':
        last = Number(message.snapshot_complete.as_of_sequence);
        console.log(`snapshot ${breakers} breakers as of ${last}`);
        break;
      case 'event': {
        const e = message.event;
        last = Number(e.sequence);
        const who = e.account_id || (e.group ? `group ${e.group}` : 'firm');
        console.log(`event ${e.sequence} ${who} ${e.from_state} -> ${e.to_state} ${e.cause}`);
        events += 1;
        if (exitAfter && events >= exitAfter) {
          ended = true;
          stream.cancel();
          monitor.close();
          process.exit(0);
        }
        break;
      }
      case 'heartbeat':
        last = Number(message.heartbeat.sequence);
        break;
      default:
        break;
    }
  });
  stream.on('error', (error) => {
    if (error.code === grpc.status.CANCELLED && ended) return;
    reconnect(grpc.status[error.code], error.code === grpc.status.OUT_OF_RANGE);
  });
  stream.on('end', () => reconnect('stream ended', false));
}

follow();
