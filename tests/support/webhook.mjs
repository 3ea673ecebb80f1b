// Stream-style webhook client for tests, the demo and the durability harness.
//
// Library:
//   import { sign, postEvent, loadFixtures } from './webhook.mjs'
//   sign(bodyBuffer, secret)            -> lowercase hex HMAC-SHA256
//   postEvent({url, body, apiKey, secret, webhookId, gzip, agent}) -> {status, headers, body}
//   loadFixtures(dir)                   -> [{name, body: Buffer}]
// CLI:
//   node webhook.mjs --url http://127.0.0.1:8080/webhook --api-key K --secret S [--gzip] FILE...
//   prints one line per file: "<status> <file> <webhook-id>"; exit 1 if any status is not 200.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

export function sign(body, secret) {
  return crypto.createHmac('sha256', secret).update(body).digest('hex');
}

export function loadFixtures(dir) {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((name) => ({ name, body: fs.readFileSync(path.join(dir, name)) }));
}

export function postEvent({ url, body, apiKey, secret, webhookId, gzip = false, agent, timeoutMs = 10000 }) {
  const u = new URL(url);
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers['X-Api-Key'] = apiKey;
  if (secret) headers['X-Signature'] = sign(body, secret);
  if (webhookId) headers['X-Webhook-Id'] = webhookId;
  let payload = body;
  if (gzip) {
    payload = zlib.gzipSync(body);
    headers['Content-Encoding'] = 'gzip';
  }
  headers['Content-Length'] = String(payload.length);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

async function main(argv) {
  const opts = { files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--url') opts.url = argv[++i];
    else if (a === '--api-key') opts.apiKey = argv[++i];
    else if (a === '--secret') opts.secret = argv[++i];
    else if (a === '--gzip') opts.gzip = true;
    else opts.files.push(a);
  }
  if (!opts.url || opts.files.length === 0) {
    console.error('usage: webhook.mjs --url URL [--api-key K --secret S] [--gzip] FILE...');
    process.exit(2);
  }
  let bad = 0;
  for (const f of opts.files) {
    const body = fs.readFileSync(f);
    const webhookId = crypto.randomUUID();
    const r = await postEvent({ ...opts, body, webhookId });
    console.log(`${r.status} ${path.basename(f)} ${webhookId}`);
    if (r.status !== 200) bad++;
  }
  process.exit(bad ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main(process.argv.slice(2)).catch((e) => { console.error(e.message); process.exit(1); });
}
