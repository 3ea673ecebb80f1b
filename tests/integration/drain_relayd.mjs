// relayd end to end with the drainer wired in: events POSTed (signed) to
// relayd arrive in an SQS queue subscribed to a fauxqs topic, byte-identical
// with their attributes; pause/resume and test-sns through the admin API;
// kill -9 of relayd while it drains, restart: nothing lost.
//
//   node drain_relayd.mjs [N]   (default 1000)
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  SUPPORT, TMP, check, done, makeEvents, receiveAll, sleep, startFauxqs, topicWithQueue,
} from './drain_lib.mjs';

const { postEvent } = await import(pathToFileURL(path.join(SUPPORT, 'webhook.mjs')).href);
const BIN = process.env.RELAY_BIN_DIR || path.join(path.dirname(process.env.RELAY_TEST_BIN_DIR || ''), 'bin');
const N = Number(process.argv[2] || 1000);
const KEY = 'relay-test-key', SECRET = 'relay-test-secret-' + crypto.randomUUID();

const f = await startFauxqs();
const { topicArn, queueUrl } = await topicWithQueue(f, { topic: 'relayd-events', queue: 'relayd-all' });
const dataDir = path.join(TMP, 'relayd-data');
fs.mkdirSync(dataDir, { recursive: true });

function startRelayd() {
  const env = {
    PATH: process.env.PATH,
    RELAY_LISTEN: '127.0.0.1:0', RELAY_ADMIN_LISTEN: '127.0.0.1:0', RELAY_DATA_DIR: dataDir,
    RELAY_STREAM_API_KEY: KEY, RELAY_STREAM_API_SECRET: SECRET,
    RELAY_SNS_TOPIC_ARN: topicArn, RELAY_SNS_ENDPOINT: f.endpoint, RELAY_SNS_REGION: 'us-east-1',
    RELAY_RETRY_BASE_MS: '50', RELAY_RETRY_MAX_MS: '1000', RELAY_LOG_LEVEL: 'info',
    AWS_ACCESS_KEY_ID: 'AKIDRELAYTEST', AWS_SECRET_ACCESS_KEY: 'relay-test-secret',
    AWS_EC2_METADATA_DISABLED: 'true', HOME: TMP,
  };
  const p = spawn(path.join(BIN, 'relayd'), [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const h = { p, log: '', ports: {} };
  h.ready = new Promise((resolve) => {
    p.stderr.on('data', (d) => {
      h.log += d;
      for (const line of String(d).split('\n')) {
        let o;
        try { o = JSON.parse(line); } catch { continue; }
        if (o.msg === 'ingest listening') h.ports.ingest = o.port;
        if (o.msg === 'admin listening') h.ports.admin = o.port;
        if (h.ports.ingest && h.ports.admin) resolve(true);
      }
    });
    p.on('exit', () => resolve(false));
    setTimeout(() => resolve(false), 15000);
  });
  h.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  return h;
}

function admin(h, method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: h.ports.admin, path: p, method }, (res) => {
      let b = '';
      res.on('data', (c) => { b += c; });
      res.on('end', () => { try { resolve({ status: res.statusCode, body: JSON.parse(b) }); } catch { resolve({ status: res.statusCode, body: b }); } });
    });
    req.on('error', reject);
    req.end();
  });
}

async function post(h, evs, conc = 16) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
  const ok = [];
  let next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < evs.length) {
      const e = evs[next++];
      try {
        const r = await postEvent({ url: `http://127.0.0.1:${h.ports.ingest}/webhook`, body: e.body, apiKey: KEY, secret: SECRET, webhookId: e.webhook_id, agent });
        if (r.status === 200) ok.push(e);
      } catch { /* killed relayd: no 200, no obligation */ }
    }
  }));
  agent.destroy();
  return ok;
}

let rd = startRelayd();
const up = await rd.ready;
check(up, `relayd started (ingest ${rd.ports.ingest}, admin ${rd.ports.admin})`);
if (!up) { console.log(rd.log.slice(-3000)); done(); }

// 1. Everything posted arrives, exactly.
const run = crypto.randomUUID().slice(0, 8);
const evs = makeEvents(N, { prefix: `rd-${run}` });
const accepted = await post(rd, evs);
check(accepted.length === N, `${N} events answered 200 (${accepted.length})`);
const got = await receiveAll(f, queueUrl, { want: N, idleMs: 3000, maxMs: 60000 });
const byId = new Map(got.map((m) => [m.attrs.webhook_id, m]));
const lost = accepted.filter((e) => !byId.has(e.webhook_id)).length;
check(lost === 0 && got.length === N, `all delivered once (${got.length} received, ${lost} lost)`);
const bad = accepted.filter((e) => {
  const m = byId.get(e.webhook_id);
  return m && (!m.body.equals(e.body) || m.attrs.type !== e.type || m.attrs.cid !== e.cid || m.attrs.user_id !== e.user_id);
}).length;
check(bad === 0, `bodies byte-identical, attributes right (${bad} bad)`);
let st = await admin(rd, 'GET', '/v1/stats');
check(st.status === 200 && st.body.drainer === 'running' && st.body.published_total >= N,
  `stats: drainer running, published_total ${st.body.published_total}`);

// 2. Pause holds events queued; resume delivers them.
let r = await admin(rd, 'POST', '/v1/pause');
check(r.status === 200 && r.body.drainer === 'paused', 'pause: drainer paused');
const held = makeEvents(50, { prefix: `rd-held-${run}` });
check((await post(rd, held)).length === 50, '50 events accepted while paused');
await sleep(1000);
const early = await receiveAll(f, queueUrl, { idleMs: 300, maxMs: 1000 });
check(early.length === 0, `nothing published while paused (${early.length})`);
st = await admin(rd, 'GET', '/v1/stats');
check(st.body.drainer === 'paused' && st.body.ready >= 50, `stats: paused with ${st.body.ready} ready`);
r = await admin(rd, 'POST', '/v1/resume');
check(r.status === 200 && r.body.drainer === 'running', 'resume: running');
const later = await receiveAll(f, queueUrl, { want: 50, idleMs: 2000 });
check(later.length === 50, `held events delivered after resume (${later.length})`);

// 3. test-sns.
r = await admin(rd, 'POST', '/v1/test-sns');
check(r.status === 200 && r.body.ok === true && !!r.body.message_id, `test-sns ok (${r.body.message_id})`);
const tmsg = await receiveAll(f, queueUrl, { want: 1, idleMs: 1000 });
check(tmsg.length === 1 && tmsg[0].attrs.type === 'relay.test', 'the test event arrived');

// 4. kill -9 while draining, restart: nothing lost.
await admin(rd, 'POST', '/v1/pause');
const burst = makeEvents(2000, { prefix: `rd-kill-${run}` });
const burstOk = await post(rd, burst, 32);
await admin(rd, 'POST', '/v1/resume');
await sleep(150);
rd.p.kill('SIGKILL');
await rd.exited;
const partial = await receiveAll(f, queueUrl, { idleMs: 500 });
rd = startRelayd();
check(await rd.ready, 'relayd restarted after kill -9');
const rest = await receiveAll(f, queueUrl, { want: burstOk.length, idleMs: 3000, maxMs: 60000 });
const seen = new Map();
for (const m of [...partial, ...rest]) seen.set(m.attrs.webhook_id, (seen.get(m.attrs.webhook_id) || 0) + 1);
const lostK = burstOk.filter((e) => !seen.has(e.webhook_id)).length;
const dups = [...seen.values()].reduce((a, c) => a + c - 1, 0);
console.log(`kill -9: ${partial.length} delivered before the kill, ${rest.length} after; ${dups} duplicates`);
check(lostK === 0, `kill -9: 0 lost of ${burstOk.length} (${lostK})`);
check(dups <= 64 * 10 * 2, `kill -9: duplicates bounded by what was in flight (${dups})`);
st = await admin(rd, 'GET', '/v1/stats');
check(st.body.dlq === 0, 'DLQ empty');

// 5. SIGTERM while draining: clean exit (in-flight requests finish or are
// abandoned, leases released), then a restart delivers the rest.
await admin(rd, 'POST', '/v1/pause');
const burst2 = makeEvents(1500, { prefix: `rd-term-${run}` });
const burst2Ok = await post(rd, burst2, 32);
await admin(rd, 'POST', '/v1/resume');
await sleep(100);
rd.p.kill('SIGTERM');
const ex1 = await rd.exited;
check(ex1.code === 0, `SIGTERM while draining: exit 0 (${ex1.code} ${ex1.signal})`);
const part2 = await receiveAll(f, queueUrl, { idleMs: 500 });
rd = startRelayd();
check(await rd.ready, 'relayd restarted after SIGTERM');
const rest2 = await receiveAll(f, queueUrl, { want: burst2Ok.length - part2.length, idleMs: 3000, maxMs: 60000 });
const seen2 = new Set([...part2, ...rest2].map((m) => m.attrs.webhook_id));
const lost2 = burst2Ok.filter((e) => !seen2.has(e.webhook_id)).length;
console.log(`SIGTERM: ${part2.length} delivered before, ${rest2.length} after the restart`);
check(lost2 === 0, `SIGTERM while draining: 0 lost of ${burst2Ok.length} (${lost2})`);
rd.p.kill('SIGTERM');
const ex = await rd.exited;
check(ex.code === 0, `relayd exited 0 on SIGTERM (${ex.code} ${ex.signal})`);
await f.app.close();
done();
