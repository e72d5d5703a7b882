#!/usr/bin/env node
'use strict';
// Anycast queue with rhea: send, then receive and accept.
//
// 1. A sender attaches to a fresh queue name and sends N durable messages
//    unsettled: every one must come back `accepted`.
// 2. A pre-settled sender (snd-settle-mode settled) sends M more.
// 3. A receiver gets all N + M in order, accepting each, and nothing more.
// 4. A new receiver on a new connection finds the queue empty.
//
// usage: node rhea_queue.js amqp://127.0.0.1:PORT [N]

const {
  run, unique, connect, close, openSender, openReceiver, closeLink, sameList,
} = require('./rhea_common');

const PRESETTLED = 10;

run('rhea queue', async (checks, url) => {
  const count = Number(process.argv[3] || 100);
  const queue = unique('rhea-queue');

  const connection = await connect(url);
  const sender = await openSender(connection, { target: { address: queue } }, `sender to ${queue}`);
  checks.check(sender.target && sender.target.address === queue,
    `sender attached to '${queue}' (broker's target: ${JSON.stringify(sender.target)})`);
  const expected = [];
  const outcomes = {};
  const sends = [];
  for (let i = 0; i < count; i++) {
    const body = `${queue} message ${i}`;
    expected.push(body);
    sends.push(sender.sendTracked({ body, durable: true, message_id: `${queue}-${i}` }));
  }
  for (const result of await Promise.all(sends)) {
    outcomes[result.outcome] = (outcomes[result.outcome] || 0) + 1;
  }
  checks.check(outcomes.accepted === count && Object.keys(outcomes).length === 1,
    `sent ${count} durable messages unsettled: outcomes ${JSON.stringify(outcomes)}`);

  const presettled = await openSender(connection,
    { target: { address: queue }, snd_settle_mode: 1 }, 'pre-settled sender');
  for (let i = 0; i < PRESETTLED; i++) {
    const body = `${queue} pre-settled ${i}`;
    expected.push(body);
    const delivery = presettled.send({ body, durable: true });
    if (!delivery.settled) checks.check(false, 'rhea sends pre-settled');
  }
  console.log(`sent ${PRESETTLED} pre-settled messages (no outcome expected)`);

  const receiver = await openReceiver(connection,
    { source: { address: queue }, credit_window: 50 }, `receiver on ${queue}`);
  checks.check(receiver.source && receiver.source.address === queue,
    `receiver attached to '${queue}'`);
  const received = await receiver.take(expected.length);
  checks.check(received.length === expected.length,
    `received ${received.length} of ${expected.length} messages`);
  checks.check(sameList([...received].sort(), [...expected].sort()),
    'received exactly the bodies sent');
  checks.check(sameList(received, expected), 'received them in the order sent');
  await closeLink(receiver, 'receiver');
  await closeLink(presettled, 'sender');
  await closeLink(sender, 'sender');
  await close(connection);

  const again = await connect(url);
  const empty = await openReceiver(again,
    { source: { address: queue }, credit_window: 10 }, `second receiver on ${queue}`);
  const left = await empty.take(0, 1000, 1000);
  checks.check(left.length === 0,
    `queue is empty once every message was accepted (got ${JSON.stringify(left)})`);
  await closeLink(empty, 'receiver');
  await close(again);
});
