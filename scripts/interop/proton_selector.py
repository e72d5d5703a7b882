#!/usr/bin/env python3
"""Selectors with Qpid Proton: the broker applies them, and says so.

1. Red, blue, red and green messages (application property `color`) are
   sent to a fresh queue, each `accepted`.
2. A receiver attaches with the selector `color = 'red'`: the broker's
   source lists that selector (the filters in effect), and the receiver
   gets the two red messages only.
3. A receiver without a selector gets the others, blue then green, in their
   order.
4. On a topic, a subscriber with `color IN ('blue', 'green')` gets only
   those; one without a selector gets every message.
5. A selector that does not parse refuses the link (not the connection)
   with `amqp:invalid-field`, naming the position of the fault.

usage: proton_selector.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message, Timeout
from proton.reactor import Selector
from proton.utils import BlockingConnection, LinkDetached

from interop_common import TIMEOUT, run, send_for_outcome, unique


def filter_set(terminus):
    """The terminus's filter map; an absent (null) map is an empty one."""
    data = terminus.filter
    data.rewind()
    if data.next() is None:
        return {}
    return data.get_object() or {}


def publish(checks, connection, sender, colors):
    for color in colors:
        message = Message(body=color, durable=True, properties={"color": color})
        outcome, _ = send_for_outcome(connection, sender, message)
        checks.check(outcome == "accepted", f"{color} message: outcome {outcome}")


def receive_all(receiver, count):
    """Up to `count` bodies, accepted; then waits briefly for one more."""
    got = []
    try:
        while len(got) < count:
            got.append(receiver.receive(timeout=TIMEOUT).body)
            receiver.accept()
        got.append(receiver.receive(timeout=0.5).body)
        receiver.accept()
    except Timeout:
        pass
    return got


def on_a_queue(checks, connection):
    queue = unique("proton-selector")
    sender = connection.create_sender(queue)
    publish(checks, connection, sender, ["red", "blue", "red", "green"])
    red = connection.create_receiver(queue, name="red", credit=10,
                                     options=Selector("color = 'red'"))
    source = red.remote_source
    checks.require(source is not None and source.address == queue,
                   f"receiver with a selector attached to {queue!r}")
    filters = filter_set(source)
    checks.check(len(filters) == 1, f"broker's source lists the selector in effect: {filters}")
    got = receive_all(red, 2)
    checks.check(got == ["red", "red"], f"the selector's receiver got {got}")
    rest = connection.create_receiver(queue, name="rest", credit=10)
    got = receive_all(rest, 2)
    checks.check(got == ["blue", "green"], f"a plain receiver got the rest, in order: {got}")
    for link in (red, rest, sender):
        link.close()


def on_a_topic(checks, connection):
    topic = "topic://" + unique("proton-selector-topic")
    cool = connection.create_receiver(topic, name="cool", credit=10,
                                      options=Selector("color IN ('blue', 'green')"))
    every = connection.create_receiver(topic, name="every", credit=10)
    sender = connection.create_sender(topic)
    publish(checks, connection, sender, ["red", "blue", "green"])
    got = receive_all(cool, 2)
    checks.check(got == ["blue", "green"], f"the selecting subscriber got {got}")
    got = receive_all(every, 3)
    checks.check(got == ["red", "blue", "green"], f"the plain subscriber got {got}")
    for link in (cool, every, sender):
        link.close()


def a_bad_selector(checks, connection):
    try:
        connection.create_receiver(unique("proton-selector"), credit=10,
                                   options=Selector("color = 'red' AND"))
        checks.check(False, "a selector that does not parse was accepted")
    except LinkDetached as refused:
        text = str(refused)
        checks.check("amqp:invalid-field" in text and "position" in text,
                     f"a bad selector refuses the link: {text}")
    sender = connection.create_sender(unique("proton-selector"))
    outcome, _ = send_for_outcome(connection, sender, Message(body="still here"))
    checks.check(outcome == "accepted", f"the connection carries on: {outcome}")


def scenario(checks):
    connection = BlockingConnection(sys.argv[1], timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    on_a_queue(checks, connection)
    on_a_topic(checks, connection)
    a_bad_selector(checks, connection)
    connection.close()


if __name__ == "__main__":
    run("proton selector", scenario)
