//! Protocol headers, SASL and `open`.

use bytes::{BufMut, BytesMut};

use super::util::*;
use crate::amqp::codec::Symbol;
use crate::amqp::engine::{
    ClientSasl, Connection, ConnectionConfig, EngineError, Event, SaslVerdict, ServerSasl,
};
use crate::amqp::frame::{Frame, ProtocolId, put_sasl_frame};
use crate::amqp::types::{Open, Performative, SaslCode, SaslFrame, SaslInit, condition};

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

/// Appends an AMQP frame on channel 0 carrying `open`.
fn raw_frame_into(out: &mut Vec<u8>, open: &Open) {
    let mut frame = BytesMut::new();
    raw_frame(&mut frame, 0, open, &[]);
    out.extend_from_slice(&frame);
}

fn plain(password: &str) -> ClientSasl {
    ClientSasl::Plain {
        username: USER.to_owned(),
        password: password.to_owned(),
    }
}

#[test]
fn sasl_anonymous_then_open_on_both_sides() {
    let mut pair = Pair::new(
        client_config(),
        ClientSasl::Anonymous,
        server_config(),
        TestAuth::default(),
    );
    pair.drive();

    assert_events!(
        pair.server_events(),
        [
            Event::Authenticated { identity } if identity == "anonymous",
            Event::Opened { remote } if remote.container_id == "client"
            && remote.hostname.as_deref() == Some("localhost")
            && remote.max_frame_size == 256 * 1024
            && remote.channel_max == 255
            // Half the 60 s each end enforces.
            && remote.idle_time_out == Some(30_000),
        ]
    );
    assert_events!(
        pair.client_events(),
        [
            Event::Opened { remote } if remote.container_id == "server" && remote.idle_time_out == Some(30_000),
        ]
    );
    assert!(!pair.client.is_finished());
    assert!(!pair.server.is_finished());

    // The exact exchange: SASL header, init, then the pipelined AMQP header
    // and open from the client; the server mirrors it.
    let client = units(&pair.client_wire);
    assert_eq!(client.len(), 4, "{client:#?}");
    assert_eq!(client[0], Unit::Header(ProtocolId::Sasl.header()));
    assert!(matches!(
        &client[1],
        Unit::Frame { frame: Frame::Sasl(SaslFrame::Init(init)), .. }
            if init.mechanism == "ANONYMOUS" && init.initial_response.is_none() && init.hostname.as_deref() == Some("localhost")
    ));
    assert_eq!(client[2], Unit::Header(ProtocolId::Amqp.header()));
    assert!(matches!(
        &client[3],
        Unit::Frame {
            frame: Frame::Amqp {
                channel: 0,
                performative: Performative::Open(_),
                ..
            },
            ..
        }
    ));

    let server = units(&pair.server_wire);
    assert_eq!(server.len(), 5, "{server:#?}");
    assert_eq!(server[0], Unit::Header(ProtocolId::Sasl.header()));
    assert!(matches!(
        &server[1],
        Unit::Frame { frame: Frame::Sasl(SaslFrame::Mechanisms(m)), .. } if m.mechanisms == ["SCRAM-SHA-256", "PLAIN", "ANONYMOUS"]
    ));
    assert!(matches!(
        &server[2],
        Unit::Frame { frame: Frame::Sasl(SaslFrame::Outcome(o)), .. } if o.code == SaslCode::Ok
    ));
    assert_eq!(server[3], Unit::Header(ProtocolId::Amqp.header()));
    assert!(matches!(
        &server[4],
        Unit::Frame {
            frame: Frame::Amqp {
                channel: 0,
                performative: Performative::Open(_),
                ..
            },
            ..
        }
    ));

    // Nothing more to say until a timer fires.
    assert!(pair.client.poll_transmit().is_none());
    assert!(pair.server.poll_transmit().is_none());
}

#[test]
fn sasl_plain_with_the_right_password_authenticates_the_user() {
    let mut pair = Pair::new(
        client_config(),
        plain(PASSWORD),
        server_config(),
        TestAuth::default(),
    );
    pair.drive();
    assert_events!(
        pair.server_events(),
        [
            Event::Authenticated { identity } if identity == USER,
            Event::Opened { .. },
        ]
    );
    assert_events!(pair.client_events(), [Event::Opened { .. }]);
    let init = units(&pair.client_wire)
        .into_iter()
        .find_map(|u| match u {
            Unit::Frame {
                frame: Frame::Sasl(SaslFrame::Init(init)),
                ..
            } => Some(init),
            _ => None,
        })
        .expect("the client sent sasl-init");
    assert_eq!(init.mechanism, "PLAIN");
    assert_eq!(
        init.initial_response.as_deref(),
        Some(&b"\0alice\0secret"[..])
    );
}

#[test]
fn sasl_plain_with_a_bad_password_is_refused_and_both_sides_finish() {
    let mut pair = Pair::new(
        client_config(),
        plain("wrong"),
        server_config(),
        TestAuth::default(),
    );
    pair.drive();

    assert_events!(
        pair.server_events(),
        [e if closed_locally(e, condition::UNAUTHORIZED_ACCESS)]
    );
    assert_events!(
        pair.client_events(),
        [e if closed_locally(e, condition::UNAUTHORIZED_ACCESS)]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(pair.server.poll_timeout(), None);

    // The server said `auth` and nothing after it: no AMQP layer.
    let server = units(&pair.server_wire);
    assert_eq!(server.len(), 3, "{server:#?}");
    assert!(matches!(
        &server[2],
        Unit::Frame { frame: Frame::Sasl(SaslFrame::Outcome(o)), .. } if o.code == SaslCode::Auth
    ));
    // The client never got as far as the AMQP header.
    assert!(
        !pair
            .client_wire
            .windows(8)
            .any(|w| w == ProtocolId::Amqp.header())
    );
}

#[test]
fn client_without_sasl_is_accepted_when_the_authenticator_allows_it() {
    let auth = TestAuth::guest();
    let mut pair = Pair::new(client_config(), ClientSasl::None, server_config(), auth);
    pair.drive();
    assert_events!(
        pair.server_events(),
        [
            Event::Authenticated { identity } if identity == GUEST,
            Event::Opened { .. },
        ]
    );
    assert_events!(pair.client_events(), [Event::Opened { .. }]);
    assert_eq!(
        units(&pair.server_wire)[0],
        Unit::Header(ProtocolId::Amqp.header())
    );
    assert!(!pair.server.is_finished());
}

#[test]
fn client_without_sasl_is_refused_when_the_authenticator_requires_it() {
    let mut pair = Pair::new(
        client_config(),
        ClientSasl::None,
        server_config(),
        TestAuth::default(),
    );
    pair.drive();
    // The server answers with the header it wants, then hangs up.
    assert_eq!(pair.server_wire, ProtocolId::Sasl.header());
    assert_events!(
        pair.server_events(),
        [e if closed_locally(e, condition::FRAMING_ERROR)]
    );
    assert_events!(
        pair.client_events(),
        [e if closed_locally(e, condition::FRAMING_ERROR)]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
}

#[test]
fn a_mechanism_the_server_does_not_offer_fails_on_the_client() {
    let now = base_instant();
    let mut client = Connection::client(client_config(), plain(PASSWORD), now);
    let anonymous_only = ServerSasl {
        mechanisms: vec![Symbol::from_static("ANONYMOUS")],
        unauthenticated: None,
    };
    let mut server = Connection::server(server_config(), anonymous_only, now);
    server.handle_bytes(now, &client.poll_transmit().expect("the client's header"));
    client.handle_bytes(now, &server.poll_transmit().expect("header and mechanisms"));
    assert!(client.is_finished());
    assert!(
        matches!(client.poll_event(), Some(ref e) if closed_locally(e, condition::UNAUTHORIZED_ACCESS))
    );
    assert_eq!(client.poll_event(), None);
    // It gives up without sending anything more.
    assert!(client.poll_transmit().is_none());
}

/// A client that picks a mechanism we did not offer is refused by the
/// engine itself: the application is never asked to check it.
#[test]
fn a_mechanism_the_server_did_not_offer_is_refused_without_asking() {
    let now = base_instant();
    let plain_only = ServerSasl {
        mechanisms: vec![Symbol::from_static("PLAIN")],
        unauthenticated: None,
    };
    let mut server = Connection::server(server_config(), plain_only, now);
    let mut raw = BytesMut::new();
    raw.put_slice(&ProtocolId::Sasl.header());
    put_sasl_frame(
        &mut raw,
        &SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("ANONYMOUS"),
            initial_response: None,
            hostname: None,
        }),
    );
    server.handle_bytes(now, &raw);
    assert!(server.is_finished());
    assert!(
        matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::UNAUTHORIZED_ACCESS))
    );
    let out = units(&server.poll_transmit().expect("header, mechanisms, outcome"));
    assert!(matches!(
        out.last(),
        Some(Unit::Frame { frame: Frame::Sasl(SaslFrame::Outcome(o)), .. }) if o.code == SaslCode::Auth
    ));
}

fn scram(password: &str) -> ClientSasl {
    ClientSasl::Scram {
        username: USER.to_owned(),
        password: password.to_owned(),
        nonce: "client-nonce".to_owned(),
    }
}

#[test]
fn scram_takes_a_challenge_round_and_both_sides_prove_themselves() {
    let mut pair = Pair::new(
        client_config(),
        scram(PASSWORD),
        server_config(),
        TestAuth::default(),
    );
    pair.drive();
    assert_events!(
        pair.server_events(),
        [
            Event::Authenticated { identity } if identity == USER,
            Event::Opened { .. },
        ]
    );
    assert_events!(pair.client_events(), [Event::Opened { .. }]);
    let sasl_frames = |wire: &[u8]| -> Vec<SaslFrame> {
        units(wire)
            .into_iter()
            .filter_map(|unit| match unit {
                Unit::Frame {
                    frame: Frame::Sasl(frame),
                    ..
                } => Some(frame),
                _ => None,
            })
            .collect()
    };
    let client = sasl_frames(&pair.client_wire);
    assert!(
        matches!(&client[..], [SaslFrame::Init(init), SaslFrame::Response(_)]
        if init.mechanism == "SCRAM-SHA-256"
        && init.initial_response.as_deref() == Some(&b"n,,n=alice,r=client-nonce"[..]))
    );
    let server = sasl_frames(&pair.server_wire);
    assert!(
        matches!(&server[..], [SaslFrame::Mechanisms(_), SaslFrame::Challenge(_), SaslFrame::Outcome(o)]
        if o.code == SaslCode::Ok && o.additional_data.as_deref().is_some_and(|v| v.starts_with(b"v=")))
    );
    // The password itself never crossed the wire.
    assert!(
        !pair
            .client_wire
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );
}

#[test]
fn scram_with_a_wrong_password_is_refused() {
    let mut pair = Pair::new(
        client_config(),
        scram("wrong"),
        server_config(),
        TestAuth::default(),
    );
    pair.drive();
    assert_events!(
        pair.server_events(),
        [e if closed_locally(e, condition::UNAUTHORIZED_ACCESS)]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
}

/// A server that says `ok` without proving it knows the credential (a
/// man in the middle) is not believed.
#[test]
fn a_scram_client_refuses_an_outcome_without_the_servers_proof() {
    let now = base_instant();
    let mut client = Connection::client(client_config(), scram(PASSWORD), now);
    let mut server = Connection::server(server_config(), TestAuth::default().sasl(), now);
    server.handle_bytes(now, &client.poll_transmit().expect("the client's header"));
    client.handle_bytes(now, &server.poll_transmit().expect("mechanisms"));
    server.handle_bytes(now, &client.poll_transmit().expect("sasl-init"));
    assert!(matches!(server.poll_event(), Some(Event::SaslInit { .. })));
    let verdict = SaslVerdict::Accept {
        identity: USER.to_owned(),
        additional_data: None,
    };
    server.answer_sasl(verdict).unwrap();
    client.handle_bytes(now, &server.poll_transmit().expect("outcome"));
    assert!(client.is_finished());
    assert!(
        matches!(client.poll_event(), Some(ref e) if closed_locally(e, condition::UNAUTHORIZED_ACCESS))
    );
}

/// What a client pipelines behind its `sasl-init` (the AMQP header and its
/// `open`) waits, unread, until the application's verdict.
#[test]
fn input_waits_for_the_verdict_and_is_read_after_it() {
    let now = base_instant();
    let mut client = Connection::client(client_config(), plain(PASSWORD), now);
    let mut server = Connection::server(server_config(), TestAuth::default().sasl(), now);
    server.handle_bytes(now, &client.poll_transmit().expect("the client's header"));
    client.handle_bytes(now, &server.poll_transmit().expect("mechanisms"));
    let mut pipelined = client.poll_transmit().expect("sasl-init").to_vec();
    pipelined.extend_from_slice(&ProtocolId::Amqp.header());
    raw_frame_into(&mut pipelined, &Open::new("early"));
    server.handle_bytes(now, &pipelined);
    assert!(matches!(server.poll_event(), Some(Event::SaslInit { .. })));
    assert_eq!(server.poll_event(), None, "nothing read past sasl-init");
    assert_eq!(server.poll_transmit(), None);
    // Answering twice, or before being asked, is an error, not a panic.
    let verdict = SaslVerdict::Accept {
        identity: USER.to_owned(),
        additional_data: None,
    };
    server.answer_sasl(verdict.clone()).unwrap();
    assert_eq!(server.answer_sasl(verdict), Err(EngineError::Closed));
    assert!(matches!(
        server.poll_event(),
        Some(Event::Authenticated { .. })
    ));
    assert!(
        matches!(server.poll_event(), Some(Event::Opened { remote }) if remote.container_id == "early")
    );
}

/// A handshake that trickles in, each byte well inside the idle timeout,
/// still ends at the handshake deadline.
#[test]
fn the_handshake_deadline_is_not_extended_by_a_trickle_of_bytes() {
    let now = base_instant();
    let config = ConnectionConfig {
        handshake_timeout: Some(SECOND * 10),
        idle_timeout: Some(SECOND * 60),
        ..server_config()
    };
    let mut server = Connection::server(config, TestAuth::default().sasl(), now);
    let header = ProtocolId::Sasl.header();
    for (i, byte) in header[..7].iter().enumerate() {
        let at = now + SECOND * u32::try_from(i).unwrap();
        server.handle_bytes(at, &[*byte]);
        server.handle_timeout(at);
        assert!(!server.is_finished());
    }
    assert_eq!(server.poll_timeout(), Some(now + SECOND * 10));
    server.handle_timeout(now + SECOND * 10);
    assert!(server.is_finished());
    assert!(
        matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::RESOURCE_LIMIT_EXCEEDED))
    );
}

/// Once the peer's `open` is in, the handshake deadline no longer applies.
#[test]
fn the_handshake_deadline_ends_with_the_peers_open() {
    let config = ConnectionConfig {
        handshake_timeout: Some(SECOND),
        idle_timeout: None,
        ..server_config()
    };
    let mut pair = Pair::new(
        client_config(),
        ClientSasl::Anonymous,
        config,
        TestAuth::default(),
    );
    pair.handshake();
    pair.advance(SECOND * 5);
    assert!(!pair.server.is_finished());
}

/// The whole handshake and a few transfers, with every delivery cut into
/// random 1..=64-byte pieces: the engines reassemble headers and frames
/// across any split.
#[test]
fn handshake_and_transfers_survive_arbitrary_splits() {
    for seed in 0..16 {
        let mut pair = Pair::new(
            client_config(),
            plain(PASSWORD),
            server_config(),
            TestAuth::default(),
        )
        .chunked(seed);
        pair.handshake();
        let (sender, receiver) = pair.sender("split");
        pair.grant(sender, receiver, 10);
        for i in 0..10 {
            pair.send(sender, i);
        }
        pair.drive();
        let events = pair.server_events();
        assert_eq!(events.len(), 10, "seed {seed}: {events:#?}");
        for (i, event) in (0..).zip(&events) {
            assert!(
                matches!(event, Event::Delivery { delivery, message: m, .. } if delivery.id == i && *m == message(i)),
                "seed {seed}: {event:#?}"
            );
        }
    }
}
