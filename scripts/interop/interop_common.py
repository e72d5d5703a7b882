"""What the Proton (Python) interop scripts share: checks that print what they
checked, unique node names, and sends that return the broker's outcome.

Each script prints one line per check, `ok: ...` or `FAIL: ...`, and exits 0
only if every check passed and nothing raised.
"""
import sys
import traceback
import uuid

from proton import Delivery, symbol

# Every wait on the broker is bounded; the Rust harness bounds the whole
# script at 30 s, so single waits stay well below that.
TIMEOUT = 10

OUTCOMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
    Delivery.RECEIVED: "received",
}


class Checks:
    """Counts checks; a failed check is printed and remembered, not raised,
    so one run reports every mismatch it can reach."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.failures = 0
        self.passed = 0

    def check(self, condition, what):
        if condition:
            self.passed += 1
            print(f"ok: {what}", flush=True)
        else:
            self.failures += 1
            print(f"FAIL: {what}", flush=True)
        return condition

    def require(self, condition, what):
        """A check the rest of the scenario depends on: raises when it fails."""
        if not self.check(condition, what):
            raise AssertionError(what)

    def exit_code(self):
        print(f"{self.scenario}: {self.passed} passed, {self.failures} failed", flush=True)
        return 0 if self.failures == 0 else 1


def run(scenario, body):
    """Runs `body(checks)` and exits with its verdict; an exception is a
    failure, printed with its traceback."""
    checks = Checks(scenario)
    try:
        body(checks)
    except Exception:  # the report is the point: print it and fail
        checks.failures += 1
        print(f"FAIL: {scenario} raised:", flush=True)
        traceback.print_exc(file=sys.stdout)
    sys.exit(checks.exit_code())


def unique(prefix):
    """A node name no earlier run used, so a long-lived broker can be reused."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def outcome_name(state):
    return OUTCOMES.get(state, f"state {state}")


def send_for_outcome(connection, sender, message, timeout=TIMEOUT):
    """Sends `message` unsettled on a BlockingSender and waits for the broker
    to settle it. Returns (outcome name, error condition or None); unlike
    BlockingSender.send, a rejection is returned rather than raised, with
    its condition read before the delivery is settled locally."""
    delivery = sender.link.send(message)
    connection.wait(lambda: delivery.settled, timeout=timeout,
                    msg=f"waiting for the outcome of {message.body!r}")
    state = delivery.remote_state
    condition = delivery.remote.condition
    name = condition.name if condition is not None else None
    delivery.settle()
    return outcome_name(state), name


def receive_event_driven(url, address, count, prefetch=10, timeout=TIMEOUT):
    """Receives and accepts up to `count` messages from `address` the way an
    event-driven Proton client does: a MessagingHandler whose prefetch
    grants credit in the same burst as the attach, before the broker has
    answered it; with prefetch 0 it grants `count` credit only once the
    broker's attach has arrived. Returns the bodies received within
    `timeout` seconds."""
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Receive(MessagingHandler):
        def __init__(self):
            super().__init__(prefetch=prefetch)
            self.bodies = []
            self.connection = None
            self.deadline = None

        def on_start(self, event):
            self.connection = event.container.connect(
                url, reconnect=False, allowed_mechs="ANONYMOUS")
            event.container.create_receiver(self.connection, address)
            self.deadline = event.container.schedule(timeout, self)

        def on_link_opened(self, event):
            if prefetch == 0:
                event.receiver.flow(count)

        def on_message(self, event):
            self.bodies.append(event.message.body)
            if len(self.bodies) == count:
                self.deadline.cancel()
                event.connection.close()

        def on_timer_task(self, event):
            self.connection.close()

    handler = Receive()
    Container(handler).run()
    return handler.bodies


def offered_capabilities(connection):
    """The capabilities the broker offered in its open, as strings."""
    caps = connection.conn.remote_offered_capabilities
    if caps is None:
        return []
    if isinstance(caps, (list, tuple)):
        return [str(c) for c in caps]
    return [str(caps)]


def put_symbols(data, names):
    """Writes `names` into a terminus field as an array of symbols, the way
    Qpid JMS sends capabilities."""
    from proton import Data
    data.put_array(False, Data.SYMBOL)
    data.enter()
    for name in names:
        data.put_symbol(symbol(name))
    data.exit()
