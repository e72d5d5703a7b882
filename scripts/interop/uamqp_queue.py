#!/usr/bin/env python3
"""uAMQP (the Azure uAMQP C library's Python binding, PyPI `uamqp`) against
Sluice: a sender with its default settle modes, then a receiver.

uAMQP connects only over TLS, so the script starts `tls_proxy.py` (a TLS
terminator with a throw-away certificate) in front of the broker and trusts
that certificate. It authenticates with SASL PLAIN; no CBS.

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

usage: uamqp_queue.py amqp://127.0.0.1:PORT USER PASSWORD [N]
       [--expect-rcv-settle-mode first|second] [--send-timeout SECONDS]

With `--expect-rcv-settle-mode second` (a broker configured with
`amqp.rcv_settle_mode_second = true`) the script instead checks what the
operations guide says happens then: the broker's outcome comes unsettled,
uAMQP never settles it, and the first send times out after
`--send-timeout` seconds.
"""
import logging
import os
import re
import subprocess
import sys
import tempfile
import time

import uamqp
from uamqp import ReceiveClient, SendClient, authentication
from uamqp.message import MessageHeader, MessageProperties

from azure_common import (QUIET, arguments, check_attach, check_received, check_sends,
                          send_each)
from interop_common import TIMEOUT, run, unique

HERE = os.path.dirname(os.path.abspath(__file__))


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


class TlsProxy:
    """`tls_proxy.py` in front of the broker, stopped by closing its input."""

    def __init__(self, url, directory):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "tls_proxy.py"), url, directory],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"tls_proxy.py did not start: {line!r}")
        self.host, port = line.split()[1].rsplit(":", 1)
        self.port = int(port)
        self.cert = os.path.join(directory, "cert.pem")

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=TIMEOUT)


def scenario(checks):
    args = arguments()
    with tempfile.TemporaryDirectory(prefix="sluice-uamqp-") as directory:
        proxy = TlsProxy(args.url, directory)
        try:
            exchange(checks, args, proxy)
        finally:
            proxy.stop()


def exchange(checks, args, proxy):
    queue = unique("uamqp-queue")
    address = f"amqps://{proxy.host}:{proxy.port}/{queue}"

    def auth():
        # A connection consumes its authentication object: one each.
        return authentication.SASLPlain(proxy.host, args.user, args.password,
                                        port=proxy.port, verify=proxy.cert)

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
