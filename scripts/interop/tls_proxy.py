#!/usr/bin/env python3
"""A TLS terminator in front of a plain-TCP broker, for clients that speak
only TLS: uAMQP's Python binding connects through OpenSSL and has no plain
socket transport, while Sluice listens on plain TCP (production deployments
put TLS in front of it the same way).

Writes a fresh self-signed certificate for 127.0.0.1 and localhost (made with
the `openssl` command) into DIR as cert.pem and key.pem, listens on a free
loopback port, prints `listening 127.0.0.1:PORT`, and forwards each TLS
connection's bytes to the broker and back. It stops when its standard input
closes, so it never outlives the script that started it.

usage: tls_proxy.py amqp://127.0.0.1:PORT DIR
"""
import asyncio
import os
import ssl
import subprocess
import sys
from urllib.parse import urlparse

CHUNK = 65536


def make_certificate(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return cert, key


async def pipe(reader, writer):
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    backend = urlparse(sys.argv[1])
    cert, key = make_certificate(sys.argv[2])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def forward(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection(
                backend.hostname, backend.port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(pipe(client_reader, broker_writer),
                                 pipe(broker_reader, client_writer))
        except asyncio.CancelledError:
            pass  # stopping with the connection still open: it just ends

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    # Stop once whoever started us closes our standard input (or dies).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
