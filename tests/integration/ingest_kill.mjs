// kill -9 during a burst from 64 keep-alive clients, repeated: after each
// crash the queue must hold every X-Webhook-Id that got a 200, with the
// exact body (0 lost, 0 corrupt). Ids that got no answer may or may not be
// there (they were in flight). ROUNDS and the burst size are env-tunable.
import http from 'node:http';
import path from 'node:path';
import fs from 'node:fs';
import { TMP, SANITIZE, check, queueContents, sha256, startRelayd, webhook, event } from './ingest_lib.mjs';

const ROUNDS = Number(process.env.INGEST_KILL_ROUNDS || 10);
const CLIENTS = 64;
const dir = path.join(TMP, 'data');
fs.mkdirSync(dir);

const obligations = new Map(); // id -> sha256 of the body
let totalAcked = 0, totalFailed = 0;

for (let round = 0; round < ROUNDS; round++) {
  const r = await startRelayd(dir);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  let killed = false;
  const workers = [];
  for (let w = 0; w < CLIENTS; w++) {
    workers.push((async () => {
      for (let i = 0; !killed; i++) {
        const id = `r${round}-c${w}-${i}`;
        const body = event(i, id);
        try {
          const res = await webhook(r.port, body, { id, agent });
          if (res.status === 200) {
            obligations.set(id, sha256(Buffer.from(body)));
            totalAcked++;
          } else {
            check(res.status === 503, `${id}: status ${res.status}`);
          }
        } catch {
          totalFailed++;
          return; // connection died with relayd
        }
      }
    })());
  }
  // A random moment of the burst.
  const delay = (SANITIZE ? 400 : 150) + Math.floor(Math.random() * 900);
  await new Promise((res) => setTimeout(res, delay));
  r.proc.kill('SIGKILL');
  await r.exited;
  killed = true;
  await Promise.all(workers);
  agent.destroy();

  const q = queueContents(dir);
  const seen = new Map();
  let dups = 0;
  for (const rec of q) {
    if (seen.has(rec.id)) dups++;
    seen.set(rec.id, rec);
  }
  let lost = 0, corrupt = 0;
  for (const [id, sha] of obligations) {
    const rec = seen.get(id);
    if (!rec) lost++;
    else if (rec.sha !== sha) corrupt++;
  }
  console.log(`round ${round + 1}/${ROUNDS}: killed after ${delay} ms, acked so far ${obligations.size}, stored ${q.length}, lost ${lost}, corrupt ${corrupt}, duplicate ids ${dups}`);
  check(lost === 0, `round ${round + 1}: ${lost} acknowledged events lost`);
  check(corrupt === 0, `round ${round + 1}: ${corrupt} bodies differ`);
  check(dups === 0, `round ${round + 1}: ${dups} ids stored twice`);
}
check(totalAcked > 0, 'no request was ever acknowledged');
console.log(`ingest kill -9: ${ROUNDS} rounds, ${totalAcked} acknowledged, 0 lost, 0 corrupt (${totalFailed} requests cut by the kills)`);
