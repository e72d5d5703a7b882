#!/usr/bin/env python3
"""Durable and non-durable topic subscriptions with Qpid Proton.

1. A durable subscriber (source durable = unsettled-state, expiry-policy
   never, as Qpid JMS asks for one) attaches to `topic://NAME` under a fixed
   link name and gets the first batch.
2. It detaches without closing (detach closed=false), as a JMS durable
   consumer does when closed, and its connection goes away.
3. A second batch is published while it is away.
4. Reattaching under the same link name and container id, it gets that
   second batch: the subscription kept it.
5. Closing the link (detach closed=true, a JMS unsubscribe) deletes the
   subscription: a third batch published after that is not there when the
   same link name attaches again.
6. A non-durable subscriber's subscription goes with its detach: reattaching
   under the same name gets nothing published in between.

usage: proton_durable_subscription.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message, Timeout
from proton.reactor import Container, DurableSubscription
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique


def connect(url, container_id):
    container = Container()
    container.container_id = container_id
    return BlockingConnection(url, timeout=TIMEOUT, container=container,
                              allowed_mechs="ANONYMOUS")


def receive_all(checks, who, receiver, expected):
    got = []
    try:
        while len(got) < len(expected):
            got.append(receiver.receive(timeout=TIMEOUT if not got else 5).body)
            receiver.accept()
        got.append(receiver.receive(timeout=0.5).body)
        receiver.accept()
    except Timeout:
        pass
    checks.check(got == expected, f"{who}: got {got}, expected {expected}")


def publish(checks, connection, sender, label, count=3, subscribed=True):
    """Publishes `count` messages; with subscribers they must be accepted.
    With none, what the broker answers is only printed: the spec leaves it
    open."""
    bodies = [f"{label} {i}" for i in range(count)]
    outcomes = [send_for_outcome(connection, sender, Message(body=b, durable=True))[0]
                for b in bodies]
    if subscribed:
        checks.check(outcomes == ["accepted"] * count, f"published {label!r}: {outcomes}")
    else:
        print(f"published {label!r} with no subscription: {outcomes}")
    return bodies


def detach(connection, receiver):
    """Detaches without closing (closed=false) and waits for the broker's
    detach. BlockingReceiver has no detach: the link's handler (its
    Fetcher) is told of the broker's detach, which Proton reports as
    `link_remote_detach` (a detach with closed=true would be
    `link_remote_close`, which BlockingConnection raises as LinkDetached)."""
    answered = []
    receiver.fetcher.on_link_remote_detach = lambda event: answered.append(True)
    receiver.link.detach()
    connection.wait(lambda: bool(answered), msg="waiting for the broker's detach")


def scenario(checks):
    url = sys.argv[1]
    topic = "topic://" + unique("proton-news")
    client_id = unique("proton-durable-client")
    subscription = "news-subscription"

    publisher = connect(url, unique("proton-publisher"))
    sender = publisher.create_sender(topic)

    # 1-2: subscribe durably, receive, detach without closing.
    subscriber = connect(url, client_id)
    receiver = subscriber.create_receiver(topic, name=subscription, credit=10,
                                          options=DurableSubscription())
    first = publish(checks, publisher, sender, "first")
    receive_all(checks, "durable subscriber, first batch", receiver, first)
    detach(subscriber, receiver)
    subscriber.close()
    print("durable subscriber detached (closed=false) and disconnected")

    # 3-4: what is published meanwhile waits in the subscription.
    second = publish(checks, publisher, sender, "while away")
    subscriber = connect(url, client_id)
    receiver = subscriber.create_receiver(topic, name=subscription, credit=10,
                                          options=DurableSubscription())
    receive_all(checks, "durable subscriber after reattaching", receiver, second)

    # 5: closing the link ends the subscription.
    receiver.close()
    subscriber.close()
    publish(checks, publisher, sender, "after unsubscribe", subscribed=False)
    subscriber = connect(url, client_id)
    receiver = subscriber.create_receiver(topic, name=subscription, credit=10,
                                          options=DurableSubscription())
    receive_all(checks, "new durable subscription after the old one was closed", receiver, [])
    receiver.close()
    subscriber.close()

    # 6: a non-durable subscription ends with its detach.
    subscriber = connect(url, client_id)
    volatile = unique("volatile-subscription")
    receiver = subscriber.create_receiver(topic, name=volatile, credit=10)
    batch = publish(checks, publisher, sender, "volatile")
    receive_all(checks, "non-durable subscriber", receiver, batch)
    detach(subscriber, receiver)
    subscriber.close()
    publish(checks, publisher, sender, "after volatile detach", subscribed=False)
    subscriber = connect(url, client_id)
    receiver = subscriber.create_receiver(topic, name=volatile, credit=10)
    receive_all(checks, "non-durable subscriber reattached under the same name", receiver, [])
    receiver.close()
    subscriber.close()

    sender.close()
    publisher.close()


if __name__ == "__main__":
    run("proton durable subscription", scenario)
