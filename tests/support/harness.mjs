// Durability harness: the oracle of TESTING.md as a library and a CLI.
//
// Every posted event carries a unique X-Webhook-Id and the same id inside its
// body (field "harness_id"), built from the fixtures in shared/fixtures/events.
// The Ledger records the sha256 of every body sent and every id that got a
// 2xx (the obligations). Deliveries are read from the SQS queue subscribed
// (raw delivery) to the fauxqs topic. verify() prints and returns
//   lost       obligations never delivered
//   corrupt    delivered copies whose body differs from what was posted
//   duplicates delivered copies beyond the first of an id
//   acked      number of obligations
//
// relayd never talks to fauxqs directly: it talks to a SnsSwitch, a TCP proxy
// on loopback whose mode a scenario flips:
//   'pass'  forward to fauxqs (delivered, the oracle sees it)
//   'fault' forward to a fault-sns stand-in (scripted errors, never delivered)
//   'down'  no listener: connection refused
//   'hold'  forward to fauxqs but keep its answers back until release():
//           SNS has accepted, relayd has not heard it yet (scenario 6)
//
// Library:
//   import { startStack, Ledger, burst, ... } from './harness.mjs'
// CLI (relayd from RELAY_BIN_DIR or build/bin):
//   node harness.mjs [--events N] [--clients C] [--kills K] [--max-template B]
//   prints "RESULT {json}" and a summary; exit 1 if lost or corrupt > 0.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFauxqs } from './fauxqs.mjs';
import { startFaultSns } from './fault-sns.mjs';
import { sign } from './webhook.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SRC = process.env.RELAY_SOURCE_DIR || path.resolve(HERE, '../..');
export const SHARED = process.env.RELAY_SHARED_DIR || path.resolve(SRC, '../shared');
export const BIN = process.env.RELAY_BIN_DIR || path.join(SRC, 'build/bin');
export const TEST_BIN = process.env.RELAY_TEST_BIN_DIR || path.join(path.dirname(BIN), 'tests');
export const SANITIZE = process.env.RELAY_SANITIZE === '1';
export const API_KEY = 'harness-key';
export const SECRET = 'harness-secret';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

export function tmpdir(name = 'harness') {
  const base = process.env.RELAY_TEST_TMP || os.tmpdir();
  return fs.mkdtempSync(path.join(base, `${name}-`));
}

// ---- checks -------------------------------------------------------------

let failures = 0;
export function check(cond, what) {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures++;
  return cond;
}
export function failed() { return failures; }

// One line per scenario for tools/prove.sh: printed, and appended to
// $PROVE_RESULTS when set.
export function result(obj) {
  const line = 'RESULT ' + JSON.stringify({ ...obj, checksFailed: failures, variant: process.argv.includes('--long') ? 'long' : 'short' });
  console.log(line);
  if (process.env.PROVE_RESULTS) fs.appendFileSync(process.env.PROVE_RESULTS, line + '\n');
}

export function finish() {
  if (failures) console.log(`${failures} check(s) failed`);
  else console.log('all checks passed');
  process.exit(failures ? 1 : 0);
}

// ---- events ---------------------------------------------------------------

// Fixture bodies split around the id: body = pre + id + post. Fixtures over
// maxBytes are left out (the 200 KiB ones would make bursts slow).
export function templates({ maxBytes = 16384, only = null } = {}) {
  const dir = path.join(SHARED, 'fixtures/events');
  const out = [];
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    if (only && !only.includes(name)) continue;
    const raw = fs.readFileSync(path.join(dir, name));
    if (raw.length > maxBytes) continue;
    const o = JSON.parse(raw.toString('utf8'));
    o.harness_id = '\u0000ID\u0000';
    const s = JSON.stringify(o);
    const [pre, post] = s.split('"\\u0000ID\\u0000"');
    out.push({ name, pre: Buffer.from(pre + '"'), post: Buffer.from('"' + post) });
  }
  if (!out.length) throw new Error('no fixture templates');
  return out;
}

export function makeBody(t, id) {
  return Buffer.concat([t.pre, Buffer.from(id), t.post]);
}

// ---- the ledger: what was sent, what was promised, what arrived -----------

export class Ledger {
  constructor() {
    this.sent = new Map();      // id -> sha256 of the body sent
    this.acked = new Set();     // ids answered 2xx
    this.delivered = new Map(); // id -> [sha256 of each delivered copy]
    this.unknown = 0;           // deliveries whose id was never sent
    this.idMismatch = 0;        // webhook_id attribute differs from the body's id
    this.status = {};           // HTTP status -> count ('err' = no answer)
    this.retryAfterMissing = 0; // 503 without Retry-After
    this.errors = [];           // the first few connection errors
    this.inflightAtKill = [];   // requests without an answer when relayd died
  }
  count(status) { this.status[status] = (this.status[status] || 0) + 1; }
  noteDelivery(id, body) {
    const h = sha256(body);
    if (!id || !this.sent.has(id)) { this.unknown++; return; }
    const l = this.delivered.get(id);
    if (l) l.push(h); else this.delivered.set(id, [h]);
  }
  verify(label = 'verify') {
    let lost = 0, corrupt = 0, duplicates = 0;
    const lostIds = [];
    for (const id of this.acked) {
      if (!this.delivered.has(id)) { lost++; if (lostIds.length < 10) lostIds.push(id); }
    }
    for (const [id, hashes] of this.delivered) {
      const want = this.sent.get(id);
      for (const h of hashes) if (h !== want) corrupt++;
      duplicates += hashes.length - 1;
    }
    const deliveredIds = this.delivered.size;
    const v = { acked: this.acked.size, sent: this.sent.size, deliveredIds, lost, corrupt, duplicates,
      unknown: this.unknown, lostIds };
    console.log(`${label}: sent ${v.sent}, acked ${v.acked}, delivered ids ${deliveredIds}, ` +
      `lost ${lost}, corrupt ${corrupt}, duplicates ${duplicates}, unknown ${this.unknown}` +
      (lostIds.length ? ` (lost e.g. ${lostIds.join(' ')})` : ''));
    return v;
  }
}

let idSeq = 0;
const RUN = crypto.randomBytes(3).toString('hex');
export function nextId(prefix = 'h') { return `${prefix}-${RUN}-${++idSeq}`; }

// One signed POST; resolves {status, headers} or {status: 'err'}.
export function post(port, body, id, agent, timeoutMs = 30000) {
  const headers = {
    'Content-Type': 'application/json', 'Content-Length': String(body.length),
    'X-Api-Key': API_KEY, 'X-Signature': sign(body, SECRET), 'X-Webhook-Id': id,
  };
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/webhook', method: 'POST', headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers }));
      res.on('error', () => resolve({ status: 'err' }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 'err', error: e.message }));
    req.end(body);
  });
}

// Posts from `clients` concurrent keep-alive clients until `count` events
// were sent, stop() was called, or (with stopOnError) relayd went away.
// `rate` (events/s, all clients together) paces a steady load.
// Returns {promise, stop(), sentNow()}.
export function burst(port, ledger, { count = Infinity, clients = 16, tpl = templates(), prefix = 'h',
  rate = 0, stopOnError = true, onStatus = null } = {}) {
  // fifo: every kept-alive socket stays busy, so none sits idle long enough
  // to race relayd's idle timeout (a client-side ECONNRESET, not a loss).
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients, scheduling: 'fifo' });
  let stopped = false, n = 0;
  const t0 = Date.now();
  const inflight = new Set();
  async function worker() {
    while (!stopped && n < count) {
      const i = n++;
      if (rate > 0) {
        const due = t0 + (i * 1000) / rate;
        if (due > Date.now()) await sleep(due - Date.now());
        if (stopped) break;
      }
      const id = nextId(prefix);
      const body = makeBody(tpl[i % tpl.length], id);
      ledger.sent.set(id, sha256(body));
      inflight.add(id);
      const r = await post(port, body, id, agent);
      inflight.delete(id);
      ledger.count(r.status);
      if (onStatus) onStatus(r, id);
      if (r.status === 'err' && ledger.errors.length < 10) ledger.errors.push(`${id}: ${r.error}`);
      if (r.status >= 200 && r.status < 300) ledger.acked.add(id);
      else if (r.status === 503 && !r.headers['retry-after']) ledger.retryAfterMissing++;
      else if (r.status === 'err' && stopOnError) { ledger.inflightAtKill.push(id); return; }
      else if (r.status === 503 && rate === 0) await sleep(50);
    }
  }
  const ws = [];
  for (let c = 0; c < clients; c++) ws.push(worker());
  const promise = Promise.all(ws).then(() => { agent.destroy(); return { sent: n }; });
  return { promise, stop: () => { stopped = true; }, sentNow: () => n, inflight };
}

// ---- SNS switch (TCP proxy) ---------------------------------------------

export async function startSnsSwitch(targets) {
  const socks = new Set();
  let mode = 'pass', server = null, port = 0;
  const held = []; // [fn] answers kept back in 'hold'
  const open = () => new Promise((resolve) => {
    server = net.createServer((c) => {
      const m = mode;
      const up = net.connect(m === 'fault' ? targets.fault : targets.pass, '127.0.0.1');
      socks.add(c); socks.add(up);
      c.on('data', (d) => up.write(d));
      up.on('data', (d) => {
        if (m === 'hold' && mode === 'hold') held.push(() => c.write(d));
        else c.write(d);
      });
      const end = () => { c.destroy(); up.destroy(); socks.delete(c); socks.delete(up); };
      c.on('error', end); up.on('error', end); c.on('close', end); up.on('close', end);
    });
    server.listen(port, '127.0.0.1', () => { port = server.address().port; resolve(); });
  });
  await open();
  const dropAll = () => { for (const s of socks) s.destroy(); socks.clear(); };
  return {
    get port() { return port; },
    get endpoint() { return `http://127.0.0.1:${port}`; },
    get mode() { return mode; },
    heldCount: () => held.length,
    // Existing connections are dropped so that the next request sees the
    // new mode (relayd keeps SNS connections alive).
    async set(m) {
      if (m === mode) return;
      const wasDown = mode === 'down';
      mode = m;
      if (m === 'down') {
        await new Promise((r) => { server.close(() => r()); dropAll(); });
        return;
      }
      dropAll();
      held.length = 0;
      if (wasDown) await open();
    },
    release() { const h = held.splice(0); for (const f of h) f(); },
    async stop() { if (mode !== 'down') await new Promise((r) => { server.close(() => r()); dropAll(); }); },
  };
}

// ---- relayd ---------------------------------------------------------------

export function relaydEnv(dataDir, snsEndpoint, topicArn, extra = {}) {
  const env = {
    PATH: process.env.PATH,
    RELAY_LISTEN: '127.0.0.1:0',
    RELAY_ADMIN_LISTEN: '127.0.0.1:0',
    RELAY_DATA_DIR: dataDir,
    RELAY_STREAM_API_KEY: API_KEY,
    RELAY_STREAM_API_SECRET: SECRET,
    RELAY_SNS_TOPIC_ARN: topicArn,
    RELAY_SNS_ENDPOINT: snsEndpoint,
    AWS_ACCESS_KEY_ID: 'AKIDHARNESS',
    AWS_SECRET_ACCESS_KEY: 'harness-aws-secret',
    AWS_EC2_METADATA_DISABLED: 'true',
    RELAY_LOG_LEVEL: 'warn',
    RELAY_RETRY_BASE_MS: '50',
    RELAY_RETRY_MAX_MS: '1000',
    ...extra,
  };
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'])
    if (process.env[k] && !env[k]) env[k] = process.env[k];
  return env;
}

// Starts relayd and resolves once it logged "relayd ready" (ports from its
// log lines; both listeners bind port 0). The log level is raised to info
// for start-up only in the sense that these lines are logged at info: we
// keep "warn" for the rest through RELAY_LOG_LEVEL unless told otherwise.
export function startRelayd(env, { wrapper = null, readyTimeoutMs = 30000 } = {}) {
  const e = { ...env };
  const bin = path.join(BIN, 'relayd');
  // Ports and readiness are info lines: run at info but keep only the tail.
  if (!e.RELAY_LOG_LEVEL || e.RELAY_LOG_LEVEL === 'warn') e.RELAY_LOG_LEVEL = 'info';
  const argv = wrapper ? [...wrapper, bin] : [bin];
  const proc = spawn(argv[0], argv.slice(1), { env: e, stdio: ['ignore', 'ignore', 'pipe'] });
  const r = { proc, logs: [], port: 0, adminPort: 0, lines: 0, sanitizer: [] };
  r.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  r.grep = (re) => r.logs.filter((l) => re.test(l));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('relayd not ready:\n' + r.logs.join('\n'))), readyTimeoutMs);
    proc.stderr.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        r.lines++;
        r.logs.push(line);
        if (/AddressSanitizer|LeakSanitizer|runtime error:/.test(line) && r.sanitizer.length < 50) r.sanitizer.push(line);
        if (r.logs.length > 2000) r.logs.splice(0, 1000);
        if (process.env.HARNESS_VERBOSE) process.stderr.write('relayd: ' + line + '\n');
        let o;
        try { o = JSON.parse(line); } catch { continue; }
        if (o.msg === 'ingest listening') r.port = Number(o.port);
        if (o.msg === 'admin listening') r.adminPort = Number(o.port);
        if (o.msg === 'relayd ready') { clearTimeout(timer); resolve(r); }
      }
    });
    r.exited.then((x) => { clearTimeout(timer); reject(new Error(`relayd exited ${JSON.stringify(x)}:\n${r.logs.join('\n')}`)); });
  });
}

export async function stopRelayd(r, signal = 'SIGTERM', timeoutMs = 30000) {
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) return r.exited;
  r.proc.kill(signal);
  const t = setTimeout(() => r.proc.kill('SIGKILL'), timeoutMs);
  const x = await r.exited;
  clearTimeout(t);
  return x;
}

export async function admin(r, method, p, body) {
  const res = await fetch(`http://127.0.0.1:${r.adminPort}${p}`, {
    method, headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json };
}
export async function stats(r) { return (await admin(r, 'GET', '/v1/stats')).json; }

// Waits until pred(stats) holds; returns the last stats (null on timeout).
export async function waitStats(r, pred, timeoutMs = 60000, everyMs = 200) {
  const t0 = Date.now();
  let s = null;
  while (Date.now() - t0 < timeoutMs) {
    try { s = await stats(r); } catch { s = null; }
    if (s && pred(s)) return s;
    await sleep(everyMs);
  }
  return null;
}

export function runRelayctl(args) {
  return new Promise((resolve) => {
    const p = spawn(path.join(BIN, 'relayctl'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// relayd environment for the LD_PRELOAD shim (tests/crash/sync_order_shim.c):
// sync-order counters to `out`, injected sync failures through `failFile`.
// `killFile`: relayd SIGKILLs itself right after the next commit point.
export function shimEnv({ out = null, failFile = null, killFile = null } = {}) {
  const e = { LD_PRELOAD: path.join(TEST_BIN, 'libsync_order_shim.so') };
  if (killFile) e.RELAY_TEST_SHIM_KILL_FILE = killFile;
  if (out) e.RELAY_TEST_SYNC_SHIM_OUT = out;
  if (failFile) e.RELAY_TEST_SHIM_FAIL_FILE = failFile;
  // The ASan runtime wants to come first; the shim has no sanitizer in it.
  if (SANITIZE) e.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':');
  return e;
}
export function readShim(out) {
  return Object.fromEntries(fs.readFileSync(out, 'utf8').trim().split(' ').map((kv) => kv.split('='))
    .map(([k, v]) => [k, Number(v)]));
}

// ---- the whole stack ------------------------------------------------------

// fauxqs + the SNS switch (+ fault-sns when asked) + relayd on a fresh
// data dir. stack.restart() starts relayd again on the same data dir.
export async function startStack({ relayEnv = {}, fault = false, faultOpts = {}, wrapper = null, dataDir = null } = {}) {
  const fx = await startFauxqs({});
  const f = fault ? await startFaultSns({ default: { do: 'ok' }, ...faultOpts }) : null;
  const sw = await startSnsSwitch({ pass: Number(new URL(fx.endpoint).port), fault: f ? Number(new URL(f.endpoint).port) : 9 });
  const dir = dataDir || path.join(tmpdir('stack'), 'data');
  const env = relaydEnv(dir, sw.endpoint, fx.topicArn, relayEnv);
  const s = { fx, fault: f, sw, dir, env, relayd: null };
  s.relayd = await startRelayd(env, { wrapper });
  const instances = [s.relayd];
  s.restart = async (opts = {}) => {
    s.relayd = await startRelayd({ ...env, ...(opts.env || {}) }, { wrapper: opts.wrapper ?? wrapper });
    instances.push(s.relayd);
    return s.relayd;
  };
  // Reads (and deletes) everything in the SQS queue into the ledger.
  s.collect = async (ledger, { expect = 0, timeoutMs = 30000 } = {}) => {
    const msgs = await fx.drain(fx.queues.all.url, { expect, timeoutMs, settleMs: 300 });
    for (const m of msgs) {
      const body = Buffer.from(m.body, 'utf8');
      let id = m.attributes.webhook_id, inner = null;
      try { inner = JSON.parse(m.body).harness_id; } catch { inner = null; }
      if (id && inner && id !== inner) ledger.idMismatch++;
      if (!id) id = inner;
      ledger.noteDelivery(id, body);
    }
    return msgs.length;
  };
  // What the fault stand-in accepted (answered ok, entry not poisoned) goes
  // into the ledger as delivered; its record is then forgotten.
  s.collectFault = (ledger, poison = null) => {
    let n = 0;
    for (const rec of f.requests) {
      if (rec.step !== 'ok') continue;
      for (const e of rec.entries || []) {
        if (poison && typeof e.message === 'string' && e.message.includes(poison)) continue;
        let id = e.attributes && e.attributes.webhook_id;
        if (!id) { try { id = JSON.parse(e.message).harness_id; } catch { id = null; } }
        ledger.noteDelivery(id, Buffer.from(e.message ?? '', 'utf8'));
        n++;
      }
    }
    f.reset();
    return n;
  };
  // DLQ entries (all pages), as GET /v1/dlq lists them.
  s.dlq = async (query = '') => {
    const out = [];
    let after = null;
    for (;;) {
      const q = `limit=500${after !== null ? `&after=${after}` : ''}${query ? `&${query}` : ''}`;
      const r = await admin(s.relayd, 'GET', `/v1/dlq?${q}`);
      if (r.status !== 200) throw new Error(`GET /v1/dlq: ${r.status} ${r.text}`);
      out.push(...r.json.entries);
      if (r.json.next_after === null || r.json.next_after === undefined) break;
      after = r.json.next_after;
    }
    return out;
  };
  s.relayctl = (args) => runRelayctl(['--admin', `http://127.0.0.1:${s.relayd.adminPort}`, ...args]);
  // Waits until relayd reports an empty queue (nothing ready or in flight),
  // then collects. Returns the number collected.
  s.settle = async (ledger, { timeoutMs = 120000 } = {}) => {
    const st = await waitStats(s.relayd, (x) => x.ready === 0 && x.inflight === 0, timeoutMs);
    let got = await s.collect(ledger, { timeoutMs: 2000 });
    // fauxqs fans out asynchronously: one more pass catches stragglers.
    got += await s.collect(ledger, { timeoutMs: 500 });
    return { drained: !!st, got };
  };
  // Stops everything; relayd must exit 0 on SIGTERM, and no instance
  // (killed ones included) may have printed a sanitizer report.
  s.stop = async () => {
    if (s.relayd) {
      const running = s.relayd.proc.exitCode === null && s.relayd.proc.signalCode === null;
      const x = await stopRelayd(s.relayd);
      if (running) check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
    }
    await sleep(50);
    const reports = instances.flatMap((r) => r.sanitizer);
    if (reports.length) console.log(reports.slice(0, 20).join('\n'));
    check(reports.length === 0, `no sanitizer report from relayd (${reports.length} lines)`);
    await sw.stop();
    if (f) await f.stop();
    await fx.stop();
  };
  return s;
}

// ---- scenario 1 as a function (used by the CLI and tests/crash) ------------

// kill -9 at a random moment of each burst, restart, repeat; at the end let
// the drainer empty the queue and compare. Returns the verify() object.
export async function killBursts({ events = 2000, clients = 16, kills = 3, commitKills = 0, relayEnv = {} } = {}) {
  const ledger = new Ledger();
  const killFile = path.join(tmpdir('kill'), 'kill-at-commit');
  const env = commitKills ? { ...shimEnv({ killFile }), ...relayEnv } : relayEnv;
  const stack = await startStack({ relayEnv: env });
  const tpl = templates();
  const concurrency = Number(stack.env.RELAY_PUBLISH_CONCURRENCY || 16);
  const batch = Number(stack.env.RELAY_PUBLISH_BATCH || 10);
  let killsDone = 0;
  const perBurst = events; // each round is a burst of `events`, cut by the kill
  const unanswered = []; // requests cut by a commit-point kill
  for (let k = 0; k < kills + commitKills; k++) {
    const atCommit = k >= kills;
    const b = burst(stack.relayd.port, ledger, { count: perBurst, clients, tpl, prefix: `k${k}` });
    // A random moment: after some share of the burst was sent.
    const at = Math.floor(perBurst * (0.1 + 0.8 * Math.random()));
    const t0 = Date.now();
    while (b.sentNow() < at && Date.now() - t0 < 120000) await sleep(5);
    const cut0 = ledger.inflightAtKill.length;
    if (atCommit) {
      // Only ingest commits from here on: the drainer is paused, so the
      // commit that dies is one holding webhook requests.
      await admin(stack.relayd, 'POST', '/v1/pause');
      // Requests already in flight to SNS still finish after the pause, and
      // their acks make commits of their own: arm the kill only once they
      // are settled (no lease left), or the commit that dies may hold no
      // webhook request at all.
      const t2 = Date.now();
      for (;;) {
        const s = await stats(stack.relayd);
        if ((s.inflight === 0 && s.inflight_requests === 0) || Date.now() - t2 > 10000) break;
        await sleep(5);
      }
      fs.writeFileSync(killFile, 'kill\n');
      const t1 = Date.now();
      while (stack.relayd.proc.exitCode === null && stack.relayd.proc.signalCode === null && Date.now() - t1 < 20000) await sleep(5);
    }
    stack.relayd.proc.kill('SIGKILL');
    const x = await stack.relayd.exited;
    killsDone++;
    b.stop();
    await b.promise;
    if (atCommit) {
      check(!fs.existsSync(killFile), `kill ${k + 1}: relayd killed itself right after a commit point (${x.signal})`);
      unanswered.push(...ledger.inflightAtKill.slice(cut0));
    }
    console.log(`kill ${k + 1}/${kills + commitKills}${atCommit ? ' (at a commit point)' : ''}: at ${b.sentNow()} of ${perBurst} sent, acked so far ${ledger.acked.size}`);
    // Collect what was delivered so far, then restart on the same data dir.
    await stack.collect(ledger, { timeoutMs: 500 });
    await stack.restart();
  }
  const st = await stack.settle(ledger, { timeoutMs: SANITIZE ? 300000 : 180000 });
  const v = ledger.verify('kill-9 bursts');
  v.kills = killsDone;
  v.drained = st.drained;
  // Requests whose commit was durable when relayd died but never answered:
  // they must be published anyway.
  v.unansweredDelivered = unanswered.filter((id) => ledger.delivered.has(id)).length;
  v.unanswered = unanswered.length;
  // A duplicate needs a publish in flight at a kill (at most concurrency x
  // batch records per kill).
  v.dupBound = killsDone * concurrency * batch;
  await stack.stop();
  return v;
}

// ---- CLI ----------------------------------------------------------------

async function main(argv) {
  const o = { events: 2000, clients: 16, kills: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--events') o.events = Number(argv[++i]);
    else if (a === '--clients') o.clients = Number(argv[++i]);
    else if (a === '--kills') o.kills = Number(argv[++i]);
    else { console.error('usage: harness.mjs [--events N] [--clients C] [--kills K]'); process.exit(2); }
  }
  let v;
  if (o.kills > 0) {
    v = await killBursts(o);
  } else {
    const ledger = new Ledger();
    const stack = await startStack({});
    const b = burst(stack.relayd.port, ledger, { count: o.events, clients: o.clients });
    await b.promise;
    await stack.settle(ledger);
    v = ledger.verify('burst');
    await stack.stop();
  }
  result({ scenario: 'harness', runs: Math.max(1, o.kills), acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates });
  process.exit(v.lost || v.corrupt ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main(process.argv.slice(2)).catch((e) => { console.error(e.stack || e.message); process.exit(1); });
}
