// Scenario 1: kill -9 at a random moment of a burst, restart, repeat; the
// drainer publishes to fauxqs all along. At the end every acknowledged
// X-Webhook-Id must have arrived in SQS with the exact body; duplicates are
// counted and must stay within what can be in flight to SNS at a kill.
// Then more bursts where relayd kills itself right after a commit point
// (LMDB's O_DSYNC meta write, LD_PRELOAD shim) with the drainer paused: that
// commit is durable but none of its requests was answered; they must be
// published anyway after the restart.
//   short: 2000-event bursts, 16 clients, 3 random + 2 commit-point kills
//          (ASan: 600, 8, 3 + 2)
//   --long: 20000-event bursts, 64 clients, 10 random + 5 commit-point kills
import { SANITIZE, check, finish, killBursts, result } from '../support/harness.mjs';

const long = process.argv.includes('--long');
const o = long ? { events: 20000, clients: 64, kills: 10, commitKills: 5 }
  : SANITIZE ? { events: 600, clients: 8, kills: 3, commitKills: 2 } : { events: 2000, clients: 16, kills: 3, commitKills: 2 };
const v = await killBursts(o);
check(v.acked > 0, `events were acknowledged (${v.acked})`);
check(v.drained, 'the queue drained after the last restart');
check(v.lost === 0, `0 acknowledged events lost (${v.lost})`);
check(v.corrupt === 0, `0 corrupt deliveries (${v.corrupt})`);
check(v.unknown === 0, `0 deliveries of ids never sent (${v.unknown})`);
console.log(`commit-point kills: ${v.unanswered} requests unanswered, ${v.unansweredDelivered} of them durable and published`);
check(v.unansweredDelivered > 0, 'requests of a commit that was durable when relayd died were published though never answered');
check(v.duplicates <= v.dupBound, `duplicates ${v.duplicates} <= in-flight bound ${v.dupBound}`);
result({ scenario: '1 kill -9 bursts', runs: v.kills, acked: v.acked, lost: v.lost, corrupt: v.corrupt, duplicates: v.duplicates });
finish();
