// The SNS client against tests/support/fault-sns.mjs: signing checked by an
// independent signer, exact wire format, classification of every kind of
// answer, per-entry batch failures, timeouts, resets, refused connections,
// keep-alive reuse, requests in flight, cancellation and TLS verification.
//
//   node sns_faults.mjs CASE     (one CTest test per case)
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { startFaultSns } from '../support/fault-sns.mjs';
import { check, checkDriverExit, eq, expectedAttributes, finish, fixtureFiles, runDriver } from './sns_common.mjs';

const TOPIC = 'arn:aws:sns:us-east-1:123456789012:relay-events';
const FIFO_TOPIC = 'arn:aws:sns:us-east-1:123456789012:relay-events.fifo';
const CREDS = { accessKeyId: 'AKIDTESTRELAY', secretAccessKey: 'sEcReT/with+special=chars' };
const ENV = { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, AWS_SESSION_TOKEN: '' };
const small = () => fixtureFiles().filter((f) => readFileSync(f).length < 100000);

// n copies of a small event, so each request maps to one script step.
const copies = (n) => Array.from({ length: n }, () => small()[0]);

const cases = {
  async cli_and_control_endpoint() {
    // The way shell tests and other drivers use the stand-in: as a process.
    const child = spawn(process.execPath, [new URL('../support/fault-sns.mjs', import.meta.url).pathname,
      '--script', JSON.stringify([{ do: 'error', status: 503, code: 'ServiceUnavailable', type: 'Receiver' }]),
      '--verify', `${CREDS.accessKeyId}:${CREDS.secretAccessKey}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const line = await new Promise((resolve, reject) => {
        createInterface({ input: child.stdout }).once('line', resolve);
        child.once('exit', (c) => reject(new Error(`fault-sns exited ${c}`)));
      });
      const { endpoint } = JSON.parse(line);
      check(/^http:\/\/127\.0\.0\.1:\d+$/.test(endpoint), `endpoint on loopback: ${endpoint}`);
      const r1 = await runDriver(['--endpoint', endpoint, '--topic', TOPIC, ...copies(2)], { env: ENV });
      checkDriverExit(r1, 'cli run 1');
      eq(r1.entries.map((e) => e.outcome), ['retry', 'ok'], 'scripted then default');
      const reqs = await (await fetch(`${endpoint}/_fault/requests`)).json();
      eq(reqs.length, 2, 'requests recorded');
      eq(reqs.map((q) => q.sigOk), [true, true], 'signatures verified');
      eq(reqs[0].entries[0].attributes.webhook_id, 'wh-0', 'entries decoded');
      const set = await fetch(`${endpoint}/_fault/script`, { method: 'POST',
        body: JSON.stringify({ script: [{ do: 'reset', times: 2 }], default: { do: 'error', status: 403, code: 'AuthorizationError' } }) });
      eq(set.status, 200, 'script replaced');
      await fetch(`${endpoint}/_fault/reset`, { method: 'POST' });
      const r2 = await runDriver(['--endpoint', endpoint, '--topic', TOPIC, ...copies(3)], { env: ENV });
      checkDriverExit(r2, 'cli run 2');
      eq(r2.entries.map((e) => e.outcome), ['unreachable', 'unreachable', 'config'], 'new script');
      const stats = await (await fetch(`${endpoint}/_fault/stats`)).json();
      eq(stats.answered.reset, 2, 'stats count resets');
      eq((await (await fetch(`${endpoint}/_fault/requests`)).json()).length, 3, 'reset forgot old requests');
    } finally {
      child.stdin.end();
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    }
  },

  async signed_and_wire_format() {
    const f = await startFaultSns({ verify: CREDS });
    try {
      const files = fixtureFiles().filter((x) => !x.includes('too-large'));
      for (const [batch, token] of [['1', ''], ['10', 'FwoGZXIvYXdzE+token/with=odd~chars']]) {
        f.reset();
        const r = await runDriver(['--endpoint', f.endpoint + '/', '--topic', TOPIC, '--batch', batch, ...files],
          { env: { ...ENV, AWS_SESSION_TOKEN: token } });
        checkDriverExit(r, `batch ${batch}`);
        eq(r.entries.filter((e) => e.outcome === 'ok').length, files.length, `batch ${batch}: all accepted`);
        for (const q of f.requests) {
          eq(q.sigOk, true, `batch ${batch}: request ${q.seq} signature verified independently`);
          eq(q.method, 'POST', 'method');
          eq(q.path, '/', 'path');
          eq(q.headers['content-type'], 'application/x-www-form-urlencoded; charset=utf-8', 'content-type');
          eq(q.headers.expect, undefined, 'no Expect: 100-continue');
          eq(q.headers['x-amz-security-token'], token || undefined, 'session token header');
          check(/^relay\//.test(q.headers['user-agent'] || ''), 'user agent');
          eq(q.params.Version, '2010-03-31', 'Version');
          eq(q.params.TopicArn, TOPIC, 'TopicArn');
          eq(q.action, batch === '1' ? 'Publish' : 'PublishBatch', 'Action');
          check(!/\+/.test(q.body), 'no + in the form body (space is %20)');
        }
        const sent = f.requests.flatMap((q) => q.entries);
        eq(sent.length, files.length, `batch ${batch}: entries sent`);
        sent.forEach((e, i) => {
          check(Buffer.from(e.message, 'utf8').equals(readFileSync(files[i])), `${path.basename(files[i])} message bytes`);
          eq(e.attributes, expectedAttributes(files[i], `wh-${i}`), `${path.basename(files[i])} attributes`);
          eq(e.groupId, undefined, 'no MessageGroupId on a standard topic');
        });
        if (batch === '10') {
          check(f.requests.length >= 2 && f.requests.every((q) => q.entries.length <= 10), 'batches of at most 10');
          for (const q of f.requests) eq(q.entries.map((e) => e.id), q.entries.map((_, i) => String(i)), 'batch ids 0..n-1');
        }
      }
      // A wrong secret is refused by the verifier, classified as config.
      f.reset();
      const bad = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, small()[0]],
        { env: { ...ENV, AWS_SECRET_ACCESS_KEY: 'wrong' } });
      checkDriverExit(bad, 'bad secret');
      eq([bad.entries[0]?.outcome, bad.entries[0]?.code], ['config', 'SignatureDoesNotMatch'], 'bad secret outcome');
    } finally { await f.stop(); }
  },

  async fifo_ids() {
    const f = await startFaultSns();
    try {
      const files = small();
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', FIFO_TOPIC, '--batch', '10', ...files], { env: ENV });
      checkDriverExit(r, 'fifo');
      const sent = f.requests.flatMap((q) => q.entries);
      sent.forEach((e, i) => {
        const a = expectedAttributes(files[i], `wh-${i}`);
        eq(e.groupId, a.cid || a.type, `${path.basename(files[i])} MessageGroupId`);
        eq(e.dedupId, `wh-${i}`, `${path.basename(files[i])} MessageDeduplicationId`);
      });
    } finally { await f.stop(); }
  },

  async classification() {
    // One Publish per step, in order (concurrency 1).
    const steps = [
      [{ do: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded' }, 'throttled', 'Throttling'],
      [{ do: 'status', status: 429, body: '' }, 'throttled', 'HTTP429'],
      [{ do: 'status', status: 503, body: '' }, 'retry', 'HTTP503'],
      [{ do: 'status', status: 502, body: '<html>bad gateway</html>' }, 'retry', 'HTTP502'],
      [{ do: 'error', status: 500, code: 'InternalError', type: 'Receiver' }, 'retry', 'InternalError'],
      [{ do: 'error', status: 400, code: 'KMSThrottling' }, 'retry', 'KMSThrottling'],
      [{ do: 'error', status: 403, code: 'AuthorizationError' }, 'config', 'AuthorizationError'],
      [{ do: 'error', status: 403, code: 'InvalidClientTokenId' }, 'config', 'InvalidClientTokenId'],
      [{ do: 'error', status: 403, code: 'ExpiredToken' }, 'config', 'ExpiredToken'],
      [{ do: 'error', status: 403, code: 'InvalidSecurity' }, 'config', 'InvalidSecurity'],
      [{ do: 'error', status: 404, code: 'NotFound', message: 'Topic does not exist' }, 'config', 'NotFound'],
      [{ do: 'error', status: 400, code: 'KMSAccessDenied' }, 'config', 'KMSAccessDenied'],
      [{ do: 'error', status: 400, code: 'KMSDisabled' }, 'config', 'KMSDisabled'],
      [{ do: 'error', status: 400, code: 'InvalidParameter', message: 'Invalid parameter: Message' }, 'permanent', 'InvalidParameter'],
      [{ do: 'error', status: 400, code: 'ParameterValueInvalid' }, 'permanent', 'ParameterValueInvalid'],
      [{ do: 'error', status: 400, code: 'ValidationException' }, 'permanent', 'ValidationException'],
      [{ do: 'error', status: 400, code: 'InvalidParameter', message: 'Invalid parameter: TopicArn' }, 'config', 'InvalidParameter'],
      [{ do: 'status', status: 413, body: '<html>too large</html>' }, 'permanent', 'HTTP413'],
      [{ do: 'status', status: 200, body: 'this is not xml' }, 'retry', 'MalformedResponse'],
      [{ do: 'status', status: 200, body: 'x'.repeat(2 * 1024 * 1024) }, 'retry', 'ResponseTooLarge'],
      [{ do: 'reset' }, 'unreachable', null],
      [{ do: 'ok' }, 'ok', ''],
    ];
    const f = await startFaultSns({ script: steps.map((s) => s[0]) });
    try {
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, ...copies(steps.length)], { env: ENV });
      checkDriverExit(r, 'classification');
      eq(r.entries.length, steps.length, 'one result per step');
      steps.forEach(([step, outcome, code], i) => {
        const e = r.entries[i] || {};
        eq(e.outcome, outcome, `step ${i} ${JSON.stringify(step)} outcome`);
        if (code !== null) eq(e.code, code, `step ${i} code`);
        else check(/^CURLE_/.test(e.code), `step ${i}: transport code, got ${e.code}`);
      });
      eq(r.entries[steps.length - 1].message_id.startsWith('fault-'), true, 'message id on success');
      eq(f.requests.length, steps.length, 'the client never retries by itself');
    } finally { await f.stop(); }
  },

  async batch_partial_failures() {
    const f = await startFaultSns({
      script: [{ do: 'partial', failed: {
        1: { code: 'InvalidParameter', message: 'bad message', senderFault: true },
        3: { code: 'InternalError', message: 'try again', senderFault: false },
        4: { code: 'Throttling', message: 'slow', senderFault: true },
        5: { code: 'KMSAccessDenied', message: 'key', senderFault: true },
        6: { code: 'SomethingNew', message: 'x', senderFault: true },
        7: { code: 'SomethingNew', message: 'y', senderFault: false },
      } }],
    });
    try {
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--batch', '10', ...copies(9)], { env: ENV });
      checkDriverExit(r, 'partial');
      eq(r.entries.map((e) => e.outcome),
        ['ok', 'permanent', 'ok', 'retry', 'throttled', 'config', 'permanent', 'retry', 'ok'], 'per-entry outcomes');
      check(r.entries.every((e) => e.overall === 'ok'), 'the request as a whole succeeded');
      eq(r.entries[1].message, 'bad message', 'entry message kept');
      check(r.entries[0].message_id !== r.entries[2].message_id, 'distinct message ids');
    } finally { await f.stop(); }
  },

  async poison_in_batch() {
    // The stand-in's poison rule (used by the drainer tests) in a batch and alone.
    const f = await startFaultSns({ default: { do: 'ok', poison: { contains: '"custom.order_shipped"', code: 'InvalidParameter', message: 'poison' } } });
    try {
      const files = small();
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--batch', '10', ...files], { env: ENV });
      checkDriverExit(r, 'poison batch');
      for (const e of r.entries)
        eq(e.outcome, e.file.includes('custom.event') ? 'permanent' : 'ok', `${path.basename(e.file)} outcome`);
      const one = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, files.find((x) => x.includes('custom.event'))], { env: ENV });
      eq([one.entries[0]?.outcome, one.entries[0]?.http_status], ['permanent', 400], 'poison alone');
    } finally { await f.stop(); }
  },

  async timeout_and_slow() {
    const f = await startFaultSns({ script: [{ do: 'hang' }, { do: 'slow', delayMs: 300 }] });
    try {
      const t0 = Date.now();
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--timeout-ms', '1500', ...copies(2)], { env: ENV });
      checkDriverExit(r, 'timeout');
      eq([r.entries[0]?.outcome, r.entries[0]?.code], ['unreachable', 'CURLE_OPERATION_TIMEDOUT'], 'hang -> timeout');
      eq(r.entries[1]?.outcome, 'ok', 'slow answer within the timeout');
      check(Date.now() - t0 < 10000, 'total timeout enforced');
    } finally { await f.stop(); }
  },

  async connection_refused() {
    // A port that was free a moment ago and has no listener.
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const port = srv.address().port;
    await new Promise((r) => srv.close(r));
    const r = await runDriver(['--endpoint', `http://127.0.0.1:${port}`, '--topic', TOPIC, '--batch', '10', ...copies(3)], { env: ENV });
    checkDriverExit(r, 'refused');
    eq(r.entries.map((e) => [e.outcome, e.code, e.http_status]),
      Array(3).fill(['unreachable', 'CURLE_COULDNT_CONNECT', 0]), 'connect refused');
  },

  async keepalive_and_inflight() {
    const f = await startFaultSns({ default: { do: 'slow', delayMs: 150 } });
    try {
      // 96 requests, 16 at a time: parallel, and connections reused.
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--concurrency', '16', ...copies(96)], { env: ENV });
      checkDriverExit(r, 'inflight');
      eq(r.summary.ok, 96, 'all accepted');
      check(f.stats.maxInflight >= 12, `requests in flight at once: ${f.stats.maxInflight}`);
      check(f.stats.maxInflight <= 16, `never more than asked: ${f.stats.maxInflight}`);
      const conns = new Set(f.requests.map((q) => q.conn)).size;
      check(conns <= 16, `keep-alive: ${conns} connections for 96 requests`);
      // A sequential client uses a single connection throughout.
      f.reset();
      f.setScript([], { do: 'ok' });
      const before = f.stats.connections;
      const r2 = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, ...copies(20)], { env: ENV });
      checkDriverExit(r2, 'sequential');
      eq(f.stats.connections - before, 1, 'one connection for 20 sequential requests');
    } finally { await f.stop(); }
  },

  async max_connections_queues() {
    // More requests in flight than connections allowed: curl queues them.
    const f = await startFaultSns({ default: { do: 'slow', delayMs: 100 } });
    try {
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--concurrency', '12',
        '--max-connections', '3', ...copies(24)], { env: ENV });
      checkDriverExit(r, 'max connections');
      eq(r.summary.ok, 24, 'all accepted');
      check(f.stats.maxInflight <= 3, `at most 3 at once: ${f.stats.maxInflight}`);
      check(f.stats.connections <= 3, `at most 3 connections: ${f.stats.connections}`);
    } finally { await f.stop(); }
  },

  async cancel_on_close() {
    const f = await startFaultSns({ default: { do: 'hang' } });
    try {
      const r = await runDriver(['--endpoint', f.endpoint, '--topic', TOPIC, '--concurrency', '4',
        '--close-after-ms', '300', ...copies(4)], { env: ENV });
      checkDriverExit(r, 'cancel');
      eq(r.entries.map((e) => [e.outcome, e.code]), Array(4).fill(['unreachable', 'Cancelled']), 'cancelled');
      eq(r.summary.cancelled, 4, 'every callback ran once');
    } finally { await f.stop(); }
  },

  async tls_verification_on() {
    const dir = process.env.RELAY_TEST_TMP || '/tmp';
    const key = path.join(dir, 'key.pem'), cert = path.join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1'], { stdio: 'ignore' });
    let hits = 0;
    const srv = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
      hits++;
      res.end('<PublishResponse><PublishResult><MessageId>x</MessageId></PublishResult></PublishResponse>');
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const r = await runDriver(['--endpoint', `https://127.0.0.1:${srv.address().port}`, '--topic', TOPIC, small()[0]], { env: ENV });
      checkDriverExit(r, 'tls');
      eq([r.entries[0]?.outcome, r.entries[0]?.code], ['config', 'CURLE_PEER_FAILED_VERIFICATION'], 'self-signed certificate refused');
      eq(hits, 0, 'no request reached the untrusted server');
    } finally { srv.close(); }
  },
};

const name = process.argv[2];
if (!cases[name]) {
  console.error(`usage: sns_faults.mjs ${Object.keys(cases).join('|')}`);
  process.exit(2);
}
await cases[name]();
finish(`sns_faults ${name}`);
