#!/usr/bin/env node
'use strict';
// The nodes a Qpid JMS client asks for, with rhea, as proton_jms_nodes.py
// asks for them.
//
// 1. Temporary queue (`Session.createTemporaryQueue`): a sender with a
//    dynamic target (capability `temporary-queue`) gets the broker's name
//    for the new queue, `dynamic.NODE.START.N`, in the attach's target; a
//    receiver on that name gets what the sender sends; when the sender's
//    link closes the queue goes: the receiver's link is detached with
//    `amqp:resource-deleted`, and the relay finds nothing by that name.
// 2. Temporary topic: a dynamic target with capability `temporary-topic` is
//    named `topic://dynamic.NODE.START.N`; two subscribers to that address
//    get everything sent.
// 3. Unsubscribe (`Session.unsubscribe`): the broker offers `SHARED-SUBS`; a
//    durable subscription is detached (it stays, and keeps what is
//    published); a receiver with its link name and a null source finds it
//    (the broker's attach names its topic); closing that link deletes it;
//    a second lookup is refused with `amqp:not-found`; a new subscription
//    under the same name starts empty.
//
// usage: node rhea_jms_nodes.js amqp://127.0.0.1:PORT

const {
  run, unique, connect, close, openSender, sendAll, openReceiver, expectBodies, closeLink,
  detachLink, symbols, withTimeout, describeError,
} = require('./rhea_common');

const BROKER_NAME = /^dynamic\.\d+\.\d+\.\d+$/;

function temporaryTarget(capability) {
  return { dynamic: true, expiry_policy: 'link-detach', capabilities: [capability] };
}

function texts(bodies) {
  return bodies.map((body) => ({ body }));
}

async function temporaryQueue(checks, url) {
  const connection = await connect(url);
  const sender = await openSender(connection,
    { name: unique('temporary-queue'), target: temporaryTarget('temporary-queue') },
    'temporary queue creator');
  const address = sender.target && sender.target.address;
  checks.require(BROKER_NAME.test(address), `temporary queue named '${address}'`);
  const receiver = await openReceiver(connection,
    { source: { address }, credit_window: 10 }, 'temporary queue reader');
  const bodies = [0, 1, 2].map((i) => `to the temporary queue ${i}`);
  await sendAll(checks, sender, texts(bodies), 'sent to the temporary queue');
  await expectBodies(checks, 'temporary queue reader', receiver, bodies);

  const ended = withTimeout(new Promise((resolve) => {
    receiver.once('receiver_close', (context) => resolve(context.receiver.error));
  }), 'the temporary queue reader to be detached');
  await closeLink(sender, 'sender');
  const error = await ended;
  checks.check(error && String(error.condition) === 'amqp:resource-deleted',
    `the reader's link ends with the queue: ${describeError(error)}`);

  const relay = await openSender(connection, { target: {} }, 'anonymous-relay sender');
  const late = await relay.sendTracked({ to: address, body: 'too late' });
  const condition = late.error ? String(late.error.condition) : undefined;
  checks.check(late.outcome === 'rejected' && condition === 'amqp:not-found',
    `relay to the deleted temporary queue: ${late.outcome} ${condition}`);
  await closeLink(relay, 'sender');
  await close(connection);
}

async function temporaryTopic(checks, url) {
  const connection = await connect(url);
  const sender = await openSender(connection,
    { name: unique('temporary-topic'), target: temporaryTarget('temporary-topic') },
    'temporary topic creator');
  const address = (sender.target && sender.target.address) || '';
  checks.require(address.startsWith('topic://') && BROKER_NAME.test(address.slice(8)),
    `temporary topic named '${address}'`);
  const subscribers = [];
  for (const label of ['a', 'b']) {
    subscribers.push(await openReceiver(connection,
      { source: { address }, credit_window: 10 }, `temporary topic subscriber ${label}`));
  }
  const bodies = [0, 1, 2].map((i) => `to the temporary topic ${i}`);
  await sendAll(checks, sender, texts(bodies), 'sent to the temporary topic');
  for (const [i, subscriber] of subscribers.entries()) {
    await expectBodies(checks, `temporary topic subscriber ${i}`, subscriber, bodies);
  }
  for (const subscriber of subscribers) await closeLink(subscriber, 'receiver');
  await closeLink(sender, 'sender');
  await close(connection);
}

async function unsubscribe(checks, url) {
  const clientId = unique('rhea-jms-client');
  const topic = `topic://${unique('rhea-jms-news')}`;
  const durableSource = { address: topic, durable: 2, expiry_policy: 'never' };
  const name = 'jms-subscription';

  const publisher = await connect(url);
  const sender = await openSender(publisher, { target: { address: topic } }, 'publisher');

  let connection = await connect(url, clientId);
  const offered = symbols(connection.offered_capabilities);
  checks.check(offered.includes('SHARED-SUBS'),
    `the broker offers SHARED-SUBS (offered: ${JSON.stringify(offered)})`);
  const subscriber = await openReceiver(connection,
    { name, source: durableSource, credit_window: 0 }, 'durable subscriber');
  await detachLink(subscriber, 'receiver');
  // Accepted only if the subscription is still there to take it.
  await sendAll(checks, sender, texts(['while detached']),
    'published while the subscriber is detached');

  // No source: rhea sends a null one. No credit: the lookup takes nothing.
  const found = await openReceiver(connection, { name, credit_window: 0 }, 'lookup');
  const source = found.source || {};
  checks.check(source.address === topic && Number(source.durable) === 2,
    `the lookup finds the subscription: address '${source.address}', durable ${source.durable}`);
  await closeLink(found, 'receiver');

  try {
    await openReceiver(connection, { name, credit_window: 0 }, 'second lookup');
    checks.check(false, 'a second lookup found the deleted subscription');
  } catch (error) {
    checks.check(/amqp:not-found/.test(String(error)), `a second lookup is refused: ${error.message}`);
  }
  await close(connection);

  connection = await connect(url, clientId);
  const fresh = await openReceiver(connection,
    { name, source: durableSource, credit_window: 10 }, 'new durable subscriber');
  await expectBodies(checks, 'a new subscription under the deleted one\'s name', fresh, []);
  await closeLink(fresh, 'receiver');
  await close(connection);
  await closeLink(sender, 'sender');
  await close(publisher);
}

run('rhea JMS nodes', async (checks, url) => {
  await temporaryQueue(checks, url);
  await temporaryTopic(checks, url);
  await unsubscribe(checks, url);
});
