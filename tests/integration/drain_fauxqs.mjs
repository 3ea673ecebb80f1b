// Drainer end to end against fauxqs: every queued event arrives in an SQS
// queue subscribed with raw delivery, byte-identical, with the SPEC's
// message attributes; a filter-policy subscription gets only its types; an
// over-size record goes to the DLQ as too_large and does not stall the rest.
//
//   node drain_fauxqs.mjs [N]     (default 1000; the "long" variant runs 10000)
import crypto from 'node:crypto';
import path from 'node:path';
import {
  TMP, check, done, fill, makeEvents, receiveAll, sha, startDriver, startFauxqs, topicWithQueue,
} from './drain_lib.mjs';

const N = Number(process.argv[2] || 1000);
const f = await startFauxqs();
const all = await topicWithQueue(f, { topic: 'relay-events', queue: 'all' });
const filtered = await topicWithQueue(f, {
  topicArn: all.topicArn, queue: 'messages-only', filter: { type: ['message.new', 'message.updated'] },
});

// Every 7th event without a webhook id: attributes must then leave it out.
const evs = makeEvents(N, { prefix: `std-${crypto.randomUUID().slice(0, 8)}`, includeTooLarge: true, noWebhookIdEvery: 7 });
const dir = path.join(TMP, 'q-std');
const filled = await fill(dir, evs);
check(filled.appended === N, `filled ${N} events (${filled.appended})`);
const tooLarge = evs.filter((e) => e.name.includes('too-large'));
const publishable = evs.filter((e) => !e.name.includes('too-large'));

const t0 = Date.now();
const drv = startDriver(dir, { topic: all.topicArn, endpoint: f.endpoint, untilEmpty: true, timeout: 120 });
// test-sns publishes directly (not via the queue) and reports a MessageId.
drv.send('test');
const res = await drv.exited;
const secs = (Date.now() - t0) / 1000;
check(res.code === 0, `driver exited 0 (code ${res.code}, ${secs.toFixed(1)} s)`);
check(res.final && res.final.published === publishable.length,
  `published_total ${res.final?.published} == ${publishable.length}`);
check(res.final && res.final.ready === 0, 'queue empty at the end');
check(res.final && res.final.state === 'running', `state running (${res.final?.state})`);
const test = drv.lines.find((l) => l.ev === 'test');
check(test && test.err === 0 && test.outcome === 'ok' && test.message_id.length > 0,
  `test-sns got a MessageId (${test?.message_id})`);

// DLQ: exactly the over-size events, reason too_large, nothing else.
const dlq = res.dlq || [];
check(dlq.length === tooLarge.length, `DLQ holds the ${tooLarge.length} over-size events (${dlq.length})`);
check(dlq.every((d) => d.reason === 'too_large'), 'DLQ reason too_large');
check(res.final && res.final.dead_too_large === tooLarge.length, 'too_large counter');

// What arrived.
const got = await receiveAll(f, all.queueUrl, { want: publishable.length + 1, idleMs: 2000 });
const testMsgs = got.filter((m) => m.attrs.type === 'relay.test');
check(testMsgs.length === 1 && JSON.parse(testMsgs[0].body).type === 'relay.test', 'the test event arrived with type relay.test');
const events = got.filter((m) => m.attrs.type !== 'relay.test');
check(events.length === publishable.length, `received ${events.length} of ${publishable.length}`);

const byId = new Map();
for (const e of publishable) if (e.webhook_id) byId.set(e.webhook_id, e);
let missing = 0, corrupt = 0, badAttrs = 0, dup = 0;
const seen = new Set();
const noIdCount = new Map(); // body hash -> count of events without webhook id
for (const e of publishable) if (!e.webhook_id) noIdCount.set(sha(e.body), (noIdCount.get(sha(e.body)) || 0) + 1);
const attrNames = ['type', 'cid', 'channel_type', 'channel_id', 'user_id', 'webhook_id'];
for (const m of events) {
  const id = m.attrs.webhook_id;
  let e;
  if (id) {
    if (seen.has(id)) dup++;
    seen.add(id);
    e = byId.get(id);
    if (!e) { corrupt++; continue; }
    if (!m.body.equals(e.body)) corrupt++;
  } else {
    const h = sha(m.body);
    const c = noIdCount.get(h) || 0;
    if (c === 0) { corrupt++; continue; }
    noIdCount.set(h, c - 1);
    e = publishable.find((x) => !x.webhook_id && sha(x.body) === h);
  }
  for (const k of attrNames) {
    if ((m.attrs[k] ?? undefined) !== (e[k] ?? undefined)) badAttrs++;
  }
  if (Object.keys(m.attrs).some((k) => !attrNames.includes(k))) badAttrs++;
}
for (const id of byId.keys()) if (!seen.has(id)) missing++;
for (const c of noIdCount.values()) missing += c;
check(missing === 0, `0 lost (${missing})`);
check(corrupt === 0, `0 corrupt bodies (${corrupt})`);
check(badAttrs === 0, `attributes exactly per SPEC (${badAttrs} mismatches)`);
check(dup === 0, `no duplicates in a clean run (${dup})`);

// Filter policy on type.
const wantTypes = new Set(['message.new', 'message.updated']);
const fgot = await receiveAll(f, filtered.queueUrl, { idleMs: 1500 });
const fexp = publishable.filter((e) => wantTypes.has(e.type)).length;
check(fgot.length === fexp && fexp > 0, `filter subscription got ${fgot.length} of ${fexp}`);
check(fgot.every((m) => wantTypes.has(m.attrs.type)), 'filter subscription got only its types');
console.log(`drained ${publishable.length} events in ${secs.toFixed(1)} s`);
await f.app.close();
done();
