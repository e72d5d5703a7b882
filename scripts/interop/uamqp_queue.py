#!/usr/bin/env python3
"""uAMQP (the Azure uAMQP C library's Python binding, PyPI `uamqp`) against
Sluice: a sender with its default settle modes, then a receiver.

uAMQP connects only over TLS (through OpenSSL), so the script connects to
the broker's TLS listener and trusts the CA file it is given. It
authenticates with SASL PLAIN inside TLS; no CBS.

1. A `SendClient` with its defaults attaches to a fresh queue: send-settle-
   mode unsettled and rcv-settle-mode second (`PeekLock`). The broker's
   attach (read from the library's frame trace) must answer rcv-settle-mode
   first: the receiver chooses (AMQP 1.0 §2.6.3, §2.7.3).
2. N messages are sent one by one with `send_message`, each bounded by the
   client's `msg_timeout`: each must return without raising within it
   (nothing here sleeps), and the slowest is reported.
3. A `ReceiveClient` with its defaults (peek-lock, each message accepted as
   it is handed over) gets exactly the N bodies, each once: a send the
   library had timed out and retried would show up here twice.

usage: uamqp_queue.py amqps://127.0.0.1:PORT USER PASSWORD [N] --ca-file CA_FILE
       [--expect-rcv-settle-mode first|second] [--send-timeout SECONDS]

With `--expect-rcv-settle-mode second` (a broker configured with
`amqp.rcv_settle_mode_second = true`) the script instead checks what the
operations guide says happens then: the broker's outcome comes unsettled,
uAMQP never settles it, and the first send times out after
`--send-timeout` seconds.
"""
import logging
import re
import time
from urllib.parse import urlparse

import uamqp
from uamqp import ReceiveClient, SendClient, authentication
from uamqp.message import MessageHeader, MessageProperties

from azure_common import (QUIET, arguments, check_attach, check_received, check_sends,
                          send_each)
from interop_common import TIMEOUT, run, unique


class FrameTrace(logging.Handler):
    """Keeps the settle modes of the attach frames the C library traces
    (`debug=True` logs each frame through Python logging as `-> [ATTACH]*
    {name,handle,role,snd-settle-mode,rcv-settle-mode,...}`, or `<- ...`
    for one received; a field the peer left out shows as NULL)."""

    ATTACH = re.compile(
        r"(->|<-) ?\[ATTACH\]\* \{([^,]*),(\d+),(true|false),(\d+|NULL),(\d+|NULL),")
    # AMQP 1.0 §2.7.3: an absent snd-settle-mode is mixed (2), an absent
    # rcv-settle-mode first (0).
    DEFAULTS = (2, 0)

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.sent = []
        self.received = []

    def emit(self, record):
        match = self.ATTACH.search(record.getMessage())
        if match:
            direction, _name, _handle, _role, snd, rcv = match.groups()
            modes = tuple(default if value == "NULL" else int(value)
                          for value, default in zip((snd, rcv), self.DEFAULTS))
            (self.sent if direction == "->" else self.received).append(modes)


def scenario(checks):
    args = arguments()
    broker = urlparse(args.url)
    queue = unique("uamqp-queue")
    address = f"amqps://{broker.hostname}:{broker.port}/{queue}"

    def auth():
        # A connection consumes its authentication object: one each.
        return authentication.SASLPlain(broker.hostname, args.user, args.password,
                                        port=broker.port, verify=args.ca_file)

    trace = FrameTrace()
    logging.getLogger("uamqp").addHandler(trace)
    logging.getLogger("uamqp").setLevel(logging.DEBUG)
    logging.getLogger("uamqp").propagate = False

    sender = SendClient(address, auth=auth(), client_name=f"{queue}-sender", debug=True,
                        msg_timeout=int(args.send_timeout * 1000))
    def send(i, body):
        message = uamqp.Message(body.encode(), header=MessageHeader(),
                                properties=MessageProperties(message_id=f"{queue}-{i}"))
        message.header.durable = True
        sender.send_message(message)

    sends = send_each(args.count, queue, send)
    check_attach(checks, args, "library", trace.sent, trace.received)
    sender.close()
    if not check_sends(checks, args, sends, lambda error: "timed out" in str(error)):
        return

    receiver = ReceiveClient(address, auth=auth(), client_name=f"{queue}-receiver",
                             prefetch=args.count)
    received = []
    deadline = time.monotonic() + TIMEOUT
    while len(received) < args.count and time.monotonic() < deadline:
        wait_ms = int((deadline - time.monotonic()) * 1000)
        batch = receiver.receive_message_batch(max_batch_size=args.count - len(received),
                                               timeout=max(wait_ms, 1))
        received.extend(b"".join(m.get_data()).decode() for m in batch)
    extra = receiver.receive_message_batch(max_batch_size=1, timeout=int(QUIET * 1000))
    check_received(checks, args, sends, received, [b"".join(m.get_data()) for m in extra])
    receiver.close()


if __name__ == "__main__":
    run("uamqp queue", scenario)
