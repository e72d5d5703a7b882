//! Authentication end to end: with `[[users]]` configured the broker offers
//! SASL SCRAM-SHA-256, and PLAIN over TLS (or where allowed without), admits
//! the right password, and answers everything else with the SASL `auth`
//! outcome; without users it stays open (ANONYMOUS). Also the limits on
//! handshakes: their deadline, and the connection caps.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Broker, WAIT, test_config, user};
use fe2o3_amqp::connection::{ConnectionHandle, OpenError};
use fe2o3_amqp::sasl_profile::{SaslProfile, SaslScramSha256};
use fe2o3_amqp::types::sasl::SaslCode as ClientSaslCode;
use fe2o3_amqp::{Connection, Session};
use sluice::amqp::codec::Symbol;
use sluice::amqp::engine::{ClientSasl, ConnectionConfig};
use sluice::amqp::frame::{Frame, FrameDecoder, Layer, ProtocolId, put_sasl_frame};
use sluice::amqp::types::{SaslCode, SaslFrame, SaslInit};
use sluice::client::Client;
use sluice::config::Config;
use sluice::io::{Io, TokioIo};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// The configuration of a broker with the accounts `alice` / `wonderland`
/// and `bob` / `builder`, in `data_dir`.
fn config_with_users(data_dir: &TempDir) -> Config {
    Config {
        data_dir: data_dir.path().to_owned(),
        users: vec![user("alice", "wonderland"), user("bob", "builder")],
        ..test_config()
    }
}

/// A broker with the accounts `alice` / `wonderland` and `bob` / `builder`
/// that allows PLAIN without TLS, for testing PLAIN itself; and the data
/// directory it runs in (kept until the test ends).
async fn broker_with_users() -> (Broker, TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = config_with_users(&data_dir);
    config.auth.allow_plain_without_tls = true;
    (Broker::start_with(config).await, data_dir)
}

/// fe2o3 logging in with PLAIN.
async fn open_plain(
    broker: &Broker,
    username: &str,
    password: &str,
) -> Result<ConnectionHandle<()>, OpenError> {
    let profile = SaslProfile::Plain {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    open_with(broker, profile).await
}

/// fe2o3 logging in with SCRAM-SHA-256.
async fn open_scram(
    broker: &Broker,
    username: &str,
    password: &str,
) -> Result<ConnectionHandle<()>, OpenError> {
    open_with(broker, SaslScramSha256::new(username, password).into()).await
}

/// fe2o3 logging in with `profile`; the broker must answer in time.
async fn open_with(
    broker: &Broker,
    profile: SaslProfile,
) -> Result<ConnectionHandle<()>, OpenError> {
    let url = broker.url();
    let opening = Connection::builder()
        .container_id("fe2o3-auth")
        .sasl_profile(profile)
        .open(url.as_str());
    timeout(WAIT, opening)
        .await
        .expect("the broker answers in time")
}

/// What the broker said during a raw SASL exchange.
#[derive(Debug)]
struct SaslReply {
    offered: Vec<String>,
    code: SaslCode,
}

/// Sends the SASL header and one `sasl-init`, whatever the broker offers,
/// and reads its `sasl-mechanisms` and `sasl-outcome`.
async fn raw_sasl(addr: SocketAddr, mechanism: &'static str, response: &[u8]) -> SaslReply {
    let mut out = BytesMut::new();
    out.put_slice(&ProtocolId::Sasl.header());
    put_sasl_frame(
        &mut out,
        &SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static(mechanism),
            initial_response: Some(Bytes::copy_from_slice(response)),
            hostname: None,
        }),
    );
    let mut stream = TokioIo.connect(&addr.to_string()).await.unwrap();
    stream.write_all(&out).await.unwrap();

    let mut received = BytesMut::new();
    let decoder = FrameDecoder::new(u32::MAX);
    let mut offered = None;
    loop {
        let read = timeout(WAIT, stream.read_buf(&mut received)).await.unwrap();
        assert_ne!(read.unwrap(), 0, "closed before the outcome: {received:?}");
        if received.len() < 8 {
            continue;
        }
        if received.starts_with(&ProtocolId::Sasl.header()) {
            let _ = received.split_to(8);
        }
        while let Some(frame) = decoder.decode(&mut received, Layer::Sasl).unwrap() {
            match frame {
                Frame::Sasl(SaslFrame::Mechanisms(mechanisms)) => {
                    offered = Some(
                        mechanisms
                            .mechanisms
                            .iter()
                            .map(|m| m.as_str().to_owned())
                            .collect(),
                    );
                }
                Frame::Sasl(SaslFrame::Outcome(outcome)) => {
                    return SaslReply {
                        offered: offered.expect("mechanisms come before the outcome"),
                        code: outcome.code,
                    };
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn the_right_password_logs_in_and_opens_a_session() {
    let (broker, _data_dir) = broker_with_users().await;

    let mut connection = open_plain(&broker, "alice", "wonderland")
        .await
        .expect("alice logs in");
    let mut session = timeout(WAIT, Session::begin(&mut connection))
        .await
        .unwrap()
        .expect("the broker answers begin");
    timeout(WAIT, session.end()).await.unwrap().unwrap();
    timeout(WAIT, connection.close()).await.unwrap().unwrap();

    broker.stop().await;
}

#[tokio::test]
async fn bad_credentials_get_the_auth_outcome() {
    let (broker, _data_dir) = broker_with_users().await;

    for (username, password) in [
        ("alice", "builder"),    // another user's password
        ("carol", "wonderland"), // no such user
        ("alice", "Wonderland"),
    ] {
        let error = open_plain(&broker, username, password).await.unwrap_err();
        assert!(
            matches!(
                error,
                OpenError::SaslError {
                    code: ClientSaslCode::Auth,
                    ..
                }
            ),
            "{username}/{password}: {error:?}"
        );
    }
    // The refusals closed only those connections.
    let mut connection = open_plain(&broker, "bob", "builder").await.unwrap();
    timeout(WAIT, connection.close()).await.unwrap().unwrap();

    broker.stop().await;
}

#[tokio::test]
async fn scram_and_plain_are_offered_and_anonymous_is_refused() {
    let (broker, _data_dir) = broker_with_users().await;

    let reply = raw_sasl(broker.addr, "ANONYMOUS", b"").await;
    assert_eq!(reply.offered, ["SCRAM-SHA-256", "PLAIN"]);
    assert_eq!(reply.code, SaslCode::Auth);

    broker.stop().await;
}

/// By default a password is never sent in the clear: without TLS, PLAIN
/// is neither offered nor accepted, even with the right password.
#[tokio::test]
async fn without_tls_plain_is_refused_by_default() {
    let data_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(config_with_users(&data_dir)).await;

    let reply = raw_sasl(broker.addr, "PLAIN", b"\0alice\0wonderland").await;
    assert_eq!(reply.offered, ["SCRAM-SHA-256"]);
    assert_eq!(reply.code, SaslCode::Auth);

    broker.stop().await;
}

/// fe2o3-amqp's own SCRAM implementation logs in without TLS; a wrong
/// password or an unknown user gets the `auth` outcome.
#[tokio::test]
async fn scram_logs_in_fe2o3_and_refuses_bad_credentials() {
    let data_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(config_with_users(&data_dir)).await;
    let mut connection = open_scram(&broker, "alice", "wonderland")
        .await
        .expect("alice logs in");
    timeout(WAIT, connection.close()).await.unwrap().unwrap();
    for (username, password) in [("alice", "builder"), ("carol", "wonderland")] {
        let error = open_scram(&broker, username, password).await.unwrap_err();
        assert!(
            matches!(
                error,
                OpenError::SaslError {
                    code: ClientSaslCode::Auth,
                    ..
                }
            ),
            "{username}/{password}: {error:?}"
        );
    }

    broker.stop().await;
}

/// The in-tree client's SCRAM, which the benchmark and the simulator use.
#[tokio::test]
async fn scram_logs_in_the_in_tree_client() {
    let data_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(config_with_users(&data_dir)).await;
    let sasl = ClientSasl::Scram {
        username: "bob".to_owned(),
        password: "builder".to_owned(),
        nonce: "in-tree-client-nonce".to_owned(),
    };
    let client = timeout(
        WAIT,
        Client::connect(
            TokioIo,
            &broker.addr.to_string(),
            ConnectionConfig::new("in-tree-scram"),
            sasl,
        ),
    )
    .await
    .unwrap()
    .expect("bob logs in with SCRAM");
    timeout(WAIT, client.close()).await.unwrap().unwrap();

    broker.stop().await;
}

/// A client that trickles its handshake in, or stops half-way, is dropped
/// at the handshake deadline even with no idle timeout at all.
#[tokio::test]
async fn a_handshake_that_stalls_is_dropped_at_its_deadline() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = config_with_users(&data_dir);
    config.amqp.idle_timeout_ms = 0;
    config.amqp.handshake_timeout_ms = 200;
    let broker = Broker::start_with(config).await;

    let mut stream = TokioIo.connect(&broker.addr.to_string()).await.unwrap();
    stream
        .write_all(&ProtocolId::Sasl.header()[..4])
        .await
        .unwrap();
    assert_ended_silently(stream, "the stalled connection").await;

    broker.stop().await;
}

/// Past `limits.max_handshakes_per_source` unfinished handshakes from one
/// address, or `limits.max_connections` in all, a new connection is closed
/// at once; those already admitted are served.
#[tokio::test]
async fn connection_caps_close_the_excess_at_accept() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = config_with_users(&data_dir);
    config.limits.max_handshakes_per_source = 2;
    config.limits.max_connections = 3;
    let broker = Broker::start_with(config).await;
    let addr = broker.addr.to_string();

    let silent = [
        TokioIo.connect(&addr).await.unwrap(),
        TokioIo.connect(&addr).await.unwrap(),
    ];
    let refused = TokioIo.connect(&addr).await.unwrap();
    assert_ended_silently(refused, "the third handshake from one address").await;

    // Once one of them goes, a client can log in; it then no longer counts
    // as a handshake, but still towards the total.
    drop(silent);
    let mut connection = open_scram(&broker, "alice", "wonderland")
        .await
        .expect("the login succeeds");
    let _second = TokioIo.connect(&addr).await.unwrap();
    let _third = TokioIo.connect(&addr).await.unwrap();
    let over_total = TokioIo.connect(&addr).await.unwrap();
    assert_ended_silently(over_total, "the fourth connection").await;
    timeout(WAIT, connection.close()).await.unwrap().unwrap();

    broker.stop().await;
}

/// Checks that the broker closes `stream` without a byte, within [`WAIT`].
async fn assert_ended_silently(mut stream: impl AsyncReadExt + Unpin, which: &str) {
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("the broker ends {which} in time"))
        .unwrap();
    assert!(received.is_empty(), "{which}: {received:?}");
}

#[tokio::test]
async fn malformed_plain_responses_get_the_auth_outcome() {
    let (broker, _data_dir) = broker_with_users().await;

    for response in [
        &b"bob\0alice\0wonderland"[..], // authzid other than the user
        b"alice\0wonderland",           // no authzid field
        b"\0alice\0",                   // empty password
    ] {
        let reply = raw_sasl(broker.addr, "PLAIN", response).await;
        assert_eq!(reply.code, SaslCode::Auth, "{response:?}");
    }
    let reply = raw_sasl(broker.addr, "PLAIN", b"alice\0alice\0wonderland").await;
    assert_eq!(
        reply.code,
        SaslCode::Ok,
        "authzid equal to the user is fine"
    );

    broker.stop().await;
}

#[tokio::test]
async fn skipping_sasl_is_refused() {
    let (broker, _data_dir) = broker_with_users().await;

    let mut stream = TokioIo.connect(&broker.addr.to_string()).await.unwrap();
    stream.write_all(&ProtocolId::Amqp.header()).await.unwrap();
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the broker ends the connection")
        .unwrap();
    // The broker answers with the header it wants (SASL) and hangs up.
    assert_eq!(received, ProtocolId::Sasl.header());

    broker.stop().await;
}

#[tokio::test]
async fn without_users_anonymous_is_offered_and_admitted() {
    let broker = Broker::start().await;

    let reply = raw_sasl(broker.addr, "ANONYMOUS", b"").await;
    assert_eq!(reply.offered, ["ANONYMOUS"]);
    assert_eq!(reply.code, SaslCode::Ok);
    let reply = raw_sasl(broker.addr, "PLAIN", b"\0alice\0wonderland").await;
    assert_eq!(reply.code, SaslCode::Auth);

    broker.stop().await;
}
