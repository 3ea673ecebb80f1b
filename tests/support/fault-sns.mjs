// fault-sns: a fault-injecting Amazon SNS stand-in (query API) for tests.
//
// It records every request it receives (method, path, headers, raw body, the
// parsed form and, for Publish/PublishBatch, the entries) and answers each
// one by the next step of a script; when the script is used up, the default
// step answers. Listens on 127.0.0.1, port 0 (read the port back).
//
// ---- As a module ---------------------------------------------------------
//   import { startFaultSns } from './fault-sns.mjs';
//   const f = await startFaultSns({ script: [...], default: {do: 'ok'},
//                                   verify: {accessKeyId, secretAccessKey} });
//   f.endpoint                'http://127.0.0.1:PORT'
//   f.requests                array of recorded requests (see below)
//   f.setScript(steps, dflt)  replace the script (and default); restarts it
//   f.reset()                 forget recorded requests
//   await f.stop()
//
// ---- As a CLI ------------------------------------------------------------
//   node fault-sns.mjs [--script JSON] [--default JSON] [--verify AKID:SECRET]
//   prints one line {"endpoint": "...", "port": N} and runs until SIGTERM,
//   SIGINT or stdin closing. Control endpoints on the same port (never
//   recorded, never scripted):
//     GET  /_fault/requests   -> JSON array of recorded requests
//     POST /_fault/script     <- {"script":[...], "default":{...}} (either optional)
//     POST /_fault/reset      forget recorded requests and restart the script
//     GET  /_fault/stats      -> the stats object (see below)
//
// ---- Steps (one per SNS request; "times": N repeats a step N times) -------
//   {"do":"ok"}                       success: Publish gets a MessageId,
//                                     PublishBatch lists every entry Successful
//   {"do":"error","status":400,"code":"Throttling","message":"Rate exceeded",
//    "type":"Sender"}                 an AWS ErrorResponse document
//   {"do":"status","status":503,"body":"...","headers":{...}}
//                                     any raw answer (HTML 502, garbage 200...)
//   {"do":"partial","failed":{"1":{"code":"InvalidParameter","message":"bad",
//    "senderFault":true}}}            PublishBatch 200 with those entry Ids
//                                     Failed, the others Successful
//   {"do":"reset"}                    read the request, then destroy the
//                                     connection without an answer (RST)
//   {"do":"hang"}                     never answer (client timeout)
//   {"do":"slow","delayMs":1500,"then":{...step}}
//                                     answer with `then` (default ok) later
//   Any step may carry "poison": {"contains":"POISON","code":"InvalidParameter",
//   "message":"...","senderFault":true}; the default step may too. With it,
//   an ok/partial answer fails every entry whose Message contains the string
//   (Publish: a 400 ErrorResponse; PublishBatch: a Failed member).
//
// ---- Recorded request ---------------------------------------------------------
//   {seq, at (ms), method, path, headers (lowercased names), body (string),
//    params {name: value}, action, entries: [{id, message, attributes {name:
//    value}, groupId, dedupId}], sigOk (true/false, or null without verify),
//    step (the step kind used)}
//
// With `verify`, the SigV4 signature of every request is recomputed with an
// independent signer (@smithy/signature-v4, from the AWS SDK) and a mismatch
// is answered 403 SignatureDoesNotMatch, as AWS would.

import http from 'node:http';
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';

class Sha256 {
  constructor(secret) { this.h = secret ? createHmac('sha256', secret) : createHash('sha256'); }
  update(d) { this.h.update(typeof d === 'string' ? Buffer.from(d, 'utf8') : d); }
  async digest() { return new Uint8Array(this.h.digest()); }
}

const XMLNS = 'http://sns.amazonaws.com/doc/2010-03-31/';
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  .replace(/"/g, '&quot;').replace(/'/g, '&apos;');

function parseForm(body) {
  const params = {};
  for (const [k, v] of new URLSearchParams(body)) params[k] = v;
  return params;
}

function attrsOf(params, prefix) {
  const out = {};
  for (let i = 1; params[`${prefix}MessageAttributes.entry.${i}.Name`] !== undefined; i++) {
    const p = `${prefix}MessageAttributes.entry.${i}.`;
    out[params[`${p}Name`]] = params[`${p}Value.StringValue`];
  }
  return out;
}

function entriesOf(params) {
  if (params.Action === 'Publish') {
    return [{ id: null, message: params.Message, attributes: attrsOf(params, ''),
      groupId: params.MessageGroupId, dedupId: params.MessageDeduplicationId }];
  }
  if (params.Action === 'PublishBatch') {
    const out = [];
    for (let i = 1; params[`PublishBatchRequestEntries.member.${i}.Id`] !== undefined; i++) {
      const p = `PublishBatchRequestEntries.member.${i}.`;
      out.push({ id: params[`${p}Id`], message: params[`${p}Message`], attributes: attrsOf(params, p),
        groupId: params[`${p}MessageGroupId`], dedupId: params[`${p}MessageDeduplicationId`] });
    }
    return out;
  }
  return [];
}

function errorDoc(code, message, type = 'Sender') {
  return `<ErrorResponse xmlns="${XMLNS}"><Error><Type>${esc(type)}</Type><Code>${esc(code)}</Code>` +
    `<Message>${esc(message)}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`;
}

async function verifySig(rec, creds) {
  const auth = rec.headers.authorization || '';
  const m = auth.match(/^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/);
  if (!m || m[1] !== creds.accessKeyId) return false;
  const [, , , region, service, signed, sig] = m;
  const amzDate = rec.headers['x-amz-date'] || '';
  const d = amzDate.match(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/);
  if (!d) return false;
  const names = signed.split(';');
  const headers = {};
  for (const n of names) {
    if (n === 'x-amz-date' || n === 'x-amz-security-token') continue;
    if (rec.headers[n] === undefined) return false;
    headers[n] = rec.headers[n];
  }
  const token = rec.headers['x-amz-security-token'];
  if (token && !names.includes('x-amz-security-token')) return false;
  const signer = new SignatureV4({ service, region, sha256: Sha256, applyChecksum: false,
    credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey,
      ...(token ? { sessionToken: token } : {}) } });
  const [host, port] = (rec.headers.host || '').split(':');
  const out = await signer.sign({ method: rec.method, protocol: 'http:', hostname: host,
    port: port ? Number(port) : undefined, path: rec.path, headers, body: rec.body },
  { signingDate: new Date(Date.UTC(+d[1], +d[2] - 1, +d[3], +d[4], +d[5], +d[6])) });
  const want = (out.headers.authorization || '').match(/Signature=([0-9a-f]{64})/);
  const wantSigned = (out.headers.authorization || '').match(/SignedHeaders=([^,]+)/);
  return !!want && want[1] === sig && wantSigned[1] === signed;
}

export async function startFaultSns(opts = {}) {
  let script = [];
  let dflt = { do: 'ok' };
  let cursor = 0; // index into the expanded script
  const requests = [];
  const stats = { requests: 0, answered: {}, inflight: 0, maxInflight: 0, connections: 0 };
  let seq = 0;
  let mid = 0;
  const sockets = new Set();
  const hanging = new Set();

  function expand(steps) {
    const out = [];
    for (const s of steps || []) for (let i = 0; i < (s.times || 1); i++) out.push(s);
    return out;
  }
  function setScript(steps, d) {
    script = expand(steps);
    if (d) dflt = d;
    cursor = 0;
  }
  setScript(opts.script, opts.default);

  function nextStep() { return cursor < script.length ? script[cursor++] : dflt; }

  function successXml(rec, step) {
    const poison = step.poison || dflt.poison;
    const isPoison = (e) => poison && typeof e.message === 'string' && e.message.includes(poison.contains);
    if (rec.action === 'Publish') {
      const e = rec.entries[0];
      if (isPoison(e)) {
        return { status: 400, body: errorDoc(poison.code || 'InvalidParameter', poison.message || 'poison message',
          poison.senderFault === false ? 'Receiver' : 'Sender') };
      }
      return { status: 200, body: `<PublishResponse xmlns="${XMLNS}"><PublishResult><MessageId>fault-${++mid}</MessageId>` +
        `</PublishResult><ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></PublishResponse>` };
    }
    if (rec.action === 'PublishBatch') {
      const failed = step.failed || {};
      let ok = '', bad = '';
      for (const e of rec.entries) {
        let f = failed[e.id];
        if (!f && isPoison(e)) f = poison;
        if (f) {
          bad += `<member><Id>${esc(e.id)}</Id><Code>${esc(f.code || 'InvalidParameter')}</Code>` +
            `<Message>${esc(f.message || 'failed')}</Message><SenderFault>${f.senderFault === false ? 'false' : 'true'}</SenderFault></member>`;
        } else {
          ok += `<member><Id>${esc(e.id)}</Id><MessageId>fault-${++mid}</MessageId></member>`;
        }
      }
      return { status: 200, body: `<PublishBatchResponse xmlns="${XMLNS}"><PublishBatchResult><Successful>${ok}</Successful>` +
        `<Failed>${bad}</Failed></PublishBatchResult><ResponseMetadata><RequestId>${randomUUID()}</RequestId>` +
        `</ResponseMetadata></PublishBatchResponse>` };
    }
    return { status: 400, body: errorDoc('InvalidAction', `Unknown action: ${rec.action}`) };
  }

  function answer(req, res, rec, step) {
    const kind = step.do || 'ok';
    stats.answered[kind] = (stats.answered[kind] || 0) + 1;
    rec.step = kind;
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': randomUUID(), ...headers });
      res.end(body);
    };
    switch (kind) {
      case 'ok':
      case 'partial': {
        const r = successXml(rec, step);
        return send(r.status, r.body);
      }
      case 'error':
        return send(step.status || 400, errorDoc(step.code || 'InternalError', step.message || 'injected error', step.type || 'Sender'));
      case 'status':
        return send(step.status || 500, step.body ?? '', step.headers || {});
      case 'reset':
        req.socket.resetAndDestroy ? req.socket.resetAndDestroy() : req.socket.destroy();
        return undefined;
      case 'hang':
        hanging.add(res);
        return undefined;
      case 'slow': {
        const t = setTimeout(() => { hanging.delete(res); answer(req, res, rec, step.then || { do: 'ok' }); }, step.delayMs ?? 1000);
        hanging.add(res);
        res.on('close', () => clearTimeout(t));
        return undefined;
      }
      default:
        return send(500, errorDoc('InternalError', `fault-sns: unknown step ${kind}`, 'Receiver'));
    }
  }

  const server = http.createServer({ keepAliveTimeout: 60000 }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url, 'http://x');
      if (url.pathname.startsWith('/_fault/')) return control(req, res, url.pathname, body);
      const params = parseForm(body);
      const rec = { seq: seq++, at: Date.now(), method: req.method, path: url.pathname + url.search,
        headers: { ...req.headers }, body, params, action: params.Action, entries: entriesOf(params),
        sigOk: null, step: null, conn: req.socket.connId };
      stats.inflight++;
      stats.maxInflight = Math.max(stats.maxInflight, stats.inflight);
      let counted = true;
      const done = () => { if (counted) { counted = false; stats.inflight--; } };
      res.on('finish', done);
      res.on('close', done);
      requests.push(rec);
      stats.requests++;
      if (opts.verify) {
        try { rec.sigOk = await verifySig(rec, opts.verify); } catch { rec.sigOk = false; }
        if (!rec.sigOk) {
          rec.step = 'signature';
          res.writeHead(403, { 'content-type': 'text/xml' });
          return res.end(errorDoc('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.'));
        }
      }
      answer(req, res, rec, nextStep());
    });
  });

  function control(req, res, path, body) {
    const json = (status, obj) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(obj)); };
    if (req.method === 'GET' && path === '/_fault/requests') return json(200, requests);
    if (req.method === 'GET' && path === '/_fault/stats') return json(200, stats);
    if (req.method === 'POST' && path === '/_fault/script') {
      try {
        const b = JSON.parse(body || '{}');
        setScript(b.script || [], b.default);
        return json(200, { ok: true, steps: script.length });
      } catch (e) { return json(400, { error: String(e) }); }
    }
    if (req.method === 'POST' && path === '/_fault/reset') {
      requests.length = 0;
      cursor = 0;
      return json(200, { ok: true });
    }
    return json(404, { error: 'unknown control path' });
  }

  server.on('connection', (s) => {
    s.connId = ++stats.connections;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    requests,
    stats,
    setScript,
    reset() { requests.length = 0; cursor = 0; },
    stop() {
      for (const r of hanging) r.destroy();
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const args = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--script') opts.script = JSON.parse(args[++i]);
    else if (args[i] === '--default') opts.default = JSON.parse(args[++i]);
    else if (args[i] === '--verify') {
      const [accessKeyId, ...rest] = args[++i].split(':');
      opts.verify = { accessKeyId, secretAccessKey: rest.join(':') };
    } else { console.error(`fault-sns.mjs: unknown argument ${args[i]}`); process.exit(2); }
  }
  const f = await startFaultSns(opts);
  process.stdout.write(JSON.stringify({ endpoint: f.endpoint, port: f.port }) + '\n');
  const stop = async () => { await f.stop(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
}
