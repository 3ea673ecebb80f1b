// Drainer against the fault-injecting SNS stand-in (tests/support/fault-sns.mjs),
// which verifies every SigV4 signature and records every request. Each
// scenario drains a fresh queue and checks, from the recorded requests, what
// SNS accepted: every event exactly as SPEC says (retried, dead-lettered with
// its reason, or kept queued), with the drainer's state along the way.
//
//   node drain_faults.mjs [scenario...]   (default: all)
import crypto from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SUPPORT, TMP, check, done, fill, fixtures, routing, sha, startDriver } from './drain_lib.mjs';

const { startFaultSns } = await import(pathToFileURL(path.join(SUPPORT, 'fault-sns.mjs')).href);
const CREDS = { accessKeyId: 'AKIDRELAYTEST', secretAccessKey: 'relay-test-secret' };
const STD = 'arn:aws:sns:us-east-1:123456789012:relay-faults';
const FIFO = 'arn:aws:sns:us-east-1:123456789012:relay-faults.fifo';
const FAST = { 'retry-base': 20, 'retry-max': 400 };

// Events with a sequence number and a group inside the body (so order and
// identity can be read back from the recorded Message), from the fixtures.
function events(n, { groups = 7, poisonEvery = 0, received = undefined, tag = 'e' } = {}) {
  const fx = fixtures().filter((x) => !x.name.includes('large'));
  const run = crypto.randomUUID().slice(0, 8);
  const out = [];
  for (let i = 0; i < n; i++) {
    const o = JSON.parse(fx[i % fx.length].body.toString('utf8'));
    o.cid = `messaging:g${i % groups}`;
    o.relay_test = { run, seq: i, poison: poisonEvery && i % poisonEvery === 1 ? 'POISON' : undefined };
    const body = Buffer.from(JSON.stringify(o));
    const e = { i, body, ...routing(body), webhook_id: `${tag}-${run}-${i}` };
    if (received !== undefined) e.received_ms = received;
    out.push(e);
  }
  return out;
}

// Entries SNS accepted, in the order it accepted them.
function accepted(sns, partialFailedIds = new Set()) {
  const out = [];
  for (const r of sns.requests) {
    if (r.step !== 'ok' && r.step !== 'partial') continue;
    for (const e of r.entries) {
      if (typeof e.message === 'string' && e.message.includes('POISON')) continue;
      if (r.step === 'partial' && partialFailedIds.has(e.id)) continue;
      out.push({ ...e, req: r });
    }
  }
  return out;
}

function seqOf(msg) {
  try { return JSON.parse(msg).relay_test.seq; } catch { return -1; }
}

async function scenario(name, { evs, script = [], dflt = { do: 'ok' }, topic = STD, flags = {}, during, timeout = 60,
  failedIds = new Set(), fillExtra }) {
  console.log(`-- ${name}`);
  const sns = await startFaultSns({ script, default: dflt, verify: CREDS });
  const dir = path.join(TMP, `q-${name}`);
  await fill(dir, evs, fillExtra);
  const drv = startDriver(dir, { topic, endpoint: sns.endpoint, untilEmpty: true, timeout, statusMs: 50, flags: { ...FAST, ...flags } });
  if (during) await during(drv, sns);
  const res = await drv.exited;
  const acc = accepted(sns, failedIds);
  await sns.stop();
  check(res.code === 0, `${name}: driver exited 0 (${res.code})`);
  check(sns.requests.every((r) => r.sigOk === true), `${name}: every request correctly signed`);
  const statuses = drv.lines.filter((l) => l.ev === 'status' || l.ev === 'final');
  return { res, acc, sns, statuses, final: res.final, dlq: res.dlq || [] };
}

function allOnce(name, evs, acc, skip = new Set()) {
  const count = new Map();
  for (const e of acc) count.set(seqOf(e.message), (count.get(seqOf(e.message)) || 0) + 1);
  const want = evs.filter((e) => !skip.has(e.i));
  const lost = want.filter((e) => !count.has(e.i)).length;
  const dups = [...count.values()].filter((c) => c > 1).length;
  check(lost === 0, `${name}: all ${want.length} accepted by SNS (${lost} missing)`);
  check(dups === 0, `${name}: none published twice (${dups})`);
  const byI = new Map(evs.map((e) => [e.i, e]));
  const bad = acc.filter((e) => {
    const ev = byI.get(seqOf(e.message));
    return !ev || e.message !== ev.body.toString('utf8') || e.attributes.webhook_id !== ev.webhook_id ||
      e.attributes.type !== ev.type || e.attributes.cid !== ev.cid;
  }).length;
  check(bad === 0, `${name}: bodies and attributes exact (${bad} bad)`);
}

const only = new Set(process.argv.slice(2));
const want = (n) => only.size === 0 || only.has(n);

if (want('5xx')) {
  const evs = events(200);
  const r = await scenario('5xx', {
    evs,
    script: [{ do: 'status', status: 503, body: '<html>Service Unavailable</html>', times: 3 },
      { do: 'error', status: 500, code: 'InternalError', message: 'boom', type: 'Receiver', times: 3 }],
  });
  allOnce('5xx', evs, r.acc);
  check(r.final.retried >= 30 && r.dlq.length === 0, `5xx: retried (${r.final.retried}), nothing dead-lettered`);
}

if (want('throttling')) {
  const evs = events(1500);
  const r = await scenario('throttling', {
    evs, flags: { concurrency: 16 },
    script: [{ do: 'ok', times: 5 }, { do: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded', times: 25 }],
  });
  allOnce('throttling', evs, r.acc);
  const minConc = Math.min(...r.statuses.map((l) => l.concurrency));
  check(minConc < 16, `throttling: concurrency lowered by AIMD (min ${minConc} of 16)`);
  check(minConc >= 1, 'throttling: concurrency never below 1');
  const after = r.statuses.slice(r.statuses.findIndex((l) => l.concurrency === minConc));
  const maxAfter = Math.max(...after.map((l) => l.concurrency));
  check(maxAfter > minConc, `throttling: concurrency raised again once throttling stopped (${minConc} -> ${maxAfter})`);
  check(r.final.throttled > 0 && r.dlq.length === 0, `throttling: counted (${r.final.throttled}), nothing dead-lettered`);
}

if (want('reset')) {
  const evs = events(150);
  const r = await scenario('reset', { evs, script: [{ do: 'reset', times: 4 }], flags: { 'retry-base': 300, 'retry-max': 1000 } });
  allOnce('reset', evs, r.acc);
  check(r.dlq.length === 0, 'reset: nothing dead-lettered');
  check(r.statuses.some((l) => l.state === 'backoff'), 'reset: whole-drainer backoff while SNS gives no answer');
  check(r.final.retried === 0, `reset: no per-event attempt burned (${r.final.retried})`);
}

if (want('slow')) {
  const evs = events(100);
  const t0 = Date.now();
  const r = await scenario('slow', {
    evs, flags: { 'sns-timeout': 800, concurrency: 4 },
    script: [{ do: 'hang', times: 2 }, { do: 'slow', delayMs: 300, times: 6 }],
  });
  allOnce('slow', evs, r.acc);
  check(r.dlq.length === 0, 'slow: nothing dead-lettered');
  console.log(`slow: drained in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

if (want('partial')) {
  const evs = events(200);
  const failedIds = new Set(['0', '3']);
  const f = { code: 'InternalFailure', message: 'try again', senderFault: false };
  const r = await scenario('partial', { evs, failedIds, script: [{ do: 'partial', failed: { 0: f, 3: f }, times: 6 }] });
  allOnce('partial', evs, r.acc);
  check(r.final.retried >= 6 && r.dlq.length === 0, `partial: SenderFault=false entries retried (${r.final.retried}), none dead-lettered`);
}

if (want('throttled-entries')) {
  // SNS's own throttling code is "Throttled" (senderFault=true in its
  // service model): Failed entries with it are retried, never dead-lettered.
  const evs = events(100);
  const failedIds = new Set(['2', '5']);
  const f = { code: 'Throttled', message: 'Rate exceeded', senderFault: true };
  const r = await scenario('throttled-entries', { evs, failedIds, script: [{ do: 'partial', failed: { 2: f, 5: f }, times: 4 }] });
  allOnce('throttled-entries', evs, r.acc);
  check(r.dlq.length === 0, `throttled-entries: nothing dead-lettered (${r.dlq.length})`);
  check(r.final.throttled >= 8, `throttled-entries: counted as throttled (${r.final.throttled})`);
}

if (want('poison')) {
  for (const batch of [10, 1]) {
    const name = `poison-batch${batch}`;
    const evs = events(200, { poisonEvery: 20 });
    const poison = new Set(evs.filter((e) => e.i % 20 === 1).map((e) => e.i));
    const r = await scenario(name, {
      evs, flags: { batch },
      dflt: { do: 'ok', poison: { contains: 'POISON', code: 'InvalidParameter', message: 'Invalid parameter: Message', senderFault: true } },
    });
    allOnce(name, evs, r.acc, poison);
    check(r.dlq.length === poison.size, `${name}: ${poison.size} poison events in the DLQ (${r.dlq.length})`);
    check(r.dlq.every((d) => d.reason === 'rejected' && d.code === 'InvalidParameter'), `${name}: DLQ reason rejected, code InvalidParameter`);
    const ids = new Set(evs.filter((e) => poison.has(e.i)).map((e) => e.webhook_id));
    check(r.dlq.every((d) => ids.has(d.webhook_id)), `${name}: exactly the poison events`);
    // No stall: each poison event was tried once, not retried.
    check(r.final.retried === 0, `${name}: permanent errors are not retried (${r.final.retried})`);
  }
}

if (want('batch-refused')) {
  // A PublishBatch refused as a whole names no culprit: its entries are
  // retried one per request, and only the real poison reaches the DLQ.
  const name = 'batch-refused';
  const evs = events(30, { poisonEvery: 20 });
  const poison = new Set(evs.filter((e) => e.i % 20 === 1).map((e) => e.i));
  const r = await scenario(name, {
    evs, flags: { batch: 10 },
    script: [{ do: 'error', status: 400, code: 'InvalidParameter', message: 'batch refused as a whole', type: 'Sender' }],
    dflt: { do: 'ok', poison: { contains: 'POISON', code: 'InvalidParameter', message: 'Invalid parameter: Message', senderFault: true } },
  });
  allOnce(name, evs, r.acc, poison);
  check(r.dlq.length === poison.size, `${name}: only the ${poison.size} poison events in the DLQ (${r.dlq.length})`);
  const solo = r.sns.requests.filter((q) => q.entries.length === 1).length;
  check(solo >= 10, `${name}: the refused batch's events went out one by one (${solo} single-entry requests)`);
}

if (want('auth')) {
  const evs = events(100);
  let sawBlocked = null;
  const r = await scenario('auth', {
    evs,
    // 100 events = 10 requests in flight at once, all refused; then 4
    // probes, also refused, before SNS accepts again.
    script: [{ do: 'error', status: 403, code: 'AuthorizationError', message: 'User is not authorized', times: 11 },
      { do: 'error', status: 404, code: 'NotFound', message: 'Topic does not exist', times: 2 },
      { do: 'error', status: 400, code: 'KMSAccessDenied', message: 'KMS key not accessible', times: 1 }],
    during: async (drv) => { sawBlocked = await drv.waitFor((l) => l.ev === 'status' && l.state === 'blocked', 10000); },
  });
  allOnce('auth', evs, r.acc);
  check(sawBlocked !== null, 'auth: state "blocked" while SNS refuses authorization');
  check(sawBlocked && ['AuthorizationError', 'NotFound', 'KMSAccessDenied'].includes(sawBlocked.last_error.code), `auth: last_error shows the code (${sawBlocked?.last_error.code})`);
  check(r.dlq.length === 0, 'auth: auth errors never send events to the DLQ');
  check(r.final.retried === 0, `auth: no per-event attempt burned (${r.final.retried})`);
  // Blocked means one probe at a time: the refused requests are the 5
  // scripted ones, not a flood of them.
  const refused = r.sns.requests.filter((q) => q.step === 'error').length;
  check(refused === 14, `auth: one probe per interval while blocked (${refused} refused requests)`);
  const at = r.sns.requests.map((q) => q.at).sort((a, b) => a - b);
  const gaps = at.slice(10, 15).map((t, k) => t - at[9 + k]);
  // Probe interval = min(30 s, RELAY_RETRY_MAX_MS = 400 here) +-20 %.
  check(gaps.length === 5 && gaps.every((g) => g >= 300), `auth: probes spaced by the slow interval (gaps ${gaps.join(',')} ms)`);
  check(r.final.state === 'running', 'auth: running again once SNS accepts');
}

if (want('expired')) {
  const old = events(20, { received: Date.now() - 2 * 86400 * 1000, tag: 'old' });
  const fresh = events(20, { tag: 'new' }).map((e) => ({ ...e, i: e.i + 20 }));
  const evs = [...old, ...fresh];
  const r = await scenario('expired', {
    evs: evs.map((e) => ({ ...e, body: e.body })),
    script: [{ do: 'status', status: 503, body: 'unavailable', times: 8 }],
  });
  const dl = new Set(r.dlq.map((d) => d.webhook_id));
  check(r.dlq.length === 20 && old.every((e) => dl.has(e.webhook_id)), `expired: the 20 events older than RELAY_RETRY_MAX_AGE went to the DLQ (${r.dlq.length})`);
  check(r.dlq.every((d) => d.reason === 'expired'), 'expired: reason expired');
  const got = new Set(r.acc.map((e) => e.attributes.webhook_id));
  check(fresh.every((e) => got.has(e.webhook_id)), 'expired: the fresh ones were delivered');
}

if (want('replayed-expired')) {
  // An operator replays "expired" events after an outage: SNS still fails
  // a few times, and they must get a new RELAY_RETRY_MAX_AGE from the
  // replay, not expire again at once because they were received 2 days ago.
  const evs = events(20, { received: Date.now() - 2 * 86400 * 1000, tag: 'replayed' });
  const r = await scenario('replayed-expired', {
    evs, fillExtra: { via_dlq: 1 },
    script: [{ do: 'status', status: 503, body: 'unavailable', times: 8 }],
  });
  check(r.dlq.length === 0, `replayed-expired: none went back to the DLQ (${r.dlq.length})`);
  allOnce('replayed-expired', evs, r.acc);
}

if (want('5xx-probe')) {
  // A whole-request 5xx backs the whole drainer off: after the requests
  // already in flight, one probe at a time, each after a backoff of at
  // least RELAY_RETRY_BASE_MS, not one request per due event.
  const evs = events(600);
  const r = await scenario('5xx-probe', {
    evs, flags: { concurrency: 8, 'retry-base': 50, 'retry-max': 400 },
    script: [{ do: 'status', status: 503, body: 'unavailable', times: 20 }],
  });
  allOnce('5xx-probe', evs, r.acc);
  const failed = r.sns.requests.filter((q) => q.step === 'status').map((q) => q.at).sort((a, b) => a - b);
  // The first 8 requests went out together, every later one is a probe
  // (the first two probes are left out: a slow first-wave request may
  // arrive after the first probe on a loaded machine).
  const gaps = failed.slice(10).map((t, k) => t - failed[9 + k]);
  check(failed.length === 20 && gaps.length === 10 && gaps.every((g) => g >= 45),
    `5xx-probe: one probe per backoff after the first wave (gaps ${gaps.join(',')} ms)`);
  check(r.dlq.length === 0 && r.final.state === 'running', `5xx-probe: nothing dead-lettered, running again (${r.final.state})`);
}

if (want('resume-not-due')) {
  // Regression: a backoff that ends while the retried events are not due
  // yet (their own delay outlasts the drainer's; here an operator resume
  // cuts the backoff short) found nothing to probe with, went "running"
  // and armed no timer: the drainer slept until the driver's timeout.
  const evs = events(30);
  let inBackoff = null, resumedAt = 0;
  const r = await scenario('resume-not-due', {
    evs, timeout: 30, flags: { 'retry-base': 1500, 'retry-max': 1500 },
    script: [{ do: 'status', status: 503, body: 'unavailable', times: 3 }],
    during: async (drv) => {
      inBackoff = await drv.waitFor((l) => l.ev === 'status' && l.state === 'backoff' && l.leased === 0 &&
        l.inflight_requests === 0 && l.retried === 30, 10000);
      drv.send('pause');
      drv.send('resume');
      resumedAt = Date.now();
    },
  });
  check(inBackoff !== null, 'resume-not-due: backoff after the 503s, every event nacked');
  allOnce('resume-not-due', evs, r.acc);
  const after = r.sns.requests.filter((q) => q.at >= resumedAt);
  const firstGap = after.length ? after[0].at - resumedAt : -1;
  // The events were nacked 1.5 s ahead: nothing may go out before they are due.
  check(after.length > 0 && firstGap >= 500,
    `resume-not-due: the retried events waited for their own delay (first request ${firstGap} ms after the resume)`);
  check(r.final.state === 'running', `resume-not-due: running again (${r.final.state})`);
}

if (want('expired-backoff')) {
  // While SNS keeps failing, events past RELAY_RETRY_MAX_AGE go to the DLQ
  // without each waiting for a probe of its own.
  const evs = events(300, { received: Date.now() - 2 * 86400 * 1000, tag: 'old' });
  const r = await scenario('expired-backoff', {
    evs, flags: { concurrency: 1, 'retry-base': 200, 'retry-max': 1000 },
    dflt: { do: 'status', status: 503, body: 'unavailable' },
  });
  check(r.dlq.length === 300 && r.dlq.every((d) => d.reason === 'expired'), `expired-backoff: all 300 in the DLQ as expired (${r.dlq.length})`);
  check(r.dlq.every((d) => d.code === 'HTTP503'), 'expired-backoff: DLQ entries keep the SNS error code');
  check(r.sns.requests.length <= 3, `expired-backoff: not one request per 10 events (${r.sns.requests.length} requests)`);
}

if (want('large-concurrency')) {
  // RELAY_PUBLISH_CONCURRENCY bounds the requests in flight also when the
  // 256 KiB limit packs fewer than RELAY_PUBLISH_BATCH events per request:
  // 60 KiB events go 4 to a request, so one lease of concurrency x batch
  // events used to become 5 requests per allowed one.
  const evs = events(40).map((e) => {
    const o = JSON.parse(e.body.toString('utf8'));
    o.pad = 'x'.repeat(60 * 1024);
    const body = Buffer.from(JSON.stringify(o));
    return { ...e, body, ...routing(body) };
  });
  const delayMs = 300;
  const r = await scenario('large-concurrency', {
    evs, flags: { concurrency: 2, batch: 10 },
    dflt: { do: 'slow', delayMs },
  });
  allOnce('large-concurrency', evs, r.acc);
  const maxInflight = Math.max(...r.statuses.map((l) => l.inflight_requests));
  check(maxInflight <= 2, `large-concurrency: at most 2 requests in flight in the drainer (max ${maxInflight})`);
  const at = r.sns.requests.map((q) => q.at).sort((a, b) => a - b);
  // Requests SNS was answering at once (each is answered delayMs after it arrived).
  const overlap = Math.max(...at.map((t) => at.filter((u) => u <= t && t < u + delayMs - 20).length));
  check(overlap <= 2, `large-concurrency: at most 2 requests at SNS at once (max ${overlap})`);
  check(r.sns.requests.every((q) => q.entries.length <= 4), 'large-concurrency: 256 KiB per request respected');
}

if (want('fifo')) {
  const evs = events(300, { groups: 9 });
  // Every 3rd event without a webhook id: dedup id = SHA-256 of the body.
  evs.forEach((e) => { if (e.i % 3 === 0) delete e.webhook_id; });
  const failedIds = new Set(['1']);
  const f = { code: 'InternalFailure', message: 'again', senderFault: false };
  const r = await scenario('fifo', {
    evs, topic: FIFO, failedIds,
    script: [{ do: 'status', status: 503, body: 'x', times: 2 }, { do: 'partial', failed: { 1: f }, times: 10 },
      { do: 'error', status: 400, code: 'Throttling', message: 'slow down', times: 2 }, { do: 'ok', times: 3 },
      { do: 'partial', failed: { 1: f }, times: 10 }],
  });
  const count = new Map();
  const last = new Map();
  let outOfOrder = 0, badIds = 0, groupsPerReq = 0;
  for (const e of r.acc) {
    const i = seqOf(e.message);
    const ev = evs[i];
    count.set(i, (count.get(i) || 0) + 1);
    if (e.groupId !== ev.cid) badIds++;
    const wantDedup = ev.webhook_id ?? sha(ev.body);
    if (e.dedupId !== wantDedup) badIds++;
    if ((last.get(ev.cid) ?? -1) > i) outOfOrder++;
    last.set(ev.cid, i);
  }
  for (const q of r.sns.requests) {
    const g = q.entries.map((x) => x.groupId);
    if (new Set(g).size !== g.length) groupsPerReq++;
  }
  check(evs.every((e) => count.get(e.i) === 1), `fifo: all ${evs.length} accepted exactly once`);
  check(outOfOrder === 0, `fifo: per-group order holds with retries (${outOfOrder} out of order)`);
  check(badIds === 0, `fifo: MessageGroupId = cid, MessageDeduplicationId = webhook id or SHA-256 (${badIds} bad)`);
  check(groupsPerReq === 0, 'fifo: at most one event per group in flight');
  check(r.final.retried > 0, `fifo: retries happened (${r.final.retried})`);
}

if (want('close')) {
  // Shutdown while SNS hangs: drain_close waits ~2 s, abandons the requests,
  // releases their leases, and the loop closes cleanly; the events are still
  // queued and a later run delivers them.
  const evs = events(60);
  const sns = await startFaultSns({ default: { do: 'hang' }, verify: CREDS });
  const dir = path.join(TMP, 'q-close');
  await fill(dir, evs);
  const drv = startDriver(dir, { topic: STD, endpoint: sns.endpoint, timeout: 30, statusMs: 50, flags: { ...FAST, 'sns-timeout': 20000 } });
  const busy = await drv.waitFor((l) => l.ev === 'status' && l.inflight_requests > 0, 10000);
  check(busy !== null, 'close: requests hanging in flight');
  const t0 = Date.now();
  drv.send('quit');
  const res = await drv.exited;
  const secs = (Date.now() - t0) / 1000;
  check(res.code === 0, `close: clean exit with requests abandoned (code ${res.code})`);
  check(secs >= 1.5 && secs < 6, `close: waited about 2 s for in-flight requests (${secs.toFixed(1)} s)`);
  check(res.final?.ready === evs.length && (res.dlq || []).length === 0, `close: all ${evs.length} still queued (${res.final?.ready})`);
  sns.setScript([], { do: 'ok' });
  sns.reset();
  const drv2 = startDriver(dir, { topic: STD, endpoint: sns.endpoint, untilEmpty: true, timeout: 30, flags: FAST });
  const res2 = await drv2.exited;
  check(res2.code === 0 && res2.final?.published === evs.length, `close: a later run delivers them (${res2.final?.published})`);
  allOnce('close', evs, accepted(sns));
  await sns.stop();
}

if (want('test-sns')) {
  const sns = await startFaultSns({ script: [{ do: 'error', status: 403, code: 'AuthorizationError', message: 'no' }], verify: CREDS });
  const dir = path.join(TMP, 'q-test-sns');
  const drv = startDriver(dir, { topic: STD, endpoint: sns.endpoint, timeout: 20 });
  drv.send('test');
  const t1 = await drv.waitFor((l) => l.ev === 'test', 10000);
  drv.send('test');
  const t2 = await drv.waitFor((l) => l.ev === 'test' && l !== t1, 10000);
  drv.send('quit');
  const res = await drv.exited;
  check(t1 && t1.err === 0 && t1.code === 'AuthorizationError' && t1.outcome === 'config', `test-sns: reports the AWS code (${t1?.code})`);
  check(t2 && t2.outcome === 'ok' && t2.message_id.startsWith('fault-'), `test-sns: reports the MessageId (${t2?.message_id})`);
  const rq = sns.requests.find((q) => q.step === 'ok');
  check(rq && JSON.parse(rq.entries[0].message).type === 'relay.test' && rq.entries[0].attributes.type === 'relay.test',
    'test-sns: a relay.test event with its type attribute');
  check(res.final?.state === 'running' && res.final?.dlq === 0 && res.final?.failed === 0,
    `test-sns: does not change the drainer state or counters (${res.final?.state})`);
  await sns.stop();
}

done();
