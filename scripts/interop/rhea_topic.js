#!/usr/bin/env node
'use strict';
// Topics (multicast) with rhea: every subscriber gets every message.
//
// 1. `topic://NAME`: two subscribers on their own connections, then a
//    publisher sends N messages unsettled (each `accepted`); both subscribers
//    receive all N in order and accept them.
// 2. A late subscriber gets only what is published after it attached.
// 3. The same with a plain address and the `topic` capability on the source
//    and target, as Qpid JMS sends it.
//
// usage: node rhea_topic.js amqp://127.0.0.1:PORT [N]

const {
  run, unique, connect, close, openSender, openReceiver, closeLink, sameList,
} = require('./rhea_common');

async function publish(checks, sender, label, count) {
  const bodies = [];
  for (let i = 0; i < count; i++) bodies.push(`${label} ${i}`);
  const results = await Promise.all(bodies.map((body) => sender.sendTracked({ body, durable: true })));
  const outcomes = {};
  for (const result of results) outcomes[result.outcome] = (outcomes[result.outcome] || 0) + 1;
  checks.check(outcomes.accepted === count && Object.keys(outcomes).length === 1,
    `published ${count} messages unsettled: outcomes ${JSON.stringify(outcomes)}`);
  return bodies;
}

async function expectAll(checks, who, receiver, expected) {
  const got = await receiver.take(expected.length);
  checks.check(sameList(got, expected),
    `${who} received all ${expected.length} messages in order (got ${got.length})`);
}

async function topicRound(checks, url, address, capabilities, count) {
  const kind = capabilities ? 'capability' : 'prefix';
  const terminus = capabilities ? { address, capabilities } : { address };
  const subscribers = [];
  for (const name of ['A', 'B']) {
    const connection = await connect(url);
    const receiver = await openReceiver(connection,
      { source: terminus, credit_window: count + 10 }, `subscriber ${name}`);
    checks.check(receiver.source && receiver.source.address === address,
      `${kind} subscriber ${name} attached to '${address}' (broker's source address: `
      + `${receiver.source && receiver.source.address})`);
    subscribers.push({ name, connection, receiver });
  }

  const publisher = await connect(url);
  const sender = await openSender(publisher, { target: terminus }, `publisher to ${address}`);
  checks.check(sender.target && sender.target.address === address,
    `publisher attached to '${address}'`);
  const first = await publish(checks, sender, `${kind} first`, count);
  for (const { name, receiver } of subscribers) {
    await expectAll(checks, `${kind} subscriber ${name}`, receiver, first);
  }

  const lateConnection = await connect(url);
  const late = await openReceiver(lateConnection,
    { source: terminus, credit_window: 10 }, 'late subscriber');
  const second = await publish(checks, sender, `${kind} second`, 3);
  await expectAll(checks, `${kind} late subscriber (only what came after it attached)`, late, second);
  for (const { name, receiver } of subscribers) {
    await expectAll(checks, `${kind} subscriber ${name}, second batch`, receiver, second);
  }

  await closeLink(late, 'receiver');
  await close(lateConnection);
  for (const { connection, receiver } of subscribers) {
    await closeLink(receiver, 'receiver');
    await close(connection);
  }
  await closeLink(sender, 'sender');
  await close(publisher);
}

run('rhea topic', async (checks, url) => {
  const count = Number(process.argv[3] || 20);
  await topicRound(checks, url, `topic://${unique('rhea-prices')}`, null, count);
  await topicRound(checks, url, unique('rhea-jms-topic'), ['topic'], count);
});
