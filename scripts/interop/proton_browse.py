#!/usr/bin/env python3
"""Browsing with Qpid Proton: distribution-mode `copy` reads without consuming.

1. N messages are sent to a fresh queue, each `accepted`.
2. A browser (source distribution-mode `copy`, no selector) sees all N in
   order and nothing more, accepting each copy the broker sent unsettled;
   the broker's source says `copy`.
3. A second browser sees them all again.
4. A normal consumer still receives all N and accepts them.
5. A last browser sees an empty queue.

usage: proton_browse.py amqp://127.0.0.1:PORT [N]
"""
import sys

from proton import Message, Terminus, Timeout
from proton.reactor import Copy
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique


def settle_if_needed(receiver):
    """Accepts the last message if the broker left its delivery unsettled; it
    may send browsed copies pre-settled, as nothing is consumed."""
    if receiver.fetcher.unsettled:
        receiver.accept()


def drain(receiver, limit):
    """Receives until `limit` messages, then waits a quiet second for any
    message beyond them."""
    got = []
    try:
        while len(got) < limit:
            got.append(receiver.receive(timeout=TIMEOUT if not got else 2).body)
            settle_if_needed(receiver)
        got.append(receiver.receive(timeout=1).body)
        settle_if_needed(receiver)
    except Timeout:
        pass
    return got


def browse(checks, connection, queue, label, expected):
    browser = connection.create_receiver(queue, credit=len(expected) + 10, options=Copy())
    source = browser.remote_source
    mode = source.distribution_mode if source is not None else None
    checks.check(mode == Terminus.DIST_MODE_COPY,
                 f"{label}: broker's source has distribution-mode copy (got {mode})")
    got = drain(browser, len(expected))
    checks.check(got == expected, f"{label} saw {len(got)} messages, expected {len(expected)} "
                                  "in order")
    browser.close()


def scenario(checks):
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    queue = unique("proton-browse")

    connection = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    sender = connection.create_sender(queue)
    expected = [f"{queue} message {i}" for i in range(count)]
    outcomes = {}
    for body in expected:
        outcome, _ = send_for_outcome(connection, sender, Message(body=body, durable=True))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    checks.check(outcomes == {"accepted": count}, f"sent {count} messages: outcomes {outcomes}")

    browse(checks, connection, queue, "first browser", expected)
    browse(checks, connection, queue, "second browser", expected)

    consumer = connection.create_receiver(queue, credit=count + 10)
    got = drain(consumer, count)
    checks.check(got == expected,
                 f"consumer after browsing received {len(got)} of {count} messages in order")
    consumer.close()

    browse(checks, connection, queue, "browser after consuming", [])
    sender.close()
    connection.close()


if __name__ == "__main__":
    run("proton browse", scenario)
