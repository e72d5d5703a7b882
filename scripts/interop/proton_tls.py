#!/usr/bin/env python3
"""Qpid Proton (Python, through OpenSSL) against Sluice's TLS listener:
connects to amqps://HOST:PORT trusting only CA_FILE and checking the
broker's name, logs in with SASL PLAIN inside TLS, sends N messages to a
fresh queue and receives them back, each once.

With `--expect-refused` it instead checks that a client which does not
trust the broker's certificate is refused before AMQP begins.

With `--client-cert CERT --client-key KEY` it presents that certificate
and logs in with SASL EXTERNAL instead of PLAIN (USER and PASSWORD are then
not sent).

Proton checks the broker's name against the certificate's DNS names
only, not its IP addresses: the URL names the broker `localhost`.

usage: proton_tls.py amqps://HOST:PORT CA_FILE USER PASSWORD [N] [--expect-refused]
                     [--client-cert CERT --client-key KEY]
"""
import argparse

from proton import Message, ProtonException, SSLDomain
from proton.utils import BlockingConnection

from interop_common import TIMEOUT, run, send_for_outcome, unique


def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("ca_file")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("count", nargs="?", type=int, default=20)
    parser.add_argument("--expect-refused", action="store_true")
    parser.add_argument("--client-cert")
    parser.add_argument("--client-key")
    return parser.parse_args()


def client_domain(args):
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(args.ca_file)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    if args.client_cert:
        domain.set_credentials(args.client_cert, args.client_key, None)
    return domain


def connect(args):
    if args.client_cert:
        return BlockingConnection(args.url, timeout=TIMEOUT, ssl_domain=client_domain(args),
                                  allowed_mechs="EXTERNAL")
    return BlockingConnection(args.url, timeout=TIMEOUT, ssl_domain=client_domain(args),
                              user=args.user, password=args.password, allowed_mechs="PLAIN",
                              allow_insecure_mechs=False)


def scenario(checks):
    args = arguments()
    if args.expect_refused:
        try:
            connect(args).close()
            checks.check(False, "a client that does not trust the broker is refused")
        except ProtonException as error:
            checks.check(True, f"a client that does not trust the broker is refused: {error}")
        return
    connection = connect(args)
    ssl = connection.conn.transport.ssl()
    checks.check(ssl.protocol_name() is not None,
                 f"the connection runs over TLS ({ssl.protocol_name()}, {ssl.cipher_name()})")
    sasl = connection.conn.transport.sasl()
    if args.client_cert:
        checks.check(sasl.outcome == sasl.OK and sasl.mech == "EXTERNAL",
                     f"SASL {sasl.mech} with a client certificate logged in")
    else:
        checks.check(sasl.outcome == sasl.OK and connection.conn.user == args.user,
                     f"SASL PLAIN inside TLS logged in as {connection.conn.user!r}")
    queue = unique("tls-queue")
    sender = connection.create_sender(queue)
    outcomes = [send_for_outcome(connection, sender, Message(body=f"tls {i}"))[0]
                for i in range(args.count)]
    checks.check(outcomes == ["accepted"] * args.count,
                 f"{args.count} sends accepted: {sorted(set(outcomes))}")
    receiver = connection.create_receiver(queue, credit=args.count)
    bodies = []
    for _ in range(args.count):
        message = receiver.receive(timeout=TIMEOUT)
        bodies.append(message.body)
        receiver.accept()
    checks.check(bodies == [f"tls {i}" for i in range(args.count)],
                 f"received {len(bodies)} of {args.count} messages, in order, each once")
    connection.close()


if __name__ == "__main__":
    run("proton_tls", scenario)
