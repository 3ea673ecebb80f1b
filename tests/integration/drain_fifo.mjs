// Drainer with a FIFO topic and a FIFO queue (fauxqs): every event arrives
// once, in arrival order within its group (cid, else type), with the SPEC's
// MessageGroupId; groups proceed in parallel.
//
//   node drain_fifo.mjs [N]   (default 600)
import crypto from 'node:crypto';
import path from 'node:path';
import {
  TMP, check, done, fill, fixtures, receiveAll, routing, startDriver, startFauxqs, topicWithQueue,
} from './drain_lib.mjs';

const N = Number(process.argv[2] || 600);
const f = await startFauxqs();
const { topicArn, queueUrl } = await topicWithQueue(f, { topic: 'relay-events.fifo', queue: 'ordered.fifo', fifo: true });

// Bodies derived from the fixtures with a group and a sequence number inside,
// so the order can be read back from what arrived. Some events have no cid
// (grouped by type) and some no webhook id (dedup id = SHA-256 of the body).
const fx = fixtures().filter((x) => !x.name.includes('too-large') && !x.name.includes('large'));
const run = crypto.randomUUID().slice(0, 8);
const evs = [];
for (let i = 0; i < N; i++) {
  const o = JSON.parse(fx[i % fx.length].body.toString('utf8'));
  const g = i % 13;
  // Group 11's cid and every 7th webhook id are not ids SNS takes for
  // MessageGroupId / MessageDeduplicationId (a space, an accent, over 128
  // characters): relay sends their SHA-256 instead.
  if (g === 12) delete o.cid; else if (g === 11) o.cid = 'messaging:room eleven é'; else o.cid = `messaging:room-${g}`;
  o.relay_test_seq = i;
  o.relay_test_run = run;
  const body = Buffer.from(JSON.stringify(o));
  const e = { i, body, ...routing(body) };
  if (i % 7 === 3) e.webhook_id = `fifo ${run} ${i} `.padEnd(140, 'x');
  else if (i % 5 !== 0) e.webhook_id = `fifo-${run}-${i}`;
  evs.push(e);
}
const dir = path.join(TMP, 'q-fifo');
const filled = await fill(dir, evs);
check(filled.appended === N, `filled ${N}`);

const drv = startDriver(dir, { topic: topicArn, endpoint: f.endpoint, untilEmpty: true, timeout: 120, flags: { concurrency: 8 } });
const res = await drv.exited;
check(res.code === 0, `driver exited 0 (${res.code})`);
check(res.final?.published === N, `published ${res.final?.published} of ${N}`);
check((res.dlq || []).length === 0, 'nothing dead-lettered');

const got = await receiveAll(f, queueUrl, { want: N, idleMs: 2000 });
check(got.length === N, `received ${got.length} of ${N}`);
const seen = new Set();
const lastInGroup = new Map();
let outOfOrder = 0, wrongGroup = 0, dups = 0;
for (const m of got) {
  const o = JSON.parse(m.body.toString('utf8'));
  const e = evs[o.relay_test_seq];
  if (!e || !m.body.equals(e.body)) { wrongGroup++; continue; }
  if (seen.has(e.i)) dups++;
  seen.add(e.i);
  const group = e.cid ?? e.type;
  const sent = /^[!-~]{1,128}$/.test(group) ? group : crypto.createHash('sha256').update(group).digest('hex');
  if (m.groupId !== undefined && m.groupId !== sent) wrongGroup++;
  const prev = lastInGroup.get(group);
  if (prev !== undefined && prev > e.i) outOfOrder++;
  lastInGroup.set(group, e.i);
}
check(seen.size === N, `all ${N} distinct events arrived (${seen.size})`);
check(dups === 0, `no duplicates (${dups})`);
check(wrongGroup === 0, `bodies and MessageGroupId right (${wrongGroup} wrong)`);
check(outOfOrder === 0, `per-group order holds (${outOfOrder} out of order)`);
check(lastInGroup.size >= 13, `${lastInGroup.size} groups seen`);
check(got.some((m) => m.groupId !== undefined), 'MessageGroupId reported by the queue');
await f.app.close();
done();
