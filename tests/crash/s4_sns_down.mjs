// Scenario 4: SNS down under steady load. Phases: connection refused, 5xx
// (InternalError / raw 503), Throttling, hanging requests; ingest keeps acknowledging into the
// queue, the drainer backs off (SNS request rate per phase printed and
// bounded); then SNS comes back and the backlog drains (rate printed). 0
// lost, 0 corrupt.
//   short: 5 s per phase (~23 s), 150 events/s (ASan: 60/s)
//   --long: 60 s per phase (~4.5 min), 300 events/s
import { SANITIZE, Ledger, burst, check, finish, result, sleep, startStack, stats, waitStats } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const PHASE_MS = long ? 60000 : 5000;
const RATE = long ? 300 : SANITIZE ? 60 : 150;
const stack = await startStack({ fault: true });
const ledger = new Ledger();
const b = burst(stack.relayd.port, ledger, { clients: 16, rate: RATE, stopOnError: false });
await sleep(1000);
const states = new Set();
const phases = [
  ['connection refused', async () => stack.sw.set('down')],
  ['5xx', async () => {
    stack.fault.setScript([], { do: 'error', status: 500, code: 'InternalError', message: 'boom', type: 'Receiver' });
    await stack.sw.set('fault');
  }],
  ['raw 503', async () => stack.fault.setScript([], { do: 'status', status: 503, body: '<html>unavailable</html>' })],
  ['Throttling', async () => stack.fault.setScript([], { do: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded' })],
  // Requests that never get an answer (relayd's SNS timeout is 15 s: the
  // long variant's phase outlasts it).
  ['hang', async () => stack.fault.setScript([], { do: 'hang' })],
];
const tOut = Date.now();
for (const [name, set] of phases) {
  await set();
  const before = ledger.acked.size;
  const req0 = stack.fault.stats.requests;
  const t0 = Date.now();
  const ms = name === 'raw 503' ? PHASE_MS / 2 : PHASE_MS;
  while (Date.now() - t0 < ms) {
    const s = await stats(stack.relayd).catch(() => null);
    if (s) states.add(s.drainer);
    // The stand-in's request log is not needed here and would grow by
    // gigabytes over a long outage.
    stack.fault.reset();
    await sleep(250);
  }
  const rate = (stack.fault.stats.requests - req0) / (ms / 1000);
  const sns = name === 'connection refused' ? 'refused' : `${rate.toFixed(1)} SNS requests/s`;
  console.log(`phase ${name}: ${ledger.acked.size - before} acked during it; ${sns}`);
  check(ledger.acked.size > before, `${name}: ingest kept acknowledging`);
  // A whole-request 5xx or Throttling backs the whole drainer off (capped,
  // jittered, one probe at a time): a backlog must not turn an outage into
  // a request storm (it was 380-950 requests/s). With RELAY_RETRY_BASE_MS
  // 50 and RELAY_RETRY_MAX_MS 1000 here it is about 3-5/s; the limit leaves
  // room for a full first wave of requests in a short phase.
  if (name !== 'connection refused')
    check(rate < 20, `${name}: the drainer backs off (${rate.toFixed(1)} SNS requests/s, limit 20)`);
}
const outageS = (Date.now() - tOut) / 1000;
b.stop();
await b.promise;
const sBefore = await stats(stack.relayd);
console.log(`outage ${outageS.toFixed(0)} s; drainer states seen ${[...states].join(',')}; backlog ${sBefore.ready} ready`);
check(states.has('backoff'), 'drainer reported backoff during the outage');
check(sBefore.dead_lettered_total === 0 && sBefore.dlq === 0, `nothing dead-lettered by transient errors (dlq ${sBefore.dlq})`);
check(sBefore.ready > 0, 'a backlog built up');
stack.fault.setScript([], { do: 'ok' });
await stack.sw.set('pass');
const t0 = Date.now();
await waitStats(stack.relayd, (x) => x.ready === 0 && x.inflight === 0, 300000, 50);
const drainS = (Date.now() - t0) / 1000;
const st = await stack.settle(ledger, { timeoutMs: 300000 });
const rate = sBefore.ready / drainS;
console.log(`backlog of ${sBefore.ready} drained in ${drainS.toFixed(1)} s = ${rate.toFixed(0)} events/s ` +
  `(ingest rate was ${RATE}/s: ${(rate / RATE).toFixed(1)}x)`);
const v = ledger.verify('sns down');
check(st.drained, 'the backlog drained');
check(v.lost === 0, `0 acknowledged lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt (${v.corrupt})`);
check(v.unknown === 0, `0 unknown deliveries (${v.unknown})`);
await stack.stop();
result({ scenario: '4 SNS down', runs: 1, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates,
  note: `${outageS.toFixed(0)} s outage, drain ${rate.toFixed(0)}/s` });
finish();
