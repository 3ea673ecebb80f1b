// Scenario 5: poison messages. The fault stand-in accepts everything except
// entries whose body contains a marker (permanent InvalidParameter,
// SenderFault=true); one event is over RELAY_MAX_MESSAGE_BYTES. Poisoned
// ones go to the DLQ with reason "rejected" (AWS code kept), the over-size
// one with "too_large"; the others are published without stalling. Then
// the cause is fixed (SNS = fauxqs) and `relayctl dlq replay --reason
// rejected` delivers each poisoned event exactly once.
//   short: 600 events, 30 poisoned (ASan: 300/15); --long: 5000, 250
import fs from 'node:fs';
import path from 'node:path';
import { SANITIZE, SHARED, Ledger, burst, check, finish, makeBody, nextId, post, result, sha256, sleep,
  startStack, templates, waitStats } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const N = long ? 5000 : SANITIZE ? 300 : 600;
const P = Math.floor(N / 20);
const MARK = 'POISON';
const stack = await startStack({
  fault: true,
  faultOpts: { default: { do: 'ok', poison: { contains: MARK, code: 'InvalidParameter', message: 'Invalid parameter: Message', senderFault: true } } },
});
await stack.sw.set('fault');
const ledger = new Ledger();
const tpl = templates();

// Normal load and the poisoned ones interleaved (their ids carry the marker,
// and the id is inside the body).
const normal = burst(stack.relayd.port, ledger, { count: N, clients: 8, tpl, prefix: 'ok' });
const poison = burst(stack.relayd.port, ledger, { count: P, clients: 2, tpl, prefix: MARK });
// The over-size event: a real fixture, stored and answered 200.
const bigRaw = JSON.parse(fs.readFileSync(path.join(SHARED, 'fixtures/events/message.new-too-large.json'), 'utf8'));
const bigId = nextId('big');
bigRaw.harness_id = bigId;
const big = Buffer.from(JSON.stringify(bigRaw));
ledger.sent.set(bigId, sha256(big));
const rb = await post(stack.relayd.port, big, bigId);
check(rb.status === 200, `over-size event answered 200 (${rb.status})`);
if (rb.status === 200) ledger.acked.add(bigId);
await Promise.all([normal.promise, poison.promise]);
const t0 = Date.now();
const st = await waitStats(stack.relayd, (x) => x.ready === 0 && x.inflight === 0, 120000);
console.log(`queue empty ${((Date.now() - t0) / 1000).toFixed(1)} s after the last request`);
check(!!st, 'the others were not stalled: the queue drained');
await sleep(300);
const got = stack.collectFault(ledger, MARK);
const dlq = await stack.dlq();
const byReason = {};
for (const e of dlq) byReason[e.reason] = (byReason[e.reason] || 0) + 1;
console.log(`fault stand-in accepted ${got}; DLQ ${dlq.length}: ${JSON.stringify(byReason)}`);
const poisonIds = [...ledger.acked].filter((id) => id.startsWith(MARK));
const rejected = dlq.filter((e) => e.reason === 'rejected');
check(poisonIds.length === P, `all ${P} poisoned events acknowledged (${poisonIds.length})`);
check(rejected.length === P && rejected.every((e) => e.webhook_id.startsWith(MARK)),
  `exactly the poisoned ids are in the DLQ as "rejected" (${rejected.length})`);
check(rejected.every((e) => e.code === 'InvalidParameter'), 'the AWS error code is kept');
const tl = dlq.filter((e) => e.reason === 'too_large');
check(tl.length === 1 && tl[0].webhook_id === bigId, 'the over-size event is in the DLQ as "too_large"');
if (tl.length === 1) {
  const one = await fetch(`http://127.0.0.1:${stack.relayd.adminPort}/v1/dlq/${tl[0].id}`).then((r) => r.json());
  check(one.body !== undefined && sha256(Buffer.from(one.body, 'utf8')) === ledger.sent.get(bigId),
    'the DLQ keeps the over-size body byte for byte');
}
const normalIds = [...ledger.acked].filter((id) => id.startsWith('ok'));
const missing = normalIds.filter((id) => !ledger.delivered.has(id)).length;
check(missing === 0, `every normal event published (${missing} missing of ${normalIds.length})`);
check(dlq.length === P + 1, `nothing else in the DLQ (${dlq.length})`);

// The cause is fixed: SNS accepts again. Replay the rejected ones.
await stack.sw.set('pass');
const rp = await stack.relayctl(['dlq', 'replay', '--all', '--reason', 'rejected', '--yes']);
console.log(`relayctl dlq replay: exit ${rp.code} ${rp.stdout.trim()} ${rp.stderr.trim()}`);
check(rp.code === 0, 'relayctl dlq replay --all --reason rejected exits 0');
await stack.settle(ledger);
const after = await stack.dlq();
check(after.length === 1 && after[0].reason === 'too_large', `only the over-size event is left in the DLQ (${after.length})`);
// The over-size one is accounted for by the DLQ (the promise: published or
// dead-lettered), not by delivery.
if (after.length === 1) ledger.acked.delete(bigId);
const v = ledger.verify('poison');
const twice = poisonIds.filter((id) => (ledger.delivered.get(id) || []).length !== 1).length;
check(twice === 0, `each replayed event delivered exactly once (${twice} not)`);
check(v.lost === 0, `0 lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt (${v.corrupt})`);
await stack.stop();
result({ scenario: '5 poison -> DLQ', runs: 1, acked: v.acked + 1, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates,
  note: `${P} rejected + 1 too_large in DLQ, replayed` });
finish();
