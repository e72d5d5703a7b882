#!/usr/bin/env node
'use strict';
// Local transactions with rhea, as proton_transaction.py runs them: consume,
// transform and produce as one unit, committed once and rolled back once.
//
// rhea has no transaction API, so the script speaks AMQP 1.0 part 4 itself,
// with rhea's described types: a sender whose target is a `coordinator`
// (capability amqp:local-transactions), `declare` and `discharge` bodies sent
// pre-encoded, and a consumer's `transactional-state` dispositions. rhea's
// transfer frames never carry a state, so the transactional publishes go
// through `transferStates`, the one hook into rhea's internals (below).
// rhea decodes neither `declared` nor `transactional-state`: it logs them as
// unrecognised outcomes on stderr, and the script reads the raw values.
//
// 1. Three messages wait on an input queue; a watcher consumes the output
//    queue throughout.
// 2. A transaction accepts m 0 and publishes its transformation: the publish
//    is answered transactional-state(accepted) with the transaction's id,
//    and is not enqueued until the discharge (fail=false) commits it.
// 3. A second transaction does the same with m 1, then rolls back
//    (fail=true): nothing reaches the output queue.
// 4. The input queue then holds m 1 (delivery count 1: redelivered) and m 2.
// 5. Refusals: a discharge or a publish naming a transaction that is over is
//    rejected with amqp:transaction:unknown-id; a declare with a global id,
//    and a coordinator asked only for amqp:distributed-transactions, with
//    amqp:not-implemented.
//
// usage: node rhea_transaction.js amqp://127.0.0.1:PORT

const rhea = require('rhea');
const {
  run, unique, connect, close, openSender, openReceiver, closeLink, withTimeout, describeError,
} = require('./rhea_common');

const { types } = rhea;
const amqp = rhea.message;

// Descriptor codes of AMQP 1.0 part 4 (transactions) and the amqp-value
// section.
const AMQP_VALUE = 0x77;
const COORDINATOR = 0x30;
const DECLARE = 0x31;
const DISCHARGE = 0x32;
const DECLARED = 0x33;
const TRANSACTIONAL_STATE = 0x34;
const TRANSFER = 0x14;
// The index of `state` among the transfer performative's fields.
const TRANSFER_STATE_FIELD = 7;
const SYMBOL = 0xa3;

function coordinatorTarget(capabilities) {
  return types.described(types.wrap_ulong(COORDINATOR),
    types.wrap_list([types.wrap_array(capabilities, SYMBOL)]));
}

// A message whose body is one amqp-value holding a described list, encoded
// by hand: rhea's message encoder gives a value one descriptor only.
function controlMessage(descriptor, fields) {
  const writer = new types.Writer();
  writer.write(types.described(types.wrap_ulong(descriptor), types.wrap_list(fields)));
  return Buffer.concat([Buffer.from([0x00, 0x53, AMQP_VALUE]), writer.toBuffer()]);
}

function transactionalState(txnId, outcome) {
  return types.described(types.wrap_ulong(TRANSACTIONAL_STATE),
    types.wrap_list([types.wrap_binary(txnId), outcome]));
}

// What the broker answered, as a plain object: {kind, error, txnId, outcome}.
function readState(state) {
  if (state === undefined || state === null) return { kind: 'none' };
  if (state.constructor && state.constructor.composite_type) {
    return { kind: state.constructor.composite_type, error: state.error };
  }
  const code = state.descriptor ? Number(state.descriptor.value) : undefined;
  const fields = Array.isArray(state.value) ? state.value : [];
  if (code === DECLARED) {
    return { kind: 'declared', txnId: fields[0] && fields[0].value };
  }
  if (code === TRANSACTIONAL_STATE) {
    const outcome = fields[1] && fields[1].descriptor
      ? readState(amqp.unwrap_outcome(fields[1])) : { kind: 'none' };
    return { kind: 'transactional-state', txnId: fields[0] && fields[0].value, outcome };
  }
  return { kind: `unknown ${JSON.stringify(state)}` };
}

function showState(state) {
  const error = state.error ? ` ${describeError(state.error)}` : '';
  const txn = state.txnId ? ` txn ${state.txnId.toString('hex')}` : '';
  const outcome = state.outcome ? ` ${showState(state.outcome)}` : '';
  return `${state.kind}${txn}${error}${outcome}`;
}

function condition(state) {
  return state.error ? String(state.error.condition) : undefined;
}

// rhea writes every transfer with a null state and has no way to set one:
// this wraps the session's frame output to set, on the transfer of each
// delivery registered in the returned map (by delivery id), its state.
function transferStates(session) {
  if (session.transferStates) return session.transferStates;
  const states = new Map();
  const output = session.output;
  session.output = function outputWithState(frame, payload) {
    if (frame.constructor.descriptor && frame.constructor.descriptor.numeric === TRANSFER) {
      const state = states.get(frame.delivery_id);
      if (state) {
        states.delete(frame.delivery_id);
        frame.value[TRANSFER_STATE_FIELD] = state;
      }
    }
    return output.call(this, frame, payload);
  };
  session.transferStates = states;
  return states;
}

// Sends `payload` (a message, or a pre-encoded Buffer) unsettled, with
// `state` on its transfer if given, and resolves with the broker's settled
// answer read by `readState`.
function sendForState(sender, payload, what, state) {
  const delivery = Buffer.isBuffer(payload)
    ? sender.send(payload, undefined, 0)
    : sender.send(payload);
  if (state) transferStates(sender.session).set(delivery.id, state);
  let settled;
  let detached;
  const answer = new Promise((resolve, reject) => {
    settled = (context) => {
      if (context.delivery === delivery) resolve(readState(delivery.remote_state));
    };
    detached = (context) => reject(new Error(
      `${what}: the broker detached the link: ${describeError(context.sender.error)}`));
    sender.on('settled', settled);
    sender.on('sender_close', detached);
  });
  return withTimeout(answer, what).finally(() => {
    sender.removeListener('settled', settled);
    sender.removeListener('sender_close', detached);
  });
}

// A sender to the broker's transaction coordinator. rhea decodes only
// `source` and `target` termini, so the broker's attach shows a null target
// here whether it took the link or refused it: a refusal is the detach that
// follows, which `controller.refusal` resolves with.
function openController(connection, capabilities, what) {
  const controller = connection.open_sender({ name: unique('controller') });
  // Set before rhea writes the attach (on its next tick).
  controller.local.attach.target = coordinatorTarget(capabilities);
  controller.refusal = new Promise((resolve) => {
    controller.once('sender_close', (context) => resolve(context.sender.error));
  });
  return withTimeout(new Promise((resolve) => {
    controller.once('sender_open', () => resolve(controller));
  }), `attaching ${what}`);
}

async function declare(controller, fields = []) {
  return sendForState(controller, controlMessage(DECLARE, fields), 'declare');
}

async function discharge(controller, txnId, fail) {
  return sendForState(controller,
    controlMessage(DISCHARGE, [types.wrap_binary(txnId), types.wrap_boolean(fail)]),
    `discharge fail=${fail}`);
}

// Receives `count` messages as [body, delivery count], accepting each, then
// waits `quietMs` for anything unexpected.
async function receiveCounted(receiver, count, quietMs = 500) {
  const got = [];
  while (got.length < count) {
    const { message, delivery } = await receiver.next();
    got.push([message.body, message.delivery_count || 0]);
    delivery.accept();
  }
  try {
    const { message, delivery } = await receiver.next(quietMs);
    got.push([message.body, message.delivery_count || 0]);
    delivery.accept();
  } catch (error) {
    if (!/timed out/.test(String(error))) throw error;
  }
  return got;
}

// Takes one message with one credit, and accepts it in transaction `txnId`.
async function acceptIn(checks, consumer, txnId, expected) {
  consumer.add_credit(1);
  const { message, delivery } = await consumer.next();
  checks.check(message.body === expected && !message.delivery_count,
    `consumer got '${message.body}' (delivery count ${message.delivery_count || 0})`);
  delivery.update(false, transactionalState(txnId, amqp.accepted().described()));
}

async function publishIn(checks, sender, txnId, body) {
  const state = await sendForState(sender, { body, durable: true }, `publishing '${body}'`,
    transactionalState(txnId, null));
  checks.check(state.kind === 'transactional-state' && Buffer.isBuffer(state.txnId)
    && state.txnId.equals(txnId) && state.outcome.kind === 'accepted',
  `publishing '${body}' in the transaction answered ${showState(state)}`);
}

async function declared(checks, controller, what) {
  const state = await declare(controller);
  checks.require(state.kind === 'declared' && Buffer.isBuffer(state.txnId)
    && state.txnId.length > 0, `${what}: ${showState(state)}`);
  return state.txnId;
}

function sameRows(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function commitAndRollBack(checks, url, inputs, outputs) {
  const connection = await connect(url);
  const controller = await openController(connection, ['amqp:local-transactions'],
    'local-transactions coordinator');
  const output = await openSender(connection, { target: { address: outputs } }, 'output sender');
  const watcher = await openReceiver(connection,
    { source: { address: outputs }, credit_window: 10 }, 'output watcher');
  const consumer = await openReceiver(connection,
    { source: { address: inputs }, credit_window: 0 }, 'input consumer');

  const first = await declared(checks, controller, 'first declare');
  await acceptIn(checks, consumer, first, 'm 0');
  await publishIn(checks, output, first, 'out m 0');
  const early = await receiveCounted(watcher, 0);
  checks.check(early.length === 0,
    `nothing reaches the output queue before the commit: ${JSON.stringify(early)}`);
  const committed = await discharge(controller, first, false);
  checks.check(committed.kind === 'accepted', `commit: ${showState(committed)}`);
  const produced = await receiveCounted(watcher, 1);
  checks.check(sameRows(produced, [['out m 0', 0]]),
    `the commit enqueued the publish once: ${JSON.stringify(produced)}`);

  const second = await declared(checks, controller, 'second declare');
  checks.check(!second.equals(first), 'the second transaction has an id of its own');
  await acceptIn(checks, consumer, second, 'm 1');
  await publishIn(checks, output, second, 'out m 1');
  const rolledBack = await discharge(controller, second, true);
  checks.check(rolledBack.kind === 'accepted', `rollback: ${showState(rolledBack)}`);
  const after = await receiveCounted(watcher, 0);
  checks.check(after.length === 0,
    `a rolled-back publish is never enqueued: ${JSON.stringify(after)}`);

  // Transactions that are over are unknown.
  const again = await discharge(controller, first, false);
  checks.check(again.kind === 'rejected' && condition(again) === 'amqp:transaction:unknown-id',
    `discharging the committed transaction again: ${showState(again)}`);
  const late = await sendForState(output, { body: 'too late', durable: true },
    'publishing in the committed transaction', transactionalState(first, null));
  const lateOutcome = late.kind === 'transactional-state' ? late.outcome : late;
  checks.check(lateOutcome.kind === 'rejected'
    && condition(lateOutcome) === 'amqp:transaction:unknown-id',
  `publishing in the committed transaction: ${showState(late)}`);
  const none = await receiveCounted(watcher, 0);
  checks.check(none.length === 0, `the refused publish was not enqueued: ${JSON.stringify(none)}`);

  await closeLink(consumer, 'receiver');
  await closeLink(watcher, 'receiver');
  await closeLink(output, 'sender');
  await closeLink(controller, 'sender');
  await close(connection);
}

async function refusals(checks, url) {
  const connection = await connect(url);
  const distributed = await openController(connection, ['amqp:distributed-transactions'],
    'distributed-transactions coordinator');
  const error = await withTimeout(distributed.refusal, 'the refusal of a distributed coordinator');
  checks.check(error && String(error.condition) === 'amqp:not-implemented',
    `a coordinator asked only for distributed transactions is refused: ${describeError(error)}`);

  const controller = await openController(connection, ['amqp:local-transactions'],
    'local-transactions coordinator after a refused one');
  const global = await declare(controller, [types.wrap_binary(Buffer.from('xid-1'))]);
  checks.check(global.kind === 'rejected' && condition(global) === 'amqp:not-implemented',
    `a declare with a global id: ${showState(global)}`);
  await declared(checks, controller, 'the coordinator still declares after a rejection');
  await closeLink(controller, 'sender');
  await close(connection);
}

run('rhea transactions', async (checks, url) => {
  const inputs = unique('rhea-txn-in');
  const outputs = unique('rhea-txn-out');
  const setup = await connect(url);
  const input = await openSender(setup, { target: { address: inputs } }, 'input sender');
  for (let i = 0; i < 3; i++) {
    const sent = await input.sendTracked({ body: `m ${i}`, durable: true });
    checks.require(sent.outcome === 'accepted', `input m ${i} ${sent.outcome}`);
  }

  await commitAndRollBack(checks, url, inputs, outputs);

  const check = await openReceiver(setup,
    { source: { address: inputs }, credit_window: 10 }, 'input check');
  const left = await receiveCounted(check, 2);
  checks.check(sameRows(left, [['m 1', 1], ['m 2', 0]]),
    `the input queue holds the rolled-back message, redelivered, and the untouched one: `
    + `${JSON.stringify(left)}`);
  await closeLink(check, 'receiver');
  await closeLink(input, 'sender');
  await close(setup);

  await refusals(checks, url);
});
