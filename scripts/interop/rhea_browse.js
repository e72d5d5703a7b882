#!/usr/bin/env node
'use strict';
// Browsing with rhea: distribution-mode `copy` reads without consuming.
//
// 1. N messages are sent to a fresh queue, each `accepted`.
// 2. A browser (source distribution-mode `copy`, no selector) sees all N in
//    order and nothing more; the broker's source says `copy`.
// 3. A second browser sees them all again.
// 4. A normal consumer still receives all N and accepts them.
// 5. A last browser sees an empty queue.
//
// usage: node rhea_browse.js amqp://127.0.0.1:PORT [N]

const {
  run, unique, connect, close, openSender, openReceiver, closeLink, sameList,
} = require('./rhea_common');

async function browse(checks, connection, queue, label, expected) {
  const browser = await openReceiver(connection, {
    source: { address: queue, distribution_mode: 'copy' }, credit_window: expected.length + 10,
  }, label);
  const mode = browser.source && browser.source.distribution_mode;
  checks.check(String(mode) === 'copy',
    `${label}: broker's source has distribution-mode copy (got ${mode})`);
  const got = await browser.take(expected.length, expected.length ? 10000 : 1000, 1000);
  checks.check(sameList(got, expected),
    `${label} saw ${got.length} messages, expected ${expected.length} in order`);
  await closeLink(browser, 'receiver');
}

run('rhea browse', async (checks, url) => {
  const count = Number(process.argv[3] || 20);
  const queue = unique('rhea-browse');

  const connection = await connect(url);
  const sender = await openSender(connection, { target: { address: queue } }, `sender to ${queue}`);
  const expected = [];
  for (let i = 0; i < count; i++) expected.push(`${queue} message ${i}`);
  const results = await Promise.all(expected.map((body) => sender.sendTracked({ body, durable: true })));
  const outcomes = {};
  for (const result of results) outcomes[result.outcome] = (outcomes[result.outcome] || 0) + 1;
  checks.check(outcomes.accepted === count && Object.keys(outcomes).length === 1,
    `sent ${count} messages: outcomes ${JSON.stringify(outcomes)}`);

  await browse(checks, connection, queue, 'first browser', expected);
  await browse(checks, connection, queue, 'second browser', expected);

  const consumer = await openReceiver(connection,
    { source: { address: queue }, credit_window: count + 10 }, 'consumer');
  const consumed = await consumer.take(count);
  checks.check(sameList(consumed, expected),
    `consumer after browsing received ${consumed.length} of ${count} messages in order`);
  await closeLink(consumer, 'receiver');

  await browse(checks, connection, queue, 'browser after consuming', []);
  await closeLink(sender, 'sender');
  await close(connection);
});
