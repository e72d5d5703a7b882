#!/usr/bin/env python3
"""The nodes a Qpid JMS client asks for, as Qpid Proton sends them.

1. Temporary queue (`Session.createTemporaryQueue`): a sender with a dynamic
   target (capability `temporary-queue`) gets the broker's name for the new
   queue in the attach's target; a receiver on that name gets what the
   sender sends; when the sender's link closes, the queue goes, and the
   receiver's link is detached with `amqp:resource-deleted`.
2. Temporary topic: a dynamic target with capability `temporary-topic` is
   named `topic://...`; a subscriber to that address gets what is sent.
3. The broker offers `SHARED-SUBS` in its open. Unsubscribe
   (`Session.unsubscribe`): a receiver with the durable
   subscription's link name and no source finds the subscription (the
   broker's attach names its topic); closing that link deletes it, and a
   second lookup is refused with `amqp:not-found`.

usage: proton_jms_nodes.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message, Terminus, symbol
from proton.reactor import Container, DurableSubscription, LinkOption
from proton.utils import BlockingConnection, LinkDetached

from interop_common import TIMEOUT, offered_capabilities, run, send_for_outcome, unique


class DynamicTarget(LinkOption):
    """A JMS temporary destination's target: dynamic, with its capability."""

    def __init__(self, capability):
        self.capability = capability

    def apply(self, link):
        link.target.dynamic = True
        link.target.expiry_policy = Terminus.EXPIRE_WITH_LINK
        link.target.capabilities.put_array(False, 21)  # symbol
        link.target.capabilities.enter()
        link.target.capabilities.put_symbol(symbol(self.capability))
        link.target.capabilities.exit()


class NoSource(LinkOption):
    """A receiver whose source is null: a JMS unsubscribe's lookup."""

    def apply(self, link):
        link.source.type = Terminus.UNSPECIFIED


def connect(url, container_id=None):
    container = Container()
    if container_id:
        container.container_id = container_id
    return BlockingConnection(url, timeout=TIMEOUT, container=container,
                              allowed_mechs="ANONYMOUS")


def temporary_queue(checks, url):
    connection = connect(url)
    sender = connection.create_sender(None, options=DynamicTarget("temporary-queue"))
    address = sender.link.remote_target.address
    checks.require(bool(address), f"temporary queue named {address!r}")
    receiver = connection.create_receiver(address, credit=10)
    outcome, _ = send_for_outcome(connection, sender, Message(body="to the temporary queue"))
    checks.check(outcome == "accepted", f"sent to the temporary queue: {outcome}")
    got = receiver.receive(timeout=TIMEOUT)
    receiver.accept()
    checks.check(got.body == "to the temporary queue", f"received {got.body!r}")
    # The receiver's link ends while the sender's close is awaited, or
    # after: the blocking API raises it from whichever call is waiting.
    try:
        sender.close()
        receiver.receive(timeout=TIMEOUT)
        checks.check(False, "the receiver's link outlived its temporary queue")
    except LinkDetached as detached:
        condition = receiver.link.remote_condition
        name = condition.name if condition is not None else None
        checks.check(name == "amqp:resource-deleted",
                     f"the receiver's link ends with the queue: {name} ({detached})")
    connection.close()


def temporary_topic(checks, url):
    connection = connect(url)
    sender = connection.create_sender(None, options=DynamicTarget("temporary-topic"))
    address = sender.link.remote_target.address
    checks.require(bool(address) and address.startswith("topic://"),
                   f"temporary topic named {address!r}")
    subscriber = connection.create_receiver(address, credit=10)
    outcome, _ = send_for_outcome(connection, sender, Message(body="to the temporary topic"))
    checks.check(outcome == "accepted", f"sent to the temporary topic: {outcome}")
    got = subscriber.receive(timeout=TIMEOUT)
    subscriber.accept()
    checks.check(got.body == "to the temporary topic", f"subscriber received {got.body!r}")
    connection.close()


def unsubscribe(checks, url):
    container_id = unique("jms-client")
    topic = unique("proton-jms-topic")
    connection = connect(url, container_id)
    capabilities = offered_capabilities(connection)
    checks.check("SHARED-SUBS" in capabilities,
                 f"the broker offers SHARED-SUBS, which Qpid JMS needs to share a "
                 f"subscription (offered: {capabilities})")
    subscriber = connection.create_receiver(f"topic://{topic}", name="sub",
                                            options=DurableSubscription())
    subscriber.link.detach()  # a JMS durable consumer's close: the subscription stays
    lookup = connection.create_receiver(None, name="sub", options=NoSource())
    source = lookup.link.remote_source
    checks.check(source is not None and source.address == f"topic://{topic}",
                 f"the lookup finds the subscription: {source.address if source else None!r}")
    lookup.close()  # detach closed=true: unsubscribe
    try:
        connection.create_receiver(None, name="sub", options=NoSource())
        checks.check(False, "a second lookup found the deleted subscription")
    except LinkDetached as refused:
        checks.check("amqp:not-found" in str(refused),
                     f"a second lookup is refused: {refused}")
    connection.close()


def scenario(checks):
    url = sys.argv[1]
    temporary_queue(checks, url)
    temporary_topic(checks, url)
    unsubscribe(checks, url)


if __name__ == "__main__":
    run("proton JMS nodes", scenario)
