// Scenario 3: queue full. A small map (RELAY_QUEUE_MAX_BYTES) and SNS
// refusing connections: ingest fills the queue up to the high watermark and
// then answers 503 with Retry-After (and /readyz 503); nothing acknowledged
// is lost. When SNS comes back the drainer frees space and ingest accepts
// again by itself, without a restart.
//   short: 8 MiB map, 8 clients, one fill/recover cycle (ASan: same)
//   (With a 2 MiB map LMDB reports MAP_FULL before the 90 % watermark of
//   rq_used_bytes_in() is reached: still 503 + Retry-After, nothing lost,
//   but /readyz stays 200. S3_MAP_MIB=2 shows it.)
// Then, with the drainer paused, an injected EIO and an injected ENOSPC at
// the commit's fdatasync (LD_PRELOAD shim, tests/crash/sync_order_shim.c):
// the requests of that commit get 503 with Retry-After, the next commits
// succeed, relayd keeps running, and nothing acknowledged is lost.
//   --long: 4 cycles, 5 injections of each errno
import fs from 'node:fs';
import path from 'node:path';
import { Ledger, admin, burst, check, finish, readShim, result, shimEnv, sleep, startStack, tmpdir, waitStats }
  from '../support/harness.mjs';

const long = process.argv.includes('--long');
const CYCLES = long ? 4 : 1;
const INJECT = long ? 5 : 1;
const work = tmpdir('s3');
const shimOut = path.join(work, 'counts'), failFile = path.join(work, 'fail');
const stack = await startStack({ relayEnv: {
  RELAY_QUEUE_MAX_BYTES: String(Number(process.env.S3_MAP_MIB || 8) * 1024 * 1024),
  ...shimEnv({ out: shimOut, failFile }),
} });
const ledger = new Ledger();
let last200 = 0, last503 = 0, n503 = 0;
const b = burst(stack.relayd.port, ledger, {
  clients: 8, stopOnError: false,
  onStatus: (r) => {
    if (r.status === 200) last200 = Date.now();
    if (r.status === 503) { last503 = Date.now(); n503++; }
  },
});
const readyz = async () => (await fetch(`http://127.0.0.1:${stack.relayd.adminPort}/readyz`)).status;

let ok = true;
for (let cyc = 0; cyc < CYCLES && ok; cyc++) {
  await stack.sw.set('down');
  const before = n503;
  let t0 = Date.now();
  while (n503 - before < 50 && Date.now() - t0 < 60000) await sleep(50);
  ok = check(n503 - before >= 50, `cycle ${cyc + 1}: 503 once the queue is at the watermark (${n503 - before} so far, ${ledger.acked.size} acked)`);
  check(await readyz() === 503, `cycle ${cyc + 1}: /readyz answers 503 while full`);
  const ackedFull = ledger.acked.size;
  await stack.sw.set('pass');
  const tBack = Date.now();
  t0 = Date.now();
  while (!(last200 > tBack && ledger.acked.size > ackedFull + 50) && Date.now() - t0 < 60000) await sleep(50);
  ok = check(ledger.acked.size > ackedFull + 50, `cycle ${cyc + 1}: accepting again by itself after SNS came back (` +
    `${ledger.acked.size - ackedFull} acked since, ${((last200 - tBack) / 1000).toFixed(1)} s)`) && ok;
}

// Injected sync failures at commit, drainer paused (only ingest commits).
let injected = 0;
for (const errno of ['EIO', 'ENOSPC']) {
  for (let k = 0; k < INJECT; k++) {
    // Empty queue, then the drainer paused with nothing in flight: the next
    // commit is an ingest one, far from the watermark.
    await admin(stack.relayd, 'POST', '/v1/resume');
    await waitStats(stack.relayd, (x) => x.ready < 100, 60000, 50);
    check((await admin(stack.relayd, 'POST', '/v1/pause')).status === 200, `${errno} #${k + 1}: drainer paused`);
    await waitStats(stack.relayd, (x) => x.inflight === 0, 30000, 20);
    const n503 = ledger.status[503] || 0;
    fs.writeFileSync(failFile, `${errno} 1\n`);
    let t0 = Date.now();
    while (fs.existsSync(failFile) && Date.now() - t0 < 10000) await sleep(20);
    check(!fs.existsSync(failFile), `${errno} #${k + 1}: injected at a sync`);
    injected++;
    const acked = ledger.acked.size;
    t0 = Date.now();
    while (ledger.acked.size < acked + 20 && Date.now() - t0 < 10000) await sleep(20);
    const got503 = (ledger.status[503] || 0) - n503;
    check(got503 > 0, `${errno} #${k + 1}: the waiting requests got 503 (${got503})`);
    check(ledger.acked.size >= acked + 20, `${errno} #${k + 1}: the next commits succeed (${ledger.acked.size - acked} acked since)`);
  }
}
check((await admin(stack.relayd, 'POST', '/v1/resume')).status === 200, 'drainer resumed');
const failedLogged = stack.relayd.logs.filter((l) => l.includes('commit failed')).length;
console.log(`relayd logged ${failedLogged} "commit failed" lines`);
b.stop();
await b.promise;
check(ledger.retryAfterMissing === 0, `every 503 carried Retry-After (${ledger.retryAfterMissing} without)`);
check(await readyz() === 200, '/readyz 200 again');
const st = await stack.settle(ledger);
const v = ledger.verify('queue full');
console.log(`statuses: ${JSON.stringify(ledger.status)}`);
check(st.drained, 'queue drained');
check(v.lost === 0, `0 acknowledged lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt (${v.corrupt})`);
check(v.unknown === 0, `0 unknown deliveries (${v.unknown})`);
await stack.stop();
const sc = readShim(shimOut);
check(sc.injected === injected, `the shim injected ${sc.injected} failures (${injected} asked)`);
result({ scenario: '3 queue full + EIO/ENOSPC', runs: CYCLES, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates,
  note: `${n503} x 503, ${injected} injected sync errors` });
finish();
