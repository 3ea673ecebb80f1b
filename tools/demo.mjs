// The quick-start demo: an SNS/SQS emulator (fauxqs) on loopback with a topic
// and a subscribed queue, relayd publishing to it, a few signed sample
// events posted as Stream would, and the proof: the events arriving in the
// queue and `relayctl stats`. Run through tools/demo.sh, which installs and
// builds first.
//
//   node tools/demo.mjs [--once] [--listen HOST:PORT] [--admin-listen HOST:PORT]
//                       [--data-dir DIR] [--bin DIR]
// --once exits after the demo (for scripts and the test of this command);
// otherwise relay keeps running until Ctrl-C.
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFauxqs } from '../tests/support/fauxqs.mjs';
import { postEvent } from '../tests/support/webhook.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const opts = { once: false, listen: '127.0.0.1:8080', admin: '127.0.0.1:8081', bin: path.join(root, 'build/bin') };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--once') opts.once = true;
  else if (a === '--listen') opts.listen = argv[++i];
  else if (a === '--admin-listen') opts.admin = argv[++i];
  else if (a === '--data-dir') opts.dataDir = argv[++i];
  else if (a === '--bin') opts.bin = argv[++i];
  else { console.error(`demo: unknown argument ${a}`); process.exit(2); }
}
const dataDir = opts.dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'relay-demo-'));
const fixtures = path.join(root, '..', 'shared', 'fixtures', 'events');
const samples = ['message.new.json', 'reaction.new.json', 'message.new-unicode.json', 'channel.created.json',
  'user.banned.json', 'message.new-too-large.json'];
const apiKey = 'demo-key';
const secret = crypto.randomBytes(16).toString('hex');
const say = (s) => console.log(process.stdout.isTTY ? `\x1b[1m==> ${s}\x1b[0m` : `==> ${s}`);

say('starting the SNS/SQS emulator (fauxqs) on loopback');
const fx = await startFauxqs({ filterTypes: ['message.new'] });
console.log(`    topic ${fx.topicArn}\n    queue ${fx.queues.all.name} (raw delivery, all events), ${fx.queues.filtered.name} (filter: type = message.new)`);

say(`starting relayd on ${opts.listen} (admin ${opts.admin}), queue in ${dataDir}`);
const env = {
  PATH: process.env.PATH,
  RELAY_LISTEN: opts.listen,
  RELAY_ADMIN_LISTEN: opts.admin,
  RELAY_DATA_DIR: dataDir,
  RELAY_SNS_TOPIC_ARN: fx.topicArn,
  RELAY_SNS_ENDPOINT: fx.endpoint,
  RELAY_STREAM_API_KEY: apiKey,
  RELAY_STREAM_API_SECRET: secret,
  RELAY_LOG_FORMAT: 'text',
  AWS_ACCESS_KEY_ID: 'demo',
  AWS_SECRET_ACCESS_KEY: 'demo-secret',
  AWS_EC2_METADATA_DISABLED: 'true',
};
const relayd = spawn(path.join(opts.bin, 'relayd'), [], { env, stdio: ['ignore', 'inherit', 'pipe'] });
const relaydLog = [];
relayd.stderr.on('data', (d) => { relaydLog.push(d); if (!opts.once) process.stderr.write(d); });
let exited = false;
relayd.on('exit', (code, sig) => { exited = true; if (!stopping) { console.error(`relayd exited (${code ?? sig})`); console.error(Buffer.concat(relaydLog).toString()); process.exit(1); } });
let stopping = false;

async function waitReady() {
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://${opts.admin}/readyz`);
      if (r.status === 200) return;
    } catch { /* not yet listening */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('relayd did not become ready in 10 s');
}
await waitReady();

say(`posting ${samples.length} signed sample events to http://${opts.listen}/webhook`);
const posted = [];
for (const name of samples) {
  const body = fs.readFileSync(path.join(fixtures, name));
  const webhookId = crypto.randomUUID();
  const r = await postEvent({ url: `http://${opts.listen}/webhook`, body, apiKey, secret, webhookId });
  console.log(`    ${r.status} ${r.body.trim().padEnd(12)} ${name} (${body.length} bytes)`);
  if (r.status !== 200) throw new Error(`relayd answered ${r.status} for ${name}`);
  posted.push({ name, webhookId, body });
}
const forged = await postEvent({ url: `http://${opts.listen}/webhook`, body: Buffer.from('{"type":"message.new"}'), apiKey, secret: 'wrong' });
console.log(`    ${forged.status} ${forged.body.trim()}  (a request with a bad signature)`);

const deliverable = posted.filter((p) => p.name !== 'message.new-too-large.json');
say('waiting for the events to arrive in the SQS queue');
const got = await fx.drain(fx.queues.all.url, { expect: deliverable.length, timeoutMs: 20000 });
let ok = 0;
for (const p of deliverable) {
  const m = got.find((g) => g.attributes.webhook_id === p.webhookId);
  const same = m && Buffer.from(m.body).equals(p.body);
  if (same) ok++;
  console.log(`    ${same ? 'arrived' : 'MISSING'}  ${p.name.padEnd(28)} type=${m?.attributes.type ?? '-'} cid=${m?.attributes.cid ?? '-'}`);
}
const filtered = await fx.drain(fx.queues.filtered.url, { expect: 2, timeoutMs: 5000 });
console.log(`    filtered queue (type = message.new) got ${filtered.length}: ${filtered.map((m) => m.attributes.type).join(', ')}`);
console.log('    message.new-too-large.json (over the 256 KiB SNS limit) waits in the DLQ as too_large');

say(`relayctl --admin http://${opts.admin} stats`);
const ctl = (args) => execFileSync(path.join(opts.bin, 'relayctl'), ['--admin', `http://${opts.admin}`, ...args], { encoding: 'utf8' });
process.stdout.write(ctl(['stats']));
say('relayctl dlq list');
process.stdout.write(ctl(['dlq', 'list']));

const success = ok === deliverable.length;
console.log(success ? `\n${ok}/${deliverable.length} events delivered byte for byte.` : `\nonly ${ok}/${deliverable.length} events delivered`);

async function stop(code) {
  stopping = true;
  if (!exited) {
    relayd.kill('SIGTERM');
    await new Promise((r) => relayd.once('exit', r));
  }
  await fx.stop();
  if (!opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(code);
}
if (opts.once || !success) await stop(success ? 0 : 1);

console.log(`
relay is running. Try, in another shell:
  ${path.join(opts.bin, 'relayctl')} --admin http://${opts.admin} stats --watch
  node tests/support/webhook.mjs --url http://${opts.listen}/webhook --api-key ${apiKey} --secret ${secret} ../shared/fixtures/events/message.new.json
  curl -s http://${opts.admin}/metrics | grep relay_
Ctrl-C stops relayd (it finishes its commits and exits cleanly) and the emulator.`);
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
