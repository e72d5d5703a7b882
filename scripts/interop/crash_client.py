#!/usr/bin/env python3
"""The Proton client of scripts/crash-test.sh, in three commands.

  crash_client.py send URL QUEUE COUNT ACCEPTED_FILE STATUS_FILE
      Sends COUNT durable messages unsettled to QUEUE, as fast as the broker's
      credit allows. Message i has message-id i and a body naming i. Each id
      whose `accepted` arrives is appended to ACCEPTED_FILE at once (one per
      line, flushed), so the file holds every acceptance seen before the
      broker was killed. Ends when all are settled or the connection drops,
      then writes counts to STATUS_FILE (JSON).

  crash_client.py drain URL QUEUE RECEIVED_FILE [IDLE_SECONDS]
      Receives from QUEUE, accepting each message, until none arrives for
      IDLE_SECONDS (default 5). Writes each id (and whether its body matched
      it) to RECEIVED_FILE.

  crash_client.py verify STATUS_FILE ACCEPTED_FILE RECEIVED_FILE
      Prints the summary (sent, accepted, received, lost, duplicates) and
      exits 1 if an accepted message was lost, a message was received twice,
      or a received message is not one that was sent intact.
"""
import json
import sys
import time

from proton import Message, ulong
from proton.handlers import MessagingHandler
from proton.reactor import Container

# Bounds on each phase, so the test ends by itself whatever the broker does.
SEND_LIMIT_SECONDS = 300
DRAIN_LIMIT_SECONDS = 300


def body_for(i):
    return f"crash-test message {i:06d} " + "x" * 64


class Send(MessagingHandler):
    def __init__(self, url, queue, count, accepted_file):
        super().__init__(auto_settle=True)
        self.url = url
        self.queue = queue
        self.count = count
        self.accepted_file = accepted_file
        self.sent = 0
        self.outcomes = {"accepted": 0, "rejected": 0, "released": 0}
        self.error = None
        self.connection = None
        self.started = time.monotonic()
        self.first_accept_at = None

    def on_start(self, event):
        self.connection = event.container.connect(
            self.url, reconnect=False, allowed_mechs="ANONYMOUS")
        event.container.create_sender(self.connection, self.queue)
        self.deadline = event.container.schedule(SEND_LIMIT_SECONDS, self)

    def on_timer_task(self, event):
        self.error = f"still sending after {SEND_LIMIT_SECONDS} s"
        if self.connection is not None:
            self.connection.close()

    def on_sendable(self, event):
        sender = event.sender
        while sender.credit > 0 and self.sent < self.count:
            i = self.sent
            sender.send(Message(id=ulong(i), durable=True, body=body_for(i)), tag=str(i))
            self.sent += 1

    def _tag(self, event):
        tag = event.delivery.tag
        return tag.decode() if isinstance(tag, bytes) else str(tag)

    def on_accepted(self, event):
        if self.first_accept_at is None:
            self.first_accept_at = time.monotonic()
        self.accepted_file.write(self._tag(event) + "\n")
        self.outcomes["accepted"] += 1
        self._maybe_done(event)

    def on_rejected(self, event):
        self.outcomes["rejected"] += 1
        print(f"send: message {self._tag(event)} rejected: {event.delivery.remote.condition}",
              flush=True)
        self._maybe_done(event)

    def on_released(self, event):
        self.outcomes["released"] += 1
        self._maybe_done(event)

    def _maybe_done(self, event):
        if sum(self.outcomes.values()) == self.count:
            event.connection.close()

    def on_transport_error(self, event):
        condition = event.transport.condition
        self.error = f"transport error: {condition.name if condition else 'connection lost'}"

    def on_connection_error(self, event):
        self.error = f"connection error: {event.connection.remote_condition}"

    def on_link_error(self, event):
        self.error = f"link error: {event.link.remote_condition}"
        event.connection.close()

    def on_connection_closed(self, event):
        self._finish(event)

    def on_disconnected(self, event):
        self._finish(event)

    def _finish(self, event):
        if self.error is None and sum(self.outcomes.values()) < self.count:
            self.error = "disconnected"
        # The deadline timer would keep the container running.
        self.deadline.cancel()
        event.container.stop()


def send(url, queue, count, accepted_path, status_path):
    # Line-buffered: every acceptance reaches the file as it arrives.
    with open(accepted_path, "w", buffering=1) as accepted_file:
        handler = Send(url, queue, int(count), accepted_file)
        container = Container(handler)
        try:
            container.run()
        except Exception as error:  # a dropped connection may surface here
            handler.error = handler.error or f"{type(error).__name__}: {error}"
    elapsed = time.monotonic() - handler.started
    status = {
        "sent": handler.sent,
        "outcomes": handler.outcomes,
        "unsettled": handler.sent - sum(handler.outcomes.values()),
        "error": handler.error,
        "seconds": round(elapsed, 2),
    }
    with open(status_path, "w") as status_file:
        json.dump(status, status_file)
    print(f"send: {json.dumps(status)}", flush=True)
    return 0


class Drain(MessagingHandler):
    """Grants credit only once the broker has answered the attach, and tops
    it up as messages arrive: credit sent together with the attach is a
    separate concern (proton_queue.py covers it), not what this test is
    about."""

    CREDIT = 500

    def __init__(self, url, queue, received_file, idle):
        super().__init__(prefetch=0, auto_accept=True)
        self.url = url
        self.queue = queue
        self.received_file = received_file
        self.idle = idle
        self.received = 0
        self.last = time.monotonic()
        self.started = self.last
        self.error = None
        self.connection = None

    def on_start(self, event):
        self.connection = event.container.connect(
            self.url, reconnect=False, allowed_mechs="ANONYMOUS")
        event.container.create_receiver(self.connection, self.queue)
        event.container.schedule(0.5, self)

    def on_link_opened(self, event):
        event.receiver.flow(self.CREDIT)

    def on_timer_task(self, event):
        now = time.monotonic()
        if now - self.last >= self.idle:
            self.connection.close()
        elif now - self.started >= DRAIN_LIMIT_SECONDS:
            self.error = f"still draining after {DRAIN_LIMIT_SECONDS} s"
            self.connection.close()
        else:
            event.container.schedule(0.5, self)

    def on_message(self, event):
        message = event.message
        self.last = time.monotonic()
        self.received += 1
        try:
            i = int(message.id)
            intact = message.body == body_for(i)
        except (TypeError, ValueError):
            i, intact = message.id, False
        self.received_file.write(f"{i} {'ok' if intact else 'corrupt'}\n")
        if event.receiver.credit < self.CREDIT // 2:
            event.receiver.flow(self.CREDIT - event.receiver.credit)

    def on_transport_error(self, event):
        condition = event.transport.condition
        self.error = f"transport error: {condition.name if condition else 'connection lost'}"

    def on_link_error(self, event):
        self.error = f"link error: {event.link.remote_condition}"
        event.connection.close()

    def on_connection_closed(self, event):
        event.container.stop()

    def on_disconnected(self, event):
        event.container.stop()


def drain(url, queue, received_path, idle="5"):
    with open(received_path, "w", buffering=1) as received_file:
        handler = Drain(url, queue, received_file, float(idle))
        Container(handler).run()
    print(f"drain: received {handler.received} messages"
          f"{'; error: ' + handler.error if handler.error else ''}", flush=True)
    return 1 if handler.error else 0


def verify(status_path, accepted_path, received_path):
    with open(status_path) as status_file:
        status = json.load(status_file)
    with open(accepted_path) as accepted_file:
        accepted = [int(line) for line in accepted_file if line.strip()]
    received = []
    corrupt = []
    with open(received_path) as received_file:
        for line in received_file:
            fields = line.split()
            if not fields:
                continue
            try:
                i = int(fields[0])
            except ValueError:
                corrupt.append(fields[0])
                continue
            received.append(i)
            if fields[1:] != ["ok"]:
                corrupt.append(i)

    sent = status["sent"]
    accepted_set = set(accepted)
    received_set = set(received)
    lost = sorted(accepted_set - received_set)
    counts = {}
    for i in received:
        counts[i] = counts.get(i, 0) + 1
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    unknown = sorted(i for i in received_set if not 0 <= i < sent)
    in_doubt = sorted(received_set - accepted_set - set(unknown))
    order_breaks = sum(1 for a, b in zip(received, received[1:]) if b < a)

    print("crash-test summary")
    print(f"  sender:      {status.get('error') or 'finished'}"
          f" after {status.get('seconds', '?')} s; outcomes {status.get('outcomes')}")
    print(f"  sent:        {sent}")
    print(f"  accepted:    {len(accepted)} (ids seen accepted before the kill;"
          f" {len(accepted) - len(accepted_set)} repeated)")
    print(f"  received:    {len(received)} ({len(received_set)} distinct)")
    print(f"  lost:        {len(lost)} (accepted but not received)")
    print(f"  duplicates:  {len(duplicates)}")
    print(f"  in doubt:    {len(in_doubt)} (received, sent but never seen accepted: allowed)")
    print(f"  unknown:     {len(unknown)} (received ids that were never sent)")
    print(f"  corrupt:     {len(corrupt)} (body does not match its id)")
    print(f"  out of order: {order_breaks} places where an id follows a larger one")
    if lost:
        print(f"  LOST ids (first 20): {lost[:20]}")
    if duplicates:
        print(f"  DUPLICATE ids (first 20): {duplicates[:20]}")
    if unknown:
        print(f"  UNKNOWN ids (first 20): {unknown[:20]}")
    if corrupt:
        print(f"  CORRUPT ids (first 20): {corrupt[:20]}")
    # A run that sent nothing, or whose sender was refused, proves nothing.
    vacuous = sent == 0 or str(status.get("error") or "").startswith("link error")
    if vacuous:
        print("  VACUOUS: the sender could not send; nothing was tested")
    elif not accepted:
        print("  warning: no acceptance was seen before the kill; only recovery of"
              " unconfirmed messages was exercised")
    ok = not (vacuous or lost or duplicates or unknown or corrupt
              or len(accepted) != len(accepted_set))
    print("crash-test: PASS" if ok else "crash-test: FAIL", flush=True)
    return 0 if ok else 1


def main():
    commands = {"send": send, "drain": drain, "verify": verify}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
