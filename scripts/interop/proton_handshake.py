#!/usr/bin/env python3
"""Opens and closes one AMQP connection to URL with Qpid Proton, SASL ANONYMOUS.

Exits 0 only if the broker answered open and close; prints what the broker
advertised (its container, connection properties and idle time-out) so a
failure shows where the handshake stopped.
usage: proton_handshake.py amqp://127.0.0.1:PORT
"""
import sys

from proton.utils import BlockingConnection


def main() -> int:
    url = sys.argv[1]
    connection = BlockingConnection(url, timeout=10, allowed_mechs="ANONYMOUS")
    remote = connection.conn.remote_container
    print(f"opened: remote container {remote!r}")
    properties = connection.conn.remote_properties or {}
    for key in ("product", "version", "platform"):
        print(f"property {key}: {properties.get(key)!r}")
    # Proton reports the peer's advertised idle time-out in seconds.
    print(f"remote idle time-out: {connection.conn.transport.remote_idle_timeout}")
    connection.close()
    print("closed")
    return 0 if remote else 1


if __name__ == "__main__":
    sys.exit(main())
