#!/usr/bin/env node
'use strict';
// Request/reply with rhea: a dynamic reply queue and anonymous relay.
//
// 1. The broker offers ANONYMOUS-RELAY in its open.
// 2. The requester attaches a receiver with a dynamic source; the broker
//    names a temporary queue in its attach.
// 3. The responder receives on a request queue and answers through one
//    anonymous-relay sender (target with a null address), addressing each
//    reply with `to` = the request's `reply_to`; every reply is `accepted`.
// 4. The requester gets each reply, matched by correlation id.
// 5. The relay rejects a message to a missing node with `amqp:not-found`.
// 6. Once the dynamic receiver is closed, its queue is gone: a reply to it is
//    rejected with `amqp:not-found`.
//
// usage: node rhea_request_reply.js amqp://127.0.0.1:PORT [N]

const {
  run, unique, connect, close, openSender, openReceiver, closeLink, symbols, present,
} = require('./rhea_common');

function errorName(result) {
  return result.error ? String(result.error.condition) : undefined;
}

run('rhea request/reply', async (checks, url) => {
  const count = Number(process.argv[3] || 5);
  const requests = unique('rhea-requests');

  const responder = await connect(url);
  const offered = symbols(responder.offered_capabilities);
  checks.check(offered.includes('ANONYMOUS-RELAY'),
    `broker offers ANONYMOUS-RELAY (offered: ${JSON.stringify(offered)})`);
  const incoming = await openReceiver(responder,
    { source: { address: requests }, credit_window: 10 }, 'request receiver');
  const relay = await openSender(responder, { target: {} }, 'anonymous-relay sender');
  checks.check(present(relay.target), 'anonymous-relay sender (null target address) attached');

  const requester = await connect(url);
  const replies = await openReceiver(requester,
    { source: { dynamic: true }, credit_window: 10 }, 'dynamic receiver');
  const replyTo = replies.source && replies.source.address;
  checks.require(Boolean(replyTo), `dynamic receiver attached; broker named its queue '${replyTo}'`);
  checks.check(Boolean(replies.source.dynamic), "the broker's source is marked dynamic");
  const outgoing = await openSender(requester, { target: { address: requests } }, 'request sender');

  for (let i = 0; i < count; i++) {
    const sent = await outgoing.sendTracked({
      body: `request ${i}`, reply_to: replyTo, correlation_id: `corr-${i}`, durable: true,
    });
    checks.check(sent.outcome === 'accepted', `request ${i} ${sent.outcome}`);

    const request = await incoming.next();
    checks.check(request.message.body === `request ${i}` && request.message.reply_to === replyTo,
      `responder got '${request.message.body}' with reply_to '${request.message.reply_to}'`);
    const replied = await relay.sendTracked({
      to: request.message.reply_to,
      body: `reply to ${request.message.body}`,
      correlation_id: request.message.correlation_id,
    });
    checks.check(replied.outcome === 'accepted',
      `reply ${i} through the relay ${replied.outcome} ${errorName(replied) || ''}`.trim());
    request.delivery.accept();

    const answer = await replies.next();
    answer.delivery.accept();
    checks.check(answer.message.body === `reply to request ${i}`
      && answer.message.correlation_id === `corr-${i}`,
    `requester got '${answer.message.body}' (correlation ${answer.message.correlation_id})`);
  }

  const nowhere = unique('rhea-nowhere');
  const lost = await relay.sendTracked({ to: nowhere, body: 'lost' });
  checks.check(lost.outcome === 'rejected' && errorName(lost) === 'amqp:not-found',
    `relay to missing node '${nowhere}': ${lost.outcome} ${errorName(lost)}`);

  await closeLink(replies, 'receiver');
  const late = await relay.sendTracked({ to: replyTo, body: 'too late' });
  checks.check(late.outcome === 'rejected' && errorName(late) === 'amqp:not-found',
    `relay to the closed dynamic queue '${replyTo}': ${late.outcome} ${errorName(late)}`);

  await closeLink(outgoing, 'sender');
  await close(requester);
  await closeLink(relay, 'sender');
  await closeLink(incoming, 'receiver');
  await close(responder);
});
