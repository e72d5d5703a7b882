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
import argparse
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

from interop_common import TIMEOUT, run, unique

# A send the broker settles at once takes milliseconds; the library's own
# default would wait forever, so every send gets this bound.
SEND_TIMEOUT = 5.0
# How long the receiver waits for a message beyond those sent.
QUIET = 1.0
MODES = {"first": 0, "second": 1}
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


def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("count", nargs="?", type=int, default=50)
    parser.add_argument("--expect-rcv-settle-mode", choices=MODES, default="first")
    parser.add_argument("--send-timeout", type=float, default=SEND_TIMEOUT)
    return parser.parse_args()


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
    expected = []
    slowest = 0.0
    failures = []
    started = time.monotonic()
    for i in range(args.count):
        body = f"{queue} message {i}"
        message = uamqp.Message(body.encode(), header=MessageHeader(),
                                properties=MessageProperties(message_id=f"{queue}-{i}"))
        message.header.durable = True
        began = time.monotonic()
        try:
            sender.send_message(message)
        except Exception as error:  # the library raises its own types: report any
            failures.append((i, time.monotonic() - began, error))
            break  # one failure shows it; the rest would each wait as long
        expected.append(body)
        slowest = max(slowest, time.monotonic() - began)
    elapsed = time.monotonic() - started
    # The sender's link is the only one so far.
    asked, answered = list(trace.sent), list(trace.received)
    sender.close()

    checks.check(asked == [(0, 1)],
                 f"the library's default sender attached asking for send-settle-mode "
                 f"unsettled (0), rcv-settle-mode second (1): sent {asked}")
    checks.check([rcv for _, rcv in answered] == [MODES[args.expect_rcv_settle_mode]],
                 f"the broker's attach answers rcv-settle-mode "
                 f"{args.expect_rcv_settle_mode}: received {answered}")

    if args.expect_rcv_settle_mode == "second":
        checks.check(len(failures) == 1,
                     f"with the broker honouring second, the first send fails "
                     f"(failures: {[(i, round(t, 2), repr(e)) for i, t, e in failures]})")
        if failures:
            waited = failures[0][1]
            checks.check(0.9 * args.send_timeout <= waited < args.send_timeout + 2
                         and "timed out" in str(failures[0][2]),
                         f"the send failed after the client's own {args.send_timeout} s "
                         f"time-out, msg_timeout ({waited:.2f} s)")
        return

    for i, waited, error in failures:
        print(f"  message {i}: failed after {waited:.2f} s: {error!r}")
    checks.check(not failures and len(expected) == args.count,
                 f"all {args.count} sends completed ({len(expected)} did before one failed)"
                 if failures else f"all {args.count} sends completed")
    if not failures:
        checks.check(slowest < args.send_timeout / 5,
                     f"each send completed promptly: slowest {slowest * 1000:.0f} ms, "
                     f"all {args.count} in {elapsed:.2f} s")

    receiver = ReceiveClient(address, auth=auth(), client_name=f"{queue}-receiver",
                             prefetch=args.count)
    received = []
    deadline = time.monotonic() + TIMEOUT
    while len(received) < args.count and time.monotonic() < deadline:
        wait_ms = int((deadline - time.monotonic()) * 1000)
        batch = receiver.receive_message_batch(max_batch_size=args.count - len(received),
                                               timeout=max(wait_ms, 1))
        received.extend(b"".join(m.get_data()).decode() for m in batch)
    checks.check(len(received) == args.count,
                 f"received {len(received)} of {args.count} messages")
    checks.check(len(set(received)) == len(received),
                 f"each once ({len(received) - len(set(received))} duplicates)")
    checks.check(sorted(received) == sorted(expected), "received exactly the bodies sent")
    extra = receiver.receive_message_batch(max_batch_size=1, timeout=int(QUIET * 1000))
    checks.check(not extra, f"no message beyond those sent (got {len(extra)})")
    receiver.close()


if __name__ == "__main__":
    run("uamqp queue", scenario)
