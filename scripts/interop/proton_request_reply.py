#!/usr/bin/env python3
"""Request/reply with Qpid Proton: a dynamic reply queue and anonymous relay.

1. The broker offers ANONYMOUS-RELAY in its open.
2. The requester attaches a receiver with a dynamic source: the broker names a
   temporary queue and returns its address in the attach.
3. The responder receives on a request queue and answers through one
   anonymous-relay sender (null target), addressing each reply with `to` =
   the request's `reply_to`; every reply is `accepted`.
4. The requester gets each reply, matched by correlation id.
5. A message through the relay to a node that does not exist is `rejected`
   with `amqp:not-found`.
6. Once the requester closes its dynamic receiver, the temporary queue is
   gone: a reply to its address is `rejected` with `amqp:not-found`.

usage: proton_request_reply.py amqp://127.0.0.1:PORT [N]
"""
import sys

from proton import Message
from proton.utils import BlockingConnection

from interop_common import (TIMEOUT, offered_capabilities, run, send_for_outcome,
                            unique)


def connect(url):
    return BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")


def scenario(checks):
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    requests = unique("proton-requests")

    responder = connect(url)
    capabilities = offered_capabilities(responder)
    checks.check("ANONYMOUS-RELAY" in capabilities,
                 f"broker offers ANONYMOUS-RELAY (offered: {capabilities})")
    incoming = responder.create_receiver(requests, credit=10)
    relay = responder.create_sender(None)
    checks.check(relay.remote_target is not None,
                 "anonymous-relay sender (null target address) attached")

    requester = connect(url)
    replies = requester.create_receiver(None, dynamic=True, credit=10)
    source = replies.remote_source
    reply_to = source.address if source is not None else None
    checks.require(bool(reply_to),
                   f"dynamic receiver attached; broker named its queue {reply_to!r}")
    checks.check(source.dynamic, "the broker's source is marked dynamic")
    outgoing = requester.create_sender(requests)

    for i in range(count):
        request = Message(body=f"request {i}", reply_to=reply_to,
                          correlation_id=f"corr-{i}", durable=True)
        outcome, condition = send_for_outcome(requester, outgoing, request)
        checks.check(outcome == "accepted", f"request {i} {outcome} {condition or ''}".rstrip())

        got = incoming.receive(timeout=TIMEOUT)
        checks.check(got.body == f"request {i}" and got.reply_to == reply_to,
                     f"responder got {got.body!r} with reply_to {got.reply_to!r}")
        reply = Message(address=got.reply_to, body=f"reply to {got.body}",
                        correlation_id=got.correlation_id)
        outcome, condition = send_for_outcome(responder, relay, reply)
        checks.check(outcome == "accepted",
                     f"reply {i} through the relay {outcome} {condition or ''}".rstrip())
        incoming.accept()

        answer = replies.receive(timeout=TIMEOUT)
        replies.accept()
        checks.check(answer.body == f"reply to request {i}"
                     and answer.correlation_id == f"corr-{i}",
                     f"requester got {answer.body!r} (correlation {answer.correlation_id!r})")

    nowhere = unique("proton-nowhere")
    outcome, condition = send_for_outcome(responder, relay,
                                          Message(address=nowhere, body="lost"))
    checks.check((outcome, condition) == ("rejected", "amqp:not-found"),
                 f"relay to missing node {nowhere!r}: {outcome} {condition}")

    replies.close()
    outcome, condition = send_for_outcome(responder, relay,
                                          Message(address=reply_to, body="too late"))
    checks.check((outcome, condition) == ("rejected", "amqp:not-found"),
                 f"relay to the closed dynamic queue {reply_to!r}: {outcome} {condition}")

    outgoing.close()
    requester.close()
    relay.close()
    incoming.close()
    responder.close()


if __name__ == "__main__":
    run("proton request/reply", scenario)
