// The drainer against the fault-injecting SNS stand-in
// (tests/support/fault-sns.mjs) and, for credentials, relayd itself: odd SNS
// answers, and what each event ends up as (acked once only on a Successful
// entry, retried, dead-lettered once, or still queued).
//
//   node drain_answers.mjs [scenario...]   (default: all)
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SUPPORT, TMP, check, done, fill, fixtures, routing, sleep, startDriver } from './drain_lib.mjs';

const { startFaultSns } = await import(pathToFileURL(path.join(SUPPORT, 'fault-sns.mjs')).href);
const CREDS = { accessKeyId: 'AKIDRELAYTEST', secretAccessKey: 'relay-test-secret' };
const STD = 'arn:aws:sns:us-east-1:123456789012:relay-review';
const FAST = { 'retry-base': 20, 'retry-max': 400 };
const XMLNS = 'http://sns.amazonaws.com/doc/2010-03-31/';

function events(n, { tag = 'r' } = {}) {
  const fx = fixtures().filter((x) => !x.name.includes('large'));
  const run = crypto.randomUUID().slice(0, 8);
  const out = [];
  for (let i = 0; i < n; i++) {
    const o = JSON.parse(fx[i % fx.length].body.toString('utf8'));
    o.cid = `messaging:g${i % 7}`;
    o.relay_test = { run, seq: i };
    const body = Buffer.from(JSON.stringify(o));
    out.push({ i, body, ...routing(body), webhook_id: `${tag}-${run}-${i}` });
  }
  return out;
}
const seqOf = (msg) => { try { return JSON.parse(msg).relay_test.seq; } catch { return -1; } };

async function scenario(name, { evs, script = [], dflt = { do: 'ok' }, flags = {}, during, timeout = 60 }) {
  console.log(`-- ${name}`);
  const sns = await startFaultSns({ script, default: dflt, verify: CREDS });
  const dir = path.join(TMP, `q-${name}`);
  await fill(dir, evs);
  const drv = startDriver(dir, { topic: STD, endpoint: sns.endpoint, untilEmpty: true, timeout, statusMs: 50, flags: { ...FAST, ...flags } });
  if (during) await during(drv, sns);
  const res = await drv.exited;
  await sns.stop();
  check(res.code === 0, `${name}: driver exited 0 (${res.code})`);
  const statuses = drv.lines.filter((l) => l.ev === 'status' || l.ev === 'final');
  return { res, sns, statuses, final: res.final, dlq: res.dlq || [], drv };
}

// Events SNS accepted according to the stand-in: every entry of an "ok"
// answer, and for scripted raw answers the entries `okIds(req)` names.
function acceptedSeqs(sns, okIds = () => []) {
  const out = [];
  for (const r of sns.requests) {
    if (r.step === 'ok') for (const e of r.entries) out.push(seqOf(e.message));
    else if (r.step === 'status') {
      const ids = new Set(okIds(r));
      for (const e of r.entries) if (ids.has(e.id)) out.push(seqOf(e.message));
    }
  }
  return out;
}

function exactlyOnce(name, evs, seqs, final) {
  const count = new Map();
  for (const s of seqs) count.set(s, (count.get(s) || 0) + 1);
  const lost = evs.filter((e) => !count.has(e.i)).length;
  const dups = [...count.values()].filter((c) => c > 1).length;
  check(lost === 0, `${name}: every event accepted by SNS (${lost} missing)`);
  check(dups === 0, `${name}: none accepted twice (${dups})`);
  check(final && final.published === evs.length && final.ready === 0,
    `${name}: published ${final?.published} = ${evs.length}, ready ${final?.ready}`);
}

const only = new Set(process.argv.slice(2));
const want = (n) => only.size === 0 || only.has(n);

if (want('batch-ids')) {
  // Successful lists id 0 twice, an id out of range, a non-numeric one and
  // "01" (not an id that was sent); Failed lists id 1 (retryable) and id 0
  // again (so entry 0 is both Successful and Failed). Entries 2.. are not
  // mentioned. No entry has an unambiguous Successful member: none may be
  // acked on this answer, every one is retried until an "ok" answer.
  const body = `<PublishBatchResponse xmlns="${XMLNS}"><PublishBatchResult><Successful>` +
    '<member><Id>0</Id><MessageId>a</MessageId></member><member><Id>0</Id><MessageId>b</MessageId></member>' +
    '<member><Id>12</Id><MessageId>c</MessageId></member><member><Id>x</Id><MessageId>d</MessageId></member>' +
    '<member><Id>01</Id><MessageId>e</MessageId></member>' +
    '</Successful><Failed><member><Id>1</Id><Code>InternalFailure</Code><Message>m</Message><SenderFault>false</SenderFault></member>' +
    '<member><Id>0</Id><Code>InvalidParameter</Code><Message>m</Message><SenderFault>true</SenderFault></member>' +
    '</Failed></PublishBatchResult></PublishBatchResponse>';
  const evs = events(50);
  const r = await scenario('batch-ids', { evs, script: [{ do: 'status', status: 200, body, times: 8 }] });
  exactlyOnce('batch-ids', evs, acceptedSeqs(r.sns), r.final);
  check(r.dlq.length === 0, `batch-ids: nothing dead-lettered (${r.dlq.length})`);
}

if (want('redirect')) {
  // A 3xx (curl does not follow it): the endpoint is wrong, so publishing
  // is blocked, events stay queued, and it resumes once SNS answers.
  const evs = events(40);
  let blocked = null;
  const r = await scenario('redirect', {
    evs, script: [{ do: 'status', status: 301, body: '', headers: { location: 'http://127.0.0.1:1/' }, times: 3 }],
    during: async (drv) => { blocked = await drv.waitFor((l) => l.ev === 'status' && l.state === 'blocked', 10000); },
  });
  check(blocked !== null, 'redirect: a 3xx blocks publishing');
  exactlyOnce('redirect', evs, acceptedSeqs(r.sns), r.final);
  check(r.dlq.length === 0 && r.final.retried === 0, `redirect: nothing dead-lettered or retried (${r.dlq.length}, ${r.final.retried})`);
}

if (want('huge-answer')) {
  // A 200 over the 1 MiB answer cap: not trusted as an ack, retried.
  const evs = events(40);
  const big = `<PublishBatchResponse xmlns="${XMLNS}"><PublishBatchResult><Successful>` + ' '.repeat(2 << 20) + '</Successful></PublishBatchResult></PublishBatchResponse>';
  const r = await scenario('huge-answer', { evs, script: [{ do: 'status', status: 200, body: big, times: 2 }] });
  exactlyOnce('huge-answer', evs, acceptedSeqs(r.sns), r.final);
  check(r.dlq.length === 0, `huge-answer: nothing dead-lettered (${r.dlq.length})`);
}

// SNS's size of an event: body plus name + "String" + value per attribute.
function snsSize(e) {
  let n = e.body.length;
  for (const k of ['type', 'cid', 'channel_type', 'channel_id', 'user_id', 'webhook_id'])
    if (e[k]) n += k.length + 6 + Buffer.byteLength(e[k]);
  return n;
}
function padTo(e, size) {
  const o = JSON.parse(e.body.toString('utf8'));
  o.pad = '';
  let body = Buffer.from(JSON.stringify(o));
  const base = snsSize({ ...e, body });
  o.pad = 'p'.repeat(size - base);
  body = Buffer.from(JSON.stringify(o));
  const out = { ...e, body };
  if (snsSize(out) !== size) throw new Error(`padTo: ${snsSize(out)} != ${size}`);
  return out;
}

if (want('edge-256k')) {
  // Exactly 256 KiB with attributes goes out (alone); one byte more is
  // too_large; two halves share one request.
  const base = events(6);
  const evs = [padTo(base[0], 262144), padTo(base[1], 262145), padTo(base[2], 131072), padTo(base[3], 131072),
    padTo(base[4], 262144 - 100), base[5]];
  const r = await scenario('edge-256k', { evs, flags: { batch: 10 } });
  const seqs = acceptedSeqs(r.sns);
  const got = new Set(seqs);
  check([0, 2, 3, 4, 5].every((i) => got.has(i)) && !got.has(1) && seqs.length === 5, `edge-256k: the fitting ones accepted once (${seqs.join(',')})`);
  check(r.dlq.length === 1 && r.dlq[0].reason === 'too_large' && r.dlq[0].webhook_id === evs[1].webhook_id, 'edge-256k: the 262145-byte one is too_large');
  const sizes = r.sns.requests.map((q) => q.entries.reduce((a, e) => a + snsSize({ body: Buffer.from(e.message), ...e.attributes }), 0));
  check(sizes.every((s) => s <= 262144), `edge-256k: every request within 256 KiB (${sizes.join(',')})`);
}

// ---- relayd end to end -------------------------------------------------------

const BIN = process.env.RELAY_BIN_DIR || path.join(path.dirname(process.env.RELAY_TEST_BIN_DIR || ''), 'bin');
const KEY = 'review-key', SECRET = 'review-secret';

function startRelayd(dataDir, extraEnv) {
  const env = {
    PATH: process.env.PATH, HOME: TMP,
    RELAY_LISTEN: '127.0.0.1:0', RELAY_ADMIN_LISTEN: '127.0.0.1:0', RELAY_DATA_DIR: dataDir,
    RELAY_STREAM_API_KEY: KEY, RELAY_STREAM_API_SECRET: SECRET, RELAY_SNS_TOPIC_ARN: STD,
    RELAY_SNS_REGION: 'us-east-1', RELAY_LOG_LEVEL: 'info', AWS_EC2_METADATA_DISABLED: 'true', ...extraEnv,
  };
  const p = spawn(path.join(BIN, 'relayd'), [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const h = { p, log: '', ports: {} };
  h.ready = new Promise((resolve) => {
    p.stderr.on('data', (d) => {
      h.log += d;
      for (const line of String(d).split('\n')) {
        let o;
        try { o = JSON.parse(line); } catch { continue; }
        if (o.msg === 'ingest listening') h.ports.ingest = o.port;
        if (o.msg === 'admin listening') h.ports.admin = o.port;
        if (h.ports.ingest && h.ports.admin) resolve(true);
      }
    });
    p.on('exit', () => resolve(false));
    setTimeout(() => resolve(false), 15000);
  });
  h.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  return h;
}

function httpReq(port, method, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, headers }, (res) => {
      let b = '';
      res.on('data', (c) => { b += c; });
      res.on('end', () => { let j = b; try { j = JSON.parse(b); } catch { /* text */ } resolve({ status: res.statusCode, body: j }); });
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function postWebhook(h, e) {
  const sig = crypto.createHmac('sha256', SECRET).update(e.body).digest('hex');
  return httpReq(h.ports.ingest, 'POST', '/webhook', e.body, {
    'content-type': 'application/json', 'x-api-key': KEY, 'x-signature': sig, 'x-webhook-id': e.webhook_id,
    'content-length': String(e.body.length),
  });
}

if (want('creds-refresh-fails')) {
  // Temporary credentials from a container endpoint that fails for a while
  // mid-drain: the credentials expire, publishing waits (blocked, nothing
  // dead-lettered), and once the endpoint answers again everything that got
  // a 200 is published once, without a restart.
  console.log('-- creds-refresh-fails');
  let failing = false, served = 0;
  const cs = http.createServer((req, res) => {
    if (failing) { res.writeHead(500); res.end('down'); return; }
    served++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ AccessKeyId: CREDS.accessKeyId, SecretAccessKey: CREDS.secretAccessKey, Token: `tok-${served}-${'t'.repeat(40)}`,
      Expiration: new Date(Date.now() + 6000).toISOString() }));
  });
  await new Promise((r) => cs.listen(0, '127.0.0.1', r));
  const sns = await startFaultSns({ verify: CREDS });
  const dataDir = path.join(TMP, 'relayd-creds');
  fs.mkdirSync(dataDir, { recursive: true });
  const rd = startRelayd(dataDir, {
    RELAY_SNS_ENDPOINT: sns.endpoint, RELAY_RETRY_BASE_MS: '50', RELAY_RETRY_MAX_MS: '1000',
    AWS_CONTAINER_CREDENTIALS_FULL_URI: `http://127.0.0.1:${cs.address().port}/creds`,
  });
  check(await rd.ready, 'creds-refresh-fails: relayd started');
  const evs = events(200, { tag: 'cr' });
  const ok = [];
  let sawBlocked = null;
  for (let k = 0; k < evs.length; k++) {
    if (k === 20) failing = true;
    if (k === 150) failing = false;
    const r = await postWebhook(rd, evs[k]);
    if (r.status === 200) ok.push(evs[k]);
    if (k % 10 === 0 && !sawBlocked) {
      const st = await httpReq(rd.ports.admin, 'GET', '/v1/stats');
      if (st.body.drainer === 'blocked') sawBlocked = st.body;
    }
    await sleep(60);
  }
  check(ok.length === evs.length, `creds-refresh-fails: every event answered 200 (${ok.length})`);
  let st = null;
  for (let t = 0; t < 60; t++) {
    st = (await httpReq(rd.ports.admin, 'GET', '/v1/stats')).body;
    if (st.ready === 0 && st.inflight === 0) break;
    await sleep(500);
  }
  check(sawBlocked !== null, `creds-refresh-fails: blocked while the credentials were expired (${sawBlocked?.last_error?.code ?? JSON.stringify(sawBlocked?.last_error)})`);
  const acc = new Map();
  for (const q of sns.requests) if (q.step === 'ok') for (const e of q.entries) acc.set(e.attributes.webhook_id, (acc.get(e.attributes.webhook_id) || 0) + 1);
  const lost = ok.filter((e) => !acc.has(e.webhook_id)).length;
  check(lost === 0, `creds-refresh-fails: all published once the endpoint is back (${lost} missing; ready ${st.ready})`);
  check([...acc.values()].every((c) => c === 1), 'creds-refresh-fails: none twice');
  check(st.dlq === 0 && st.drainer === 'running', `creds-refresh-fails: nothing dead-lettered, running (${st.dlq}, ${st.drainer})`);
  check(!rd.log.includes('tok-'), 'creds-refresh-fails: no session token in the log');
  rd.p.kill('SIGTERM');
  const ex = await rd.exited;
  check(ex.code === 0, `creds-refresh-fails: exit 0 on SIGTERM (${ex.code})`);
  await sns.stop();
  cs.close();
}

if (want('expired-unreachable')) {
  // SNS refuses connections for good; every queued event is past
  // RELAY_RETRY_MAX_AGE: each goes to the DLQ as expired exactly once
  // (standard and FIFO topics), none is lost.
  for (const topic of [STD, `${STD}.fifo`]) {
    const name = topic.endsWith('.fifo') ? 'expired-unreachable-fifo' : 'expired-unreachable';
    console.log(`-- ${name}`);
    const old = Date.now() - 2 * 86400 * 1000;
    const evs = events(120, { tag: name }).map((e) => ({ ...e, cid: `messaging:g${e.i % 3}`, received_ms: old }));
    const dead = http.createServer();
    await new Promise((r) => dead.listen(0, '127.0.0.1', r));
    const port = dead.address().port;
    await new Promise((r) => dead.close(r));
    const dir = path.join(TMP, `q-${name}`);
    await fill(dir, evs);
    const drv = startDriver(dir, { topic, endpoint: `http://127.0.0.1:${port}`, untilEmpty: true, timeout: 60, statusMs: 100,
      flags: { 'retry-base': 50, 'retry-max': 200, concurrency: 4 } });
    const res = await drv.exited;
    check(res.code === 0, `${name}: driver exited 0 (${res.code})`);
    const ids = (res.dlq || []).map((d) => d.webhook_id);
    const uniq = new Set(ids);
    check(ids.length === evs.length && uniq.size === evs.length && evs.every((e) => uniq.has(e.webhook_id)),
      `${name}: all ${evs.length} in the DLQ once (${ids.length}, ${uniq.size} distinct)`);
    check((res.dlq || []).every((d) => d.reason === 'expired'), `${name}: reason expired`);
    check(res.final.dead_expired === evs.length, `${name}: counted once each (${res.final.dead_expired})`);
  }
}

if (want('throttled-batch')) {
  // SNS answers 200 but throttles every entry of the batch (Failed,
  // code Throttled): that is SNS throttling the request as a whole, so the
  // drainer backs off and probes one request at a time, as for a
  // request-level Throttling, instead of sending the backlog back to back
  // at concurrency 1.
  const evs = events(1500);
  const thr = { code: 'Throttled', message: 'Rate exceeded', senderFault: true };
  const failed = Object.fromEntries([...Array(10).keys()].map((i) => [String(i), thr]));
  const r = await scenario('throttled-batch', {
    evs, flags: { concurrency: 8, 'retry-base': 50, 'retry-max': 400 },
    script: [{ do: 'partial', failed, times: 20 }],
  });
  exactlyOnce('throttled-batch', evs, acceptedSeqs(r.sns), r.final);
  check(r.dlq.length === 0, `throttled-batch: nothing dead-lettered (${r.dlq.length})`);
  check(r.statuses.some((l) => l.state === 'backoff'), 'throttled-batch: the drainer backs off as a whole');
  const at = r.sns.requests.filter((q) => q.step === 'partial').map((q) => q.at).sort((a, b) => a - b);
  // The first wave (8 in flight) may overlap; every later one is a probe
  // sent after a backoff of at least RELAY_RETRY_BASE_MS.
  const gaps = at.slice(10).map((t, k) => t - at[9 + k]);
  check(at.length === 20 && gaps.every((g) => g >= 45),
    `throttled-batch: one probe per backoff after the first wave (gaps ${gaps.join(',')} ms)`);
  check(r.final.state === 'running', `throttled-batch: running again (${r.final.state})`);
}

done();
