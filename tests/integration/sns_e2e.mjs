// End to end: every fixture event that fits SNS's limit is published through
// the relay's SNS client (C driver) to fauxqs; a raw-delivery SQS queue must
// receive each body byte-identical with its attributes, and a second queue
// with a FilterPolicy on `type` only the matching events.
//
//   node sns_e2e.mjs publish|batch [--fifo]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startFauxqs } from '../support/fauxqs.mjs';
import { check, checkDriverExit, eq, expectedAttributes, finish, fixtureFiles, runDriver, snsSize } from './sns_common.mjs';

const mode = process.argv[2];
const fifo = process.argv.includes('--fifo');
if (mode !== 'publish' && mode !== 'batch') {
  console.error('usage: sns_e2e.mjs publish|batch [--fifo]');
  process.exit(2);
}
const name = `sns_e2e ${mode}${fifo ? ' fifo' : ''}`;
const FILTER = ['message.new', 'reaction.new'];

const fx = await startFauxqs({ fifo, filterTypes: FILTER });
try {
  const files = fixtureFiles();
  const prefix = `e2e-${mode}-${fifo ? 'fifo' : 'std'}-`;
  const whOf = (i) => `${prefix}${i}`;
  const fits = files.map((f, i) => snsSize(f, whOf(i)) <= 262144);
  check(fits.some((x) => !x), 'the fixtures include an event over the SNS limit');
  check(fits.filter(Boolean).length >= 10, 'at least 10 fixtures fit');

  const args = ['--endpoint', fx.endpoint, '--topic', fx.topicArn, '--webhook-prefix', prefix,
    '--batch', mode === 'batch' ? '10' : '1', ...files];
  const r = await runDriver(args);
  checkDriverExit(r, name);

  // The client refuses what SNS would refuse, and publishes everything else.
  const refusedIdx = r.refused.map((x) => x.index).sort((a, b) => a - b);
  eq(refusedIdx, files.map((_, i) => i).filter((i) => !fits[i]), 'refused = over-limit events');
  for (const x of r.refused) eq(x.err, -22, `${path.basename(x.file)} refused with -EINVAL`);
  eq(r.entries.length, fits.filter(Boolean).length, 'one result per fitting event');
  for (const e of r.entries) {
    check(e.outcome === 'ok' && e.message_id !== '', `${path.basename(e.file)} published: ${JSON.stringify(e)}`);
    check(e.batch === (mode === 'batch' ? e.batch : 1), 'Publish mode sends one per request');
  }
  if (mode === 'batch') {
    const perReq = new Map();
    for (const e of r.entries) perReq.set(e.request, (perReq.get(e.request) || 0) + 1);
    check(Math.max(...perReq.values()) > 1, 'batch mode really batched');
    check(Math.max(...perReq.values()) <= 10, 'never more than 10 per batch');
    check(r.summary.requests < r.entries.length, 'fewer requests than events');
  } else {
    eq(r.summary.requests, r.entries.length, 'one request per event');
  }

  // Oracle 1: the raw-delivery queue got every fitting event, byte-identical.
  const want = files.map((f, i) => ({ f, i, wh: whOf(i) })).filter((x) => fits[x.i]);
  const got = await fx.drain(fx.queues.all.url, { expect: want.length, timeoutMs: 10000 });
  eq(got.length, want.length, 'messages in the raw queue');
  const byWh = new Map(got.map((m) => [m.attributes.webhook_id, m]));
  for (const w of want) {
    const m = byWh.get(w.wh);
    if (!check(!!m, `${path.basename(w.f)} delivered`)) continue;
    const bytes = readFileSync(w.f);
    check(Buffer.from(m.body, 'utf8').equals(bytes), `${path.basename(w.f)} body byte-identical`);
    eq(m.attributes, expectedAttributes(w.f, w.wh), `${path.basename(w.f)} attributes`);
    if (fifo) {
      const a = expectedAttributes(w.f, w.wh);
      eq(m.groupId, a.cid || a.type, `${path.basename(w.f)} MessageGroupId`);
      eq(m.dedupId, w.wh, `${path.basename(w.f)} MessageDeduplicationId`);
    }
  }
  if (fifo) {
    // Within one group, the queue hands events out in publish order.
    const groups = new Map();
    for (const m of got) {
      const idx = want.findIndex((w) => w.wh === m.attributes.webhook_id);
      if (!groups.has(m.groupId)) groups.set(m.groupId, []);
      groups.get(m.groupId).push(idx);
    }
    for (const [g, order] of groups)
      eq(order, [...order].sort((a, b) => a - b), `group ${g} in publish order`);
  }

  // Oracle 2: the filtered queue got exactly the events whose type matches.
  const wantFiltered = want.filter((w) => FILTER.includes(expectedAttributes(w.f, w.wh).type)).map((w) => w.wh).sort();
  check(wantFiltered.length >= 2 && wantFiltered.length < want.length, 'the filter selects a proper subset');
  const gotFiltered = await fx.drain(fx.queues.filtered.url, { expect: wantFiltered.length, timeoutMs: 10000 });
  eq(gotFiltered.map((m) => m.attributes.webhook_id).sort(), wantFiltered, 'filtered queue = matching types only');
  for (const m of gotFiltered) {
    const w = want.find((x) => x.wh === m.attributes.webhook_id);
    if (w) check(Buffer.from(m.body, 'utf8').equals(readFileSync(w.f)), `filtered ${path.basename(w.f)} byte-identical`);
  }
} finally {
  await fx.stop();
}
finish(name);
