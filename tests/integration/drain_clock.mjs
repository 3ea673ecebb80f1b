// Wall-clock steps under the drainer (drain driver built with
// RELAY_TEST_CLOCK: tests/integration/clock.cmake). SNS (the fault stand-in)
// fails every request with 500 InternalError, so events are nacked with
// retry times and the drainer backs off; then the wall clock steps.
//
//   back:    5 h back, then SNS recovers. Retry times and the backoff end
//            now lie hours ahead: the backlog must still drain within
//            seconds (before: the drainer stalled for 5 h, state backoff,
//            events "ready", nothing logged).
//   forward: 2 days ahead while SNS keeps failing, RELAY_RETRY_MAX_AGE 1 h.
//            The fresh backlog must not be dead-lettered as expired (before:
//            all of it was, at its next failure); events really older than
//            1 h still are. Then SNS recovers and the rest is published.
//
//   node drain_clock.mjs [back|forward...]   (default: both)
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// The clock-hooked driver lives in tests/clock/ (see clock.cmake).
const binBase = process.env.RELAY_TEST_BIN_DIR ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../build/tests');
process.env.RELAY_TEST_BIN_DIR = path.join(binBase, 'clock');
const { SUPPORT, TMP, check, done, fill, fixtures, routing, sleep, startDriver } =
  await import('./drain_lib.mjs');
const { startFaultSns } = await import(pathToFileURL(path.join(SUPPORT, 'fault-sns.mjs')).href);

const CREDS = { accessKeyId: 'AKIDRELAYTEST', secretAccessKey: 'relay-test-secret' };
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:relay-clock';
const FAIL = { do: 'error', status: 500, code: 'InternalError', message: 'boom', type: 'Receiver' };
const HOUR = 3600 * 1000;

function events(n, tag, received) {
  const fx = fixtures().filter((x) => !x.name.includes('large'));
  const run = crypto.randomUUID().slice(0, 8);
  const out = [];
  for (let i = 0; i < n; i++) {
    const body = fx[i % fx.length].body;
    out.push({ i, body, ...routing(body), webhook_id: `${tag}-${run}-${i}`, received_ms: received });
  }
  return out;
}

function published(sns) {
  const ids = new Set();
  for (const r of sns.requests) if (r.step === 'ok') for (const e of r.entries) ids.add(e.attributes.webhook_id);
  return ids;
}

async function setup(name, evs, flags) {
  const clockFile = path.join(TMP, `clock-${name}`);
  fs.writeFileSync(clockFile, '0');
  process.env.RELAY_TEST_CLOCK_FILE = clockFile;
  const sns = await startFaultSns({ script: [], default: FAIL, verify: CREDS });
  const dir = path.join(TMP, `q-${name}`);
  await fill(dir, evs);
  const drv = startDriver(dir, {
    topic: TOPIC, endpoint: sns.endpoint, untilEmpty: true, timeout: 60, statusMs: 100,
    flags: { 'retry-base': 200, 'retry-max': 1000, ...flags },
  });
  return { sns, drv, step: (ms) => fs.writeFileSync(clockFile, String(ms)) };
}

const only = new Set(process.argv.slice(2));
const want = (n) => only.size === 0 || only.has(n);

if (want('back')) {
  console.log('-- back');
  const evs = events(20, 'back', Date.now());
  const { sns, drv, step } = await setup('back', evs, { 'max-age': 86400 });
  const failed = await drv.waitFor((l) => l.ev === 'status' && l.retried >= evs.length && l.state === 'backoff', 20000);
  check(failed !== null, 'back: every event nacked at least once, drainer in backoff');
  step(-5 * HOUR);
  sns.setScript([], { do: 'ok' });
  const t0 = Date.now();
  const res = await drv.exited;
  const secs = (Date.now() - t0) / 1000;
  const got = published(sns);
  check(res.code === 0, `back: driver drained the queue and exited 0 (${res.code}, ${secs.toFixed(1)} s after the step)`);
  check(secs < 15, `back: drained within 15 s of the step (${secs.toFixed(1)} s)`);
  check(evs.every((e) => got.has(e.webhook_id)), `back: all ${evs.length} published (${got.size})`);
  check((res.dlq || []).length === 0, `back: nothing dead-lettered (${(res.dlq || []).length})`);
  await sns.stop();
}

if (want('forward')) {
  console.log('-- forward');
  const now = Date.now();
  const fresh = events(20, 'fresh', now);
  const old = events(3, 'old', now - 2 * HOUR); // really older than RELAY_RETRY_MAX_AGE
  const { sns, drv, step } = await setup('forward', [...old, ...fresh], { 'max-age': 3600 });
  const failed = await drv.waitFor((l) => l.ev === 'status' && l.retried >= fresh.length, 20000);
  check(failed !== null, 'forward: every fresh event nacked at least once');
  const before = drv.last();
  check(before.dead_expired === old.length, `forward: the ${old.length} old events expired before the step (${before.dead_expired})`);
  step(2 * 24 * HOUR);
  const retried0 = drv.last().retried;
  // Keep failing across the step: each fresh event fails at least once more.
  const more = await drv.waitFor((l) => l.ev === 'status' && l.retried >= retried0 + fresh.length + 5, 20000);
  check(more !== null, 'forward: events kept failing after the step');
  sns.setScript([], { do: 'ok' });
  const res = await drv.exited;
  const expired = Math.max(...drv.lines.filter((l) => l.ev === 'status' || l.ev === 'final').map((l) => l.dead_expired));
  check(expired === old.length,
    `forward: a 2-day clock step dead-lettered nothing more as expired (${expired - old.length})`);
  const got = published(sns);
  check(res.code === 0, `forward: driver drained the queue and exited 0 (${res.code})`);
  check(fresh.every((e) => got.has(e.webhook_id)), `forward: all ${fresh.length} fresh events published (${[...got].length})`);
  const dlq = res.dlq || [];
  check(dlq.length === old.length && dlq.every((d) => d.reason === 'expired'),
    `forward: DLQ holds just the ${old.length} old events, as expired (${dlq.length})`);
  await sns.stop();
}

done();
