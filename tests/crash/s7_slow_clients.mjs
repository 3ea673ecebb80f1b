// Scenario 7: slow and idle clients. Hundreds of slowloris connections
// (headers one byte at a time), hundreds of slow bodies (a byte at a time)
// and 1000+ idle connections, while legitimate signed load continues at a
// steady rate: the legitimate requests keep being acknowledged (0 lost,
// latency printed), and every slow or idle connection is closed by relayd
// after its timeout (short RELAY_HTTP_*_TIMEOUT_MS for the test) even
// though the slow ones keep sending.
//   short: 1000 idle, 200 slowloris, 200 slow body, 8 s of 150 events/s
//          (ASan: 300/100/100, 60/s); --long: 3000/500/500, 60 s of 300/s
import net from 'node:net';
import { SANITIZE, Ledger, burst, check, finish, result, sleep, startStack } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const IDLE = long ? 3000 : SANITIZE ? 300 : 1000;
const LORIS = long ? 500 : SANITIZE ? 100 : 200;
const SLOWBODY = long ? 500 : SANITIZE ? 100 : 200;
const LOAD_MS = long ? 60000 : 8000;
const RATE = long ? 300 : SANITIZE ? 60 : 150;
const HDR_MS = 1500, BODY_MS = 1500, IDLE_MS = 2000;
const stack = await startStack({ relayEnv: {
  RELAY_HTTP_HEADER_TIMEOUT_MS: String(HDR_MS), RELAY_HTTP_BODY_TIMEOUT_MS: String(BODY_MS),
  RELAY_HTTP_IDLE_TIMEOUT_MS: String(IDLE_MS), RELAY_HTTP_MAX_CONNECTIONS: String(IDLE + LORIS + SLOWBODY + 200),
} });
const port = stack.relayd.port;

// Each slow connection: opened at t, closed by the server at some point.
const conns = [];
let stopTrickle = false;
function open(kind) {
  return new Promise((resolve) => {
    const c = { kind, t0: Date.now(), closedAt: 0, bytes: 0, answer: '' };
    const s = net.connect(port, '127.0.0.1');
    c.sock = s;
    s.on('data', (d) => { c.answer += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => { c.closedAt = Date.now(); });
    s.on('connect', () => {
      c.t0 = Date.now();
      resolve(c);
      let msg = '';
      if (kind === 'loris') msg = 'POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ';
      if (kind === 'body') msg = 'POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{';
      if (msg) s.write(msg);
      if (kind === 'idle') return;
      const tick = () => {
        if (stopTrickle || c.closedAt || s.destroyed) return;
        s.write(kind === 'loris' ? 'a' : ' ');
        c.bytes++;
        setTimeout(tick, 200 + Math.random() * 200);
      };
      setTimeout(tick, 200);
    });
    conns.push(c);
  });
}
const ledger = new Ledger();
const b = burst(port, ledger, { clients: 8, rate: RATE, stopOnError: false });
// Latency: one timed request every 100 ms next to the load.
const timed = [];
const sampler = (async () => {
  const { post, makeBody, templates, nextId, sha256 } = await import('../support/harness.mjs');
  const tpl = templates();
  while (!stopTrickle) {
    const id = nextId('lat');
    const body = makeBody(tpl[0], id);
    ledger.sent.set(id, sha256(body));
    const t = Date.now();
    const r = await post(port, body, id);
    timed.push({ ms: Date.now() - t, status: r.status });
    if (r.status === 200) ledger.acked.add(id);
    await sleep(100);
  }
})();
const t0 = Date.now();
// Waves of slow and idle connections for as long as the load runs (each
// wave is closed by relayd after its timeouts, then the next one comes).
let waves = 0;
while (Date.now() - t0 < LOAD_MS - (IDLE_MS + 1500)) {
  const opening = [];
  for (let i = 0; i < IDLE; i++) opening.push(open('idle'));
  for (let i = 0; i < LORIS; i++) opening.push(open('loris'));
  for (let i = 0; i < SLOWBODY; i++) opening.push(open('body'));
  const tw = Date.now();
  await Promise.all(opening);
  waves++;
  console.log(`wave ${waves}: opened ${opening.length} slow/idle connections in ${Date.now() - tw} ms`);
  await sleep(IDLE_MS + 1000);
}
while (Date.now() - t0 < LOAD_MS) await sleep(200);
stopTrickle = true;
b.stop();
await b.promise;
await sampler;
// Everything must be closed by the server by now or shortly after.
const limit = { idle: Math.max(HDR_MS, IDLE_MS), loris: HDR_MS, body: BODY_MS };
await sleep(1500);
for (const kind of ['idle', 'loris', 'body']) {
  const cs = conns.filter((c) => c.kind === kind);
  const open_ = cs.filter((c) => !c.closedAt);
  // Slack for a loaded 2-core machine: thousands of connections arrive at
  // once and relayd's timer starts when it accepts, not when we connect.
  const late = cs.filter((c) => c.closedAt && c.closedAt - c.t0 > 3 * limit[kind] + 1000);
  const durs = cs.filter((c) => c.closedAt).map((c) => c.closedAt - c.t0).sort((x, y) => x - y);
  const p = (q) => durs.length ? durs[Math.min(durs.length - 1, Math.floor(q * durs.length))] : -1;
  const r408 = cs.filter((c) => c.answer.startsWith('HTTP/1.1 408')).length;
  console.log(`${kind}: ${cs.length} opened, ${cs.length - open_.length} closed by relayd (median after ${p(0.5)} ms, max ${p(1)} ms), ${r408} answered 408`);
  check(open_.length === 0, `${kind}: every connection closed by relayd (${open_.length} still open)`);
  check(late.length === 0, `${kind}: closed within 3 x the timeout (${limit[kind]} ms) + 1 s (${late.length} late)`);
}
for (const c of conns) c.sock.destroy();
const ms = timed.map((t) => t.ms).sort((x, y) => x - y);
const pq = (q) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))];
const bad = timed.filter((t) => t.status !== 200).length;
const expected = Math.floor((RATE * LOAD_MS) / 1000);
console.log(`legitimate: ${ledger.acked.size} acked, statuses ${JSON.stringify(ledger.status)}; ` +
  `timed requests ${ms.length}: p50 ${pq(0.5)} ms, p99 ${pq(0.99)} ms, max ${pq(1)} ms`);
if (ledger.errors.length) console.log(`errors: ${ledger.errors.join('; ')}`);
check(bad === 0 && (ledger.status.err || 0) === 0, `legitimate requests all answered 200 (${bad} timed ones not, ${ledger.status.err || 0} errors)`);
check(ledger.acked.size >= expected * 0.8, `legitimate traffic kept flowing (${ledger.acked.size} acked, ~${expected} expected)`);
check(pq(0.99) < 2000, `p99 latency under slow-client pressure < 2 s (${pq(0.99)} ms)`);
const st = await stack.settle(ledger);
const v = ledger.verify('slow clients');
check(st.drained, 'queue drained');
check(v.lost === 0 && v.corrupt === 0, `0 lost (${v.lost}), 0 corrupt (${v.corrupt})`);
await stack.stop();
result({ scenario: '7 slow clients', runs: 1, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates,
  note: `${waves} x ${IDLE} idle + ${LORIS} slowloris + ${SLOWBODY} slow body` });
finish();
