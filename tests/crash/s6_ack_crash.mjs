// Scenario 6: crash between SNS success and the local ack. The SNS switch
// forwards publishes to fauxqs (so they are accepted and delivered) but
// holds the answers back; relayd is killed -9 while they are held. After a
// restart the same records are published again: each shows up twice in SQS
// with the same webhook_id attribute, and nothing is lost.
//   short: 3 rounds of 300 events (ASan: 3 x 100); --long: 10 rounds of 2000
import { SANITIZE, Ledger, burst, check, finish, result, sleep, startStack } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const ROUNDS = long ? 10 : 3;
const N = long ? 2000 : SANITIZE ? 100 : 300;
const stack = await startStack({});
const ledger = new Ledger();
// id -> copies delivered when relayd was killed, for ids SNS accepted while
// their answers were held back (their ack never reached the queue).
const beforeKill = new Map();
let kills = 0;
const copies = (id) => (ledger.delivered.get(id) || []).length;
for (let r = 0; r < ROUNDS; r++) {
  await stack.sw.set('hold');
  const atHold = new Map([...ledger.delivered].map(([id, l]) => [id, l.length]));
  await burst(stack.relayd.port, ledger, { count: N, clients: 8, prefix: `r${r}` }).promise;
  // Wait until SNS accepted something whose answer is held back.
  const t0 = Date.now();
  let inWindow = [];
  while (Date.now() - t0 < 20000) {
    await stack.collect(ledger, { timeoutMs: 200 });
    inWindow = [...ledger.delivered.keys()].filter((id) => copies(id) > (atHold.get(id) || 0));
    if (inWindow.length > 0 && stack.sw.heldCount() > 0) break;
    await sleep(50);
  }
  stack.relayd.proc.kill('SIGKILL');
  await stack.relayd.exited;
  kills++;
  // Late fan-out of what was accepted just before the kill.
  await stack.collect(ledger, { timeoutMs: 300 });
  inWindow = [...ledger.delivered.keys()].filter((id) => copies(id) > (atHold.get(id) || 0));
  for (const id of inWindow) beforeKill.set(id, copies(id));
  console.log(`round ${r + 1}: killed with ${stack.sw.heldCount()} SNS answers held, ${inWindow.length} events accepted by SNS meanwhile`);
  await stack.sw.set('pass');
  await stack.restart();
}
const st = await stack.settle(ledger);
const v = ledger.verify('ack crash');
let again = 0;
for (const [id, n] of beforeKill) if (copies(id) > n) again++;
console.log(`${beforeKill.size} accepted by SNS before a kill, ${again} of them published again`);
check(st.drained, 'queue drained');
check(beforeKill.size > 0, 'the kills hit the window between SNS success and the local ack');
check(again === beforeKill.size, `every event accepted before its ack was lost to the kill came again (${again}/${beforeKill.size})`);
check(ledger.idMismatch === 0, `duplicates carry the same webhook_id (${ledger.idMismatch} mismatches)`);
check(v.lost === 0, `0 lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt (${v.corrupt})`);
check(v.unknown === 0, `0 unknown (${v.unknown})`);
await stack.stop();
result({ scenario: '6 crash after SNS ok', runs: kills, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates });
finish();
