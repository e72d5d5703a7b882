#!/usr/bin/env python3
"""The Azure SDK's pure-Python AMQP stack (`azure.servicebus._pyamqp`, the
stack under azure-servicebus and azure-eventhub) against Sluice: a sender
with its default settle modes, then a receiver.

The SDK's own clients authenticate with CBS (put-token on `$cbs`); this
script drives the stack's low-level `SendClient` and `ReceiveClient` with
SASL PLAIN instead, over plain TCP (`use_tls=False`).

1. A `SendClient` with its defaults attaches to a fresh queue: send-settle-
   mode unsettled and rcv-settle-mode second. The broker's attach (read from
   the stack's network trace) must answer rcv-settle-mode first: the
   receiver chooses (AMQP 1.0 §2.6.3, §2.7.3), and this stack counts a send
   as done only once a disposition arrives settled.
2. N messages are sent one by one with `send_message(timeout=...)`: each
   must return without raising within that time-out (the stack's own bound;
   nothing here sleeps), and the slowest is reported.
3. A `ReceiveClient` on the same queue, receive-and-delete (the broker sends
   settled), gets exactly the N bodies, each once: a send the stack had
   timed out and retried would show up here twice.

usage: pyamqp_queue.py amqp://127.0.0.1:PORT USER PASSWORD [N]
       [--expect-rcv-settle-mode first|second] [--send-timeout SECONDS]

With `--expect-rcv-settle-mode second` (a broker configured with
`amqp.rcv_settle_mode_second = true`) the script instead checks what the
operations guide says happens then: the broker's outcome comes unsettled,
this stack never settles it, and the first send times out after
`--send-timeout` seconds.
"""
import logging
import time
from urllib.parse import urlparse

from azure.servicebus._pyamqp import ReceiveClient, SendClient
from azure.servicebus._pyamqp.authentication import SASLPlainAuth
from azure.servicebus._pyamqp.constants import ReceiverSettleMode, SenderSettleMode
from azure.servicebus._pyamqp.message import Header, Message, Properties
from azure.servicebus._pyamqp.performatives import AttachFrame

from azure_common import (QUIET, arguments, check_attach, check_received, check_sends,
                          send_each)
from interop_common import TIMEOUT, run, unique


class AttachTrace(logging.Handler):
    """Keeps the attach frames the stack logs in its network trace
    (`network_trace=True` logs each frame at DEBUG, `-> %r` sent and `<- %r`
    received)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.sent = []
        self.received = []

    def emit(self, record):
        if record.args and isinstance(record.args[0], AttachFrame):
            if record.msg == "-> %r":
                self.sent.append(record.args[0])
            elif record.msg == "<- %r":
                self.received.append(record.args[0])

    def modes(self):
        """The (snd, rcv) settle modes of the attaches sent and received so
        far."""
        def of(frames):
            return [(f.send_settle_mode, f.rcv_settle_mode) for f in frames]
        return of(self.sent), of(self.received)


def scenario(checks):
    args = arguments()
    url = urlparse(args.url)
    hostname = f"{url.hostname}:{url.port}"
    queue = unique("pyamqp-queue")
    auth = SASLPlainAuth(args.user, args.password)

    trace = AttachTrace()
    link_log = logging.getLogger("azure.servicebus._pyamqp.link")
    link_log.addHandler(trace)
    link_log.setLevel(logging.DEBUG)
    link_log.propagate = False

    sender = SendClient(hostname, queue, auth=auth, use_tls=False, network_trace=True,
                        client_name=f"{queue}-sender")
    sender.open()

    def send(i, body):
        message = Message(value=body, header=Header(durable=True),
                          properties=Properties(message_id=f"{queue}-{i}"))
        sender.send_message(message, timeout=args.send_timeout)

    sends = send_each(args.count, queue, send)
    check_attach(checks, args, "stack", *trace.modes())
    sender.close()
    if not check_sends(checks, args, sends, lambda error: isinstance(error, TimeoutError)):
        return

    receiver = ReceiveClient(hostname, queue, auth=auth, use_tls=False,
                             client_name=f"{queue}-receiver",
                             send_settle_mode=SenderSettleMode.Settled,
                             receive_settle_mode=ReceiverSettleMode.First,
                             link_credit=args.count)
    received = []
    deadline = time.monotonic() + TIMEOUT
    while len(received) < args.count and time.monotonic() < deadline:
        batch = receiver.receive_message_batch(max_batch_size=args.count - len(received),
                                               timeout=deadline - time.monotonic())
        received.extend(m.value for m in batch)
    received = [b.decode() if isinstance(b, bytes) else b for b in received]
    extra = receiver.receive_message_batch(max_batch_size=1, timeout=QUIET)
    check_received(checks, args, sends, received, [m.value for m in extra])
    receiver.close()


if __name__ == "__main__":
    run("pyamqp queue", scenario)
