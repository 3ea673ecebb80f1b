// Bad-input corpus against a real relayd (issue 8): malformed and hostile
// requests sent as raw bytes over net.Socket, each with the status relayd
// must answer (and whether it must close the connection). Afterwards:
// nothing was stored (ready 0, dlq 0), relayd is still alive, and a valid
// signed event is still answered 200 and stored (ready 1).
//
// Env (from relay_script_test): RELAY_BIN_DIR, RELAY_TEST_TMP, RELAY_SANITIZE.
import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';

const BIN = process.env.RELAY_BIN_DIR;
const TMP = process.env.RELAY_TEST_TMP;
if (!BIN || !TMP) {
  console.error('RELAY_BIN_DIR and RELAY_TEST_TMP are needed');
  process.exit(2);
}
const SLOW = process.env.RELAY_SANITIZE === '1' ? 4 : 1;
const API_KEY = 'badinput-key';
const SECRET = 'badinput-secret';
const MAX_BODY = 1 << 20; // RELAY_MAX_BODY_BYTES below
const HEADER_TIMEOUT_MS = 1500;

let failures = 0;
function fail(msg) {
  console.error('FAIL: ' + msg);
  failures++;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sign = (body, secret = SECRET) => createHmac('sha256', secret).update(body).digest('hex');

// A free loopback port: bind port 0, read it, release it.
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---- relayd ------------------------------------------------------------

async function startRelayd(dataDir, port, adminPort, snsPort) {
  const env = {
    PATH: process.env.PATH,
    RELAY_LISTEN: `127.0.0.1:${port}`,
    RELAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    RELAY_DATA_DIR: dataDir,
    RELAY_STREAM_API_KEY: API_KEY,
    RELAY_STREAM_API_SECRET: SECRET,
    RELAY_SNS_TOPIC_ARN: 'arn:aws:sns:us-east-1:000000000000:t',
    // Nothing listens there: the drainer fails and backs off, so a stored
    // event stays in the ready queue where the stats show it.
    RELAY_SNS_ENDPOINT: `http://127.0.0.1:${snsPort}`,
    AWS_ACCESS_KEY_ID: 'AKIDBADINPUT',
    AWS_SECRET_ACCESS_KEY: 'badinput-dummy',
    AWS_EC2_METADATA_DISABLED: 'true',
    RELAY_MAX_BODY_BYTES: String(MAX_BODY),
    RELAY_HTTP_HEADER_TIMEOUT_MS: String(HEADER_TIMEOUT_MS),
    RELAY_LOG_LEVEL: 'warn',
  };
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'])
    if (process.env[k]) env[k] = process.env[k];
  const proc = spawn(path.join(BIN, 'relayd'), [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const r = { proc, log: '', exit: null };
  proc.stderr.on('data', (d) => { r.log += d.toString(); });
  r.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    r.exit = { code, signal };
    resolve(r.exit);
  }));
  const deadline = Date.now() + 20000 * SLOW;
  while (Date.now() < deadline) {
    if (r.exit) throw new Error(`relayd exited at start ${JSON.stringify(r.exit)}:\n${r.log}`);
    const probe = (p) => exchange(p, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { want: 1, ms: 500 })
      .then((x) => x.responses.length > 0, () => false);
    if (await probe(port) && await probe(adminPort)) return r;
    await sleep(100);
  }
  proc.kill('SIGKILL');
  await r.exited;
  throw new Error('relayd did not start listening:\n' + r.log);
}

// ---- raw exchange ---------------------------------------------------------

// Parses as many complete HTTP/1.1 responses as `buf` holds. Throws on a
// malformed one (that is a test failure: relayd must answer well-formed).
function parseResponses(buf) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    const end = buf.indexOf('\r\n\r\n', off);
    if (end < 0) break;
    const head = buf.subarray(off, end).toString('latin1');
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) \S.*$/.exec(lines[0]);
    if (!m) throw new Error('malformed status line: ' + JSON.stringify(lines[0]));
    const status = Number(m[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i <= 0) throw new Error('malformed header line: ' + JSON.stringify(l));
      const name = l.slice(0, i).toLowerCase();
      if (name in headers && name === 'content-length') throw new Error('two Content-Length');
      headers[name] = l.slice(i + 1).trim();
    }
    if (status === 100) {
      off = end + 4;
      continue;
    }
    if (!('content-length' in headers)) throw new Error(`answer ${status} without Content-Length`);
    const len = Number(headers['content-length']);
    if (end + 4 + len > buf.length) break; // body not complete yet
    const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
    out.push({ status, headers, body });
    off = end + 4 + len;
  }
  return { responses: out, rest: buf.length - off };
}

// Sends `parts` (strings/Buffers; a number = pause in ms) over one
// connection and collects the answers until the server closes, or until
// `want` answers have arrived and the line stayed quiet for a moment, or
// `ms` passed. Resolves {responses, closed, reset, rest}.
function exchange(port, parts, { want = 1, ms = 5000 } = {}) {
  if (!Array.isArray(parts)) parts = [parts];
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    let closed = false, reset = false, settled = false, quiet = null;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(quiet);
      s.destroy();
      try {
        const p = parseResponses(Buffer.concat(chunks));
        resolve({ ...p, closed, reset });
      } catch (e) {
        reject(e);
      }
    };
    const timer = setTimeout(finish, ms * SLOW);
    s.on('data', (d) => {
      chunks.push(d);
      let n = 0;
      try { n = parseResponses(Buffer.concat(chunks)).responses.length; } catch { n = 0; }
      if (n >= want) {
        clearTimeout(quiet);
        quiet = setTimeout(finish, 150 * SLOW);
      }
    });
    s.on('end', () => { closed = true; finish(); });
    s.on('close', () => { closed = true; finish(); });
    s.on('error', (e) => {
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') reset = true;
      else if (!settled) { settled = true; clearTimeout(timer); reject(e); }
    });
    s.on('connect', async () => {
      for (const p of parts) {
        if (settled) return;
        if (typeof p === 'number') await sleep(p);
        else if (!s.write(p)) await new Promise((r) => s.once('drain', r));
      }
    });
  });
}

// ---- the corpus -------------------------------------------------------------

function post(body, { headers = {}, path: p = '/webhook', signed = true, method = 'POST',
  length = true, secret = SECRET, signWith } = {}) {
  body = Buffer.isBuffer(body) ? body : Buffer.from(body);
  let h = `${method} ${p} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n`;
  if (signed) h += `X-Api-Key: ${API_KEY}\r\nX-Signature: ${sign(signWith ?? body, secret)}\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  if (length) h += `Content-Length: ${body.length}\r\n`;
  return Buffer.concat([Buffer.from(h + '\r\n', 'latin1'), body]);
}

const event = JSON.stringify({
  type: 'message.new', cid: 'messaging:general', channel_type: 'messaging',
  channel_id: 'general', user: { id: 'alice' }, message: { text: 'hello' },
});
const gz = zlib.gzipSync(Buffer.from(event));
const bomb = zlib.gzipSync(Buffer.alloc(16 << 20, 0x20), { level: 9 }); // 16 MiB of spaces
const chunk64k = Buffer.alloc(65536, 0x61);

// [name, bytes-or-parts, expected status, { close: must the server close? }]
const cases = [
  // First, while the server's pooled request buffers are still small: a
  // path longer than what the header buffer has left made http_server.c
  // copy the path out of a buffer it had just reallocated (ASan: heap use
  // after free). 1200 and 9000 bytes each force that growth once.
  ['long path (1200 bytes)', post(event, { path: '/' + 'p'.repeat(1200) }), 404],
  ['long path (9000 bytes)', post(event, { path: '/' + 'p'.repeat(9000) }), 404],
  // Framing.
  ['content-length not a number', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400, { close: true }],
  ['negative content-length', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 400, { close: true }],
  ['garbage request line', 'HELLO THERE\r\n\r\n', 400, { close: true }],
  ['lowercase method', 'post / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n', 400, { close: true }],
  ['bad http version', 'POST / HTTP/1.1x\r\nHost: x\r\n\r\n', 400, { close: true }],
  ['TLS hello on the plain port', Buffer.from('160301020001000001fc0303', 'hex'), 400, { close: true }],
  ['content-length and transfer-encoding',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, { close: true }],
  ['transfer-encoding and content-length',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, { close: true }],
  ['two different content-lengths', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 400, { close: true }],
  ['two equal content-lengths', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}', 400, { close: true }],
  ['chunk size not hex', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', 400, { close: true }],
  ['chunk size overflow', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n', 400, { close: true }],
  ['negative chunk size', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n', 400, { close: true }],
  // Sizes.
  ['huge header value (20 KiB)', `POST / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20480)}\r\nContent-Length: 2\r\n\r\n{}`, 431, { close: true }],
  ['many headers', `POST / HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`, 431, { close: true }],
  ['huge URL', `POST /${'u'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, { close: true }],
  ['content-length over the cap', `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${MAX_BODY * 4}\r\n\r\n{"type":`, 413, { close: true }],
  ['expect 100-continue over the cap', `POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`, 413, { close: true }],
  ['chunked body over the cap',
    ['POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      ...Array.from({ length: 20 }, () => Buffer.concat([Buffer.from('10000\r\n'), chunk64k, Buffer.from('\r\n')]))],
    413, { close: true }],
  // Bytes that do not belong in a header.
  ['NUL in a header value', 'POST / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\n{}', 400, { close: true }],
  ['NUL in a header name', 'POST / HTTP/1.1\r\nHost: x\r\nX-\0A: b\r\nContent-Length: 2\r\n\r\n{}', 400, { close: true }],
  ['NUL in the target', 'POST /web\0hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}', 400, { close: true }],
  // Bodies (signed, so they reach the body checks). JSON text must be
  // UTF-8 (RFC 8259) and SNS refuses messages that are not: such a body is
  // not JSON, and storing it would only move it to the DLQ later.
  ['invalid UTF-8 in a string', post(Buffer.concat([Buffer.from('{"type":"message.new","text":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')])), 400],
  ['invalid UTF-8 outside strings', post(Buffer.concat([Buffer.from([0xc3, 0x28]), Buffer.from('{"type":"x"}')])), 400],
  ['truncated gzip', post(gz.subarray(0, gz.length >> 1), { headers: { 'Content-Encoding': 'gzip' }, signWith: event }), 400],
  ['gzip magic then garbage', post(Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.from('not really gzip')])), 400],
  ['gzip bomb', post(bomb, { headers: { 'Content-Encoding': 'gzip' }, signWith: 'x' }), 413],
  ['unsupported content-encoding', post(event, { headers: { 'Content-Encoding': 'br' } }), 415],
  ['not JSON', post('this is not json'), 400],
  ['JSON array', post('[{"type":"message.new"}]'), 400],
  ['no type', post('{"cid":"messaging:general"}'), 400],
  ['type not a string', post('{"type":42}'), 400],
  ['trailing garbage after the object', post(event + ' x'), 400],
  ['empty body', post(''), 400],
  ['deeply nested JSON', post('{"type":"x","a":' + '['.repeat(5000) + ']'.repeat(5000) + '}'), 400],
  // Signatures.
  ['no signature', post(event, { signed: false }), 401],
  ['wrong signature', post(event, { signWith: event + ' ' }), 401],
  ['signature with the wrong secret', post(event, { secret: 'other-secret' }), 401],
  ['signature not hex', post(event, { signed: false, headers: { 'X-Api-Key': API_KEY, 'X-Signature': 'z'.repeat(64) } }), 401],
  ['signature too short', post(event, { signed: false, headers: { 'X-Api-Key': API_KEY, 'X-Signature': sign(event).slice(0, 63) } }), 401],
  ['unknown api key', post(event, { signed: false, headers: { 'X-Api-Key': 'nobody', 'X-Signature': sign(event) } }), 401],
  // Routing.
  ['wrong path', post(event, { path: '/v1/events' }), 404],
  ['path traversal', post(event, { path: '/../webhook' }), 404],
  ['wrong method GET', 'GET /webhook HTTP/1.1\r\nHost: x\r\n\r\n', 405],
  ['wrong method PUT', post(event, { method: 'PUT' }), 405],
  ['wrong method DELETE', 'DELETE / HTTP/1.1\r\nHost: x\r\n\r\n', 405],
  // Timeouts.
  ['incomplete headers', 'POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ', 408, { close: true, ms: HEADER_TIMEOUT_MS * 4 }],
  // Several on one connection: answered in order, the malformed last one
  // ends the connection.
  ['pipelined mix', [Buffer.concat([
    post(event, { path: '/nope' }),
    post(event, { signWith: 'other' }),
    post('not json'),
    Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    post('{"no":"type"}'),
    post(gz.subarray(0, 10), { headers: { 'Content-Encoding': 'gzip' } }),
    Buffer.from('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}'),
  ])], [404, 401, 400, 405, 400, 400, 400], { close: true }],
];

// ---- stats ------------------------------------------------------------------

async function queueStats(dataDir, adminPort) {
  const ctl = path.join(BIN, 'relayctl');
  if (fs.existsSync(ctl)) {
    const out = execFileSync(ctl, ['--data-dir', dataDir, 'stats', '--json'], { encoding: 'utf8' });
    return { via: 'relayctl', ...JSON.parse(out) };
  }
  const r = await exchange(adminPort, 'GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  if (r.responses.length !== 1 || r.responses[0].status !== 200) throw new Error('GET /v1/stats failed');
  return { via: '/v1/stats', ...JSON.parse(r.responses[0].body) };
}

// ---- main -------------------------------------------------------------------

const dataDir = path.join(TMP, 'data');
fs.mkdirSync(dataDir, { recursive: true });
// The ports are free when picked; another process may still take one
// before relayd binds it, so a failed start is retried with new ones.
let port, adminPort, relay;
for (let attempt = 1; ; attempt++) {
  [port, adminPort] = [await freePort(), await freePort()];
  const snsPort = await freePort(); // stays closed: connection refused
  try {
    relay = await startRelayd(dataDir, port, adminPort, snsPort);
    break;
  } catch (e) {
    if (attempt >= 3) throw e;
    console.error(`relayd start failed (attempt ${attempt}), retrying: ${e.message.split('\n')[0]}`);
  }
}

let ran = 0;
for (const [name, bytes, want, opts = {}] of cases) {
  const wantList = Array.isArray(want) ? want : [want];
  if (relay.exit) break;
  let r;
  try {
    r = await exchange(port, bytes, { want: wantList.length, ms: opts.ms ?? 5000 });
    await sleep(20); // a crash at this case shows as relay.exit below
  } catch (e) {
    fail(`${name}: ${e.message}`);
    continue;
  }
  ran++;
  if (relay.exit) {
    fail(`${name}: relayd died ${JSON.stringify(relay.exit)}`);
    break;
  }
  const got = r.responses.map((x) => x.status);
  if (JSON.stringify(got) !== JSON.stringify(wantList)) {
    fail(`${name}: expected ${JSON.stringify(wantList)}, got ${JSON.stringify(got)}` +
      `${r.reset ? ' (reset)' : ''}${r.closed ? ' (closed)' : ''}`);
    continue;
  }
  for (const x of r.responses) {
    if (!x.headers.date) fail(`${name}: answer without Date`);
    if (x.status >= 400 && !/"ok":false/.test(x.body)) fail(`${name}: error body ${JSON.stringify(x.body)}`);
  }
  if (opts.close && !r.closed) fail(`${name}: connection left open after ${wantList.at(-1)}`);
  if (r.reset) fail(`${name}: connection reset instead of a clean close`);
  console.log(`ok   ${name}: ${got.join(',')}${r.closed ? ' +close' : ''}`);
}

// Nothing of the above may have been stored; relayd must still be alive
// and storing a valid event.
if (relay.exit) {
  fail(`relayd died: ${JSON.stringify(relay.exit)}`);
} else {
  try {
    const before = await queueStats(dataDir, adminPort);
    if (before.ready !== 0 || before.dlq !== 0)
      fail(`something was stored: ready ${before.ready}, dlq ${before.dlq} (${before.via})`);
    else console.log(`ok   nothing stored (${before.via}: ready 0, dlq 0)`);
    const r = await exchange(port, post(event, { headers: { 'X-Webhook-Id': 'badinput-valid-1' } }));
    const st = r.responses.map((x) => x.status);
    if (st.length !== 1 || st[0] !== 200) fail(`valid event after the corpus: got ${JSON.stringify(st)}`);
    else console.log('ok   valid event after the corpus: 200');
    let after = await queueStats(dataDir, adminPort);
    for (let i = 0; i < 20 && after.ready !== before.ready + 1; i++) {
      await sleep(100);
      after = await queueStats(dataDir, adminPort);
    }
    if (after.ready !== before.ready + 1 || after.dlq !== before.dlq)
      fail(`after one valid event: ready ${after.ready}, dlq ${after.dlq} (want ${before.ready + 1}, ${before.dlq})`);
    else console.log(`ok   the valid event is in the queue (ready ${after.ready})`);
  } catch (e) {
    fail(`final checks: ${e.message}`);
  }
}

if (!relay.exit) relay.proc.kill('SIGTERM');
const ex = await Promise.race([relay.exited, sleep(15000 * SLOW).then(() => null)]);
if (!ex) {
  relay.proc.kill('SIGKILL');
  fail('relayd did not stop on SIGTERM');
} else if (ex.code !== 0) {
  fail(`relayd exit ${JSON.stringify(ex)}`);
}
if (/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(relay.log)) fail('sanitizer report in relayd log:\n' + relay.log);
if (failures) {
  console.error(`relayd log (tail):\n${relay.log.split('\n').slice(-60).join('\n')}`);
  console.error(`${failures} failure(s), ${ran}/${cases.length} cases ran`);
  process.exit(1);
}
console.log(`all ${cases.length} bad-input cases answered as expected; nothing stored`);
