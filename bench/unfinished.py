#!/usr/bin/env python3
"""Unfinished multi-transfer messages against a broker (issue 16, item 4).

Opens one connection (AMQP header without SASL, which a broker without
accounts admits) and LINKS sender links to QUEUE, each on its own session,
then streams BYTES of one message on each, in transfers of FRAME bytes with
`more` set, and never sends the last transfer. It reads the broker's frames
all along and reports each link the broker detached, with its error. After
streaming it holds the connection open for HOLD seconds, so that the broker's
memory can be measured, then prints a JSON summary and exits.

    bench/unfinished.py --port 5672 --links 16 --bytes 60000000 --hold 5

Plain Python: the AMQP encoding it needs (a few performatives) is written
out below rather than taken from a client library, since none lets a
message stay unfinished.
"""

import argparse
import json
import socket
import struct
import threading
import time

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
SOURCE, TARGET = 0x28, 0x29
ERROR = 0x1D


def null():
    return b"\x40"


def uint(n):
    return b"\x70" + struct.pack(">I", n)


def boolean(b):
    return b"\x41" if b else b"\x42"


def string(s):
    data = s.encode()
    return b"\xb1" + struct.pack(">I", len(data)) + data


def binary(data):
    return b"\xb0" + struct.pack(">I", len(data)) + data


def described(code, fields):
    body = b"".join(fields)
    return b"\x00\x53" + bytes([code]) + b"\xd0" + struct.pack(">II", len(body) + 4, len(fields)) + body


def frame(channel, performative, payload=b""):
    body = performative + payload
    return struct.pack(">IBBH", len(body) + 8, 2, 0, channel) + body


def decode(data, at):
    """Decodes one AMQP value at `at`; returns (value, next offset)."""
    code = data[at]
    at += 1
    if code == 0x00:
        descriptor, at = decode(data, at)
        value, at = decode(data, at)
        return ("described", descriptor, value), at
    fixed = {0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x45: 0, 0x50: 1, 0x51: 1, 0x52: 1,
             0x53: 1, 0x54: 1, 0x56: 1, 0x60: 2, 0x61: 2, 0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4,
             0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8, 0x94: 16, 0x98: 16}
    if code in fixed:
        size = fixed[code]
        raw = data[at:at + size]
        value = {0x41: True, 0x42: False, 0x40: None}.get(code, int.from_bytes(raw, "big") if raw else 0)
        return value, at + size
    if code in (0xa0, 0xa1, 0xa3):
        size = data[at]
        raw = data[at + 1:at + 1 + size]
        return (raw.decode(errors="replace") if code != 0xa0 else raw), at + 1 + size
    if code in (0xb0, 0xb1, 0xb3):
        size = struct.unpack(">I", data[at:at + 4])[0]
        raw = data[at + 4:at + 4 + size]
        return (raw.decode(errors="replace") if code != 0xb0 else raw), at + 4 + size
    if code in (0xc0, 0xc1, 0xd0, 0xd1):
        wide = code in (0xd0, 0xd1)
        size_len = 4 if wide else 1
        size = int.from_bytes(data[at:at + size_len], "big")
        count = int.from_bytes(data[at + size_len:at + 2 * size_len], "big")
        end = at + size_len + size
        at += 2 * size_len
        items = []
        for _ in range(count):
            item, at = decode(data, at)
            items.append(item)
        return items, end
    if code in (0xe0, 0xf0):
        # Arrays (offered capabilities): skipped whole, by their size.
        size_len = 4 if code == 0xf0 else 1
        size = int.from_bytes(data[at:at + size_len], "big")
        return None, at + size_len + size
    raise ValueError(f"type code {code:#x} not handled")


def error_text(error):
    if isinstance(error, tuple) and error[0] == "described" and isinstance(error[2], list):
        fields = error[2] + [None, None]
        return f"{fields[0]}: {fields[1]}"
    return repr(error)


class Reader(threading.Thread):
    """Reads the broker's frames; records detaches and a close."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock = sock
        self.detached = {}
        self.closed = None
        self.lock = threading.Lock()

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def run(self):
        try:
            self.read_exactly(8)
            while True:
                size, doff, _, channel = struct.unpack(">IBBH", self.read_exactly(8))
                body = self.read_exactly(size - 8)[doff * 4 - 8:]
                if not body:
                    continue
                value, _ = decode(body, 0)
                code = value[1]
                fields = value[2] + [None] * 3
                with self.lock:
                    if code == DETACH:
                        self.detached[channel] = error_text(fields[2])
                    elif code == CLOSE:
                        self.closed = error_text(fields[0])
        except (EOFError, OSError):
            with self.lock:
                self.closed = self.closed or "socket closed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", default="unfinished")
    parser.add_argument("--links", type=int, default=16)
    parser.add_argument("--bytes", type=int, default=60_000_000)
    parser.add_argument("--frame", type=int, default=200_000)
    parser.add_argument("--hold", type=float, default=5.0)
    args = parser.parse_args()

    sock = socket.create_connection((args.host, args.port))
    sock.sendall(AMQP_HEADER)
    sock.sendall(frame(0, described(OPEN, [string("unfinished-check"), null(), uint(1 << 20)])))
    reader = Reader(sock)
    reader.start()
    for link in range(args.links):
        sock.sendall(frame(link, described(BEGIN, [null(), uint(0), uint(1 << 20), uint(1 << 20)])))
        attach = described(ATTACH, [
            string(f"unfinished-{link}"), uint(0), boolean(False), null(), null(),
            described(SOURCE, [string(f"unfinished-{link}")]),
            described(TARGET, [string(args.queue)]),
            null(), null(), uint(0),
        ])
        sock.sendall(frame(link, attach))
    # The broker grants credit once each attach is applied.
    time.sleep(1.0)
    chunk = b"\x00" * args.frame
    sent = [0] * args.links
    for link in range(args.links):
        first = True
        while sent[link] < args.bytes:
            with reader.lock:
                if link in reader.detached or reader.closed:
                    break
            if first:
                transfer = described(TRANSFER, [uint(0), uint(0), binary(b"t"), uint(0), boolean(False), boolean(True)])
                first = False
            else:
                transfer = described(TRANSFER, [uint(0), null(), null(), null(), null(), boolean(True)])
            try:
                sock.sendall(frame(link, transfer, chunk))
            except OSError:
                break
            sent[link] += len(chunk)
    time.sleep(args.hold)
    with reader.lock:
        summary = {
            "links": args.links,
            "bytes_sent": sent,
            "detached": {str(k): v for k, v in sorted(reader.detached.items())},
            "closed": reader.closed,
        }
    print(json.dumps(summary, indent=1))
    sock.close()


if __name__ == "__main__":
    main()
