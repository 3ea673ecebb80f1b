// Shared helpers of the drainer integration tests (drain_*.mjs).
//
// Everything listens on 127.0.0.1 on ports chosen by the kernel. The oracle
// is what arrives in SQS (fauxqs) or what the fault stand-in recorded.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

export const SRC = process.env.RELAY_SOURCE_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const SHARED = process.env.RELAY_SHARED_DIR || path.join(SRC, '../shared');
export const TESTBIN = process.env.RELAY_TEST_BIN_DIR || path.join(SRC, 'build/tests');
export const TMP = process.env.RELAY_TEST_TMP || fs.mkdtempSync('/tmp/drain-test-');
export const SUPPORT = path.join(SRC, 'tests/support');
export const DRIVER = path.join(TESTBIN, 'drain_driver');

// Packages live in tests/support/node_modules, not above this directory, so
// they are resolved by hand: ESM-only ones (fauxqs) have no require() entry.
const req = createRequire(path.join(SUPPORT, 'package.json'));
const cache = new Map();
export async function supportImport(name) {
  if (cache.has(name)) return cache.get(name);
  const dir = path.join(SUPPORT, 'node_modules', name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  let entry = null;
  const exp = pkg.exports && (pkg.exports['.'] ?? pkg.exports);
  const pick = (e) => (typeof e === 'string' ? e : e && (pick(e.import) || pick(e.node) || pick(e.default)));
  if (exp) entry = pick(exp);
  const url = entry ? pathToFileURL(path.join(dir, entry)).href : pathToFileURL(req.resolve(name)).href;
  const m = await import(url);
  cache.set(name, m);
  return m;
}

let failures = 0;
export function check(cond, what) {
  if (cond) {
    console.log(`ok   ${what}`);
  } else {
    failures++;
    console.log(`FAIL ${what}`);
  }
}
export function done() {
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log('all checks passed');
  process.exit(0);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

// ---- fauxqs -------------------------------------------------------------

const creds = { accessKeyId: 'AKIDRELAYTEST', secretAccessKey: 'relay-test-secret' };

export async function startFauxqs(port = 0) {
  const { buildApp } = await supportImport('fauxqs');
  const app = buildApp({ logger: false });
  await app.listen({ port, host: '127.0.0.1' });
  const p = app.server.address().port;
  const endpoint = `http://127.0.0.1:${p}`;
  const { SNSClient } = await supportImport('@aws-sdk/client-sns');
  const { SQSClient } = await supportImport('@aws-sdk/client-sqs');
  const cfg = { endpoint, region: 'us-east-1', credentials: creds };
  return { app, port: p, endpoint, sns: new SNSClient(cfg), sqs: new SQSClient(cfg) };
}

export async function snsCmd(f, name, input) {
  const m = await supportImport('@aws-sdk/client-sns');
  return f.sns.send(new m[name](input));
}
export async function sqsCmd(f, name, input) {
  const m = await supportImport('@aws-sdk/client-sqs');
  return f.sqs.send(new m[name](input));
}

// Creates a topic and a raw-delivery queue subscribed to it (optionally with
// a filter policy). Returns {topicArn, queueUrl}.
export async function topicWithQueue(f, { topic, queue, fifo = false, filter = null, topicArn = null }) {
  if (!topicArn) {
    const attrs = fifo ? { FifoTopic: 'true' } : {};
    topicArn = (await snsCmd(f, 'CreateTopicCommand', { Name: topic, Attributes: attrs })).TopicArn;
  }
  const qattrs = fifo ? { FifoQueue: 'true' } : {};
  const queueUrl = (await sqsCmd(f, 'CreateQueueCommand', { QueueName: queue, Attributes: qattrs })).QueueUrl;
  const qa = await sqsCmd(f, 'GetQueueAttributesCommand', { QueueUrl: queueUrl, AttributeNames: ['QueueArn'] });
  const sattrs = { RawMessageDelivery: 'true' };
  if (filter) sattrs.FilterPolicy = JSON.stringify(filter);
  await snsCmd(f, 'SubscribeCommand', {
    TopicArn: topicArn, Protocol: 'sqs', Endpoint: qa.Attributes.QueueArn, Attributes: sattrs,
  });
  return { topicArn, queueUrl };
}

// Receives (and deletes) until `want` messages arrived or nothing new came
// for `idleMs` after at least `minMs`. Returns [{body: Buffer, attrs: {k: v}, groupId}].
export async function receiveAll(f, queueUrl, { want = Infinity, idleMs = 1500, maxMs = 60000 } = {}) {
  const out = [];
  const t0 = Date.now();
  let last = Date.now();
  while (out.length < want && Date.now() - t0 < maxMs) {
    const r = await sqsCmd(f, 'ReceiveMessageCommand', {
      QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0,
      MessageAttributeNames: ['All'], MessageSystemAttributeNames: ['All'],
    });
    const msgs = r.Messages || [];
    if (msgs.length === 0) {
      if (Date.now() - last > idleMs) break;
      await sleep(50);
      continue;
    }
    last = Date.now();
    for (const m of msgs) {
      const attrs = {};
      for (const [k, v] of Object.entries(m.MessageAttributes || {})) attrs[k] = v.StringValue;
      out.push({ body: Buffer.from(m.Body, 'utf8'), attrs, groupId: m.Attributes?.MessageGroupId });
    }
    await sqsCmd(f, 'DeleteMessageBatchCommand', {
      QueueUrl: queueUrl, Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
    });
  }
  return out;
}

// ---- events -------------------------------------------------------------

export function fixtures() {
  const dir = path.join(SHARED, 'fixtures/events');
  return fs.readdirSync(dir).filter((n) => n.endsWith('.json')).sort()
    .map((name) => ({ name, body: fs.readFileSync(path.join(dir, name)) }));
}

// Routing fields as ingest stores them (SPEC: user_id from user.id or user_id).
export function routing(body) {
  const o = JSON.parse(body.toString('utf8'));
  const s = (v) => (typeof v === 'string' && v !== '' ? v : undefined);
  return {
    type: s(o.type), cid: s(o.cid), channel_type: s(o.channel_type), channel_id: s(o.channel_id),
    user_id: s(o.user?.id) ?? s(o.user_id),
  };
}

// n events cycling through the fixtures (over-size ones only when asked);
// webhook ids `${prefix}-${i}`. Returns [{i, webhook_id, body, ...routing}].
export function makeEvents(n, { prefix = 'ev', includeTooLarge = false, noWebhookIdEvery = 0, fixtureFilter = null } = {}) {
  let fx = fixtures().filter((f) => includeTooLarge || !f.name.includes('too-large'));
  if (fixtureFilter) fx = fx.filter(fixtureFilter);
  const evs = [];
  for (let i = 0; i < n; i++) {
    const f = fx[i % fx.length];
    const e = { i, body: f.body, name: f.name, ...routing(f.body) };
    if (!(noWebhookIdEvery && i % noWebhookIdEvery === 0)) e.webhook_id = `${prefix}-${i}`;
    evs.push(e);
  }
  return evs;
}

export function writeFrames(file, evs, extra = {}) {
  const parts = [];
  for (const e of evs) {
    const h = { len: e.body.length, ...extra };
    for (const k of ['webhook_id', 'type', 'cid', 'channel_type', 'channel_id', 'user_id', 'received_ms'])
      if (e[k] !== undefined) h[k] = e[k];
    parts.push(Buffer.from(JSON.stringify(h) + '\n'), e.body);
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}

// ---- the driver -----------------------------------------------------------

export async function fill(dir, evs, extra) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(TMP, `frames-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  writeFrames(file, evs, extra);
  const r = await run([DRIVER, 'fill', dir, file]);
  fs.unlinkSync(file);
  if (r.code !== 0) throw new Error(`fill failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function run(argv) {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// Starts `drain_driver run`. Returns a handle with: lines (parsed JSON
// objects so far), last(ev), waitFor(pred, ms), send(cmd), kill(sig), exited
// (promise of {code, signal, final, dlq}).
export function startDriver(dir, opts) {
  fs.mkdirSync(dir, { recursive: true });
  const args = ['run', dir, '--topic', opts.topic, '--endpoint', opts.endpoint, '--status-ms', String(opts.statusMs ?? 200)];
  for (const [k, v] of Object.entries(opts.flags || {})) args.push(`--${k}`, String(v));
  if (opts.feed) {
    const file = path.join(TMP, `feed-${Date.now()}-${Math.random().toString(16).slice(2)}`);
    writeFrames(file, opts.feed);
    args.push('--feed', file, '--feed-rate', String(opts.feedRate ?? 1000));
  }
  if (opts.untilEmpty) args.push('--until-empty');
  args.push('--timeout', String(opts.timeout ?? 120));
  const env = { ...process.env, DRAIN_LOG_LEVEL: opts.logLevel || 'warn' };
  const p = spawn(DRIVER, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  const h = { proc: p, lines: [], stderr: '', waiters: [] };
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { h.lines.push(JSON.parse(line)); } catch { h.lines.push({ ev: 'raw', line }); }
      h.waiters = h.waiters.filter((w) => !w());
    }
  });
  p.stderr.on('data', (d) => {
    h.stderr += d;
    if (process.env.DRAIN_TEST_VERBOSE) process.stderr.write(d);
  });
  p.stdin.on('error', () => {});
  h.exited = new Promise((resolve) => p.on('close', (code, signal) => {
    h.waiters.forEach((w) => w());
    // A failing run shows why (killed runs are expected to be silent).
    if (code !== 0 && signal === null) console.log(`driver exited ${code}; stderr:\n${h.stderr.slice(-4000)}`);
    resolve({
      code, signal,
      final: h.lines.filter((l) => l.ev === 'final').pop(),
      dlq: h.lines.filter((l) => l.ev === 'dlq').pop()?.entries,
      elapsed: h.lines.filter((l) => l.ev === 'elapsed').pop(),
    });
  }));
  h.last = (ev = 'status') => h.lines.filter((l) => l.ev === ev).pop();
  h.waitFor = (pred, ms = 30000) => new Promise((resolve) => {
    const t0 = Date.now();
    const fn = () => {
      const hit = h.lines.find((l) => pred(l));
      if (hit) { clearTimeout(timer); resolve(hit); return true; }
      if (p.exitCode !== null || p.signalCode !== null || Date.now() - t0 > ms) { clearTimeout(timer); resolve(null); return true; }
      return false;
    };
    const timer = setTimeout(() => { h.waiters = h.waiters.filter((w) => w !== fn); resolve(null); }, ms);
    if (!fn()) h.waiters.push(fn);
  });
  h.send = (cmd) => { try { p.stdin.write(cmd + '\n'); } catch { /* exited */ } };
  h.kill = (sig) => p.kill(sig);
  return h;
}

// ---- a TCP proxy that can be switched off (SNS outage) --------------------

export async function startProxy(targetPort) {
  const socks = new Set();
  let server = null, port = 0;
  const listen = () => new Promise((resolve) => {
    server = net.createServer((c) => {
      const u = net.connect(targetPort, '127.0.0.1');
      socks.add(c); socks.add(u);
      c.pipe(u); u.pipe(c);
      const end = () => { c.destroy(); u.destroy(); socks.delete(c); socks.delete(u); };
      c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
    });
    server.listen(port, '127.0.0.1', () => { port = server.address().port; resolve(); });
  });
  await listen();
  return {
    get port() { return port; },
    async down() {
      await new Promise((r) => { server.close(() => r()); for (const s of socks) s.destroy(); });
    },
    up: listen,
  };
}
