#!/usr/bin/env node
'use strict';
// Selectors with rhea, as proton_selector.py checks them: the broker applies
// them, and says so.
//
// 1. Red, blue, red and green messages (application property `color`) are
//    sent to a fresh queue, each `accepted`.
// 2. A receiver attaches with the selector `color = 'red'` (rhea's
//    `filter.selector`, the described value
//    `apache.org:selector-filter:string`): the broker's source lists that
//    selector (the filters in effect), and the receiver gets the two red
//    messages only, in order.
// 3. A receiver without a selector gets the others, blue then green.
// 4. On a topic, a subscriber with `color IN ('blue', 'green')` gets only
//    those copies; one without a selector gets every message.
// 5. A selector that does not parse refuses the link (not the connection)
//    with `amqp:invalid-field`, naming the position of the fault: a send on
//    the same connection afterwards is accepted.
//
// usage: node rhea_selector.js amqp://127.0.0.1:PORT

const rhea = require('rhea');
const {
  run, unique, connect, close, openSender, sendAll, openReceiver, expectBodies, closeLink, sameList,
} = require('./rhea_common');

function source(address, selector) {
  return selector ? { address, filter: rhea.filter.selector(selector) } : { address };
}

// `color 1`, `color 2`, ... for each color in turn, numbered per color, so
// that the order each receiver gets them in shows.
function colored(colors) {
  const seen = {};
  return colors.map((color) => {
    seen[color] = (seen[color] || 0) + 1;
    return { body: `${color} ${seen[color]}`, durable: true, application_properties: { color } };
  });
}

// The selector strings among the filters of the broker's source.
function selectorsListed(terminus) {
  const filters = (terminus && terminus.filter) || {};
  return Object.values(filters).map((filter) => filter && filter.value);
}

async function onAQueue(checks, connection) {
  const queue = unique('rhea-selector');
  const sender = await openSender(connection, { target: { address: queue } }, `sender to ${queue}`);
  await sendAll(checks, sender, colored(['red', 'blue', 'red', 'green']), `sent to ${queue}`);

  const selector = "color = 'red'";
  const red = await openReceiver(connection,
    { name: 'red', source: source(queue, selector), credit_window: 10 }, 'selecting receiver');
  checks.require(red.source && red.source.address === queue,
    `receiver with a selector attached to '${queue}'`);
  const listed = selectorsListed(red.source);
  checks.check(sameList(listed, [selector]),
    `the broker's source lists the selector in effect: ${JSON.stringify(listed)}`);
  await expectBodies(checks, 'the selecting receiver', red, ['red 1', 'red 2']);

  const rest = await openReceiver(connection,
    { name: 'rest', source: source(queue), credit_window: 10 }, 'plain receiver');
  await expectBodies(checks, 'a plain receiver then, the rest in order', rest,
    ['blue 1', 'green 1']);
  for (const receiver of [red, rest]) await closeLink(receiver, 'receiver');
  await closeLink(sender, 'sender');
}

async function onATopic(checks, connection) {
  const topic = `topic://${unique('rhea-selector-topic')}`;
  const cool = await openReceiver(connection,
    { name: 'cool', source: source(topic, "color IN ('blue', 'green')"), credit_window: 10 },
    'selecting subscriber');
  const every = await openReceiver(connection,
    { name: 'every', source: source(topic), credit_window: 10 }, 'plain subscriber');
  const sender = await openSender(connection, { target: { address: topic } }, `sender to ${topic}`);
  await sendAll(checks, sender, colored(['red', 'blue', 'green']), `published to ${topic}`);
  await expectBodies(checks, 'the selecting subscriber', cool, ['blue 1', 'green 1']);
  await expectBodies(checks, 'the plain subscriber', every, ['red 1', 'blue 1', 'green 1']);
  for (const receiver of [cool, every]) await closeLink(receiver, 'receiver');
  await closeLink(sender, 'sender');
}

async function aBadSelector(checks, connection) {
  const queue = unique('rhea-selector');
  try {
    await openReceiver(connection,
      { source: source(queue, "color = 'red' AND"), credit_window: 10 }, 'a bad selector');
    checks.check(false, 'a selector that does not parse was accepted');
  } catch (error) {
    checks.check(/amqp:invalid-field: .*position \d+/.test(error.message),
      `a selector that does not parse refuses the link, naming where: ${error.message}`);
  }
  const sender = await openSender(connection, { target: { address: queue } }, 'sender afterwards');
  await sendAll(checks, sender, [{ body: 'still here' }], 'the connection carries on: a send');
  await closeLink(sender, 'sender');
}

run('rhea selector', async (checks, url) => {
  const connection = await connect(url);
  await onAQueue(checks, connection);
  await onATopic(checks, connection);
  await aBadSelector(checks, connection);
  await close(connection);
});
