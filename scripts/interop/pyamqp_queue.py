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
import argparse
import logging
import time
from urllib.parse import urlparse

from azure.servicebus._pyamqp import ReceiveClient, SendClient
from azure.servicebus._pyamqp.authentication import SASLPlainAuth
from azure.servicebus._pyamqp.constants import ReceiverSettleMode, SenderSettleMode
from azure.servicebus._pyamqp.message import Header, Message, Properties
from azure.servicebus._pyamqp.performatives import AttachFrame

from interop_common import TIMEOUT, run, unique

# A send the broker settles at once takes milliseconds; the stack's own
# default would wait forever, so every send gets this bound.
SEND_TIMEOUT = 5.0
# How long the receiver waits for a message beyond those sent.
QUIET = 1.0
MODES = {"first": ReceiverSettleMode.First, "second": ReceiverSettleMode.Second}


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

    expected = []
    slowest = 0.0
    failures = []
    started = time.monotonic()
    for i in range(args.count):
        body = f"{queue} message {i}"
        message = Message(value=body, header=Header(durable=True),
                          properties=Properties(message_id=f"{queue}-{i}"))
        began = time.monotonic()
        try:
            sender.send_message(message, timeout=args.send_timeout)
        except Exception as error:  # the stack raises its own types: report any
            failures.append((i, time.monotonic() - began, error))
            break  # one failure shows it; the rest would each wait as long
        expected.append(body)
        slowest = max(slowest, time.monotonic() - began)
    elapsed = time.monotonic() - started

    # The sender's link is the only one so far.
    asked, answered = trace.modes()
    checks.check(asked == [(SenderSettleMode.Unsettled, ReceiverSettleMode.Second)],
                 f"the stack's default sender attached asking for send-settle-mode "
                 f"unsettled (0), rcv-settle-mode second (1): sent {asked}")
    checks.check([rcv for _, rcv in answered] == [MODES[args.expect_rcv_settle_mode]],
                 f"the broker's attach answers rcv-settle-mode "
                 f"{args.expect_rcv_settle_mode}: received {answered}")
    sender.close()

    if args.expect_rcv_settle_mode == "second":
        checks.check(len(failures) == 1 and isinstance(failures[0][2], TimeoutError),
                     f"with the broker honouring second, the first send times out "
                     f"(failures: {[(i, round(t, 2), repr(e)) for i, t, e in failures]})")
        if failures:
            waited = failures[0][1]
            checks.check(0.9 * args.send_timeout <= waited < args.send_timeout + 2,
                         f"the send failed after the client's own {args.send_timeout} s "
                         f"time-out ({waited:.2f} s)")
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
    checks.check(len(received) == args.count,
                 f"received {len(received)} of {args.count} messages")
    checks.check(len(set(received)) == len(received),
                 f"each once ({len(received) - len(set(received))} duplicates)")
    checks.check(sorted(received) == sorted(expected), "received exactly the bodies sent")
    extra = receiver.receive_message_batch(max_batch_size=1, timeout=QUIET)
    checks.check(not extra, f"no message beyond those sent (got {[m.value for m in extra]})")
    receiver.close()


if __name__ == "__main__":
    run("pyamqp queue", scenario)
