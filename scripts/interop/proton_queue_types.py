#!/usr/bin/env python3
"""Queue types with Qpid Proton, against queues that the Rust test
(broker/tests/interop_proton.rs) configures by name:

1. `proton-priority` (type priority): low (0), urgent (9), normal (4) are
   received urgent, normal, low.
2. `proton-last-value` (last-value, key `instrument`): of eur 1, gbp 1,
   eur 2 and a closing `end`, only gbp 1, eur 2, end are left.
3. `proton-groups` (message groups): two receivers, attached in turn and
   holding what they get unsettled, get a1 a2 b1 a3 b2 (group-ids A and B)
   each group whole and in order at one receiver. Round robin alone would
   split group A.
4. `proton-single-active` (single active consumer): the first of two
   receivers gets all of four messages; once it closes, the second gets
   what follows.
5. A fresh queue: a message with `x-opt-delivery-delay` 1000 arrives after
   the one sent next, and not before its delay.
6. Queues a sender creates on first use, typed by its target's
   dynamic-node-properties: `type` priority, and qpidd's
   `qpid.last_value_queue_key`; a type the broker does not have refuses the
   link with `amqp:invalid-field`.

Everything is accepted in the end, so the queues are left empty.

usage: proton_queue_types.py amqp://127.0.0.1:PORT
"""
import sys
import time

from proton import Message, Timeout, symbol
from proton.reactor import DynamicNodeProperties
from proton.utils import BlockingConnection, LinkDetached

from interop_common import TIMEOUT, run, send_for_outcome, unique


def text(body, **fields):
    return Message(body=body, durable=True, **fields)


def priced(body, priority, instrument):
    return text(body, priority=priority, properties={"instrument": instrument})


def send_all(checks, connection, address, messages, properties=None):
    options = DynamicNodeProperties(properties) if properties else None
    sender = connection.create_sender(address, options=options)
    outcomes = [send_for_outcome(connection, sender, m)[0] for m in messages]
    checks.check(outcomes == ["accepted"] * len(messages),
                 f"{len(messages)} sends to {address} accepted: {outcomes}")
    sender.close()


def receive_through(connection, address, last):
    """The bodies received from `address`, each accepted, up to `last`."""
    receiver = connection.create_receiver(address, credit=10)
    got = []
    try:
        while not got or got[-1] != last:
            got.append(receiver.receive(timeout=TIMEOUT).body)
            receiver.accept()
    except Timeout:
        pass
    receiver.close()
    return got


def priority(checks, connection):
    send_all(checks, connection, "proton-priority",
             [priced("low", 0, "x"), priced("urgent", 9, "x"), priced("normal", 4, "x")])
    got = receive_through(connection, "proton-priority", "low")
    checks.check(got == ["urgent", "normal", "low"],
                 f"a priority queue delivers the highest priority first: {got}")


def last_value(checks, connection):
    send_all(checks, connection, "proton-last-value",
             [priced("eur 1", 4, "EURUSD"), priced("gbp 1", 4, "GBPUSD"),
              priced("eur 2", 4, "EURUSD"), priced("end", 4, "END")])
    got = receive_through(connection, "proton-last-value", "end")
    checks.check(got == ["gbp 1", "eur 2", "end"],
                 f"a last-value queue keeps the latest message per instrument: {got}")


def held(connection, receivers, count):
    """What each receiver got once `count` messages have arrived in all,
    left unsettled."""
    def arrived():
        return sum(len(r.fetcher.incoming) for r in receivers)
    connection.wait(lambda: arrived() >= count, timeout=TIMEOUT,
                    msg=f"waiting for {count} messages")
    return [[r.receive(timeout=0).body for _ in range(len(r.fetcher.incoming))]
            for r in receivers]


def accept_all(receiver, count):
    for _ in range(count):
        receiver.accept()


def groups(checks, connection):
    receivers = [connection.create_receiver("proton-groups", name=f"g{i}", credit=10)
                 for i in range(2)]
    send_all(checks, connection, "proton-groups",
             [text(body, group_id=body[0].upper()) for body in ["a1", "a2", "b1", "a3", "b2"]])
    got = held(connection, receivers, 5)
    whole = sorted(got) == [["a1", "a2", "a3"], ["b1", "b2"]]
    checks.check(whole, f"message groups: each group whole, in order, at one receiver: {got}")
    for receiver, bodies in zip(receivers, got):
        accept_all(receiver, len(bodies))
        receiver.close()


def single_active(checks, connection):
    first, second = [connection.create_receiver("proton-single-active", name=f"s{i}", credit=10)
                     for i in range(2)]
    send_all(checks, connection, "proton-single-active",
             [text(f"first {i}") for i in range(4)])
    got = held(connection, [first, second], 4)
    checks.check(got == [[f"first {i}" for i in range(4)], []],
                 f"a single active consumer: the first attached gets all: {got}")
    accept_all(first, len(got[0]))
    first.close()
    send_all(checks, connection, "proton-single-active", [text(f"then {i}") for i in range(2)])
    got = held(connection, [second], 2)
    checks.check(got == [["then 0", "then 1"]],
                 f"the next attached takes over once the first has gone: {got}")
    accept_all(second, len(got[0]))
    second.close()


def scheduled(checks, connection):
    queue = unique("proton-scheduled")
    receiver = connection.create_receiver(queue, credit=10)
    sender = connection.create_sender(queue)
    later = text("later", annotations={symbol("x-opt-delivery-delay"): 1000})
    sent_at = time.monotonic()
    outcomes = [send_for_outcome(connection, sender, m)[0] for m in (later, text("now"))]
    checks.check(outcomes == ["accepted", "accepted"], f"both sends accepted: {outcomes}")
    got = []
    for _ in range(2):
        got.append(receiver.receive(timeout=TIMEOUT).body)
        receiver.accept()
    waited = time.monotonic() - sent_at
    checks.check(got == ["now", "later"],
                 f"a message with x-opt-delivery-delay comes after one sent next: {got}")
    checks.check(waited >= 0.95, f"and not before its 1 s delay ({waited:.2f} s)")
    receiver.close()
    sender.close()


def typed_by_the_link(checks, connection):
    queue = unique("proton-typed-priority")
    send_all(checks, connection, queue, [priced("low", 0, "x"), priced("urgent", 9, "x")],
             {symbol("type"): "priority"})
    got = receive_through(connection, queue, "low")
    checks.check(got == ["urgent", "low"], f"a queue typed priority by its creator: {got}")

    queue = unique("proton-typed-last-value")
    send_all(checks, connection, queue,
             [priced("eur 1", 4, "EURUSD"), priced("eur 2", 4, "EURUSD"), priced("end", 4, "END")],
             {symbol("qpid.last_value_queue_key"): "instrument"})
    got = receive_through(connection, queue, "end")
    checks.check(got == ["eur 2", "end"],
                 f"a queue typed last-value by qpidd's argument: {got}")

    try:
        connection.create_sender(unique("proton-typed-bad"),
                                 options=DynamicNodeProperties({symbol("type"): "fanout"}))
        checks.check(False, "a type the broker does not have was accepted")
    except LinkDetached as refused:
        checks.check("amqp:invalid-field" in str(refused),
                     f"a type the broker does not have refuses the link: {refused}")


def scenario(checks):
    connection = BlockingConnection(sys.argv[1], timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    priority(checks, connection)
    last_value(checks, connection)
    groups(checks, connection)
    single_active(checks, connection)
    scheduled(checks, connection)
    typed_by_the_link(checks, connection)
    connection.close()


if __name__ == "__main__":
    run("proton queue types", scenario)
