// Helpers for the ingest integration tests: start relayd on free loopback
// ports, sign and send webhooks, read the queue back with ingest_check.
import { spawn, execFileSync } from 'node:child_process';
import { createHmac, createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';

export const BIN = process.env.RELAY_BIN_DIR;
export const TEST_BIN = process.env.RELAY_TEST_BIN_DIR;
export const SHARED = process.env.RELAY_SHARED_DIR;
export const TMP = process.env.RELAY_TEST_TMP;
export const SANITIZE = process.env.RELAY_SANITIZE === '1';
if (!BIN || !TEST_BIN || !SHARED || !TMP) {
  console.error('RELAY_BIN_DIR, RELAY_TEST_BIN_DIR, RELAY_SHARED_DIR, RELAY_TEST_TMP needed');
  process.exit(2);
}

export const API_KEY = 'key1';
export const SECRET = 's3cret';

// Every relayd started here, so a failing test never leaves one behind.
const started = new Set();
process.on('exit', () => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

export function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

export function check(cond, msg) {
  if (!cond) fail(msg);
}

export function sign(body, secret = SECRET) {
  return createHmac('sha256', secret).update(body).digest('hex');
}

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

export function fixture(name) {
  return fs.readFileSync(path.join(SHARED, 'fixtures', 'events', name + '.json'));
}

// Starts relayd; resolves once "relayd ready" was logged, with the ports
// taken from its own log lines (listeners bound to port 0). softNofile:
// run it under `ulimit -Sn softNofile`.
export function startRelayd(dataDir, extraEnv = {}, { softNofile } = {}) {
  const env = {
    PATH: process.env.PATH,
    RELAY_LISTEN: '127.0.0.1:0',
    RELAY_ADMIN_LISTEN: '127.0.0.1:0',
    RELAY_DATA_DIR: dataDir,
    RELAY_STREAM_API_KEY: API_KEY,
    RELAY_STREAM_API_SECRET: SECRET,
    RELAY_SNS_TOPIC_ARN: 'arn:aws:sns:us-east-1:000000000000:relay-test',
    // Nothing listens on port 9 (discard): the drainer backs off and every
    // event stays in the queue, where the checker can count it.
    RELAY_SNS_ENDPOINT: 'http://127.0.0.1:9',
    AWS_ACCESS_KEY_ID: 'AKIDTEST',
    AWS_SECRET_ACCESS_KEY: 'test-secret',
    AWS_EC2_METADATA_DISABLED: 'true',
    RELAY_LOG_LEVEL: 'info',
    ...extraEnv,
  };
  if (process.env.ASAN_OPTIONS) env.ASAN_OPTIONS = process.env.ASAN_OPTIONS;
  if (process.env.UBSAN_OPTIONS) env.UBSAN_OPTIONS = process.env.UBSAN_OPTIONS;
  const relayd = path.join(BIN, 'relayd');
  const opts = { env, stdio: ['ignore', 'ignore', 'pipe'] };
  const proc = softNofile
    ? spawn('/bin/sh', ['-c', `ulimit -Sn ${softNofile} && exec "$0"`, relayd], opts)
    : spawn(relayd, [], opts);
  const r = { proc, logs: [], port: 0, adminPort: 0 };
  started.add(proc);
  r.exited = new Promise((resolve) => proc.on('exit', (code, signal) => { started.delete(proc); resolve({ code, signal }); }));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('relayd did not become ready:\n' + r.logs.join('\n'))), 20000);
    proc.stderr.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        r.logs.push(line);
        let o;
        try { o = JSON.parse(line); } catch { continue; }
        if (o.msg === 'ingest listening') r.port = o.port;
        if (o.msg === 'admin listening') r.adminPort = o.port;
        if (o.msg === 'relayd ready') { clearTimeout(timer); resolve(r); }
      }
    });
    r.exited.then((e) => { clearTimeout(timer); reject(new Error(`relayd exited early ${JSON.stringify(e)}:\n` + r.logs.join('\n'))); });
  });
}

export async function stopRelayd(r, signal = 'SIGTERM') {
  r.proc.kill(signal);
  return r.exited;
}

// One HTTP request; resolves {status, headers, body} or rejects on a
// connection error.
export function request(port, { method = 'POST', path: p = '/', headers = {}, body = null, agent } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (Array.isArray(body)) {
      for (const part of body) req.write(part); // chunked
      req.end();
    } else {
      req.end(body ?? undefined);
    }
  });
}

export function webhook(port, body, { id, apiKey = API_KEY, secret = SECRET, signed = body, headers = {}, agent, path: p = '/' } = {}) {
  const h = { 'Content-Type': 'application/json', 'X-Api-Key': apiKey, ...headers };
  if (secret) h['X-Signature'] = sign(signed, secret);
  if (id) h['X-Webhook-Id'] = id;
  if (!Array.isArray(body)) h['Content-Length'] = Buffer.byteLength(body);
  return request(port, { path: p, headers: h, body, agent });
}

// Raw bytes over one connection; resolves with everything received until
// the server closes or `ms` passes.
export function raw(port, bytes, ms = 3000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    const done = () => { s.destroy(); resolve(Buffer.concat(chunks).toString('latin1')); };
    const t = setTimeout(done, ms);
    s.on('data', (d) => chunks.push(d));
    s.on('close', () => { clearTimeout(t); done(); });
    s.on('error', () => {});
    s.write(bytes);
  });
}

// Every record in the queue at dir (relayd stopped): [{where, id, sha, type}].
export function queueContents(dir) {
  const out = execFileSync(path.join(TEST_BIN, 'ingest_check'), [dir], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return out.split('\n').filter(Boolean).map((l) => {
    const [where, id, sha, type] = l.split(' ');
    return { where, id, sha, type };
  });
}

export function event(i, extra = '') {
  return JSON.stringify({
    type: 'message.new',
    cid: 'messaging:general',
    channel_type: 'messaging',
    channel_id: 'general',
    message: { id: `m-${i}`, text: `hello ${i} ${extra}`, user: { id: 'alice' } },
    user: { id: 'alice' },
    created_at: new Date().toISOString(),
  });
}
