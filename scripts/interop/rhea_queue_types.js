#!/usr/bin/env node
'use strict';
// The configured queue types with rhea, as the `queue-types` scenario of
// proton_cpp.cpp checks them. The queues are configured by name in the
// broker the Rust test starts (broker/tests/interop_rhea.rs):
//
// 1. `rhea-priority` (type priority): low (0), urgent (9) and normal (4),
//    all sent before a receiver attaches, come out urgent, normal, low.
// 2. `rhea-last-value` (type last-value, key `instrument`): eur 1, gbp 1,
//    eur 2, then a sentinel `end` of its own instrument; a receiver gets
//    exactly gbp 1, eur 2, end.
// 3. `rhea-groups` (message groups): two receivers attached in turn, each
//    holding what it gets unsettled, then a1 a2 (group A) b1 (B) a3 (A) b2
//    (B), in an order round robin alone would split group A: each group goes
//    whole and in order to one receiver, and both receivers get something.
// 4. `rhea-single-active` (single active consumer): receivers 1 then 2
//    attach; of 4 messages receiver 1 gets all, accepts them and closes;
//    receiver 2 then gets the 2 sent next.
// 5. Scheduled delivery, on a fresh plain queue: `later`, with message
//    annotation `x-opt-delivery-delay` 1000 (a long), then `now`: the
//    receiver gets now, then later, and later no sooner than 0.95 s after it
//    was sent.
//
// Everything received is accepted in the end, so the queues are left empty.
//
// usage: node rhea_queue_types.js amqp://127.0.0.1:PORT

const rhea = require('rhea');
const {
  run, unique, connect, close, openSender, sendAll, openReceiver, expectBodies, gather, closeLink,
  sameList,
} = require('./rhea_common');

const DELAY_MS = 1000;
// The delay, less what the broker's timer and ours may be off by.
const EARLIEST_MS = 950;

function priced(body, priority, instrument) {
  return { body, durable: true, priority, application_properties: { instrument } };
}

function grouped(body, group) {
  return { body, durable: true, group_id: group };
}

function numbered(prefix, count) {
  return Array.from({ length: count }, (_, i) => ({ body: `${prefix} ${i}`, durable: true }));
}

function bodies(items) {
  return items.map((item) => item.message.body);
}

function acceptAll(items) {
  for (const item of items) item.delivery.accept();
}

async function send(checks, connection, address, messages) {
  const sender = await openSender(connection, { target: { address } }, `sender to ${address}`);
  await sendAll(checks, sender, messages, `sent to ${address}`);
  await closeLink(sender, 'sender');
}

function receive(connection, address, what) {
  return openReceiver(connection, { source: { address }, credit_window: 10 }, what);
}

// Receives and accepts up to and including the body `last`: a sentinel sent
// after everything else, so nothing the queue should have dropped can come
// after it.
async function takeThrough(receiver, last) {
  const got = [];
  while (got[got.length - 1] !== last) {
    const { message, delivery } = await receiver.next();
    got.push(message.body);
    delivery.accept();
  }
  return got;
}

// Two receivers on `address`, attached in turn, that hold what they get.
async function openPair(connection, address) {
  const first = await receive(connection, address, `receiver 1 on ${address}`);
  const second = await receive(connection, address, `receiver 2 on ${address}`);
  return [first, second];
}

async function priority(checks, connection) {
  const queue = 'rhea-priority';
  await send(checks, connection, queue,
    [priced('low', 0, 'x'), priced('urgent', 9, 'x'), priced('normal', 4, 'x')]);
  const receiver = await receive(connection, queue, `receiver on ${queue}`);
  await expectBodies(checks, 'a priority queue delivers the highest priority first', receiver,
    ['urgent', 'normal', 'low']);
  await closeLink(receiver, 'receiver');
}

async function lastValue(checks, connection) {
  const queue = 'rhea-last-value';
  await send(checks, connection, queue, [priced('eur 1', 4, 'EURUSD'), priced('gbp 1', 4, 'GBPUSD'),
    priced('eur 2', 4, 'EURUSD'), priced('end', 4, 'END')]);
  const receiver = await receive(connection, queue, `receiver on ${queue}`);
  const got = await takeThrough(receiver, 'end');
  checks.check(sameList(got, ['gbp 1', 'eur 2', 'end']),
    `a last-value queue keeps the latest message per instrument: ${JSON.stringify(got)}`);
  await closeLink(receiver, 'receiver');
}

// Whether one of `got` (bodies per receiver) has all of `members`, in order.
function heldWhole(got, members) {
  const group = members[0][0];
  return got.some((received) => sameList(received.filter((body) => body[0] === group), members));
}

async function messageGroups(checks, connection) {
  const queue = 'rhea-groups';
  const pair = await openPair(connection, queue);
  await send(checks, connection, queue, [grouped('a1', 'A'), grouped('a2', 'A'), grouped('b1', 'B'),
    grouped('a3', 'A'), grouped('b2', 'B')]);
  const items = await gather(pair, 5, queue);
  const got = items.map(bodies);
  const whole = heldWhole(got, ['a1', 'a2', 'a3']) && heldWhole(got, ['b1', 'b2']);
  checks.check(whole && got.every((received) => received.length > 0),
    `message groups: each group whole, in order, at one of two receivers: ${JSON.stringify(got)}`);
  acceptAll(items.flat());
  for (const receiver of pair) await closeLink(receiver, 'receiver');
}

async function singleActiveConsumer(checks, connection) {
  const queue = 'rhea-single-active';
  const [first, second] = await openPair(connection, queue);
  const batch = numbered('first', 4);
  await send(checks, connection, queue, batch);
  const [toFirst, toSecond] = await gather([first, second], batch.length, queue);
  checks.check(sameList(bodies(toFirst), batch.map((m) => m.body)) && toSecond.length === 0,
    'a single active consumer: the first attached gets all: '
    + `${JSON.stringify(bodies(toFirst))} ${JSON.stringify(bodies(toSecond))}`);
  acceptAll(toFirst);
  await closeLink(first, 'receiver');
  const then = numbered('then', 2);
  await send(checks, connection, queue, then);
  await expectBodies(checks, 'the next takes over once it goes', second, then.map((m) => m.body));
  acceptAll(toSecond);
  await closeLink(second, 'receiver');
}

async function scheduledDelivery(checks, connection) {
  const queue = unique('rhea-scheduled');
  const receiver = await receive(connection, queue, `receiver on ${queue}`);
  const sender = await openSender(connection, { target: { address: queue } }, `sender to ${queue}`);
  const later = {
    body: 'later',
    durable: true,
    message_annotations: { 'x-opt-delivery-delay': rhea.types.wrap_long(DELAY_MS) },
  };
  const sentAt = performance.now();
  await sendAll(checks, sender, [later, { body: 'now', durable: true }], `sent to ${queue}`);
  const items = [await receiver.next(), await receiver.next()];
  acceptAll(items);
  const got = bodies(items);
  checks.check(sameList(got, ['now', 'later']),
    `a message with x-opt-delivery-delay comes after one sent next: ${JSON.stringify(got)}`);
  const delayedBy = items.find((item) => item.message.body === 'later').at - sentAt;
  checks.check(delayedBy >= EARLIEST_MS,
    `and not before its ${DELAY_MS} ms delay (${delayedBy.toFixed(0)} ms)`);
  await closeLink(sender, 'sender');
  await closeLink(receiver, 'receiver');
}

run('rhea queue types', async (checks, url) => {
  const connection = await connect(url);
  await priority(checks, connection);
  await lastValue(checks, connection);
  await messageGroups(checks, connection);
  await singleActiveConsumer(checks, connection);
  await scheduledDelivery(checks, connection);
  await close(connection);
});
