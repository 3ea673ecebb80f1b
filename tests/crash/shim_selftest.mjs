// Negative control for scenario 2: the sync-order shim must see a server
// that answers 200 before syncing (every answer counted "bad") and must
// accept one that fdatasyncs after reading each request (every answer
// "ok"). The servers are small node processes with the shim preloaded.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TEST_BIN, Ledger, burst, check, finish, tmpdir } from '../support/harness.mjs';

const shim = path.join(TEST_BIN, 'libsync_order_shim.so');
const N = 200;
const server = `
const http = require('http'), fs = require('fs');
const fd = fs.openSync(process.argv[2], 'w');
const good = process.argv[1] === 'good';
const s = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const answer = () => { res.writeHead(200, {'content-type': 'application/json'}); res.end('{"ok":true}'); };
    if (!good) return answer();
    fs.write(fd, 'x', () => fs.fdatasync(fd, answer));
  });
});
s.listen(0, '127.0.0.1', () => process.stdout.write(s.address().port + '\\n'));
process.on('SIGTERM', () => process.exit(0));
`;

async function run(mode) {
  const dir = tmpdir('shim-self');
  const out = path.join(dir, 'counts');
  const p = spawn(process.execPath, ['-e', server, mode, path.join(dir, 'file')], {
    env: { ...process.env, LD_PRELOAD: shim, RELAY_TEST_SYNC_SHIM_OUT: out }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve) => p.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  const ledger = new Ledger();
  await burst(port, ledger, { count: N, clients: 8 }).promise;
  const exited = new Promise((r) => p.on('exit', r));
  p.kill('SIGTERM');
  await exited;
  const c = Object.fromEntries(fs.readFileSync(out, 'utf8').trim().split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  console.log(`${mode}: ${JSON.stringify(c)}, ${ledger.acked.size} acked`);
  return { c, acked: ledger.acked.size };
}
const good = await run('good');
check(good.acked === N && good.c.ok === N && good.c.bad === 0, `sync-before-answer server: ${good.c.ok} ok, ${good.c.bad} bad`);
const bad = await run('bad');
check(bad.acked === N && bad.c.bad === N && bad.c.ok === 0, `answer-without-sync server: ${bad.c.bad} of ${N} flagged`);
finish();
