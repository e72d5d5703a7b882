//! Authentication end to end: with `[[users]]` configured the broker offers
//! only SASL PLAIN, admits the right password, and answers everything else
//! with the SASL `auth` outcome; without users it stays open (ANONYMOUS).
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Broker, WAIT, test_config, user};
use fe2o3_amqp::connection::{ConnectionHandle, OpenError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::sasl::SaslCode as ClientSaslCode;
use fe2o3_amqp::{Connection, Session};
use sluice::amqp::codec::Symbol;
use sluice::amqp::frame::{Frame, FrameDecoder, Layer, ProtocolId, put_sasl_frame};
use sluice::amqp::types::{SaslCode, SaslFrame, SaslInit};
use sluice::config::Config;
use sluice::io::{Io, TokioIo};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// A broker with the accounts `alice` / `wonderland` and `bob` / `builder`,
/// and the data directory it runs in (kept until the test ends).
async fn broker_with_users() -> (Broker, TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: data_dir.path().to_owned(),
        users: vec![user("alice", "wonderland"), user("bob", "builder")],
        ..test_config()
    };
    (Broker::start_with(config).await, data_dir)
}

/// fe2o3 logging in with PLAIN.
async fn open_plain(
    broker: &Broker,
    username: &str,
    password: &str,
) -> Result<ConnectionHandle<()>, OpenError> {
    let url = broker.url();
    let opening = Connection::builder()
        .container_id("fe2o3-auth")
        .sasl_profile(SaslProfile::Plain {
            username: username.to_owned(),
            password: password.to_owned(),
        })
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
async fn only_plain_is_offered_and_anonymous_is_refused() {
    let (broker, _data_dir) = broker_with_users().await;

    let reply = raw_sasl(broker.addr, "ANONYMOUS", b"").await;
    assert_eq!(reply.offered, ["PLAIN"]);
    assert_eq!(reply.code, SaslCode::Auth);

    broker.stop().await;
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
