#!/usr/bin/env node
'use strict';
// Durable and non-durable topic subscriptions with rhea.
//
// 1. A durable subscriber (source durable = unsettled-state (2),
//    expiry-policy never) attaches to `topic://NAME` under a fixed link name
//    and container id, and gets the first batch.
// 2. It detaches without closing (closed=false) and disconnects; the broker
//    answers with a detach that is not closing either.
// 3. A second batch is published while it is away; reattaching under the
//    same name and container id, it gets that batch.
// 4. Closing the link (closed=true, an unsubscribe) deletes the
//    subscription: what is published afterwards is not there when the same
//    name attaches again.
// 5. A non-durable subscription ends with its detach.
//
// usage: node rhea_durable_subscription.js amqp://127.0.0.1:PORT

const {
  run, unique, connect, close, openSender, openReceiver, expectBodies, closeLink, detachLink,
} = require('./rhea_common');

async function publish(checks, sender, label, subscribed = true) {
  const bodies = [0, 1, 2].map((i) => `${label} ${i}`);
  const results = await Promise.all(bodies.map((body) => sender.sendTracked({ body, durable: true })));
  const outcomes = results.map((r) => r.outcome);
  if (subscribed) {
    checks.check(outcomes.every((o) => o === 'accepted'), `published '${label}': ${outcomes}`);
  } else {
    console.log(`published '${label}' with no subscription: ${outcomes}`);
  }
  return bodies;
}

run('rhea durable subscription', async (checks, url) => {
  const topic = `topic://${unique('rhea-news')}`;
  const clientId = unique('rhea-durable-client');
  const durableSource = { address: topic, durable: 2, expiry_policy: 'never' };
  const subscription = 'news-subscription';

  const publisher = await connect(url);
  const sender = await openSender(publisher, { target: { address: topic } }, 'publisher');

  let subscriber = await connect(url, clientId);
  let receiver = await openReceiver(subscriber,
    { name: subscription, source: durableSource, credit_window: 10 }, 'durable subscriber');
  const first = await publish(checks, sender, 'first');
  await expectBodies(checks, 'durable subscriber, first batch', receiver, first);
  const closed = await detachLink(receiver, 'receiver');
  checks.check(!closed, `the broker answered the detach with closed=${closed}`);
  await close(subscriber);

  const second = await publish(checks, sender, 'while away');
  subscriber = await connect(url, clientId);
  receiver = await openReceiver(subscriber,
    { name: subscription, source: durableSource, credit_window: 10 }, 'durable subscriber again');
  await expectBodies(checks, 'durable subscriber after reattaching', receiver, second);

  await closeLink(receiver, 'receiver');
  await close(subscriber);
  await publish(checks, sender, 'after unsubscribe', false);
  subscriber = await connect(url, clientId);
  receiver = await openReceiver(subscriber,
    { name: subscription, source: durableSource, credit_window: 10 }, 'new durable subscriber');
  await expectBodies(checks, 'new durable subscription after the old one was closed', receiver, []);
  await closeLink(receiver, 'receiver');
  await close(subscriber);

  const volatile = unique('volatile-subscription');
  subscriber = await connect(url, clientId);
  receiver = await openReceiver(subscriber,
    { name: volatile, source: { address: topic }, credit_window: 10 }, 'non-durable subscriber');
  const batch = await publish(checks, sender, 'volatile');
  await expectBodies(checks, 'non-durable subscriber', receiver, batch);
  await detachLink(receiver, 'receiver');
  await close(subscriber);
  await publish(checks, sender, 'after volatile detach', false);
  subscriber = await connect(url, clientId);
  receiver = await openReceiver(subscriber,
    { name: volatile, source: { address: topic }, credit_window: 10 }, 'non-durable again');
  await expectBodies(checks, 'non-durable subscriber reattached under the same name', receiver, []);
  await closeLink(receiver, 'receiver');
  await close(subscriber);

  await closeLink(sender, 'sender');
  await close(publisher);
});
