//! The `amqps` listener: TLS (rustls) with the broker's certificate from
//! `[tls]`, checked on the wire with Sluice's own client over a rustls
//! client, against certificates made for each test (a CA and the broker's
//! certificate for `localhost`).
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::pki::Pki;
use common::{Broker, WAIT};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use sluice::amqp::engine::{ClientSasl, ConnectionConfig, Event};
use sluice::amqp::frame::ProtocolId;
use sluice::amqp::types::{DeliveryState, Message, Section, Source};
use sluice::client::{Client, ClientError};
use sluice::config::{Config, TlsVersion};
use sluice::io::{Io, TokioIo};
use sluice::server::{self, ServerError, TlsError, shutdown_channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// AMQP's TLS protocol header (AMQP 1.0 §5.2.1).
const TLS_HEADER: &[u8; 8] = b"AMQP\x02\x01\x00\x00";

/// A TLS client socket to `addr` presenting a client certificate (its
/// chain and key), trusting `roots`.
async fn tls_connect_as(
    addr: SocketAddr,
    roots: RootCertStore,
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> std::io::Result<TlsStream<<TokioIo as Io>::Stream>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.0, identity.1)
        .unwrap();
    let tcp = TokioIo.connect(&addr.to_string()).await?;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap()
}

/// A TLS client socket to `addr`, trusting `roots`, offering `versions`.
async fn tls_connect(
    addr: SocketAddr,
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
) -> std::io::Result<TlsStream<<TokioIo as Io>::Stream>> {
    let tcp = TokioIo.connect(&addr.to_string()).await?;
    tls_over(tcp, roots, versions).await
}

/// The client side of a TLS handshake on `tcp`.
async fn tls_over(
    tcp: <TokioIo as Io>::Stream,
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
) -> std::io::Result<TlsStream<<TokioIo as Io>::Stream>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap()
}

/// The TLS socket the tests speak AMQP over.
type Tls = TlsStream<<TokioIo as Io>::Stream>;

/// Sluice's client over `stream`, as container `container`, logged in with
/// `sasl`: the broker must answer within [`WAIT`].
async fn amqp_over(
    stream: Tls,
    container: &str,
    sasl: ClientSasl,
) -> Result<Client<TokioIo, Tls>, ClientError> {
    let handshake = Client::handshake(TokioIo, stream, ConnectionConfig::new(container), sasl);
    timeout(WAIT, handshake)
        .await
        .expect("the broker answers in time")
}

/// Sends one message to `queue` and receives it back, on `client`.
async fn round_trip<S>(client: &mut Client<TokioIo, S>, queue: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let session = client.begin().await.unwrap();
    let sender = client
        .attach_sender(session, "sender", Some(queue))
        .await
        .unwrap();
    let body = Bytes::from_static(b"over TLS");
    let message = Message {
        sections: vec![Section::Data(body.clone())],
    };
    let delivery = client
        .send(sender, Bytes::from_static(b"t1"), message.encode(), false)
        .await
        .unwrap();
    let outcome = client.wait_for(
        |e| matches!(e, Event::Disposition { delivery: d, state: Some(_), .. } if *d == delivery),
    );
    let outcome = timeout(WAIT, outcome).await.unwrap().unwrap();
    assert!(
        matches!(
            outcome,
            Event::Disposition {
                state: Some(DeliveryState::Accepted(_)),
                ..
            }
        ),
        "{outcome:?}"
    );
    let source = Source {
        address: Some(queue.to_owned()),
        ..Source::default()
    };
    let receiver = client
        .attach_receiver(session, "receiver", source, 10)
        .await
        .unwrap();
    let delivered = client
        .wait_for(|e| matches!(e, Event::Delivery { delivery, .. } if delivery.link == receiver));
    match timeout(WAIT, delivered).await.unwrap().unwrap() {
        Event::Delivery { message, .. } => {
            let received = Message::decode(message).unwrap();
            assert_eq!(received.sections, vec![Section::Data(body)]);
        }
        other => unreachable!("wait_for returned {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_sends_and_receives_over_tls() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls12)).await;
    let tls_addr = broker.tls_addr.expect("a TLS listener");
    assert_ne!(tls_addr, broker.addr, "a port of its own");
    let stream = tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut client = amqp_over(stream, "tls-test", ClientSasl::Anonymous)
        .await
        .unwrap();
    round_trip(&mut client, "tls-queue").await;
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn the_plain_listener_still_serves_next_to_the_tls_one() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls12)).await;
    let config = ConnectionConfig::new("plain-test");
    let addr = broker.addr.to_string();
    let connect = Client::connect(TokioIo, &addr, config, ClientSasl::Anonymous);
    let mut client = timeout(WAIT, connect).await.unwrap().unwrap();
    round_trip(&mut client, "plain-queue").await;
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_broker_refuses_it_and_the_broker_serves_on() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls12)).await;
    let tls_addr = broker.tls_addr.unwrap();
    let stranger = Pki::new();
    let refused = tls_connect(tls_addr, stranger.roots(), rustls::ALL_VERSIONS).await;
    let error = refused.map(|_| ()).unwrap_err();
    // Both test CAs bear one name, so the client finds the stranger's and
    // refuses the signature.
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "the client names why: {error}"
    );
    // The refused handshake ended one connection, not the listener.
    let stream = tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
        .await
        .unwrap();
    let client = amqp_over(stream, "tls-after-refusal", ClientSasl::Anonymous)
        .await
        .unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

/// AMQP's own way into TLS (§5.2.1), on either port: the client sends the
/// TLS protocol header, the broker answers with it, and TLS follows on the
/// same socket, then AMQP inside it.
#[tokio::test]
async fn the_tls_header_is_answered_and_tls_follows_on_either_port() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls12)).await;
    for addr in [broker.addr, broker.tls_addr.unwrap()] {
        let mut tcp = TokioIo.connect(&addr.to_string()).await.unwrap();
        tcp.write_all(TLS_HEADER).await.unwrap();
        let mut answer = [0; 8];
        timeout(WAIT, tcp.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&answer, TLS_HEADER, "{addr}");
        let stream = tls_over(tcp, pki.roots(), rustls::ALL_VERSIONS)
            .await
            .unwrap();
        let mut client = amqp_over(stream, "tls-header-test", ClientSasl::Anonymous)
            .await
            .unwrap();
        round_trip(&mut client, &format!("tls-header-{}", addr.port())).await;
        client.close().await.unwrap();
    }
    broker.stop().await;
}

/// On the TLS port, a client that speaks neither TLS nor AMQP's TLS header
/// is dropped; the port serves on.
#[tokio::test]
async fn plain_amqp_on_the_tls_port_is_dropped() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls12)).await;
    let tls_addr = broker.tls_addr.unwrap();
    let mut tcp = TokioIo.connect(&tls_addr.to_string()).await.unwrap();
    tcp.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut rest = Vec::new();
    let read = timeout(WAIT, tcp.read_to_end(&mut rest)).await.unwrap();
    assert!(
        read.is_err() || rest.is_empty(),
        "closed without an answer: {read:?} {rest:?}"
    );
    assert!(
        tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
            .await
            .is_ok()
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_minimum_of_tls_1_3_refuses_a_tls_1_2_client() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.config(TlsVersion::Tls13)).await;
    let tls_addr = broker.tls_addr.unwrap();
    let tls12_only = tls_connect(tls_addr, pki.roots(), &[&rustls::version::TLS12]).await;
    assert!(tls12_only.is_err(), "a TLS 1.2 client is refused");
    let tls13 = tls_connect(tls_addr, pki.roots(), &[&rustls::version::TLS13]).await;
    assert!(tls13.is_ok(), "{:?}", tls13.map(|_| ()));
    broker.stop().await;
}

/// Runs the server with `config` (on a data directory of its own) and
/// returns why it stopped, which it must do before it listens.
async fn start_up_error(mut config: Config) -> ServerError {
    let data_dir = tempfile::tempdir().unwrap();
    config.data_dir = data_dir.path().to_owned();
    let (_trigger, shutdown) = shutdown_channel();
    let run = server::run(config, TokioIo, shutdown, |_| {
        panic!("the broker must not listen with a certificate it cannot use")
    });
    timeout(WAIT, run).await.unwrap().unwrap_err()
}

#[tokio::test]
async fn a_missing_certificate_file_stops_the_broker_before_it_listens_naming_the_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    let mut config = pki.config(TlsVersion::Tls12);
    config.tls.cert_file = Some(missing.clone());
    match &start_up_error(config).await {
        ServerError::Tls(TlsError::Read { path, .. }) => assert_eq!(path, &missing),
        other => panic!("expected the unreadable certificate, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_that_does_not_belong_to_the_certificate_stops_the_broker() {
    let pki = Pki::new();
    let other = Pki::new();
    let mut config = pki.config(TlsVersion::Tls12);
    config.tls.key_file = Some(other.key_file.clone());
    let error = start_up_error(config).await;
    assert!(
        matches!(error, ServerError::Tls(TlsError::Unusable(_))),
        "{error:?}"
    );
}

#[test]
fn a_tls_listener_without_a_certificate_is_a_configuration_error() {
    let error = Config::from_toml("[tls]\nlisten = \"127.0.0.1:5671\"\n").unwrap_err();
    assert!(error.to_string().contains("tls.cert_file"), "{error}");
    let error = Config::from_toml("[tls]\nlisten = \"127.0.0.1:5671\"\ncert_file = \"b.pem\"\n")
        .unwrap_err();
    assert!(error.to_string().contains("tls.key_file"), "{error}");
    // The certificate alone is fine: `--listen-tls` opens the listener.
    Config::from_toml("[tls]\ncert_file = \"b.pem\"\nkey_file = \"b.key\"\n").unwrap();
    let error = Config::from_toml("[tls]\nmin_version = \"1.1\"\n").unwrap_err();
    assert!(error.to_string().contains("1.1"), "{error}");
}

#[tokio::test]
async fn a_client_certificate_logs_in_with_sasl_external() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.client_certificate_config()).await;
    let tls_addr = broker.tls_addr.unwrap();
    let stream = tls_connect_as(tls_addr, pki.roots(), pki.client_identity("carol"))
        .await
        .unwrap();
    let mut client = amqp_over(stream, "certificate-test", ClientSasl::External)
        .await
        .expect("carol's certificate logs her in");
    round_trip(&mut client, "certificate-queue").await;
    client.close().await.unwrap();
    broker.stop().await;
}

/// A certificate the CA issued, for a name with no account, gets the SASL
/// `auth` outcome; one the CA did not issue fails the TLS handshake; and a
/// client without any certificate may still try SASL (here it has nothing
/// else, and is refused).
#[tokio::test]
async fn certificates_for_no_account_or_from_another_ca_are_refused() {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.client_certificate_config()).await;
    let tls_addr = broker.tls_addr.unwrap();

    let stream = tls_connect_as(tls_addr, pki.roots(), pki.client_identity("mallory"))
        .await
        .unwrap();
    let refused = amqp_over(stream, "stranger", ClientSasl::External).await;
    assert!(refused.is_err(), "a certificate for no account logs in");

    let other_ca = Pki::new();
    let forged = tls_connect_as(tls_addr, pki.roots(), other_ca.client_identity("carol")).await;
    let failed = match forged {
        // TLS 1.3: the client finishes first; the refusal comes with the
        // first read.
        Ok(mut stream) => {
            let _ = stream.write_all(&ProtocolId::Sasl.header()).await;
            let mut byte = [0; 1];
            !matches!(
                timeout(WAIT, stream.read(&mut byte)).await.unwrap(),
                Ok(1..)
            )
        }
        Err(_) => true,
    };
    assert!(failed, "a certificate from another CA is accepted");

    let no_certificate = tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
        .await
        .unwrap();
    let refused = amqp_over(no_certificate, "anonymous", ClientSasl::External).await;
    assert!(refused.is_err(), "EXTERNAL without a certificate logs in");
    broker.stop().await;
}

/// A renewed certificate takes effect without a restart: new connections
/// get it once the files are read again, and a connection made before
/// goes on working.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_dropping_connections() {
    let pki = Pki::new();
    let mut config = pki.config(TlsVersion::Tls12);
    config.tls.reload_interval_ms = 50;
    let broker = Broker::start_configured(config).await;
    let tls_addr = broker.tls_addr.unwrap();
    let before = tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
        .await
        .unwrap();
    let served_before = before.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut client = amqp_over(before, "before", ClientSasl::Anonymous)
        .await
        .unwrap();

    let renewed = pki.renew_broker_certificate();
    assert_ne!(renewed, served_before);
    let served_now = async {
        loop {
            let stream = tls_connect(tls_addr, pki.roots(), rustls::ALL_VERSIONS)
                .await
                .unwrap();
            if stream.get_ref().1.peer_certificates().unwrap()[0] == renewed {
                return;
            }
            // Not read yet: each new handshake asks again.
            tokio::task::yield_now().await;
        }
    };
    timeout(WAIT, served_now)
        .await
        .expect("the renewed certificate is served");
    round_trip(&mut client, "reload-queue").await;
    client.close().await.unwrap();
    broker.stop().await;
}
