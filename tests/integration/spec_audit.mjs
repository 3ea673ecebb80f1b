// SPEC conformance checks against the real binaries (relayd, relayctl), one
// case per run (argument). Each covers a statement of ../shared/SPEC.md or
// the README that no other test exercised end to end.
//
//   listen_localhost  RELAY_LISTEN / RELAY_ADMIN_LISTEN "localhost:PORT", a
//                     form config accepts and --help documents: relayd must
//                     start and serve on it (it used to stop with "cannot
//                     listen ... invalid argument").
//   readyz_recovers   "GET /readyz 200 when the queue is open and below the
//                     watermark": after ingest commits failed (map full), the
//                     drainer empties the queue and /readyz must turn 200
//                     again WITHOUT new webhooks. A load balancer sends none
//                     to an unready replica, so waiting for a stored event
//                     kept it out of rotation for good.
//   metrics_counters  /metrics series of SPEC move with real traffic:
//                     relay_events_received_total, relay_events_rejected_total
//                     {reason}, relay_commit_duration_seconds,
//                     relay_sns_publish_total{result}, relay_queue_depth,
//                     relay_queue_bytes, relay_dlq_depth.
//   relayctl_flags    `relayctl --admin URL --token T COMMAND` with nothing in
//                     the environment; exit codes 0 / 1 / 2; /v1/stats and
//                     `stats --json` carry SPEC's fields; admin errors are
//                     JSON {"error"}; /healthz and /readyz stay open.
//   readyz_shutdown   after SIGTERM the webhook port stops accepting at once,
//                     but relayd may take seconds to finish (SNS requests in
//                     flight): /readyz must not say 200 meanwhile, or a load
//                     balancer keeps sending webhooks to a closed port.
//   second_relayd     README: "One relayd per data directory; a second one
//                     refuses to start": it exits 1 naming RELAY_DATA_DIR,
//                     and the first one goes on serving.
//   no_credentials    relayd without AWS credentials: `relayctl test-sns`
//                     (SPEC: "prints success or the AWS error code") names
//                     the reason, NoCredentials, as stats does; it used to
//                     print only "the drainer is not running".
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import net from 'node:net';

const SUPPORT = path.join(process.env.RELAY_SOURCE_DIR, 'tests/support');
const H = await import(path.join(SUPPORT, 'harness.mjs'));
const { startFaultSns } = await import(path.join(SUPPORT, 'fault-sns.mjs'));
const { check, finish, sleep, relaydEnv, stopRelayd, admin, waitStats, API_KEY, SECRET } = H;
// Every relayd started, so none outlives a case that failed half way.
const started = [];
async function startRelayd(env, opts) {
  const r = await H.startRelayd(env, opts);
  started.push(r);
  return r;
}
const { sign } = await import(path.join(SUPPORT, 'webhook.mjs'));

const ARN = 'arn:aws:sns:us-east-1:000000000000:spec-audit';
const TOKEN = 'spec-audit-token-42';

async function post(port, body, { webhookId, secret = SECRET, pathName = '/webhook', host = '127.0.0.1' } = {}) {
  const headers = { 'content-type': 'application/json', 'x-api-key': API_KEY, 'x-signature': sign(body, secret) };
  if (webhookId) headers['x-webhook-id'] = webhookId;
  const r = await fetch(`http://${host}:${port}${pathName}`, { method: 'POST', headers, body });
  return { status: r.status, retryAfter: r.headers.get('retry-after'), text: await r.text() };
}

async function get(port, p, token) {
  const r = await fetch(`http://127.0.0.1:${port}${p}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, text, json, type: r.headers.get('content-type') || '' };
}

// relayctl with an empty environment apart from PATH (and sanitizer options).
function relayctl(args) {
  const env = { PATH: process.env.PATH };
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) if (process.env[k]) env[k] = process.env[k];
  return new Promise((resolve) => {
    const p = spawn(path.join(H.BIN, 'relayctl'), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), 30000);
    p.on('close', (code) => {
      clearTimeout(t);
      let json;
      try { json = JSON.parse(out); } catch { json = undefined; }
      resolve({ code, out, err, json });
    });
  });
}

function metric(text, name) {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = text.match(new RegExp(`^${esc} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

const event = (i, pad = 0) => Buffer.from(JSON.stringify({ type: 'message.new', cid: 'messaging:audit', n: i, pad: 'x'.repeat(pad) }));

// ---------------------------------------------------------------------------

async function caseListenLocalhost(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, { RELAY_LISTEN: 'localhost:0', RELAY_ADMIN_LISTEN: 'localhost:0' });
  let r = null;
  try {
    r = await startRelayd(env, { readyTimeoutMs: 15000 });
  } catch (e) {
    check(false, `relayd starts with RELAY_LISTEN=localhost:0 (${String(e.message).split('\n').filter((l) => /error/.test(l)).join(' ')})`);
    return;
  }
  check(true, 'relayd starts with RELAY_LISTEN=localhost:0 and RELAY_ADMIN_LISTEN=localhost:0');
  const p = await post(r.port, event(1), { webhookId: 'lh-1' });
  check(p.status === 200, `webhook on localhost answered ${p.status}`);
  const h = await get(r.adminPort, '/healthz');
  check(h.status === 200, `/healthz on localhost answered ${h.status}`);
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

async function caseReadyzRecovers(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, { RELAY_QUEUE_MAX_BYTES: '1MiB' });
  const r = await startRelayd(env);
  check((await admin(r, 'POST', '/v1/pause')).status === 200, 'drainer paused while the queue fills');
  let full = null, stored = 0;
  for (let i = 0; i < 400 && !full; i++) {
    const p = await post(r.port, event(i, 20000), { webhookId: `fill-${i}` });
    if (p.status === 200) stored++;
    else full = p;
  }
  check(full && full.status === 503 && full.retryAfter, `a full queue answers 503 with Retry-After (${full && full.status} ${full && full.text}, after ${stored} stored)`);
  check((await get(r.adminPort, '/readyz')).status === 503, '/readyz 503 while ingest cannot store');
  check((await admin(r, 'POST', '/v1/resume')).status === 200, 'drainer resumed');
  const drained = await waitStats(r, (s) => s.ready === 0 && s.inflight === 0, 30000, 100);
  check(!!drained && drained.published_total === stored, `the drainer emptied the queue (${drained && drained.published_total} of ${stored} published)`);
  // No webhook from here on: an unready replica gets none from a load balancer.
  const t0 = Date.now();
  let st = 0;
  while (Date.now() - t0 < 25000) {
    st = (await get(r.adminPort, '/readyz')).status;
    if (st === 200) break;
    await sleep(250);
  }
  check(st === 200, `/readyz 200 again without new webhooks once the queue is empty (${st} after ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const m = await get(r.adminPort, '/metrics');
  check(metric(m.text, 'relay_ready') === 1, `relay_ready 1 (${metric(m.text, 'relay_ready')})`);
  const p = await post(r.port, event(9999), { webhookId: 'after' });
  check(p.status === 200, `ingest stores again (${p.status})`);
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

async function caseMetricsCounters(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, {});
  const r = await startRelayd(env);
  const before = (await get(r.adminPort, '/metrics')).text;
  const N = 5;
  for (let i = 0; i < N; i++) check((await post(r.port, event(i), { webhookId: `m-${i}` })).status === 200, `event ${i} stored`);
  check((await post(r.port, event(100), { webhookId: 'm-0' })).status === 200, 'duplicate answered 200');
  check((await post(r.port, event(101), { secret: 'wrong' })).status === 401, 'bad signature 401');
  check((await post(r.port, Buffer.from('{"no_type":1}'))).status === 400, 'no type 400');
  check((await post(r.port, event(102), { pathName: '/elsewhere' })).status === 404, 'other path 404');
  const s = await waitStats(r, (x) => x.published_total === N && x.ready === 0, 20000, 100);
  check(!!s, 'the stand-in accepted the events');
  const m = await get(r.adminPort, '/metrics');
  check(m.status === 200 && /^text\/plain/.test(m.type), `/metrics is Prometheus text (${m.type})`);
  const d = (name) => (metric(m.text, name) ?? NaN) - (metric(before, name) ?? 0);
  check(d('relay_events_received_total') === N + 1, `relay_events_received_total +${d('relay_events_received_total')} (stored + duplicate)`);
  check(d('relay_events_rejected_total{reason="bad_signature"}') === 1, 'rejected{reason="bad_signature"} +1');
  check(d('relay_events_rejected_total{reason="bad_request"}') === 1, 'rejected{reason="bad_request"} +1');
  check(d('relay_events_rejected_total{reason="not_found"}') === 1, 'rejected{reason="not_found"} +1');
  check(d('relay_events_rejected_total{reason="duplicate"}') === 1, 'rejected{reason="duplicate"} +1');
  check(d('relay_commit_duration_seconds_count') >= 1, 'relay_commit_duration_seconds observed commits');
  check(metric(m.text, 'relay_commit_duration_seconds_bucket{le="+Inf"}') === metric(m.text, 'relay_commit_duration_seconds_count'),
    'commit histogram: +Inf bucket = count');
  // The fsync part of each good commit (issue 6: "fsync duration histograms").
  check(d('relay_commit_fsync_duration_seconds_count') >= 1
    && metric(m.text, 'relay_commit_fsync_duration_seconds_count') === metric(m.text, 'relay_commit_duration_seconds_count'),
    'relay_commit_fsync_duration_seconds: one sample per (good) commit');
  check(metric(m.text, 'relay_commit_fsync_duration_seconds_sum') > 0
    && metric(m.text, 'relay_commit_fsync_duration_seconds_sum') <= metric(m.text, 'relay_commit_duration_seconds_sum'),
    'fsync time is part of the commit time');
  check(d('relay_sns_publish_total{result="ok"}') >= 1, 'relay_sns_publish_total{result="ok"} counts requests');
  check(d('relay_sns_publish_duration_seconds_count') === d('relay_sns_publish_total{result="ok"}'),
    'one publish duration per request');
  check(metric(m.text, 'relay_queue_depth') === 0 && metric(m.text, 'relay_queue_bytes') === 0, 'queue gauges back to 0');
  check(metric(m.text, 'relay_dlq_depth') === 0, 'relay_dlq_depth 0');
  check(metric(m.text, 'relay_queue_oldest_age_seconds') === 0, 'relay_queue_oldest_age_seconds 0 on an empty queue');
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

async function caseRelayctlFlags(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, { RELAY_ADMIN_TOKEN: TOKEN });
  const r = await startRelayd(env);
  check((await post(r.port, event(1), { webhookId: 'c-1' })).status === 200, 'one event stored');
  const url = `http://127.0.0.1:${r.adminPort}`;

  // Admin API: token, JSON errors, open probes.
  check((await get(r.adminPort, '/healthz')).status === 200, '/healthz needs no token');
  check((await get(r.adminPort, '/readyz')).status === 200, '/readyz needs no token');
  let g = await get(r.adminPort, '/v1/stats');
  check(g.status === 401 && typeof g.json?.error === 'string', `no token: 401 {"error"} (${g.status} ${g.text.trim()})`);
  g = await get(r.adminPort, '/v1/nope', TOKEN);
  check(g.status === 404 && typeof g.json?.error === 'string', `unknown endpoint: 404 {"error"} (${g.status})`);
  g = await get(r.adminPort, '/v1/dlq/replay', TOKEN);
  check(g.status === 405 && typeof g.json?.error === 'string', `GET on a POST endpoint: 405 {"error"} (${g.status})`);
  g = await get(r.adminPort, '/v1/stats', TOKEN);
  const fields = ['ready', 'ready_bytes', 'inflight', 'dlq', 'oldest_ready_age_s', 'received_total', 'published_total',
    'dead_lettered_total', 'drainer', 'last_error'];
  check(g.status === 200 && fields.every((f) => f in g.json), `/v1/stats has ${fields.join(', ')}`);
  check(['running', 'backoff', 'paused', 'blocked'].includes(g.json?.drainer), `drainer is one of SPEC's states (${g.json?.drainer})`);

  // relayctl with flags only (no RELAY_ADMIN_LISTEN / RELAY_ADMIN_TOKEN).
  let c = await relayctl(['--admin', url, '--token', TOKEN, 'stats', '--json']);
  check(c.code === 0 && c.json && fields.every((f) => f in c.json), `relayctl --admin --token stats --json: exit ${c.code}, SPEC fields`);
  check(c.json && c.json.received_total === 1, `received_total 1 (${c.json && c.json.received_total})`);
  c = await relayctl([`--admin=${url}`, `--token=${TOKEN}`, 'dlq', 'list', '--json', '--reason', 'rejected', '--type', 'message.new', '--limit', '5']);
  check(c.code === 0 && c.json && Array.isArray(c.json.entries), `dlq list with every SPEC option: exit ${c.code}`);
  c = await relayctl(['--admin', url, '--token', 'wrong', 'stats']);
  check(c.code === 1 && /wrong token/.test(c.err), `wrong token: exit 1 (${c.code})`);
  c = await relayctl(['--admin', url, 'stats']);
  check(c.code === 1 && /needs a token/.test(c.err), `no token: exit 1 (${c.code})`);
  c = await relayctl(['--admin', url, '--token', TOKEN, 'dlq', 'show', '424242']);
  check(c.code === 1, `dlq show of an unknown id: exit 1 (${c.code})`);
  for (const args of [['dlq'], ['dlq', 'replay'], ['dlq', 'purge', '--all', '7'], ['stats', '--nope'], ['nope'], ['--admin']]) {
    c = await relayctl(args);
    check(c.code === 2, `relayctl ${args.join(' ')}: usage, exit 2 (${c.code})`);
  }
  c = await relayctl(['--admin', 'http://127.0.0.1:9', 'stats']);
  check(c.code === 1 && /cannot reach/.test(c.err), `relayd not reachable: exit 1 (${c.code})`);
  c = await relayctl(['--admin', url, '--token', TOKEN, 'test-sns']);
  check(c.code === 0 && /MessageId/.test(c.out), `test-sns prints the MessageId (${c.code} ${c.out.trim()})`);
  c = await relayctl(['--admin', url, '--token', TOKEN, 'pause']);
  check(c.code === 0 && /paused/.test(c.out), `pause (${c.out.trim()})`);
  c = await relayctl(['--admin', url, '--token', TOKEN, 'resume']);
  check(c.code === 0 && !/paused/.test(c.out), `resume (${c.out.trim()})`);
  c = await relayctl(['--data-dir', dir, 'stats', '--json']);
  check(c.code === 0 && c.json && c.json.received_total === 1, `--data-dir stats while relayd runs (${c.code})`);
  c = await relayctl(['version']);
  check(c.code === 0 && /^relayctl \S+/.test(c.out), `version (${c.out.trim()})`);
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

async function caseNoCredentials(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, {
    AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', HOME: path.dirname(dir),
    AWS_SHARED_CREDENTIALS_FILE: path.join(path.dirname(dir), 'none'), AWS_CONFIG_FILE: path.join(path.dirname(dir), 'none'),
  });
  const r = await startRelayd(env);
  check((await post(r.port, event(1), { webhookId: 'nc-1' })).status === 200, 'ingest stores without credentials');
  const url = `http://127.0.0.1:${r.adminPort}`;
  const s = (await admin(r, 'GET', '/v1/stats')).json;
  check(s && s.drainer === 'blocked' && /^NoCredentials/.test(s.last_error || ''), `stats: blocked, NoCredentials (${s && s.last_error})`);
  let c = await relayctl(['--admin', url, 'test-sns']);
  check(c.code === 1 && /NoCredentials/.test(c.out + c.err), `test-sns names the reason: exit ${c.code}: ${(c.out + c.err).trim()}`);
  check(!/SNS refused/.test(c.out + c.err), 'test-sns does not claim SNS refused it (SNS was never asked)');
  check(fault.requests.length === 0, `nothing reached SNS (${fault.requests.length} requests)`);
  c = await relayctl(['--admin', url, 'pause']);
  check(c.code === 1 && /NoCredentials/.test(c.err), `pause without a drainer: exit 1, says why (${c.err.trim()})`);
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

function connectable(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => { sock.destroy(); resolve(true); });
    sock.on('error', () => resolve(false));
  });
}

async function caseReadyzShutdown(dir, fault) {
  fault.setScript([], { do: 'hang' }); // SNS requests stay in flight
  const env = relaydEnv(dir, fault.endpoint, ARN, {});
  const r = await startRelayd(env);
  for (let i = 0; i < 3; i++) check((await post(r.port, event(i), { webhookId: `sd-${i}` })).status === 200, `event ${i} stored`);
  const inflight = await waitStats(r, (s) => s.inflight > 0, 10000, 50);
  check(!!inflight, 'publishing is in flight (SNS hangs)');
  check((await get(r.adminPort, '/readyz')).status === 200, '/readyz 200 before SIGTERM');
  r.proc.kill('SIGTERM');
  const t0 = Date.now();
  while (await connectable(r.port) && Date.now() - t0 < 5000) await sleep(10);
  check(!(await connectable(r.port)), 'the webhook port stops accepting after SIGTERM');
  // From here on relayd takes no webhook: it must not call itself ready.
  const seen = {};
  while (Date.now() - t0 < 15000) {
    let st;
    try { st = (await get(r.adminPort, '/readyz')).status; } catch { break; } // admin closed: done
    seen[st] = (seen[st] || 0) + 1;
    await sleep(20);
  }
  check(!seen[200], `/readyz while shutting down: ${JSON.stringify(seen)} (no 200)`);
  const x = await r.exited;
  check(x.code === 0, `relayd exits 0 (${JSON.stringify(x)})`);
}

async function caseSecondRelayd(dir, fault) {
  const env = relaydEnv(dir, fault.endpoint, ARN, {});
  const r = await startRelayd(env);
  check((await post(r.port, event(1), { webhookId: 'one' })).status === 200, 'first relayd stores an event');
  let second = null, err = null;
  try {
    second = await startRelayd({ ...env }, { readyTimeoutMs: 15000 });
  } catch (e) {
    err = String(e.message);
  }
  check(!second, 'a second relayd on the same RELAY_DATA_DIR does not start');
  if (second) await stopRelayd(second);
  check(!!err && /exited \{"code":1/.test(err) && /RELAY_DATA_DIR/.test(err) && /in use by another relayd/.test(err),
    `it exits 1 with a line naming RELAY_DATA_DIR (${(err || '').split('\n').filter((l) => /"error"/.test(l)).join(' ')})`);
  check((await post(r.port, event(2), { webhookId: 'two' })).status === 200, 'the first relayd still stores events');
  check((await get(r.adminPort, '/readyz')).status === 200, 'and is still ready');
  const x = await stopRelayd(r);
  check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
}

const cases = {
  second_relayd: caseSecondRelayd,
  readyz_shutdown: caseReadyzShutdown,
  no_credentials: caseNoCredentials,
  listen_localhost: caseListenLocalhost,
  readyz_recovers: caseReadyzRecovers,
  metrics_counters: caseMetricsCounters,
  relayctl_flags: caseRelayctlFlags,
};
const name = process.argv[2];
if (!cases[name]) {
  console.log(`usage: spec_audit.mjs ${Object.keys(cases).join('|')}`);
  process.exit(2);
}
const dir = path.join(H.tmpdir('spec'), 'data');
fs.mkdirSync(path.dirname(dir), { recursive: true });
const fault = await startFaultSns({ default: { do: 'ok' } });
try {
  await cases[name](dir, fault);
} catch (e) {
  check(false, `exception: ${e.stack || e}`);
}
for (const r of started) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
await fault.stop();
finish();
