'use strict';
// What the rhea (Node.js) interop scripts share: promise wrappers around
// rhea's events, checks that print what they checked, and unique node names.
//
// Each script prints one line per check, `ok: ...` or `FAIL: ...`, and exits
// 0 only if every check passed and nothing threw.

const crypto = require('crypto');
const rhea = require('rhea');

// Every wait on the broker is bounded; the Rust harness bounds the whole
// script at 30 s, so single waits stay well below that.
const TIMEOUT_MS = 10000;
const WATCHDOG_MS = 28000;

class Checks {
  constructor(scenario) {
    this.scenario = scenario;
    this.passed = 0;
    this.failures = 0;
  }

  check(condition, what) {
    if (condition) {
      this.passed += 1;
      console.log(`ok: ${what}`);
    } else {
      this.failures += 1;
      console.log(`FAIL: ${what}`);
    }
    return condition;
  }

  // A check the rest of the scenario depends on: throws when it fails.
  require(condition, what) {
    if (!this.check(condition, what)) throw new Error(what);
  }

  exitCode() {
    console.log(`${this.scenario}: ${this.passed} passed, ${this.failures} failed`);
    return this.failures === 0 ? 0 : 1;
  }
}

// Runs `body(checks, url)` and exits with its verdict.
function run(scenario, body) {
  const checks = new Checks(scenario);
  const url = process.argv[2];
  if (!url) {
    console.error(`usage: node ${process.argv[1]} amqp://127.0.0.1:PORT`);
    process.exit(2);
  }
  const watchdog = setTimeout(() => {
    console.log(`FAIL: ${scenario} did not finish within ${WATCHDOG_MS} ms`);
    checks.failures += 1;
    process.exit(checks.exitCode());
  }, WATCHDOG_MS);
  body(checks, url).then(
    () => {
      clearTimeout(watchdog);
      process.exit(checks.exitCode());
    },
    (error) => {
      clearTimeout(watchdog);
      checks.failures += 1;
      console.log(`FAIL: ${scenario} threw: ${error && error.stack ? error.stack : error}`);
      process.exit(checks.exitCode());
    });
}

function unique(prefix) {
  return `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(error) {
  if (!error) return 'no error given';
  if (error.condition) return `${error.condition}: ${error.description || ''}`;
  return String(error);
}

// Opens a connection with SASL ANONYMOUS and waits for the broker's open.
// Opens a connection to `url`: over TLS for `amqps:`, trusting `ca` (PEM
// buffers); with `username` and `password`, SASL PLAIN, else ANONYMOUS.
function connect(url, id, { ca, cert, key, username, password } = {}) {
  const parsed = new URL(url);
  const tls = parsed.protocol === 'amqps:';
  const container = rhea.create_container({ id: id || unique('rhea') });
  // Unhandled link or connection errors must not crash the process: the
  // promises below report them.
  container.on('error', () => {});
  const connection = container.connect({
    host: parsed.hostname,
    port: Number(parsed.port || (tls ? 5671 : 5672)),
    transport: tls ? 'tls' : 'tcp',
    ca,
    // A client certificate: rhea then offers SASL EXTERNAL.
    cert,
    key,
    enable_sasl_external: cert !== undefined,
    reconnect: false,
    // A username without a password makes rhea use SASL ANONYMOUS; with a
    // certificate, none: EXTERNAL alone.
    username: cert === undefined ? (username || 'anonymous') : undefined,
    password,
    idle_time_out: 0,
  });
  return withTimeout(new Promise((resolve, reject) => {
    connection.once('connection_open', () => resolve(connection));
    connection.once('connection_error', (context) =>
      reject(new Error(`connection refused: ${describeError(context.connection.error)}`)));
    connection.once('disconnected', (context) =>
      reject(new Error(`disconnected: ${describeError(context.error)}`)));
  }), `opening a connection to ${url}`);
}

function close(connection) {
  return withTimeout(new Promise((resolve) => {
    connection.once('connection_close', () => resolve());
    connection.once('disconnected', () => resolve());
    connection.close();
  }), 'closing the connection');
}

// rhea decodes a null terminus as a Typed wrapper around null.
function present(value) {
  return value !== undefined && value !== null && !(value.type && value.value === null);
}

// Waits for the broker's attach; rejects if the broker refuses the link. A
// refusal is an attach with a null terminus followed by a detach with an
// error, so an attach without the terminus waits for that detach.
function attached(link, kind, what) {
  const terminus = kind === 'sender' ? 'target' : 'source';
  return withTimeout(new Promise((resolve, reject) => {
    const refused = (context) =>
      reject(new Error(`${what} refused: ${describeError(context[kind].error)}`));
    link.once(`${kind}_error`, refused);
    link.once(`${kind}_close`, refused);
    link.once(`${kind}_open`, () => {
      if (present(link[terminus])) {
        link.removeListener(`${kind}_error`, refused);
        link.removeListener(`${kind}_close`, refused);
        resolve(link);
      } else {
        setTimeout(() => reject(new Error(`${what}: the broker attached with a null ${terminus}`)),
          1000);
      }
    });
  }), `attaching ${what}`);
}

// Rejects every pending wait on `link` once the broker detaches it.
function onDetach(link, kind, what, fail) {
  const detached = (context) => fail(new Error(
    `${what} detached by the broker: ${describeError(context[kind].error)}`));
  link.on(`${kind}_error`, detached);
  link.on(`${kind}_close`, detached);
}

// A sender whose sends return promises of the broker's outcome.
async function openSender(connection, options, what) {
  const sender = connection.open_sender(options);
  const pending = new Map();
  const failures = new Map();
  for (const outcome of ['accepted', 'rejected', 'released', 'modified']) {
    sender.on(outcome, (context) => {
      const resolve = pending.get(context.delivery);
      if (resolve) {
        pending.delete(context.delivery);
        failures.delete(context.delivery);
        const state = context.delivery.remote_state;
        resolve({ outcome, error: state && state.error ? state.error : undefined });
      }
    });
  }
  sender.sendTracked = (message) => {
    const delivery = sender.send(message);
    return withTimeout(new Promise((resolve, reject) => {
      pending.set(delivery, resolve);
      failures.set(delivery, reject);
    }), `the outcome of ${JSON.stringify(message.body)}`);
  };
  await attached(sender, 'sender', what);
  onDetach(sender, 'sender', what, (error) => {
    for (const reject of failures.values()) reject(error);
    failures.clear();
  });
  return sender;
}

// Sends `messages` unsettled and checks that the broker accepted every one.
async function sendAll(checks, sender, messages, what) {
  const results = await Promise.all(messages.map((message) => sender.sendTracked(message)));
  const outcomes = results.map((r) => r.outcome);
  return checks.check(outcomes.every((o) => o === 'accepted'), `${what}: ${outcomes}`);
}

// An event a receiver emits when it queues a message no `next()` waits for;
// what `gather` listens to.
const QUEUED = 'sluice:queued';

// A receiver that queues what it gets; `next()` takes one, with its delivery
// and the time it arrived (`performance.now()`, ms).
async function openReceiver(connection, options, what) {
  const receiver = connection.open_receiver(Object.assign({ autoaccept: false }, options));
  const inbox = [];
  const waiters = [];
  const rejects = new Map();
  let detachError;
  receiver.on('message', (context) => {
    const item = { message: context.message, delivery: context.delivery, at: performance.now() };
    const waiter = waiters.shift();
    if (waiter) {
      rejects.delete(waiter);
      waiter(item);
    } else {
      inbox.push(item);
      receiver.emit(QUEUED);
    }
  });
  // Everything queued so far, without waiting.
  receiver.takeQueued = () => inbox.splice(0);
  receiver.next = (ms = TIMEOUT_MS) => {
    if (inbox.length) return Promise.resolve(inbox.shift());
    if (detachError) return Promise.reject(detachError);
    let waiter;
    const got = new Promise((resolve, reject) => {
      waiter = resolve;
      waiters.push(resolve);
      rejects.set(resolve, reject);
    });
    return withTimeout(got, `a message on ${what}`, ms).catch((error) => {
      const index = waiters.indexOf(waiter);
      if (index >= 0) waiters.splice(index, 1);
      rejects.delete(waiter);
      throw error;
    });
  };
  // Receives and accepts up to `limit` messages, stopping at the first wait
  // longer than `ms`; then waits `quietMs` more for anything unexpected.
  receiver.take = async (limit, ms = TIMEOUT_MS, quietMs = 500) => {
    const bodies = [];
    try {
      while (bodies.length < limit) {
        const { message, delivery } = await receiver.next(ms);
        bodies.push(message.body);
        delivery.accept();
      }
    } catch (error) {
      if (!/timed out/.test(String(error))) throw error;
      return bodies;
    }
    try {
      const { message, delivery } = await receiver.next(quietMs);
      bodies.push(message.body);
      delivery.accept();
    } catch (error) {
      if (!/timed out/.test(String(error))) throw error;
    }
    return bodies;
  };
  await attached(receiver, 'receiver', what);
  onDetach(receiver, 'receiver', what, (error) => {
    if (receiver.closing) return;
    detachError = error;
    for (const reject of rejects.values()) reject(error);
    rejects.clear();
  });
  return receiver;
}

// Takes what `receiver` gets (accepting it) and checks that it is exactly
// `expected`, in order; when nothing is expected, waits a second for it.
async function expectBodies(checks, who, receiver, expected) {
  const got = await receiver.take(expected.length, expected.length ? TIMEOUT_MS : 1000, 500);
  return checks.check(sameList(got, expected),
    `${who}: got ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
}

// Waits until `count` messages have come to `receivers` together, however
// the broker spread them, and resolves with the items each one got, left
// unsettled. Not to be mixed with `next()` on the same receivers.
function gather(receivers, count, what) {
  const got = receivers.map(() => []);
  let collect;
  const all = new Promise((resolve) => {
    collect = () => {
      receivers.forEach((receiver, i) => got[i].push(...receiver.takeQueued()));
      if (got.flat().length >= count) resolve(got);
    };
  });
  for (const receiver of receivers) receiver.on(QUEUED, collect);
  collect();
  return withTimeout(all, `${count} messages on ${what}`).finally(() => {
    for (const receiver of receivers) receiver.removeListener(QUEUED, collect);
  });
}

function closeLink(link, kind) {
  link.closing = true;
  return withTimeout(new Promise((resolve) => {
    link.once(`${kind}_close`, () => resolve());
    link.close();
  }), `closing a ${kind}`);
}

// Detaches without closing (closed=false); resolves with the `closed` flag
// of the broker's answering detach.
function detachLink(link, kind) {
  link.closing = true;
  return withTimeout(new Promise((resolve) => {
    link.once(`${kind}_close`, () => resolve(Boolean(link.remote.detach && link.remote.detach.closed)));
    link.detach();
  }), `detaching a ${kind}`);
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function symbols(value) {
  if (value === undefined || value === null) return [];
  return (Array.isArray(value) ? value : [value]).map(String);
}

module.exports = {
  Checks, run, unique, connect, close, openSender, sendAll, openReceiver, expectBodies, gather,
  closeLink, detachLink, sameList, symbols, withTimeout, describeError, present, TIMEOUT_MS,
};
