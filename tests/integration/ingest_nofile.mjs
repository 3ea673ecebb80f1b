// relayd end to end under a low soft open-file limit.
//
// open_file_limit: relayd started the way systemd (DefaultLimitNOFILE=
// 1024:524288) or a recent Docker starts it, with a soft RLIMIT_NOFILE far
// below its hard one. Every webhook connection is a descriptor: before the
// fix, once the soft limit was reached accept() failed with EMFILE, libuv
// dropped each new connection without a word (long before
// RELAY_HTTP_MAX_CONNECTIONS), and the admin listener could not accept
// either: /healthz failed, so an orchestrator would restart relayd under a
// burst of webhook connections. The soft limit here (128) stands for 1024,
// the connections (300, RELAY_HTTP_MAX_CONNECTIONS=400) for a burst.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { TMP, API_KEY, check, fail, sign, request, event, startRelayd } from './ingest_lib.mjs';

const SOFT = 128;
const CONNS = 300;

const hard = execFileSync('/bin/sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
if (hard !== 'unlimited' && Number(hard) < 4096) {
  console.log(`skipped: hard open-file limit ${hard} is too low for this scenario`);
  process.exit(0);
}

function connect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => resolve(s));
    s.on('error', () => resolve(null));
  });
}

// One signed webhook on an open socket: resolves the status, or a string
// saying why there was none.
function post(s, i) {
  return new Promise((resolve) => {
    const body = event(i);
    const head = `POST / HTTP/1.1\r\nHost: relay\r\nX-Api-Key: ${API_KEY}\r\n` +
      `X-Signature: ${sign(body)}\r\nX-Webhook-Id: fd-${i}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    let got = '';
    const t = setTimeout(() => resolve('timeout'), 10000);
    s.on('data', (d) => {
      got += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d+)/.exec(got);
      if (m && got.includes('\r\n\r\n')) { clearTimeout(t); resolve(Number(m[1])); }
    });
    s.on('close', () => { clearTimeout(t); resolve('closed'); });
    s.on('error', () => {});
    s.write(head + body);
  });
}

async function openFileLimit() {
  const dir = path.join(TMP, 'nofile');
  fs.mkdirSync(dir);
  const r = await startRelayd(dir, { RELAY_HTTP_MAX_CONNECTIONS: '400' }, { softNofile: SOFT });
  const socks = await Promise.all(Array.from({ length: CONNS }, () => connect(r.port)));
  check(socks.every(Boolean), 'every connection was made');
  const results = await Promise.all(socks.map((s, i) => post(s, i)));
  const ok = results.filter((x) => x === 200).length;
  const other = {};
  for (const x of results) if (x !== 200) other[x] = (other[x] || 0) + 1;
  let health;
  try {
    health = (await request(r.adminPort, { method: 'GET', path: '/healthz' })).status;
  } catch (e) {
    health = e.code || String(e);
  }
  for (const s of socks) s.destroy();
  r.proc.kill('SIGTERM');
  const exit = await r.exited;
  check(ok === CONNS, `all ${CONNS} webhook connections (below RELAY_HTTP_MAX_CONNECTIONS=400) ` +
    `were answered 200 under a soft open-file limit of ${SOFT}: ${ok} were, others ${JSON.stringify(other)}`);
  check(health === 200, `/healthz answered while the webhook connections were open: ${health}`);
  check(exit.code === 0, `clean exit ${JSON.stringify(exit)}`);
}

try {
  await openFileLimit();
} catch (e) {
  fail(e.stack || String(e));
}
console.log('all checks passed');
