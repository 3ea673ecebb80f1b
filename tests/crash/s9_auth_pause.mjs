// Scenario 9: auth and credential errors pause publishing. Under steady
// load the fault stand-in answers AuthorizationError, then
// InvalidClientTokenId: the drainer reports "blocked" (GET /v1/stats and
// `relayctl stats --json`), probes slowly, sends nothing to the DLQ, and
// ingest keeps acknowledging. Once SNS accepts again (fauxqs) publishing
// resumes by itself and every acknowledged event arrives.
//   short: 4 s per error (ASan: same, lower rate); --long: 60 s per error
import { SANITIZE, Ledger, burst, check, finish, result, sleep, startStack, stats, waitStats } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const PHASE_MS = long ? 60000 : 4000;
const RATE = long ? 200 : SANITIZE ? 50 : 100;
const stack = await startStack({ fault: true });
const ledger = new Ledger();
const b = burst(stack.relayd.port, ledger, { clients: 8, rate: RATE, stopOnError: false });
await sleep(500);
const errors = [
  { code: 'AuthorizationError', status: 403, message: 'User is not authorized to perform: SNS:Publish' },
  { code: 'InvalidClientTokenId', status: 403, message: 'The security token included in the request is invalid.' },
];
for (const e of errors) {
  stack.fault.setScript([], { do: 'error', status: e.status, code: e.code, message: e.message, type: 'Sender' });
  await stack.sw.set('fault');
  const s = await waitStats(stack.relayd, (x) => x.drainer === 'blocked', 15000, 100);
  check(!!s, `${e.code}: drainer reports "blocked"`);
  // Probing slowly: count what reaches SNS while blocked.
  const r0 = stack.fault.stats.requests;
  const acked0 = ledger.acked.size;
  await sleep(PHASE_MS);
  const perS = (stack.fault.stats.requests - r0) / (PHASE_MS / 1000);
  const s2 = await stats(stack.relayd);
  console.log(`${e.code}: ${perS.toFixed(1)} SNS requests/s while blocked; ready ${s2.ready}; dlq ${s2.dlq}; ` +
    `${ledger.acked.size - acked0} acked meanwhile`);
  check(s2.drainer === 'blocked', `${e.code}: still blocked after ${PHASE_MS / 1000} s`);
  const ctl = await stack.relayctl(['stats', '--json']);
  let cj = null;
  try { cj = JSON.parse(ctl.stdout); } catch { /* checked below */ }
  check(cj && cj.drainer === 'blocked', `${e.code}: relayctl stats --json says drainer "blocked" (${cj && cj.drainer})`);
  check(cj && typeof cj.last_error === 'string' && cj.last_error.includes(e.code),
    `${e.code}: last_error names the AWS code (${cj && cj.last_error})`);
  check(perS <= 5, `${e.code}: probes slowly (${perS.toFixed(1)}/s)`);
  check(s2.dlq === 0 && s2.dead_lettered_total === 0, `${e.code}: nothing sent to the DLQ`);
  check(ledger.acked.size > acked0, `${e.code}: ingest kept acknowledging`);
  // Fixed: SNS accepts again.
  await stack.sw.set('pass');
  const t0 = Date.now();
  const back = await waitStats(stack.relayd, (x) => x.drainer === 'running', 30000, 100);
  check(!!back, `${e.code}: publishing resumed by itself (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
b.stop();
await b.promise;
const st = await stack.settle(ledger);
const v = ledger.verify('auth pause');
check(st.drained, 'queue drained');
check(v.lost === 0, `0 lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt (${v.corrupt})`);
check((await stats(stack.relayd)).dlq === 0, 'DLQ empty at the end');
await stack.stop();
result({ scenario: '9 auth errors pause', runs: errors.length, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates });
finish();
