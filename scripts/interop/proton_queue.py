#!/usr/bin/env python3
"""Anycast queue with Qpid Proton: send, then receive and accept.

1. A sender attaches to a fresh queue name (the broker creates the queue) and
   sends N durable messages unsettled, each awaited until the broker settles
   it: every one must come back `accepted`.
2. A second sender, pre-settled (at-most-once), sends M more: the broker takes
   them without a disposition.
3. A receiver on the same queue gets all N + M, in order, accepting each.
4. Nothing more is delivered, and a new receiver on a new connection finds the
   queue empty: the accepts consumed the messages.

usage: proton_queue.py amqp://127.0.0.1:PORT [N]
"""
import sys

from proton import Message, Timeout
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique

PRESETTLED = 10


def scenario(checks):
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    queue = unique("proton-queue")

    connection = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    sender = connection.create_sender(queue)
    checks.check(sender.remote_target is not None and sender.remote_target.address == queue,
                 f"sender attached to {queue!r} (broker's target: "
                 f"{sender.remote_target.address if sender.remote_target else None!r})")
    expected = []
    outcomes = {}
    for i in range(count):
        body = f"{queue} message {i}"
        expected.append(body)
        outcome, condition = send_for_outcome(
            connection, sender, Message(body=body, durable=True, id=f"{queue}-{i}"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome != "accepted":
            print(f"  message {i}: {outcome} {condition or ''}")
    checks.check(outcomes == {"accepted": count},
                 f"sent {count} durable messages unsettled: outcomes {outcomes}")

    # Proton names links container-address: a second sender needs a name of its own.
    presettled = connection.create_sender(queue, name=f"{queue}-presettled", options=AtMostOnce())
    for i in range(PRESETTLED):
        body = f"{queue} pre-settled {i}"
        expected.append(body)
        presettled.send(Message(body=body, durable=True))
    print(f"sent {PRESETTLED} pre-settled messages (no outcome expected)")

    receiver = connection.create_receiver(queue, credit=50)
    checks.check(receiver.remote_source is not None and receiver.remote_source.address == queue,
                 f"receiver attached to {queue!r}")
    received = []
    try:
        for _ in expected:
            message = receiver.receive(timeout=TIMEOUT)
            received.append(message.body)
            receiver.accept()
    except Timeout:
        print(f"  timed out after {len(received)} of {len(expected)} messages")
    checks.check(len(received) == len(expected),
                 f"received {len(received)} of {len(expected)} messages")
    checks.check(sorted(received) == sorted(expected), "received exactly the bodies sent")
    checks.check(received == expected, "received them in the order sent")
    if received != expected:
        for i, (got, want) in enumerate(zip(received, expected)):
            if got != want:
                print(f"  first difference at {i}: got {got!r}, expected {want!r}")
                break

    try:
        extra = receiver.receive(timeout=1)
        checks.check(False, f"no message beyond those sent (got {extra.body!r})")
    except Timeout:
        checks.check(True, "no message beyond those sent")
    receiver.close()
    presettled.close()
    sender.close()
    connection.close()

    connection = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    receiver = connection.create_receiver(queue, credit=10)
    try:
        extra = receiver.receive(timeout=1)
        checks.check(False, f"queue is empty once every message was accepted (got {extra.body!r})")
    except Timeout:
        checks.check(True, "queue is empty once every message was accepted")
    receiver.close()
    connection.close()


if __name__ == "__main__":
    run("proton queue", scenario)
