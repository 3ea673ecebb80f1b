// fauxqs (SNS/SQS emulator) on loopback, with a topic and subscribed queues.
//
// As a module:
//   import { startFauxqs } from './fauxqs.mjs';
//   const fx = await startFauxqs({ fifo: false, filterTypes: ['message.new'] });
//   fx.endpoint            'http://127.0.0.1:PORT'
//   fx.topicArn            'arn:aws:sns:us-east-1:000000000000:relay-events[.fifo]'
//   fx.queues.all          { name, url, arn }  raw delivery, every event
//   fx.queues.filtered     { name, url, arn }  raw delivery, FilterPolicy {"type": filterTypes}
//                          (only when filterTypes is given)
//   await fx.drain(fx.queues.all.url, { expect: n, timeoutMs: 5000 })
//       -> [{ body, attributes: {name: value}, groupId, dedupId, messageId }]
//          receives (and deletes) until the queue is empty, or until `expect`
//          messages arrived (then keeps draining briefly to catch extras)
//   await fx.sns(params) / fx.sqs(action, body)   raw protocol calls
//   await fx.stop()
//   Options: topicName, fifo, contentBasedDedup, filterTypes, region.
//
// As a CLI (for shell tests):
//   node fauxqs.mjs [--fifo] [--filter-type T]... [--topic NAME]
//   prints one JSON line {"endpoint","region","topicArn","queues":{...}} and
//   runs until SIGTERM/SIGINT or until stdin closes. Shell tests can read a
//   queue without consuming it at GET {endpoint}/_fauxqs/queues/{name}.
//
// fauxqs is started in-process through buildApp() and listens on 127.0.0.1
// only (its own CLI would bind every interface). It does not check SigV4
// signatures; region comes from the Authorization header when present.

import { buildApp } from 'fauxqs';

const REGION = 'us-east-1';
// Dummy credentials in the scope of our own control calls.
const AUTH = `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/${REGION}/sns/aws4_request, SignedHeaders=host, Signature=0`;

function formEncode(params) {
  // Same strict encoding as the relay (space as %20).
  return Object.entries(params)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v)).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())}`)
    .join('&');
}

function xmlValue(xml, tag) {
  const m = xml.match(new RegExp(`<${tag}>([^<]*)</${tag}>`));
  return m ? m[1] : undefined;
}

export async function startFauxqs(opts = {}) {
  const fifo = !!opts.fifo;
  const region = opts.region || REGION;
  const base = opts.topicName || 'relay-events';
  const topicName = fifo ? `${base}.fifo` : base;

  const app = buildApp({ logger: false, defaultRegion: region });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const port = new URL(address).port;
  const endpoint = `http://127.0.0.1:${port}`;

  async function sns(params) {
    const res = await fetch(`${endpoint}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', authorization: AUTH },
      body: formEncode({ Version: '2010-03-31', ...params }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`fauxqs SNS ${params.Action}: ${res.status} ${text}`);
    return text;
  }

  async function sqs(action, body) {
    const res = await fetch(`${endpoint}/`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': `AmazonSQS.${action}`,
        authorization: AUTH.replace('/sns/', '/sqs/'),
      },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`fauxqs SQS ${action}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : {};
  }

  const topicParams = { Action: 'CreateTopic', Name: topicName };
  if (fifo) {
    topicParams['Attributes.entry.1.key'] = 'FifoTopic';
    topicParams['Attributes.entry.1.value'] = 'true';
    if (opts.contentBasedDedup) {
      topicParams['Attributes.entry.2.key'] = 'ContentBasedDeduplication';
      topicParams['Attributes.entry.2.value'] = 'true';
    }
  }
  const topicArn = xmlValue(await sns(topicParams), 'TopicArn');
  if (!topicArn) throw new Error('fauxqs: CreateTopic returned no TopicArn');

  async function makeQueue(name, filterPolicy) {
    const qname = fifo ? `${name}.fifo` : name;
    const attrs = fifo ? { FifoQueue: 'true' } : {};
    const { QueueUrl: url } = await sqs('CreateQueue', { QueueName: qname, Attributes: attrs });
    const got = await sqs('GetQueueAttributes', { QueueUrl: url, AttributeNames: ['QueueArn'] });
    const arn = got.Attributes.QueueArn;
    const p = { Action: 'Subscribe', TopicArn: topicArn, Protocol: 'sqs', Endpoint: arn,
      'Attributes.entry.1.key': 'RawMessageDelivery', 'Attributes.entry.1.value': 'true' };
    if (filterPolicy) {
      p['Attributes.entry.2.key'] = 'FilterPolicy';
      p['Attributes.entry.2.value'] = JSON.stringify(filterPolicy);
    }
    await sns(p);
    return { name: qname, url, arn };
  }

  const queues = { all: await makeQueue('relay-all') };
  if (opts.filterTypes && opts.filterTypes.length)
    queues.filtered = await makeQueue('relay-filtered', { type: opts.filterTypes });

  async function receiveOnce(url) {
    const r = await sqs('ReceiveMessage', {
      QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0,
      MessageAttributeNames: ['All'], AttributeNames: ['All'], VisibilityTimeout: 30,
    });
    const msgs = r.Messages || [];
    if (msgs.length) {
      await sqs('DeleteMessageBatch', {
        QueueUrl: url,
        Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
      });
    }
    return msgs.map((m) => {
      const attributes = {};
      for (const [k, v] of Object.entries(m.MessageAttributes || {})) {
        attributes[k] = v.StringValue;
        if (v.DataType !== 'String') attributes[k] = { DataType: v.DataType, value: v.StringValue };
      }
      return {
        body: m.Body,
        attributes,
        messageId: m.MessageId,
        groupId: m.Attributes?.MessageGroupId,
        dedupId: m.Attributes?.MessageDeduplicationId,
      };
    });
  }

  async function drain(url, { expect = 0, timeoutMs = 5000, settleMs = 200 } = {}) {
    const out = [];
    const deadline = Date.now() + timeoutMs;
    let emptySince = 0;
    for (;;) {
      const got = await receiveOnce(url);
      out.push(...got);
      if (got.length) { emptySince = 0; continue; }
      if (!emptySince) emptySince = Date.now();
      const enough = out.length >= expect;
      if (enough && Date.now() - emptySince >= settleMs) break;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    return out;
  }

  return {
    endpoint, region, topicArn, queues, sns, sqs, drain,
    stop: () => app.close(),
  };
}

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const args = process.argv.slice(2);
  const opts = { fifo: false, filterTypes: [] };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--fifo') opts.fifo = true;
    else if (args[i] === '--filter-type') opts.filterTypes.push(args[++i]);
    else if (args[i] === '--topic') opts.topicName = args[++i];
    else { console.error(`fauxqs.mjs: unknown argument ${args[i]}`); process.exit(2); }
  }
  const fx = await startFauxqs(opts);
  process.stdout.write(JSON.stringify({ endpoint: fx.endpoint, region: fx.region, topicArn: fx.topicArn, queues: fx.queues }) + '\n');
  const stop = async () => { await fx.stop(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
}
