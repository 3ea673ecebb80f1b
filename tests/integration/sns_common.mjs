// Shared bits of the SNS client integration tests: run the C driver
// (tests/integration/sns_driver.c) and small assertion helpers.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const BIN = process.env.RELAY_TEST_BIN_DIR;
export const SHARED = process.env.RELAY_SHARED_DIR;
export const EVENTS = path.join(SHARED || '', 'fixtures', 'events');

if (!BIN || !SHARED) {
  console.error('RELAY_TEST_BIN_DIR and RELAY_SHARED_DIR must be set (run through ctest)');
  process.exit(2);
}

export function fixtureFiles() {
  return readdirSync(EVENTS).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(EVENTS, f));
}

// What the relay sends as attributes for one event file (SPEC "Publishing").
export function expectedAttributes(file, webhookId) {
  const ev = JSON.parse(readFileSync(file, 'utf8'));
  const a = {};
  const str = (v) => (typeof v === 'string' && v !== '' ? v : undefined);
  const put = (k, v) => { if (str(v) !== undefined) a[k] = v; };
  put('type', ev.type);
  put('cid', ev.cid);
  put('channel_type', ev.channel_type);
  put('channel_id', ev.channel_id);
  put('user_id', ev.user && typeof ev.user === 'object' && str(ev.user.id) ? ev.user.id : ev.user_id);
  put('webhook_id', webhookId);
  return a;
}

// SNS size of an event (body + name + "String" + value per attribute).
export function snsSize(file, webhookId) {
  let n = readFileSync(file).length;
  for (const [k, v] of Object.entries(expectedAttributes(file, webhookId)))
    n += Buffer.byteLength(k) + 6 + Buffer.byteLength(v);
  return n;
}

export function runDriver(args, { env = {}, timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(BIN, 'sns_driver'), args, {
      env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      const lines = out.split('\n').filter(Boolean).map((l) => {
        try { return JSON.parse(l); } catch { throw new Error(`driver printed non-JSON: ${l}`); }
      });
      resolve({
        code, signal, stderr: err,
        entries: lines.filter((l) => l.kind === 'entry').sort((a, b) => a.index - b.index),
        refused: lines.filter((l) => l.kind === 'refused'),
        summary: lines.find((l) => l.kind === 'summary'),
      });
    });
  });
}

let failures = 0;
export function check(cond, what) {
  if (!cond) {
    failures++;
    console.error(`FAIL: ${what}`);
  }
  return cond;
}
export function eq(a, b, what) {
  const ja = JSON.stringify(a), jb = JSON.stringify(b);
  return check(ja === jb, `${what}: got ${ja} want ${jb}`);
}
export function finish(name) {
  if (failures) {
    console.error(`${name}: ${failures} check(s) failed`);
    process.exit(1);
  }
  console.log(`ok ${name}`);
  process.exit(0);
}

// The driver must always end cleanly (exit 0: run done and the uv loop closed
// with no handle left behind).
export function checkDriverExit(r, what) {
  check(r.code === 0, `${what}: driver exit ${r.code} ${r.signal || ''} ${r.stderr.slice(-2000)}`);
  check(!!r.summary, `${what}: driver printed a summary`);
}
