// Operations end to end: every relayctl command against a running relayd.
//
// Phase 1, relayd publishing to the fault-injecting SNS stand-in
// (tests/support/fault-sns.mjs): events whose body contains POISON are
// refused for good (InvalidParameter, SenderFault) and an event over a
// lowered RELAY_MAX_MESSAGE_BYTES is stored straight into the DLQ; both are
// listed with their reasons. test-sns succeeds, then fails with the AWS code
// once the stand-in answers AuthorizationError, which also blocks the
// drainer (stats shows it and the last error). relayd is stopped and its
// data directory read with --data-dir.
//
// Phase 2, the same data directory, relayd publishing to fauxqs (the causes
// are fixed: a working SNS, the default size limit): stats match what was
// posted and published (checked against what arrives in SQS), pause/resume,
// the DLQ entries are replayed and arrive, an event over SNS's own limit goes
// back to the DLQ and is purged, /metrics passes promtool, and the admin
// token is enforced.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const SRC = process.env.RELAY_SOURCE_DIR;
const BIN = process.env.RELAY_BIN_DIR;
const SHARED = process.env.RELAY_SHARED_DIR;
const TMP = process.env.RELAY_TEST_TMP || fs.mkdtempSync('/tmp/ops-e2e-');
const SUPPORT = path.join(SRC, 'tests/support');
const { startFauxqs } = await import(path.join(SUPPORT, 'fauxqs.mjs'));
const { startFaultSns } = await import(path.join(SUPPORT, 'fault-sns.mjs'));
const { postEvent } = await import(path.join(SUPPORT, 'webhook.mjs'));

const TOKEN = 'ops-test-token-0123456789';
const API_KEY = 'opskey';
const SECRET = 'ops-secret';
const DATA = path.join(TMP, 'data');
fs.mkdirSync(DATA, { recursive: true });

let failures = 0;
function check(cond, what, extra) {
  if (cond) console.log(`ok   ${what}`);
  else {
    failures++;
    console.log(`FAIL ${what}${extra !== undefined ? `: ${typeof extra === 'string' ? extra : JSON.stringify(extra)}` : ''}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

let relayd = null;
let ports = null;
let relaydLog = '';

async function startRelayd(snsEndpoint, topicArn, extraEnv = {}) {
  ports = { ingest: await freePort(), admin: await freePort() };
  const env = {
    PATH: process.env.PATH,
    RELAY_LISTEN: `127.0.0.1:${ports.ingest}`,
    RELAY_ADMIN_LISTEN: `127.0.0.1:${ports.admin}`,
    RELAY_ADMIN_TOKEN: TOKEN,
    RELAY_DATA_DIR: DATA,
    RELAY_QUEUE_MAX_BYTES: '256MiB',
    RELAY_STREAM_API_KEY: API_KEY,
    RELAY_STREAM_API_SECRET: SECRET,
    RELAY_SNS_TOPIC_ARN: topicArn,
    RELAY_SNS_ENDPOINT: snsEndpoint,
    RELAY_RETRY_BASE_MS: '50',
    RELAY_RETRY_MAX_MS: '500',
    RELAY_LOG_LEVEL: 'info',
    AWS_ACCESS_KEY_ID: 'AKIDOPSTEST',
    AWS_SECRET_ACCESS_KEY: 'ops-test-secret',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    ASAN_OPTIONS: process.env.ASAN_OPTIONS || '',
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || '',
    ...extraEnv,
  };
  relaydLog = '';
  relayd = spawn(path.join(BIN, 'relayd'), [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  relayd.stderr.on('data', (d) => { relaydLog += d; });
  relayd.exitPromise = new Promise((r) => relayd.on('exit', (code, signal) => r({ code, signal })));
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${ports.admin}/healthz`);
      if (r.status === 200) return;
    } catch { /* not up yet */ }
    if (relayd.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`relayd did not come up:\n${relaydLog}`);
}

async function stopRelayd() {
  relayd.kill('SIGTERM');
  const r = await Promise.race([relayd.exitPromise, sleep(15000).then(() => null)]);
  check(r && r.code === 0, 'relayd stops cleanly on SIGTERM', r || 'timeout');
  if (!r) relayd.kill('SIGKILL');
  relayd = null;
}

// relayctl with the admin URL and token from the environment, as an operator
// would set them. Returns {code, out, err, json}.
// Asynchronous on purpose: the SNS stand-ins run in this process and must
// keep answering while relayctl waits for relayd.
function ctl(args, { token = TOKEN, env = {} } = {}) {
  const e = { PATH: process.env.PATH, RELAY_ADMIN_LISTEN: `127.0.0.1:${ports.admin}`, ...env };
  if (token) e.RELAY_ADMIN_TOKEN = token;
  e.ASAN_OPTIONS = process.env.ASAN_OPTIONS || '';
  return new Promise((resolve) => {
    const p = spawn(path.join(BIN, 'relayctl'), args, { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), 60000);
    p.on('close', (code) => {
      clearTimeout(timer);
      let json;
      try { json = JSON.parse(out); } catch { json = undefined; }
      resolve({ code, out, err, json });
    });
  });
}

async function stats() {
  const r = await fetch(`http://127.0.0.1:${ports.admin}/v1/stats`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return r.json();
}
async function waitStats(pred, what, ms = 30000) {
  const t0 = Date.now();
  let s;
  while (Date.now() - t0 < ms) {
    s = await stats();
    if (pred(s)) {
      check(true, what);
      return s;
    }
    await sleep(100);
  }
  check(false, what, s);
  return s;
}

const fixture = (n) => fs.readFileSync(path.join(SHARED, 'fixtures/events', n));
const normalBody = fixture('message.new.json');
const largeBody = fixture('message.new-large.json');        // ~200 KiB: valid for SNS
const tooLargeBody = fixture('message.new-too-large.json'); // ~320 KiB: over SNS's limit
const poisonBody = (i) => Buffer.from(JSON.stringify({ type: 'custom.poison', cid: 'messaging:poison', n: i, note: 'POISON' }));

// Runs relayctl on a pseudo-terminal (python's pty), typing `input`.
function onTty(args, input) {
  const py = `
import os, pty, sys, time, select
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b''
sent = False
while True:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            d = os.read(fd, 4096)
        except OSError:
            break
        if not d:
            break
        out += d
    if not sent and b'[y/N]' in out:
        os.write(fd, sys.stdin.buffer.read())
        sent = True
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf8', 'replace'))
sys.exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 99)
`;
  const e = { PATH: process.env.PATH, RELAY_ADMIN_LISTEN: `127.0.0.1:${ports.admin}`, RELAY_ADMIN_TOKEN: TOKEN,
    ASAN_OPTIONS: process.env.ASAN_OPTIONS || '' };
  const r = spawnSync('python3', ['-c', py, path.join(BIN, 'relayctl'), ...args], { env: e, input, encoding: 'utf8', timeout: 30000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

async function post(body, webhookId) {
  const r = await postEvent({ url: `http://127.0.0.1:${ports.ingest}/webhook`, body, apiKey: API_KEY, secret: SECRET, webhookId });
  return r.status;
}

try {
  // ---------------- Phase 1: fault-injecting SNS ----------------------------
  const poisonStep = { contains: 'POISON', code: 'InvalidParameter', message: 'Invalid parameter: poison', senderFault: true };
  const fault = await startFaultSns({ default: { do: 'ok', poison: poisonStep } });
  const faultArn = 'arn:aws:sns:us-east-1:000000000000:relay-ops';
  await startRelayd(fault.endpoint, faultArn, { RELAY_MAX_MESSAGE_BYTES: '100000' });

  // Token enforcement, through relayctl.
  let r = await ctl(['stats'], { token: null });
  check(r.code === 1 && /needs a token/.test(r.err), 'no token: exit 1 and a clear message', r);
  r = await ctl(['stats'], { token: 'wrong' });
  check(r.code === 1 && /wrong token/.test(r.err), 'wrong token: exit 1 and a clear message', r);
  r = await ctl(['--token', TOKEN, 'stats', '--json'], { token: null });
  check(r.code === 0 && r.json && r.json.drainer === 'running', '--token works', r);

  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push(await post(normalBody, `p1-ok-${i}`));
  for (let i = 0; i < 2; i++) statuses.push(await post(poisonBody(i), `p1-poison-${i}`));
  statuses.push(await post(largeBody, 'p1-large'));
  check(statuses.every((s) => s === 200), 'phase 1: every event answered 200', statuses);

  let s = await waitStats((x) => x.ready === 0 && x.dlq === 3, 'phase 1: queue drained, 3 in the DLQ');
  check(s.dlq_by_reason && s.dlq_by_reason.rejected === 2 && s.dlq_by_reason.too_large === 1, 'DLQ by reason: rejected 2, too_large 1', s.dlq_by_reason);
  check(s.published_total === 5, 'published_total = 5', s.published_total);
  check(s.received_total === 8, 'received_total = 8', s.received_total);
  const published1 = fault.requests.flatMap((q) => q.entries || []).filter((e) => !String(e.message).includes('POISON'));
  check(published1.length >= 5, 'the stand-in received the 5 good events', published1.length);

  r = await ctl(['dlq', 'list', '--json', '--reason', 'rejected']);
  check(r.code === 0 && r.json.entries.length === 2, 'dlq list --reason rejected: 2 entries', r.out);
  check(r.json && r.json.entries.every((e) => e.reason === 'rejected' && e.code === 'InvalidParameter' && e.type === 'custom.poison'),
    'rejected entries keep the AWS code and type', r.json && r.json.entries);
  r = await ctl(['dlq', 'list']);
  check(r.code === 0 && /REASON/.test(r.out) && /too_large/.test(r.out) && /InvalidParameter/.test(r.out), 'dlq list: human table with reasons', r.out);
  r = await ctl(['dlq', 'list', '--json', '--reason', 'too_large']);
  const largeId = r.json && r.json.entries[0] && r.json.entries[0].id;
  check(r.json && r.json.entries.length === 1 && r.json.entries[0].size === largeBody.length, 'too_large entry listed with its size', r.out);
  r = await ctl(['dlq', 'show', String(largeId), '--json']);
  check(r.code === 0 && r.json && r.json.body === largeBody.toString('utf8'), 'dlq show: the exact original body', r.code);
  r = await ctl(['dlq', 'show', '987654321']);
  check(r.code === 1 && /no DLQ entry with id 987654321/.test(r.err), 'dlq show unknown id: exit 1, clear error', r);

  r = await ctl(['test-sns']);
  check(r.code === 0 && /MessageId/.test(r.out), 'test-sns: success with the MessageId', r);
  const testReq = fault.requests.find((q) => (q.entries || []).some((e) => /relay\.test/.test(e.message)));
  check(!!testReq, 'test-sns reached the topic');

  // A configuration error: test-sns shows the code; the drainer blocks.
  fault.setScript([], { do: 'error', status: 403, code: 'AuthorizationError', message: 'User is not authorized', type: 'Sender' });
  r = await ctl(['test-sns']);
  check(r.code === 1 && /AuthorizationError/.test(r.out + r.err), 'test-sns: AWS error code, exit 1', r);
  check((await post(normalBody, 'p1-blocked')) === 200, 'event accepted while SNS refuses');
  s = await waitStats((x) => x.drainer === 'blocked', 'drainer blocked on AuthorizationError');
  check(/AuthorizationError/.test(s.last_error || ''), 'stats last_error names the AWS code', s.last_error);
  r = await ctl(['stats']);
  check(r.code === 0 && /Drainer +blocked/.test(r.out) && /Last error +AuthorizationError/.test(r.out), 'relayctl stats shows blocked and the error', r.out);
  check(s.ready === 1 && s.dlq === 3, 'the event stays queued, never dead-lettered', s);
  fault.setScript([], { do: 'ok', poison: poisonStep });
  r = await ctl(['resume']);
  check(r.code === 0, 'resume after the fix', r);
  await waitStats((x) => x.ready === 0 && x.drainer === 'running' && x.published_total === 6, 'published once SNS accepts again');
  await stopRelayd();
  await fault.stop();

  // ---------------- Offline: a stopped relayd's data directory ----------------
  r = await ctl(['--data-dir', DATA, 'stats', '--json']);
  check(r.code === 0 && r.json && r.json.dlq === 3 && r.json.ready === 0 && r.json.published_total === 6, 'offline stats', r.out + r.err);
  r = await ctl(['--data-dir', DATA, 'dlq', 'list', '--json']);
  check(r.code === 0 && r.json && r.json.entries.length === 3, 'offline dlq list', r.out + r.err);
  r = await ctl(['--data-dir', DATA, 'dlq', 'show', String(largeId), '--json']);
  check(r.code === 0 && r.json && r.json.body === largeBody.toString('utf8'), 'offline dlq show', r.code);
  r = await ctl(['--data-dir', DATA, 'stats']);
  check(r.code === 0 && /rejected 2/.test(r.out) && /too_large 1/.test(r.out), 'offline human stats', r.out);

  // ---------------- Phase 2: fauxqs, causes fixed ------------------------------
  const fx = await startFauxqs({});
  await startRelayd(fx.endpoint, fx.topicArn);
  r = await ctl(['stats', '--json']);
  check(r.code === 0 && r.json.dlq === 3 && r.json.published_total === 6, 'the DLQ survived the restart', r.out);

  r = await ctl(['pause']);
  check(r.code === 0 && /paused/.test(r.out), 'pause', r);
  for (let i = 0; i < 10; i++) await post(normalBody, `p2-${i}`);
  s = await waitStats((x) => x.ready === 10, 'paused: 10 events wait in the queue');
  r = await ctl(['stats', '--json']);
  check(r.json && r.json.drainer === 'paused' && r.json.ready === 10 && r.json.ready_bytes === 10 * normalBody.length,
    'stats --json: paused, ready 10, ready_bytes', r.out);
  check(r.json && r.json.oldest_ready_age_s >= 0 && r.json.received_total === 19, 'received_total counts every stored event', r.json && r.json.received_total);
  r = await ctl(['resume']);
  check(r.code === 0 && /running/.test(r.out), 'resume', r);
  await waitStats((x) => x.ready === 0 && x.published_total === 16, 'published_total = 16 after resume');
  let got = await fx.drain(fx.queues.all.url, { expect: 10, timeoutMs: 10000 });
  check(got.length === 10 && got.every((m) => m.body === normalBody.toString('utf8')), 'SQS received exactly the 10 events', got.length);

  check((await post(tooLargeBody, 'p2-too-large')) === 200, 'over-size event answered 200');
  await waitStats((x) => x.dlq === 4 && x.dlq_by_reason.too_large === 2, 'over-size event in the DLQ as too_large');

  // Replays: the causes are fixed for the poison events and the 200 KiB one.
  r = await ctl(['dlq', 'replay', '--all', '--reason', 'rejected']);
  check(r.code === 0 && /replayed 2 of 2/.test(r.out), 'dlq replay --all --reason rejected', r);
  r = await ctl(['dlq', 'replay', '--all', '--reason', 'too_large', '--json']);
  check(r.code === 0 && r.json && r.json.replayed === 2, 'dlq replay --all --reason too_large', r);
  s = await waitStats((x) => x.ready === 0 && x.dlq === 1 && x.published_total === 19, 'replayed events published; the one over SNS\'s limit is back');
  got = await fx.drain(fx.queues.all.url, { expect: 3, timeoutMs: 10000 });
  const bodies = got.map((m) => m.body);
  check(got.length === 3, 'SQS received the 3 replayed events', got.length);
  check(bodies.filter((b) => b.includes('POISON')).length === 2, 'both poison events arrived after replay');
  check(bodies.includes(largeBody.toString('utf8')), 'the 200 KiB event arrived intact after replay');
  r = await ctl(['dlq', 'list', '--json']);
  check(r.json && r.json.entries.length === 1 && r.json.entries[0].reason === 'too_large' && r.json.entries[0].size === tooLargeBody.length,
    'only the 320 KiB event remains, as too_large', r.out);

  // While relayd runs, --data-dir reads the same numbers (read-only).
  r = await ctl(['--data-dir', DATA, 'stats', '--json']);
  check(r.code === 0 && r.json && r.json.dlq === 1 && r.json.published_total === 19, '--data-dir while relayd runs', r.out + r.err);
  const leftId = r.json && (await ctl(['dlq', 'list', '--json'])).json.entries[0].id;
  // dlq show pretty-prints the body on a terminal.
  let t = onTty(['dlq', 'show', String(leftId)], '');
  check(t.code === 0 && /\n {2,}"type": "message\.new"/.test(t.out) && /reason +too_large/.test(t.out), 'terminal: dlq show pretty-prints the body', t.out.slice(0, 400));

  // On a terminal, --all asks first and shows a progress bar.
  t = onTty(['dlq', 'purge', '--all'], 'n\n');
  check(t.code === 1 && /Purge .*1 DLQ entry\? \[y\/N\]/.test(t.out) && /nothing done/.test(t.out), 'terminal: purge --all asks; "n" does nothing', t);
  check((await stats()).dlq === 1, 'declined purge kept the entry');
  t = onTty(['dlq', 'purge', '--all'], 'y\n');
  check(t.code === 0 && /purged 1 of 1/.test(t.out) && /\[#+\] 1\/1/.test(t.out), 'terminal: "y" purges with a progress bar', t);

  r = await ctl(['dlq', 'purge', '--all']);
  check(r.code === 0 && /nothing to purge/.test(r.out), 'dlq purge --all (not a terminal: no question)', r);
  s = await stats();
  check(s.dlq === 0 && s.dlq_bytes === 0, 'purge removed it', s);
  r = await ctl(['dlq', 'list']);
  check(r.code === 0 && /no entries/.test(r.out), 'dlq list: empty', r.out);

  // Final numbers: what was posted and published.
  r = await ctl(['stats', '--json']);
  check(r.json && r.json.published_total === 19 && r.json.ready === 0 && r.json.dead_lettered_total >= 4, 'final stats', r.out);
  r = await ctl(['stats']);
  check(r.code === 0 && /Published +19 total/.test(r.out) && /Drainer +running/.test(r.out), 'human stats', r.out);

  // /metrics: format checked by promtool; values consistent with the above.
  const m = await (await fetch(`http://127.0.0.1:${ports.admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
  const p = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
  check(p.status === 0, 'promtool check metrics', (p.error ? String(p.error) : '') + p.stdout + p.stderr);
  check(/\nrelay_queue_depth 0\n/.test(m) && /\nrelay_dlq_depth 0\n/.test(m), 'queue gauges in /metrics');
  const okPub = Number((m.match(/\nrelay_sns_messages_total\{result="ok"\} (\d+)/) || [])[1]);
  check(okPub >= 13, 'relay_sns_messages_total{result="ok"} counts the publishes', okPub);
  check(/\nrelay_drainer_state\{state="running"\} 1\n/.test(m), 'drainer state gauge');
  const unauth = await fetch(`http://127.0.0.1:${ports.admin}/metrics`);
  check(unauth.status === 401, '/metrics needs the token too', unauth.status);

  // --watch refreshes until interrupted, then exits 0.
  const w = spawnSync(path.join(BIN, 'relayctl'), ['stats', '--watch', '--interval', '0.3'], {
    env: { PATH: process.env.PATH, RELAY_ADMIN_LISTEN: `127.0.0.1:${ports.admin}`, RELAY_ADMIN_TOKEN: TOKEN, ASAN_OPTIONS: process.env.ASAN_OPTIONS || '' },
    encoding: 'utf8', timeout: 1600, killSignal: 'SIGINT' });
  const frames = (w.stdout.match(/^Ready /gm) || []).length;
  check(w.status === 0 && frames >= 3, 'stats --watch refreshes until Ctrl-C', { status: w.status, frames });

  r = await ctl(['version']);
  check(r.code === 0 && /^relayctl \d/.test(r.out), 'version', r.out);
  await stopRelayd();
  await fx.stop();
} catch (e) {
  failures++;
  console.log(`FAIL exception: ${e.stack || e}`);
  if (relaydLog) console.log(relaydLog.split('\n').slice(-30).join('\n'));
  if (relayd) relayd.kill('SIGKILL');
}
if (failures) {
  console.log(`${failures} check(s) failed`);
  if (relaydLog) console.log('--- relayd log (tail) ---\n' + relaydLog.split('\n').slice(-20).join('\n'));
  process.exit(1);
}
console.log('all checks passed');
process.exit(0);
