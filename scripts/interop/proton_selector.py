#!/usr/bin/env python3
"""A selector with Qpid Proton: the broker applies no filters, and says so.

1. A red and a blue message are sent to a fresh queue, each `accepted`.
2. A receiver attaches with the selector `color = 'red'`: the broker's
   source lists no filter, which is how a client learns its selector is not
   in effect (Qpid JMS then reports it unsupported).
3. The link still works, unfiltered: both messages arrive.

usage: proton_selector.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message, Timeout
from proton.reactor import Selector
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique


def filter_set(terminus):
    """The terminus's filter map; an absent (null) map is an empty one."""
    data = terminus.filter
    data.rewind()
    if data.next() is None:
        return {}
    return data.get_object() or {}


def scenario(checks):
    url = sys.argv[1]
    queue = unique("proton-selector")

    connection = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    sender = connection.create_sender(queue)
    expected = ["red", "blue"]
    for color in expected:
        message = Message(body=color, durable=True, properties={"color": color})
        outcome, _ = send_for_outcome(connection, sender, message)
        checks.check(outcome == "accepted", f"{color} message: outcome {outcome}")

    receiver = connection.create_receiver(queue, credit=10, options=Selector("color = 'red'"))
    source = receiver.remote_source
    checks.require(source is not None and source.address == queue,
                   f"receiver with a selector attached to {queue!r}")
    filters = filter_set(source)
    checks.check(filters == {}, f"broker's source lists no filter (got {filters})")

    got = []
    try:
        while len(got) < len(expected):
            got.append(receiver.receive(timeout=TIMEOUT).body)
            receiver.accept()
    except Timeout:
        pass
    checks.check(got == expected, f"unfiltered link received {got}, expected {expected}")
    receiver.close()
    sender.close()
    connection.close()


if __name__ == "__main__":
    run("proton selector", scenario)
