// Scenario 2: no 2xx leaves before the sync that covers it, and group
// commit works. relayd runs with tests/crash/sync_order_shim.c preloaded:
// it numbers request reads, durability operations (fdatasync/fsync/msync
// and LMDB's O_DSYNC meta-page write, the commit point) and 2xx sends, and
// counts every 2xx sent without a durability operation that began after the
// request's bytes were read and finished before the send. The drainer is
// paused during the burst so that only ingest commits happen (a drainer
// commit cannot cover a request by accident); afterwards it is resumed and
// the oracle checks delivery.
//   short: 3000 events, 32 clients (ASan: 800, 16); --long: 30000, 64
import fs from 'node:fs';
import path from 'node:path';
import { SANITIZE, TEST_BIN, Ledger, admin, burst, check, finish, result, startStack, stopRelayd, tmpdir }
  from '../support/harness.mjs';

const long = process.argv.includes('--long');
const N = long ? 30000 : SANITIZE ? 800 : 3000;
const C = long ? 64 : SANITIZE ? 16 : 32;
const shim = path.join(TEST_BIN, 'libsync_order_shim.so');
if (!fs.existsSync(shim)) { console.error(`missing ${shim}`); process.exit(1); }
const out = path.join(tmpdir('shim'), 'counts');
const relayEnv = { LD_PRELOAD: shim, RELAY_TEST_SYNC_SHIM_OUT: out };
// The ASan runtime wants to come first; the shim has no sanitizer in it.
if (SANITIZE) relayEnv.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':');

const stack = await startStack({ relayEnv });
const ledger = new Ledger();
check((await admin(stack.relayd, 'POST', '/v1/pause')).status === 200, 'drainer paused for the burst');
const t0 = process.hrtime.bigint();
await burst(stack.relayd.port, ledger, { count: N, clients: C }).promise;
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
const x0 = await stopRelayd(stack.relayd); // the shim writes its counters at exit
check(x0.code === 0, `relayd with the shim exits 0 on SIGTERM (${JSON.stringify(x0)})`);
const line = fs.readFileSync(out, 'utf8').trim();
const c = Object.fromEntries(line.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
console.log(`shim: ${line}`);
const commits = c.dsync_writes || c.syncs;
console.log(`burst: ${ledger.acked.size} acked in ${secs.toFixed(2)} s = ${(ledger.acked.size / secs).toFixed(0)} req/s; ` +
  `${commits} commits = ${(commits / secs).toFixed(0)} commits/s (${c.syncs} sync calls); ` +
  `${(ledger.acked.size / Math.max(1, commits)).toFixed(1)} requests per commit`);
check(ledger.acked.size === N, `every request acknowledged (${ledger.acked.size}/${N})`);
check(c.ok + c.bad >= ledger.acked.size, `the shim saw every 2xx (${c.ok + c.bad} >= ${ledger.acked.size})`);
check(c.dsync_writes > 0, 'LMDB commit points (O_DSYNC meta writes) observed');
check(c.bad === 0, `0 2xx before the covering sync (${c.bad}, ${(100 * c.ok / Math.max(1, c.ok + c.bad)).toFixed(2)} % covered)`);
check(commits < ledger.acked.size, `group commit: ${commits} commits for ${ledger.acked.size} requests`);

await stack.restart({ env: { LD_PRELOAD: '' } });
const st = await stack.settle(ledger);
const v = ledger.verify('after resume');
check(st.drained, 'queue drained');
check(v.lost === 0 && v.corrupt === 0, `0 lost (${v.lost}), 0 corrupt (${v.corrupt})`);
await stack.stop();
result({ scenario: '2 2xx after fsync', runs: 1, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates,
  note: `${c.ok}/${c.ok + c.bad} covered; ${(ledger.acked.size / Math.max(1, commits)).toFixed(1)} req/commit` });
finish();
