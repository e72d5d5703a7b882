//! Protocol headers, SASL and `open`.

use super::util::*;
use crate::amqp::engine::{ClientSasl, Event};
use crate::amqp::frame::{Frame, ProtocolId};
use crate::amqp::types::{Performative, SaslCode, SaslFrame, condition};

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
        Unit::Frame { frame: Frame::Sasl(SaslFrame::Mechanisms(m)), .. } if m.mechanisms == ["PLAIN", "ANONYMOUS"]
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
    let auth = TestAuth {
        allow_unauthenticated: true,
    };
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
    #[derive(Clone)]
    struct AnonymousOnly;
    impl crate::amqp::engine::Authenticator for AnonymousOnly {
        fn mechanisms(&self) -> Vec<String> {
            vec!["ANONYMOUS".to_owned()]
        }
        fn authenticate(
            &self,
            _: &str,
            _: &[u8],
            _: Option<&str>,
        ) -> crate::amqp::engine::AuthOutcome {
            crate::amqp::engine::AuthOutcome::Denied
        }
    }
    let now = base_instant();
    let mut client = crate::amqp::engine::Connection::client(client_config(), plain(PASSWORD), now);
    let mut server = crate::amqp::engine::Connection::server(
        server_config(),
        std::sync::Arc::new(AnonymousOnly),
        now,
    );
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
