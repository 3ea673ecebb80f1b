// kill -9 while draining, then restart: nothing is lost; duplicates only for
// what was in flight (published by SNS but not yet acked on disk).
//
//   node drain_kill.mjs [N] [rounds]   (default 4000 events, 3 kills)
import crypto from 'node:crypto';
import path from 'node:path';
import {
  TMP, check, done, fill, makeEvents, receiveAll, startDriver, startFauxqs, topicWithQueue,
} from './drain_lib.mjs';

const N = Number(process.argv[2] || 4000);
const ROUNDS = Number(process.argv[3] || 3);
const CONC = 16, BATCH = 10;
const f = await startFauxqs();
const { topicArn, queueUrl } = await topicWithQueue(f, { topic: 'relay-kill', queue: 'kill' });
const evs = makeEvents(N, { prefix: `kill-${crypto.randomUUID().slice(0, 8)}` });
const dir = path.join(TMP, 'q-kill');
check((await fill(dir, evs)).appended === N, `filled ${N}`);

const got = [];
let killedAt = [];
for (let r = 0; r < ROUNDS; r++) {
  const drv = startDriver(dir, {
    topic: topicArn, endpoint: f.endpoint, statusMs: 20, timeout: 60, flags: { concurrency: CONC, batch: BATCH },
  });
  // Kill at a different depth each round, while requests are in flight.
  const target = 300 + r * 250;
  const hit = await drv.waitFor((l) => l.ev === 'status' && l.published >= target && l.inflight_requests > 0, 30000);
  drv.kill('SIGKILL');
  const res = await drv.exited;
  check(res.signal === 'SIGKILL', `round ${r}: killed with -9 while draining (published ${hit?.published})`);
  killedAt.push(hit?.published ?? 0);
  got.push(...await receiveAll(f, queueUrl, { idleMs: 800 }));
}
const drv = startDriver(dir, { topic: topicArn, endpoint: f.endpoint, untilEmpty: true, timeout: 90 });
const res = await drv.exited;
check(res.code === 0, `final run exited 0 (${res.code})`);
check(res.final?.ready === 0 && (res.dlq || []).length === 0, 'queue empty, DLQ empty');
got.push(...await receiveAll(f, queueUrl, { idleMs: 2000 }));

const count = new Map();
for (const m of got) count.set(m.attrs.webhook_id, (count.get(m.attrs.webhook_id) || 0) + 1);
const lost = evs.filter((e) => !count.has(e.webhook_id)).length;
const dups = [...count.values()].reduce((a, c) => a + c - 1, 0);
const bodies = new Map(evs.map((e) => [e.webhook_id, e.body]));
check(lost === 0, `0 lost of ${N} after ${ROUNDS} kill -9 (${lost})`);
check(got.every((m) => bodies.get(m.attrs.webhook_id)?.equals(m.body)), 'bodies byte-identical');
// In flight at a kill: at most CONC requests of BATCH events published but
// not acked, plus one settle commit's worth (also bounded by CONC*BATCH).
const bound = ROUNDS * 2 * CONC * BATCH;
console.log(`duplicates: ${dups} over ${ROUNDS} kills (bound ${bound}); killed at published=${killedAt.join(',')}`);
check(dups <= bound, `duplicates bounded by what was in flight (${dups} <= ${bound})`);
await f.app.close();
done();
