#!/usr/bin/env python3
"""Topics (multicast) with Qpid Proton: every subscriber gets every message.

1. `topic://NAME`: two subscribers on their own connections attach, then a
   publisher sends N messages unsettled (each `accepted`); both subscribers
   receive all N, in order, and accept them.
2. A third subscriber attaching after that gets only what is published after
   it attached: a topic keeps no backlog for subscribers to come.
3. The same with a plain address and the `topic` capability on the source
   and target, as Qpid JMS sends it.

usage: proton_topic.py amqp://127.0.0.1:PORT [N]
"""
import sys

from proton import Message, Timeout
from proton.reactor import LinkOption
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, put_symbols, run, send_for_outcome, unique


class TopicCapability(LinkOption):
    """Puts `topic` in the capabilities of the terminus that names the node."""

    def apply(self, link):
        terminus = link.source if link.is_receiver else link.target
        put_symbols(terminus.capabilities, ["topic"])


def connect(url):
    return BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")


def receive_all(checks, who, receiver, expected):
    got = []
    try:
        for _ in expected:
            message = receiver.receive(timeout=TIMEOUT)
            got.append(message.body)
            receiver.accept()
    except Timeout:
        print(f"  {who}: timed out after {len(got)} of {len(expected)}")
    checks.check(got == expected, f"{who} received all {len(expected)} messages in order "
                                  f"(got {len(got)})")
    try:
        extra = receiver.receive(timeout=0.5)
        checks.check(False, f"{who} got nothing more (got {extra.body!r})")
    except Timeout:
        pass
    return got


def publish(checks, connection, sender, label, count):
    bodies = [f"{label} {i}" for i in range(count)]
    outcomes = {}
    for body in bodies:
        outcome, condition = send_for_outcome(connection, sender, Message(body=body, durable=True))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome != "accepted":
            print(f"  {body!r}: {outcome} {condition or ''}")
    checks.check(outcomes == {"accepted": count},
                 f"published {count} messages unsettled: outcomes {outcomes}")
    return bodies


def topic_round(checks, url, address, options, count):
    kind = "capability" if options else "prefix"
    subscribers = []
    for name in ("A", "B"):
        connection = connect(url)
        receiver = connection.create_receiver(address, credit=count + 10, options=options)
        checks.check(receiver.remote_source is not None
                     and receiver.remote_source.address == address,
                     f"subscriber {name} attached to {address!r} "
                     f"(broker's source: {receiver.remote_source.address!r})")
        subscribers.append((name, connection, receiver))

    publisher = connect(url)
    sender = publisher.create_sender(address, options=options)
    checks.check(sender.remote_target is not None and sender.remote_target.address == address,
                 f"publisher attached to {address!r}")
    bodies = publish(checks, publisher, sender, f"{kind} first", count)
    for name, _, receiver in subscribers:
        receive_all(checks, f"{kind} subscriber {name}", receiver, bodies)

    late_connection = connect(url)
    late = late_connection.create_receiver(address, credit=10, options=options)
    later = publish(checks, publisher, sender, f"{kind} second", 3)
    receive_all(checks, f"{kind} late subscriber (only what came after it attached)", late, later)
    for name, _, receiver in subscribers:
        receive_all(checks, f"{kind} subscriber {name}, second batch", receiver, later)

    late.close()
    late_connection.close()
    for _, connection, receiver in subscribers:
        receiver.close()
        connection.close()
    sender.close()
    publisher.close()


def scenario(checks):
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    topic_round(checks, url, "topic://" + unique("proton-prices"), None, count)
    topic_round(checks, url, unique("proton-jms-topic"), TopicCapability(), count)


if __name__ == "__main__":
    run("proton topic", scenario)
