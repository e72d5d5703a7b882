#!/usr/bin/env python3
"""Local transactions with Qpid Proton: consume, transform and produce as one.

1. Three messages wait on an input queue.
2. The client attaches a link to the broker's transaction coordinator and
   declares a transaction; in it, it accepts one input message and publishes
   its transformation to an output queue, then commits.
3. In a second transaction it does the same with the next input message,
   then rolls back.
4. Afterwards the output queue holds only the committed transformation; the
   input queue holds the other two messages, the rolled-back one delivered
   again (its delivery count raised), and nothing was lost or doubled.

usage: proton_transaction.py amqp://127.0.0.1:PORT
"""
import sys

from proton import Message
from proton.handlers import MessagingHandler, TransactionHandler
from proton.reactor import Container
from proton import Timeout
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique


class ConsumeTransformProduce(MessagingHandler, TransactionHandler):
    """Runs two transactions over one connection: the first commits, the
    second rolls back. Records what the broker answered."""

    def __init__(self, url, inputs, outputs):
        super().__init__(prefetch=0, auto_accept=False)
        self.url, self.inputs, self.outputs = url, inputs, outputs
        self.events = []
        self.transaction = None
        self.deadline = None

    def on_start(self, event):
        self.container = event.container
        self.connection = event.container.connect(
            self.url, reconnect=False, allowed_mechs="ANONYMOUS")
        self.receiver = event.container.create_receiver(self.connection, self.inputs)
        self.sender = event.container.create_sender(self.connection, self.outputs)
        self.deadline = event.container.schedule(TIMEOUT, self)
        event.container.declare_transaction(self.connection, handler=self)

    def on_transaction_declared(self, event):
        self.events.append("declared")
        self.transaction = event.transaction
        self.receiver.flow(1)

    def on_transaction_declare_failed(self, event):
        self.events.append("declare failed")
        self.finish()

    def on_message(self, event):
        body = event.message.body
        self.events.append(f"got {body}")
        self.transaction.accept(event.delivery)
        self.transaction.send(self.sender, Message(body=f"out {body}", durable=True))
        if len(self.events) < 3:
            self.transaction.commit()
        else:
            self.transaction.abort()

    def on_transaction_committed(self, event):
        self.events.append("committed")
        self.container.declare_transaction(self.connection, handler=self)

    def on_transaction_commit_failed(self, event):
        self.events.append("commit failed")
        self.finish()

    def on_transaction_aborted(self, event):
        self.events.append("rolled back")
        self.finish()

    def on_timer_task(self, event):
        self.events.append("timed out")
        self.finish()

    def finish(self):
        self.deadline.cancel()
        self.connection.close()


def drain(connection, address):
    """Every message waiting on `address`, accepted, as (body, delivery count)."""
    receiver = connection.create_receiver(address, credit=10)
    got = []
    while True:
        try:
            message = receiver.receive(timeout=1)
        except Timeout:
            break
        got.append((message.body, message.delivery_count))
        receiver.accept()
    receiver.close()
    return got


def scenario(checks):
    url = sys.argv[1]
    inputs, outputs = unique("proton-txn-in"), unique("proton-txn-out")
    setup = BlockingConnection(url, timeout=TIMEOUT, allowed_mechs="ANONYMOUS")
    sender = setup.create_sender(inputs)
    setup.create_sender(outputs).close()
    for i in range(3):
        outcome, condition = send_for_outcome(setup, sender, Message(body=f"m{i}", durable=True))
        checks.require(outcome == "accepted", f"input m{i} {outcome} {condition or ''}".rstrip())

    handler = ConsumeTransformProduce(url, inputs, outputs)
    Container(handler).run()
    expected = ["declared", "got m0", "committed", "declared", "got m1", "rolled back"]
    checks.check(handler.events == expected, f"transactions: {handler.events}")

    produced = drain(setup, outputs)
    checks.check(produced == [("out m0", 0)],
                 f"the output queue holds only the committed message: {produced}")
    left = drain(setup, inputs)
    checks.check(left == [("m1", 1), ("m2", 0)],
                 f"the input queue holds the rolled-back message, redelivered, and the "
                 f"untouched one: {left}")
    setup.close()


if __name__ == "__main__":
    run("proton transactions", scenario)
