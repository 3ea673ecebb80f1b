// Scenario 10: write faults on the durable path other than the fdatasync
// of scenario 3. The LD_PRELOAD shim (tests/crash/sync_order_shim.c, its
// RELAY_TEST_SHIM_WFAIL_FILE) fails one call at a time with EIO or ENOSPC:
//   pages      LMDB's pwrite/writev of data pages (plain data.mdb fd)
//   meta       LMDB's meta page write (the O_DSYNC fd): its commit point
//   zero       grow_ahead()'s O_DIRECT zero fill (queue/rq.c)
//   fallocate  grow_ahead()'s fallback for maps under 128 MiB
// The contract (SPEC.md, issue 3): the requests of a failed commit get 503
// with Retry-After, never a 2xx; the next commits work once the fault is
// gone, without a restart, and /readyz is 200 again; a 503'd id sent again
// (as Stream retries) gets its 2xx; after kill -9 and a restart every id
// that got a 2xx is in the queue exactly once (verify quarantines nothing)
// and is delivered. Then the same faults during the drainer's ack commits:
// the records stay (at-least-once) and the drainer keeps going.
// A failed meta page write makes LMDB refuse every later transaction
// (MDB_PANIC) until the environment is reopened: before queue/rq.c's
// env_reopen() relayd answered 503 to everything until a restart.
//   short: one fault of each kind and errno on ingest, pages+meta on acks
//   --long: 3 rounds of everything
import fs from 'node:fs';
import path from 'node:path';
import { Ledger, admin, burst, check, finish, makeBody, post, readShim, result, sha256, shimEnv, sleep,
  startStack, stats, stopRelayd, templates, tmpdir, waitStats } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const ROUNDS = long ? 3 : 1;
const ERRNOS = ['EIO', 'ENOSPC'];
const tpl = templates();

const readyz = async (r) => (await fetch(`http://127.0.0.1:${r.adminPort}/readyz`)).status;
async function waitFor(pred, timeoutMs, everyMs = 20) {
  const t0 = Date.now();
  for (;;) {
    if (await pred()) return true;
    if (Date.now() - t0 > timeoutMs) return false;
    await sleep(everyMs);
  }
}

// The "queue opened" line relayd logs after verify, as an object.
function openedLine(r) {
  for (const l of r.logs) {
    try {
      const o = JSON.parse(l);
      if (o.msg === 'queue opened') return o;
    } catch { /* not JSON */ }
  }
  return null;
}

// One stack: ingest faults with the drainer paused, kill -9 + restart, the
// queue checked against the ledger, ack faults, then everything drained.
async function run(name, { mapBytes = null, ingestTargets, ackTargets }) {
  const work = tmpdir(`s10-${name}`);
  // Shim counters of the first relayd (ingest faults, killed) and of the
  // restarted one (ack faults, stopped cleanly: its counts are final).
  const shimOut = path.join(work, 'counts'), shimOut2 = path.join(work, 'counts2');
  const wfail = path.join(work, 'wfail');
  const relayEnv = { ...shimEnv({ out: shimOut }), RELAY_TEST_SHIM_WFAIL_FILE: wfail };
  if (mapBytes) relayEnv.RELAY_QUEUE_MAX_BYTES = String(mapBytes);
  const stack = await startStack({ relayEnv });
  const ledger = new Ledger();
  let injected = 0;
  const logCount = (re) => stack.relayd.logs.filter((l) => re.test(l)).length;

  // Ingest commits only: no deliveries until the kill -9 below, so the queue
  // must then hold exactly the acknowledged ids.
  check((await admin(stack.relayd, 'POST', '/v1/pause')).status === 200, `${name}: drainer paused`);
  const rejected = []; // ids answered 503
  const b = burst(stack.relayd.port, ledger, {
    clients: 8, stopOnError: false, tpl,
    onStatus: (r, id) => { if (r.status === 503) rejected.push(id); },
  });
  await waitFor(() => ledger.acked.size >= 50, 20000);

  for (let round = 0; round < ROUNDS; round++) {
    for (const target of ingestTargets) {
      for (const errno of ERRNOS) {
        const what = `${name}: ingest ${target} ${errno}${ROUNDS > 1 ? ` #${round + 1}` : ''}`;
        const n503 = ledger.status[503] || 0, r0 = rejected.length;
        const failedBefore = logCount(/commit failed/);
        fs.writeFileSync(wfail, `${target} ${errno} 1\n`);
        const used = await waitFor(() => !fs.existsSync(wfail), 30000);
        if (!check(used, `${what}: injected (the target was reached)`)) {
          fs.rmSync(wfail, { force: true });
          continue;
        }
        injected++;
        const acked = ledger.acked.size;
        const more = await waitFor(() => ledger.acked.size >= acked + 30, 15000);
        const got503 = (ledger.status[503] || 0) - n503;
        const commitFailed = logCount(/commit failed/) > failedBefore || got503 > 0;
        if (target === 'pages' || target === 'meta') {
          // The failing call is inside mdb_txn_commit: that commit fails.
          check(got503 > 0, `${what}: the requests of the failed commit got 503 (${got503})`);
        } else {
          // grow_ahead() failing is harmless: LMDB grows the file itself.
          check(!commitFailed, `${what}: no commit failed (${got503} x 503)`);
        }
        check(more, `${what}: the next commits succeed without a restart (${ledger.acked.size - acked} acked since)`);
        check(await waitFor(async () => await readyz(stack.relayd) === 200, 10000, 50), `${what}: /readyz 200 again`);
        // Stream retries a 503 with the same X-Webhook-Id: it must be taken.
        const retry = rejected.slice(r0, r0 + 3);
        let retried = 0;
        for (const id of retry) {
          const body = makeBody(tpl[0], id);
          ledger.sent.set(id, sha256(body));
          const r = await post(stack.relayd.port, body, id);
          if (r.status === 200) { ledger.acked.add(id); retried++; }
        }
        check(retried === retry.length, `${what}: ${retried} of ${retry.length} 503'd ids sent again got 200`);
      }
    }
  }
  b.stop();
  await b.promise;
  check(ledger.retryAfterMissing === 0, `${name}: every 503 carried Retry-After (${ledger.retryAfterMissing} without)`);
  check(!ledger.status.err, `${name}: no request went unanswered (${ledger.status.err || 0})`);

  // kill -9 with nothing delivered: the queue holds exactly the 2xx ids.
  let st0 = null;
  try { st0 = await stats(stack.relayd); } catch { st0 = null; }
  stack.relayd.proc.kill('SIGKILL');
  await stack.relayd.exited;
  await stack.sw.set('down');
  await stack.restart({ env: { RELAY_TEST_SYNC_SHIM_OUT: shimOut2 } });
  const opened = openedLine(stack.relayd);
  check(opened && Number(opened.quarantined_corrupt) === 0 && Number(opened.order_errors) === 0,
    `${name}: verify after kill -9 quarantines nothing (${opened && opened.quarantined_corrupt} corrupt, ${opened && opened.order_errors} order errors)`);
  // verify rebuilt the gauges from the records it walked: exact counts.
  check(opened && Number(opened.ready) === ledger.acked.size && Number(opened.records) === ledger.acked.size,
    `${name}: after kill -9 the queue holds ${opened && opened.ready} ready records, ${ledger.acked.size} ids got a 2xx`);
  check(st0 && st0.ready === ledger.acked.size, `${name}: before the kill ${st0 && st0.ready} ready, ${ledger.acked.size} acknowledged`);

  // Ack commits: the drainer publishes a backlog (nothing else commits) and
  // one ack commit fails at a time.
  let ackFaults = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const target of ackTargets) {
      for (const errno of ERRNOS) {
        const what = `${name}: ack ${target} ${errno}${ROUNDS > 1 ? ` #${round + 1}` : ''}`;
        const b2 = burst(stack.relayd.port, ledger, { count: 300, clients: 8, tpl, stopOnError: false });
        await b2.promise;
        await admin(stack.relayd, 'POST', '/v1/pause');
        await stack.sw.set('pass');
        check(!!await waitStats(stack.relayd, (x) => x.inflight === 0 && x.inflight_requests === 0, 30000, 20),
          `${what}: drainer paused, nothing in flight`);
        const s1 = await stats(stack.relayd);
        const failedBefore = logCount(/commit failed/);
        fs.writeFileSync(wfail, `${target} ${errno} 1\n`);
        await admin(stack.relayd, 'POST', '/v1/resume');
        const used = await waitFor(() => !fs.existsSync(wfail), 20000);
        if (!check(used, `${what}: injected`)) { fs.rmSync(wfail, { force: true }); continue; }
        injected++;
        ackFaults++;
        check(await waitFor(() => logCount(/commit failed/) > failedBefore, 5000),
          `${what}: relayd saw the commit fail (logged)`);
        const s2 = await waitStats(stack.relayd, (x) => x.ready === 0 && x.inflight === 0, 60000, 50);
        check(!!s2, `${what}: the drainer keeps going and empties the queue (${s1.ready} ready before)`);
        check(await waitFor(async () => await readyz(stack.relayd) === 200, 10000, 50), `${what}: /readyz 200 again`);
        await stack.sw.set('down');
      }
    }
  }
  await stack.sw.set('pass');
  await admin(stack.relayd, 'POST', '/v1/resume');
  const st = await stack.settle(ledger);
  const v = ledger.verify(name);
  check(st.drained, `${name}: queue drained`);
  check(v.lost === 0, `${name}: 0 acknowledged lost (${v.lost})`);
  check(v.corrupt === 0, `${name}: 0 corrupt (${v.corrupt})`);
  check(v.unknown === 0, `${name}: 0 unknown deliveries (${v.unknown})`);
  // Only a failed ack commit may publish a record twice (one batch of the
  // concurrency each).
  const dupBound = ackFaults * Number(stack.env.RELAY_PUBLISH_CONCURRENCY || 16) * Number(stack.env.RELAY_PUBLISH_BATCH || 10);
  check(v.duplicates <= dupBound, `${name}: ${v.duplicates} duplicates (at most ${dupBound} from ${ackFaults} failed ack commits)`);
  await stack.stop();
  // The killed relayd's counts are from its last dump (every 64 2xx).
  const sc1 = readShim(shimOut), sc2 = readShim(shimOut2);
  console.log(`${name}: shim before the kill ${JSON.stringify(sc1)}, after ${JSON.stringify(sc2)}`);
  check(sc1.bad === 0 && sc2.bad === 0, `${name}: no 2xx went out before the sync that covers it (${sc1.bad} + ${sc2.bad} early)`);
  check(sc2.winjected === ackFaults, `${name}: the restarted relayd had ${sc2.winjected} write faults injected (${ackFaults} asked)`);
  return { v, injected, statuses: ledger.status };
}

const results = [];
// Default map (4 GiB): grow-ahead writes zeros through O_DIRECT.
results.push(await run('zero-fill', { ingestTargets: ['pages', 'meta', 'zero'], ackTargets: ['pages', 'meta'] }));
// A 64 MiB map: grow-ahead falls back to fallocate().
results.push(await run('fallocate', { mapBytes: 64 << 20, ingestTargets: ['fallocate'], ackTargets: [] }));

const sum = (k) => results.reduce((a, r) => a + r.v[k], 0);
result({ scenario: '10 write faults', runs: ROUNDS, acked: sum('acked'), lost: sum('lost'), corrupt: sum('corrupt'),
  duplicates: sum('duplicates'), note: `${results.reduce((a, r) => a + r.injected, 0)} injected write faults` });
finish();
