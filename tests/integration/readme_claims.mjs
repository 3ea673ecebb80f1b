// README claims about the admin API, checked against the real relayd.
//
//   dlq_query_empty  README: "GET /v1/dlq?reason=&type=&limit=&after=": a
//                    parameter given empty (as in that line, or a script's
//                    `?reason=$R&limit=$L` with nothing in $L) means "not
//                    given", as it already did for reason and type; an empty
//                    limit or after answered 400 "bad limit (1..1000)".
import fs from 'node:fs';
import path from 'node:path';

const SUPPORT = path.join(process.env.RELAY_SOURCE_DIR, 'tests/support');
const H = await import(path.join(SUPPORT, 'harness.mjs'));
const { startFaultSns } = await import(path.join(SUPPORT, 'fault-sns.mjs'));
const { sign } = await import(path.join(SUPPORT, 'webhook.mjs'));
const { check, finish, relaydEnv, startRelayd, stopRelayd, admin, waitStats, API_KEY, SECRET } = H;

const ARN = 'arn:aws:sns:us-east-1:000000000000:readme-claims';

async function post(port, obj, webhookId) {
  const body = Buffer.from(JSON.stringify(obj));
  const headers = { 'content-type': 'application/json', 'x-api-key': API_KEY, 'x-signature': sign(body, SECRET),
    'x-webhook-id': webhookId };
  const r = await fetch(`http://127.0.0.1:${port}/webhook`, { method: 'POST', headers, body });
  return r.status;
}

async function caseDlqQueryEmpty(dir, fault) {
  const r = await startRelayd(relaydEnv(dir, fault.endpoint, ARN, {}));
  try {
    // Two events SNS refuses for good: two DLQ entries (reason "rejected").
    for (let i = 0; i < 2; i++)
      check(await post(r.port, { type: 'message.new', cid: 'messaging:readme', text: `POISON ${i}` }, `rc-${i}`) === 200,
        `event ${i} stored`);
    const s = await waitStats(r, (x) => x.dlq === 2, 20000, 100);
    check(!!s, 'both events are in the DLQ');
    const all = await admin(r, 'GET', '/v1/dlq');
    check(all.status === 200 && all.json.entries.length === 2, `GET /v1/dlq: ${all.status}, ${all.json?.entries?.length} entries`);
    for (const q of ['?reason=&type=&limit=&after=', '?limit=', '?after=', '?reason=rejected&limit=', '?limit=&after=']) {
      const g = await admin(r, 'GET', `/v1/dlq${q}`);
      check(g.status === 200 && g.json?.entries?.length === 2 && g.json.next_after === null,
        `GET /v1/dlq${q}: ${g.status} ${g.status === 200 ? `${g.json.entries.length} entries` : g.text.trim()}`);
    }
    // Values given still count, and bad ones are still refused.
    const one = await admin(r, 'GET', '/v1/dlq?reason=&limit=1&after=');
    check(one.status === 200 && one.json.entries.length === 1 && one.json.next_after === one.json.entries[0].id,
      `limit=1 with empty reason/after: one entry and next_after (${one.status} ${one.text.slice(0, 80)})`);
    for (const q of ['?limit=0', '?limit=x', '?limit=1001', '?after=x'])
      check((await admin(r, 'GET', `/v1/dlq${q}`)).status === 400, `GET /v1/dlq${q}: 400`);
  } finally {
    const x = await stopRelayd(r);
    check(x.code === 0, `relayd exits 0 on SIGTERM (${JSON.stringify(x)})`);
  }
}

const cases = { dlq_query_empty: caseDlqQueryEmpty };
const name = process.argv[2];
if (!cases[name]) {
  console.log(`usage: readme_claims.mjs ${Object.keys(cases).join('|')}`);
  process.exit(2);
}
const dir = path.join(H.tmpdir('readme'), 'data');
fs.mkdirSync(path.dirname(dir), { recursive: true });
const fault = await startFaultSns({ default: { do: 'ok', poison: { contains: 'POISON', code: 'InvalidParameter', message: 'refused' } } });
try {
  await cases[name](dir, fault);
} catch (e) {
  check(false, `exception: ${e.stack || e}`);
}
await fault.stop();
finish();
