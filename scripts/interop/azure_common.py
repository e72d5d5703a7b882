"""What the two Azure client scripts share (`uamqp_queue.py`,
`pyamqp_queue.py`): their command line, the timed sends, and the checks on
the attach's settle modes, the sends and what was received.

Each client reports settle modes and failures in its own types; the scripts
hand them over as plain integers and exceptions.
"""
import argparse
import time
from dataclasses import dataclass, field

# A send the broker settles at once takes milliseconds; the clients' own
# defaults would wait far longer, so every send gets this bound.
SEND_TIMEOUT = 5.0
# How long a receiver waits for a message beyond those sent.
QUIET = 1.0
# rcv-settle-mode by name, as AMQP 1.0 §3.2.3 numbers them.
MODES = {"first": 0, "second": 1}


def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("count", nargs="?", type=int, default=50)
    parser.add_argument("--expect-rcv-settle-mode", choices=MODES, default="first")
    parser.add_argument("--send-timeout", type=float, default=SEND_TIMEOUT)
    parser.add_argument("--ca-file", help="the CA that signed the broker's TLS certificate")
    return parser.parse_args()


@dataclass
class Sends:
    """What `send_each` did: the bodies whose sends completed, the slowest
    of them, the failure if one raised (index, seconds waited, error), and
    the time all took."""
    expected: list = field(default_factory=list)
    slowest: float = 0.0
    failures: list = field(default_factory=list)
    elapsed: float = 0.0


def send_each(count, queue, send):
    """Calls `send(i, body)` for `count` bodies one after the other and
    times each; stops at the first that raises, since the rest would each
    wait as long."""
    sends = Sends()
    started = time.monotonic()
    for i in range(count):
        body = f"{queue} message {i}"
        began = time.monotonic()
        try:
            send(i, body)
        except Exception as error:  # each client raises its own types: report any
            sends.failures.append((i, time.monotonic() - began, error))
            break
        sends.expected.append(body)
        sends.slowest = max(sends.slowest, time.monotonic() - began)
    sends.elapsed = time.monotonic() - started
    return sends


def check_attach(checks, args, client, asked, answered):
    """The sender's link is the only one so far: `asked` and `answered` are
    the (snd, rcv) settle modes of the attaches it sent and received."""
    asked = [(int(snd), int(rcv)) for snd, rcv in asked]
    answered = [(int(snd), int(rcv)) for snd, rcv in answered]
    checks.check(asked == [(0, 1)],
                 f"the {client}'s default sender attached asking for send-settle-mode "
                 f"unsettled (0), rcv-settle-mode second (1): sent {asked}")
    checks.check([rcv for _, rcv in answered] == [MODES[args.expect_rcv_settle_mode]],
                 f"the broker's attach answers rcv-settle-mode "
                 f"{args.expect_rcv_settle_mode}: received {answered}")


def check_sends(checks, args, sends, timed_out):
    """Checks the sends against the mode the broker was expected to answer;
    `timed_out(error)` says whether a failure is the client's own send
    time-out. Returns whether the messages should now be received."""
    if args.expect_rcv_settle_mode == "second":
        failures = sends.failures
        checks.check(len(failures) == 1 and timed_out(failures[0][2]),
                     f"with the broker honouring second, the first send times out "
                     f"(failures: {[(i, round(t, 2), repr(e)) for i, t, e in failures]})")
        if failures:
            waited = failures[0][1]
            checks.check(0.9 * args.send_timeout <= waited < args.send_timeout + 2,
                         f"the send failed after the client's own {args.send_timeout} s "
                         f"time-out ({waited:.2f} s)")
        return False

    for i, waited, error in sends.failures:
        print(f"  message {i}: failed after {waited:.2f} s: {error!r}")
    completed = len(sends.expected)
    checks.check(not sends.failures and completed == args.count,
                 f"all {args.count} sends completed ({completed} did before one failed)"
                 if sends.failures else f"all {args.count} sends completed")
    if not sends.failures:
        checks.check(sends.slowest < args.send_timeout / 5,
                     f"each send completed promptly: slowest {sends.slowest * 1000:.0f} ms, "
                     f"all {args.count} in {sends.elapsed:.2f} s")
    return True


def check_received(checks, args, sends, received, extra):
    """`received`: the bodies a receiver got, as text; `extra`: what it got
    when asked for one more."""
    checks.check(len(received) == args.count,
                 f"received {len(received)} of {args.count} messages")
    checks.check(len(set(received)) == len(received),
                 f"each once ({len(received) - len(set(received))} duplicates)")
    checks.check(sorted(received) == sorted(sends.expected), "received exactly the bodies sent")
    checks.check(not extra, f"no message beyond those sent (got {extra})")
