#!/usr/bin/env python3
"""Credit sent with the attach, as event-driven Proton clients send it.

A `MessagingHandler` with a prefetch (10 by default) writes its `attach` and
its first `flow` in one burst, before the broker has answered the attach;
Qpid JMS and the Proton C++ and C clients do the same. The broker must honour
that credit.

1. Five messages are sent to a fresh queue, each `accepted`.
2. An event-driven receiver (prefetch 10) on that queue gets all five.
3. The control, on a second queue: an event-driven receiver that grants its
   credit only once the broker's attach has arrived (prefetch 0, then flow)
   gets its five, which tells a lost pipelined flow apart from a queue that
   does not deliver at all.

usage: proton_prefetch.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, receive_event_driven, run, send_for_outcome, unique


def send_batch(checks, url, queue, label):
    connection = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    sender = connection.create_sender(queue)
    bodies = [f"{label} {i}" for i in range(5)]
    outcomes = [send_for_outcome(connection, sender, Message(body=b, durable=True))[0]
                for b in bodies]
    checks.check(outcomes == ["accepted"] * 5, f"sent {label!r}: {outcomes}")
    sender.close()
    connection.close()
    return bodies


def scenario(checks):
    url = sys.argv[1]

    queue = unique("proton-prefetch")
    first = send_batch(checks, url, queue, "pipelined")
    got = receive_event_driven(url, queue, len(first), prefetch=10)
    checks.check(got == first, f"receiver whose credit went out with its attach got "
                               f"{len(got)} of {len(first)} messages")

    control = unique("proton-prefetch-control")
    second = send_batch(checks, url, control, "after attach")
    got = receive_event_driven(url, control, len(second), prefetch=0)
    checks.check(got == second, f"receiver granting credit after the broker's attach got "
                                f"{len(got)} of {len(second)} messages")


if __name__ == "__main__":
    run("proton prefetch", scenario)
