#!/usr/bin/env python3
"""The Proton client of scripts/cluster-kill-test.sh, in three commands.

  cluster_kill_client.py ports COUNT
      Prints COUNT free loopback TCP ports, one a line (each socket bound to
      port 0 and all held open until every port is chosen, so the ports
      differ).

  cluster_kill_client.py run SEND_URL RECEIVE_URL QUEUE COUNT RATE WORK_DIR LIMIT_S
      In one process, one producer and one consumer, each with its own
      connection:
      - the producer sends COUNT durable messages unsettled to QUEUE at
        SEND_URL, RATE new messages a second (0: as fast as the broker's
        credit allows; a message sent again is not held back). Message i has message-id ulong(i) and a body naming i.
        Every id whose `accepted` arrives is appended at once to
        WORK_DIR/accepted.log as `ID EPOCH_SECONDS`. When the connection
        drops, it reconnects to the same URL (every RECONNECT_S while the
        node is down) and sends again, in id order, every message not yet
        accepted: at-least-once. A message rejected, released or modified is
        sent again too, after RETRY_S.
      - the consumer receives from QUEUE at RECEIVE_URL, appending
        `ID EPOCH_SECONDS ok|corrupt` to WORK_DIR/received.log before it
        accepts each message; it reconnects the same way.
      The run ends once every message is accepted and every accepted id was
      received (then GRACE_S more, to catch late redeliveries); or, with the
      producer done, after IDLE_S without a new message; or after LIMIT_S in
      all. Connection events go to stdout with their time; counts go to
      WORK_DIR/status.json. Exits 0 if it ended complete, 1 otherwise.

  cluster_kill_client.py report WORK_DIR
      Reads status.json, accepted.log, received.log and kills.log (written
      by the shell script: `INDEX NODE EPOCH_SECONDS ROLE` per kill, then
      `restart INDEX NODE EPOCH_SECONDS` per restart) and prints the summary:
      sent, accepted, received, duplicates, and per kill the time to the
      next acceptance and the longest stall of acceptances around it (the
      failover gap as the producer saw it). Exits 1 if an accepted id was
      never received (listing them), a body was corrupt, an unknown id
      arrived, or the run did not complete.
"""
import json
import os
import socket
import sys
import time

# Every transfer is unsettled, so the broker's credit bounds what is in
# flight; the consumer keeps this much credit open.
RECEIVER_CREDIT = 500
RECONNECT_S = 0.5
RETRY_S = 0.5
GRACE_S = 2.0
IDLE_S = 20.0
TICK_S = 0.25
PACE_S = 0.005


def stamp():
    return time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"


def say(what):
    print(f"{stamp()} client: {what}", flush=True)


def body_for(i):
    return f"cluster-kill-test message {i:06d} " + "x" * 64


def ports(count):
    sockets = []
    try:
        for _ in range(int(count)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        for s in sockets:
            print(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return 0


def run(send_url, receive_url, queue, count, rate, work_dir, limit_s):
    # Imported here so that `ports` and `report` need no Proton.
    from proton import Message, ulong
    from proton import Handler
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    count = int(count)
    rate = float(rate)
    limit_s = float(limit_s)

    def condition_text(endpoint_condition):
        if endpoint_condition is None:
            return "connection lost"
        text = endpoint_condition.name
        if endpoint_condition.description:
            text += f" ({endpoint_condition.description})"
        return text

    class Endpoint(MessagingHandler):
        """One connection that is opened again, to the same URL, RECONNECT_S
        after it drops and every RECONNECT_S while the node is down."""

        role = "?"

        def __init__(self, url, **kwargs):
            super().__init__(**kwargs)
            self.url = url
            self.container = None
            self.connection = None
            self.link = None
            self.generation = 0      # connections attempted
            self.opened = 0          # connections the broker opened
            self.is_open = False
            self.failed_attempts = 0
            self.stopping = False

        def open(self, container):
            self.container = container
            self.generation += 1
            self.is_open = False
            self.connection = container.connect(
                self.url, reconnect=False, allowed_mechs="ANONYMOUS", handler=self)
            # Proton wraps the same connection in a new Python object for
            # each event, so connections are told apart by this attribute
            # (kept in the connection's own record), not by identity.
            self.connection.kill_test_generation = self.generation
            self.link = self.make_link(container, self.connection)

        def current(self, event):
            """Whether the event concerns this endpoint's live connection."""
            return self.connection is not None and event.connection is not None \
                and getattr(event.connection, "kill_test_generation", None) == self.generation

        def on_connection_opened(self, event):
            if self.current(event):
                self.is_open = True
                self.opened += 1
                tried = (f" after {self.failed_attempts} failed attempts"
                         if self.failed_attempts else "")
                self.failed_attempts = 0
                say(f"{self.role}: connected to {self.url} (connection {self.opened}{tried})")

        def on_transport_error(self, event):
            if self.current(event):
                self.lost(condition_text(event.transport.condition))

        def on_connection_error(self, event):
            if self.current(event):
                self.lost("connection closed by the broker: "
                          f"{condition_text(event.connection.remote_condition)}")

        def on_link_error(self, event):
            if self.current(event):
                self.lost(f"link closed by the broker: {condition_text(event.link.remote_condition)}")

        def on_disconnected(self, event):
            if self.current(event):
                self.lost("disconnected")

        def on_connection_closed(self, event):
            if self.current(event):
                self.lost("connection closed")

        def lost(self, why):
            if self.stopping or self.connection is None:
                return
            if self.is_open:
                say(f"{self.role}: {why}; reconnecting to {self.url}"
                    f" (every {RECONNECT_S}s while it is down)")
            else:
                self.failed_attempts += 1
            self.forget_connection()
            old = self.connection
            self.connection = None
            self.link = None
            self.is_open = False
            try:
                old.close()
            except Exception:
                pass
            self.container.schedule(RECONNECT_S, self)

        def on_timer_task(self, event):
            if not self.stopping and self.connection is None:
                self.open(event.container)

        def stop(self):
            self.stopping = True
            if self.connection is not None:
                self.connection.close()

    class Producer(Endpoint):
        role = "producer"

        def __init__(self, url, accepted_file):
            super().__init__(url, auto_settle=True)
            self.accepted_file = accepted_file
            self.unsent = list(range(count - 1, -1, -1))  # a stack: smallest id last
            self.unsent_set = set(self.unsent)
            self.in_flight = {}        # delivery tag -> id, on the current connection
            self.accepted = set()
            self.transfers = 0         # transfers sent, resends included
            self.resent = 0
            self.outcomes = {"accepted": 0, "rejected": 0, "released": 0, "modified": 0}
            self.retry_pending = []
            self.done_at = None
            self.next_tag = 0
            self.never_sent_from = 0   # ids from here on were never sent
            self.new_sent = 0
            self.rate_started = time.time()

        def budget(self):
            """How many more messages may be sent for the first time now."""
            if rate <= 0:
                return count
            return int(rate * (time.time() - self.rate_started)) - self.new_sent

        def make_link(self, container, connection):
            return container.create_sender(connection, queue)

        def forget_connection(self):
            # Everything in flight on the dead connection is in doubt: send
            # it again (the broker may de-duplicate by message-id; if not,
            # the consumer sees a duplicate, which at-least-once allows).
            if self.in_flight:
                say(f"producer: {len(self.in_flight)} messages in flight and unanswered;"
                    " they will be sent again")
            for i in self.in_flight.values():
                self.requeue(i)
            self.in_flight.clear()

        def requeue(self, i):
            if i in self.accepted or i in self.unsent_set:
                return
            self.unsent_set.add(i)
            self.unsent.append(i)
            self.unsent.sort(reverse=True)
            self.resent += 1

        def on_sendable(self, event):
            if self.current(event):
                self.pump()

        def pump(self):
            link = self.link
            if link is None or self.stopping:
                return
            budget = self.budget()
            while link.credit > 0 and self.unsent:
                i = self.unsent[-1]
                first = i >= self.never_sent_from
                if first and budget <= 0:
                    break
                self.unsent.pop()
                self.unsent_set.discard(i)
                if i in self.accepted:
                    continue
                if first:
                    self.never_sent_from = i + 1
                    self.new_sent += 1
                    budget -= 1
                tag = str(self.next_tag)
                self.next_tag += 1
                link.send(Message(id=ulong(i), durable=True, body=body_for(i)), tag=tag)
                self.in_flight[tag] = i
                self.transfers += 1

        def settled_id(self, event):
            if not self.current(event):
                return None
            tag = event.delivery.tag
            tag = tag.decode() if isinstance(tag, bytes) else str(tag)
            return self.in_flight.pop(tag, None)

        def on_accepted(self, event):
            i = self.settled_id(event)
            if i is None:
                return
            self.outcomes["accepted"] += 1
            if i not in self.accepted:
                self.accepted.add(i)
                self.accepted_file.write(f"{i} {time.time():.6f}\n")
                if len(self.accepted) == count and self.done_at is None:
                    self.done_at = time.time()
                    say(f"producer: all {count} messages accepted")

        def retry_later(self, event, outcome):
            i = self.settled_id(event)
            if i is None:
                return
            self.outcomes[outcome] += 1
            if self.outcomes[outcome] <= 5 or self.outcomes[outcome] % 1000 == 0:
                condition = event.delivery.remote.condition
                say(f"producer: message {i} {outcome}"
                    f"{': ' + condition_text(condition) if condition else ''}"
                    f" ({self.outcomes[outcome]} so far); sending it again in {RETRY_S}s")
            self.retry_pending.append(i)
            if len(self.retry_pending) == 1:
                self.container.schedule(RETRY_S, Retry(self))

        def on_rejected(self, event):
            self.retry_later(event, "rejected")

        def on_released(self, event):
            self.retry_later(event, "released")

        def on_modified(self, event):
            self.retry_later(event, "modified")

    class Retry(Handler):
        """A timer for the producer's retries, apart from its reconnects."""

        def __init__(self, producer):
            super().__init__()
            self.producer = producer

        def on_timer_task(self, event):
            pending, self.producer.retry_pending = self.producer.retry_pending, []
            for i in pending:
                self.producer.requeue(i)
            self.producer.pump()

    class Pacer(Handler):
        """Sends at the producer's rate: a look at its budget every PACE_S
        until every message has been sent once."""

        def __init__(self, producer):
            super().__init__()
            self.producer = producer

        def on_timer_task(self, event):
            self.producer.pump()
            if self.producer.never_sent_from < count and not self.producer.stopping:
                event.container.schedule(PACE_S, self)

    class Consumer(Endpoint):
        role = "consumer"

        def __init__(self, url, received_file):
            super().__init__(url, prefetch=0, auto_accept=False)
            self.received_file = received_file
            self.received = 0
            self.received_ids = set()
            self.duplicates = 0
            self.corrupt = 0
            self.last_at = time.time()

        def make_link(self, container, connection):
            return container.create_receiver(connection, queue)

        def forget_connection(self):
            pass

        def on_link_opened(self, event):
            if self.current(event):
                event.receiver.flow(RECEIVER_CREDIT)

        def on_message(self, event):
            if not self.current(event):
                return
            message = event.message
            try:
                i = int(message.id)
                intact = message.body == body_for(i)
            except (TypeError, ValueError):
                i, intact = repr(message.id).replace(" ", "_"), False
            now = time.time()
            self.last_at = now
            self.received += 1
            if i in self.received_ids:
                self.duplicates += 1
            self.received_ids.add(i)
            if not intact:
                self.corrupt += 1
            self.received_file.write(f"{i} {now:.6f} {'ok' if intact else 'corrupt'}\n")
            self.accept(event.delivery)
            receiver = event.receiver
            if receiver.credit < RECEIVER_CREDIT // 2:
                receiver.flow(RECEIVER_CREDIT - receiver.credit)

    class Coordinator(Handler):
        def __init__(self, producer, consumer):
            super().__init__()
            self.producer = producer
            self.consumer = consumer
            self.started = time.time()
            self.complete_at = None
            self.outcome = None

        def on_reactor_init(self, event):
            say(f"producer -> {send_url}, consumer <- {receive_url}, queue {queue!r},"
                f" {count} messages at {f'{rate:.0f}/s' if rate > 0 else 'full speed'},"
                f" limit {limit_s:.0f}s")
            self.producer.rate_started = time.time()
            self.producer.open(event.container)
            self.consumer.open(event.container)
            if rate > 0:
                event.container.schedule(PACE_S, Pacer(self.producer))
            event.container.schedule(TICK_S, self)

        def on_timer_task(self, event):
            now = time.time()
            p, c = self.producer, self.consumer
            if p.done_at is not None and self.complete_at is None \
                    and p.accepted <= c.received_ids:
                self.complete_at = now
                say(f"consumer: every accepted message received ({c.received} deliveries);"
                    f" waiting {GRACE_S}s for late redeliveries")
            if self.complete_at is not None and now - self.complete_at >= GRACE_S:
                return self.finish(event, "complete")
            if p.done_at is not None and self.complete_at is None \
                    and now - max(c.last_at, p.done_at) >= IDLE_S:
                return self.finish(event, f"incomplete: no message for {IDLE_S:.0f}s"
                                          " after the last acceptance")
            if now - self.started >= limit_s:
                return self.finish(event, f"incomplete: time limit of {limit_s:.0f}s reached")
            event.container.schedule(TICK_S, self)

        def finish(self, event, outcome):
            self.outcome = outcome
            say(f"run {outcome}")
            self.producer.stop()
            self.consumer.stop()
            event.container.stop()

    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "accepted.log"), "w", buffering=1) as accepted_file, \
            open(os.path.join(work_dir, "received.log"), "w", buffering=1) as received_file:
        producer = Producer(send_url, accepted_file)
        consumer = Consumer(receive_url, received_file)
        coordinator = Coordinator(producer, consumer)
        container = Container(coordinator)
        container.container_id = "cluster-kill-test"
        error = None
        try:
            container.run()
        except Exception as exc:  # reported, never hidden
            error = f"{type(exc).__name__}: {exc}"
            say(f"the client raised {error}")
    status = {
        "count": count,
        "outcome": coordinator.outcome or f"incomplete: {error or 'stopped'}",
        "started": coordinator.started,
        "producer_done_at": producer.done_at,
        "transfers": producer.transfers,
        "resent": producer.resent,
        "outcomes": producer.outcomes,
        "accepted": len(producer.accepted),
        "producer_connections": producer.opened,
        "consumer_connections": consumer.opened,
        "received": consumer.received,
        "seconds": round(time.time() - coordinator.started, 2),
    }
    with open(os.path.join(work_dir, "status.json"), "w") as status_file:
        json.dump(status, status_file)
    return 0 if status["outcome"] == "complete" else 1


def report(work_dir):
    def path(name):
        return os.path.join(work_dir, name)

    try:
        with open(path("status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        status = {"outcome": "incomplete: the client wrote no status", "count": None}
    accepted = {}
    with open(path("accepted.log")) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2:
                accepted.setdefault(int(fields[0]), float(fields[1]))
    received = []
    corrupt = []
    unknown = []
    count = status.get("count")
    with open(path("received.log")) as f:
        for line in f:
            fields = line.split()
            if len(fields) != 3:
                continue
            try:
                i = int(fields[0])
            except ValueError:
                unknown.append(fields[0])
                continue
            received.append((i, float(fields[1])))
            if fields[2] != "ok":
                corrupt.append(i)
            if count is not None and not 0 <= i < count:
                unknown.append(i)
    kills, restarts = [], {}
    if os.path.exists(path("kills.log")):
        with open(path("kills.log")) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "restart":
                    restarts[int(fields[1])] = float(fields[3])
                elif len(fields) >= 4:
                    kills.append((int(fields[0]), int(fields[1]), float(fields[2]),
                                  " ".join(fields[3:])))

    received_ids = {}
    for i, _ in received:
        received_ids[i] = received_ids.get(i, 0) + 1
    duplicates = sum(n - 1 for n in received_ids.values() if n > 1)
    duplicated_ids = sorted(i for i, n in received_ids.items() if n > 1)
    missing = sorted(set(accepted) - set(received_ids))
    in_doubt = sorted(set(received_ids) - set(accepted) - set(unknown))
    accept_times = sorted(accepted.values())
    receive_times = sorted(t for _, t in received)
    t0 = status.get("started") or (accept_times[0] if accept_times else 0.0)

    def first_after(times, t):
        for x in times:
            if x > t:
                return x
        return None

    def longest_pause(times, start, end):
        """The longest interval without an event in [start, end], with the
        events inside it as the only boundaries besides start and end."""
        inside = [x for x in times if start <= x <= end]
        points = [start] + inside + ([end] if inside and inside[-1] < end else [])
        best = (0.0, start, start)
        for a, b in zip(points, points[1:]):
            if b - a > best[0]:
                best = (b - a, a, b)
        return best

    print("cluster-kill-test summary")
    print(f"  client:      {status.get('outcome')} after {status.get('seconds', '?')}s")
    print(f"  sent:        {status.get('count') or '?'} messages"
          f" ({status.get('transfers', '?')} transfers, {status.get('resent', '?')} sent again"
          " after a lost connection or a refusal)")
    print(f"  outcomes:    {status.get('outcomes') or '?'}")
    print(f"  accepted:    {len(accepted)} distinct ids")
    print(f"  received:    {len(received)} deliveries, {len(received_ids)} distinct ids")
    print(f"  duplicates:  {duplicates} extra deliveries of {len(duplicated_ids)} ids"
          " (at-least-once: expected after a failover, not a failure)")
    print(f"  in doubt:    {len(in_doubt)} received but never seen accepted (allowed)")
    print(f"  missing:     {len(missing)} accepted but never received")
    print(f"  corrupt:     {len(corrupt)}; unknown ids: {len(unknown)}")
    print(f"  connections: producer {status.get('producer_connections', '?')},"
          f" consumer {status.get('consumer_connections', '?')}")
    if accept_times:
        span = accept_times[-1] - accept_times[0]
        rate = len(accept_times) / span if span > 0 else float("inf")
        print(f"  throughput:  {rate:.0f} acceptances/s over {span:.1f}s")
    for k, (index, node, t, role) in enumerate(kills):
        nxt = first_after(accept_times, t)
        nxt_rx = first_after(receive_times, t)
        restarted = restarts.get(index)
        window_end = (restarted or t) + 15.0
        if k + 1 < len(kills):
            window_end = min(window_end, kills[k + 1][2])
        if accept_times:
            window_end = min(window_end, accept_times[-1])
        pause, pause_from, pause_to = longest_pause(accept_times, t - 1.0, window_end)
        rx_pause, rx_from, rx_to = longest_pause(receive_times, t - 1.0, window_end)
        print(f"  kill {index}:      node {node} ({role}) at +{t - t0:.2f}s"
              f" ({time.strftime('%H:%M:%S', time.localtime(t))}.{int(t * 1000) % 1000:03d})"
              + (f", restarted {restarted - t:.2f}s later" if restarted else ", not restarted"))
        print(f"               producer: failover gap {pause:.3f}s"
              f" (+{pause_from - t0:.2f}s to +{pause_to - t0:.2f}s); first acceptance after"
              " the kill " + (f"+{nxt - t:.3f}s" if nxt else "never"))
        print(f"               consumer: longest pause {rx_pause:.3f}s"
              f" (+{rx_from - t0:.2f}s to +{rx_to - t0:.2f}s); first delivery after"
              " the kill " + (f"+{nxt_rx - t:.3f}s" if nxt_rx else "never"))
    if kills:
        print("  (a gap is the longest pause between two acceptances, or deliveries, from 1s"
              " before the kill to 15s after the restart or to the next kill)")
    if missing:
        with open(path("missing.ids"), "w") as f:
            f.write("".join(f"{i}\n" for i in missing))
        print(f"  MISSING ids ({len(missing)}, all in {path('missing.ids')}):"
              f" {' '.join(map(str, missing[:200]))}" + (" ..." if len(missing) > 200 else ""))
    if duplicated_ids:
        print(f"  duplicated ids (first 20): {duplicated_ids[:20]}")
    if corrupt:
        print(f"  CORRUPT ids (first 20): {corrupt[:20]}")
    if unknown:
        print(f"  UNKNOWN ids (first 20): {unknown[:20]}")
    complete = status.get("outcome") == "complete"
    ok = complete and not missing and not corrupt and not unknown \
        and len(accepted) == status.get("count")
    if not complete:
        print(f"  the client did not complete: {status.get('outcome')}")
    print("cluster-kill-test: PASS" if ok else "cluster-kill-test: FAIL", flush=True)
    return 0 if ok else 1


def main():
    commands = {"ports": (ports, 1), "run": (run, 7), "report": (report, 1)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands \
            or len(sys.argv) - 2 != commands[sys.argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]][0](*sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
