#!/usr/bin/env node
'use strict';
// rhea on Node.js's TLS against Sluice's TLS listener: connects to
// amqps://HOST:PORT trusting only CA_FILE, logs in with SASL PLAIN inside
// TLS, sends N messages to a fresh queue and receives them back, each once.
//
// With --expect-refused it instead checks that a client which does not
// trust the broker's certificate is refused before AMQP begins.
//
// With --client-cert CERT --client-key KEY it presents that certificate and
// logs in with SASL EXTERNAL instead (USER and PASSWORD are not sent).
//
// usage: node rhea_tls.js amqps://HOST:PORT CA_FILE USER PASSWORD [--expect-refused]
//                         [--client-cert CERT --client-key KEY]

const fs = require('fs');
const {
  run, unique, connect, close, openSender, openReceiver, sameList,
} = require('./rhea_common');

const COUNT = 20;

run('rhea tls', async (checks, url) => {
  const [caFile, username, password] = process.argv.slice(3, 6);
  const flag = (name) => {
    const at = process.argv.indexOf(name);
    return at < 0 ? undefined : process.argv[at + 1];
  };
  const certFile = flag('--client-cert');
  const options = certFile === undefined
    ? { ca: [fs.readFileSync(caFile)], username, password }
    : {
      ca: [fs.readFileSync(caFile)],
      cert: fs.readFileSync(certFile),
      key: fs.readFileSync(flag('--client-key')),
    };
  if (process.argv.includes('--expect-refused')) {
    try {
      await close(await connect(url, undefined, options));
      checks.check(false, 'a client that does not trust the broker is refused');
    } catch (error) {
      checks.check(/certificate/i.test(error.message),
        `a client that does not trust the broker is refused: ${error.message}`);
    }
    return;
  }
  const connection = await connect(url, undefined, options);
  const protocol = connection.socket && connection.socket.getProtocol
    ? connection.socket.getProtocol() : null;
  checks.check(protocol === 'TLSv1.3' || protocol === 'TLSv1.2',
    `the connection runs over TLS (${protocol})`);
  if (certFile !== undefined) {
    const mechanism = connection.sasl_transport && connection.sasl_transport.mechanism_name;
    checks.check(mechanism === 'EXTERNAL', `logged in with SASL ${mechanism} and a client certificate`);
  }
  const queue = unique('rhea-tls');
  const sender = await openSender(connection, { target: { address: queue } }, `sender to ${queue}`);
  const expected = [];
  const sends = [];
  for (let i = 0; i < COUNT; i++) {
    const body = `${queue} message ${i}`;
    expected.push(body);
    sends.push(sender.sendTracked({ body, durable: true }));
  }
  const outcomes = (await Promise.all(sends)).map((result) => result.outcome);
  checks.check(outcomes.every((outcome) => outcome === 'accepted'),
    `${COUNT} sends inside TLS accepted: ${[...new Set(outcomes)]}`);
  const receiver = await openReceiver(connection,
    { source: { address: queue }, credit_window: COUNT }, `receiver on ${queue}`);
  const received = await receiver.take(COUNT);
  checks.check(sameList(received, expected),
    `received ${received.length} of ${COUNT} messages, in order, each once`);
  await close(connection);
});
