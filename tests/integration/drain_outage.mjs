// SNS outage under steady load: the emulator becomes unreachable (a proxy in
// front of fauxqs is switched off) while events keep arriving; the drainer
// backs off as a whole without burning per-event attempts, nothing goes to
// the DLQ, and once SNS is back the backlog drains much faster than ingest.
//
//   node drain_outage.mjs [outage_s] [rate]   (default 10 s at 300 events/s)
import crypto from 'node:crypto';
import path from 'node:path';
import {
  TMP, check, done, makeEvents, receiveAll, sleep, startDriver, startFauxqs, startProxy, topicWithQueue,
} from './drain_lib.mjs';

const OUTAGE = Number(process.argv[2] || 10);
const RATE = Number(process.argv[3] || 300);
const FEED_S = OUTAGE + 6;
const N = RATE * FEED_S;
const f = await startFauxqs();
const { topicArn, queueUrl } = await topicWithQueue(f, { topic: 'relay-outage', queue: 'outage' });
const proxy = await startProxy(f.port);
const evs = makeEvents(N, { prefix: `out-${crypto.randomUUID().slice(0, 8)}` });
const dir = path.join(TMP, 'q-outage');

const drv = startDriver(dir, {
  topic: topicArn, endpoint: `http://127.0.0.1:${proxy.port}`, untilEmpty: true,
  timeout: FEED_S + OUTAGE + 60, statusMs: 100, feed: evs, feedRate: RATE,
  flags: { 'retry-base': 100, 'retry-max': 3000 },
});
// Collect what arrives while it runs, so the queue does not pile up.
const got = [];
let collecting = true;
const collector = (async () => {
  while (collecting) got.push(...await receiveAll(f, queueUrl, { idleMs: 300, maxMs: 2000 }));
})();

await sleep(2000);
const before = drv.last()?.published ?? 0;
check(before > 0, `publishing before the outage (${before})`);
await proxy.down();
const tDown = Date.now();
const sawBackoff = await drv.waitFor((l) => l.ev === 'status' && l.state === 'backoff', 10000);
check(sawBackoff !== null, 'state "backoff" during the outage');
check(sawBackoff && sawBackoff.backoff_until_ms > Date.now() - 5000, 'backoff_until_ms is set');
await sleep(Math.max(0, OUTAGE * 1000 - (Date.now() - tDown)));
const during = drv.last();
check(during.dlq === 0, `no DLQ during the outage (${during.dlq})`);
check(during.retried === 0, `no per-event attempts burned (retried ${during.retried})`);
const backlog = during.ready;
console.log(`backlog at the end of the outage: ${backlog} events`);
await proxy.up();
const tUp = Date.now();
const running = await drv.waitFor((l) => l.ev === 'status' && l.state === 'running' && l.t > (during.t ?? 0), 40000);
check(running !== null, 'back to "running" after SNS returned');
const res = await drv.exited;
collecting = false;
await collector;
got.push(...await receiveAll(f, queueUrl, { idleMs: 1500 }));
check(res.code === 0, `driver exited 0 (${res.code})`);
check((res.dlq || []).length === 0, 'DLQ empty');
const ids = new Set(got.map((m) => m.attrs.webhook_id));
const lost = evs.filter((e) => !ids.has(e.webhook_id)).length;
check(lost === 0, `0 lost of ${N} (${lost})`);
const bodies = new Map(evs.map((e) => [e.webhook_id, e.body]));
check(got.every((m) => bodies.get(m.attrs.webhook_id)?.equals(m.body)), 'bodies byte-identical');
// Backlog drain speed: from the first status after SNS came back until ready hit 0.
const empty = drv.lines.find((l) => l.ev === 'status' && l.t > during.t && l.ready <= RATE / 10);
if (empty && backlog > 0) {
  const secs = empty.t - during.t;
  console.log(`backlog of ${backlog} drained in ~${secs.toFixed(1)} s after SNS returned (ingest ${RATE}/s)`);
  check(secs < backlog / RATE, 'backlog drains faster than it built up');
}
console.log(`recovery: running again ${((running?.t ?? 0) - during.t).toFixed(1)} s after SNS returned`);
void tUp;
await proxy.down();
await f.app.close();
done();
