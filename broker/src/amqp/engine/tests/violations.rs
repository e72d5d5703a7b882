//! Protocol violations: each must close the connection with the spec's
//! condition, and none may panic the engine.

use bytes::{BufMut, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::util::*;
use crate::amqp::engine::{ConnectionConfig, Event, HANDLE_MAX};
use crate::amqp::frame::{Frame, ProtocolId};
use crate::amqp::types::{
    Attach, Begin, Detach, Disposition, Flow, Open, Performative, Role, SaslFrame, Transfer,
    condition,
};

/// Asserts the server closed because of `condition`: its last event says
/// so, its `close` on the wire carries it, and the client, once driven,
/// hears it. Both end finished.
fn assert_server_closed_with(pair: &mut Pair, condition: &str) {
    assert!(pair.server.is_finished(), "the server is still open");
    let events = pair.server_events();
    assert!(
        matches!(events.last(), Some(e) if closed_locally(e, condition)),
        "expected the server to close with {condition}, got {events:#?}"
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| matches!(e, Event::Delivery { .. })),
        "{events:#?}"
    );
    pair.drive();
    assert_eq!(close_condition(&pair.server_wire), condition);
    assert_events!(pair.client_events(), [e if closed_remotely(e, condition)]);
    assert!(pair.client.is_finished());
    assert_eq!(pair.server.poll_timeout(), None);
}

/// Feeds one raw frame from "the client" to a connected server.
fn inject(
    pair: &mut Pair,
    channel: u16,
    performative: &impl crate::amqp::codec::Encode,
    payload: &[u8],
) {
    let mut raw = BytesMut::new();
    raw_frame(&mut raw, channel, performative, payload);
    pair.inject_to_server(&raw);
}

fn attach(name: &str, handle: u32, role: Role) -> Attach {
    Attach {
        name: name.to_owned(),
        handle,
        role,
        snd_settle_mode: crate::amqp::types::SenderSettleMode::Mixed,
        rcv_settle_mode: crate::amqp::types::ReceiverSettleMode::First,
        source: None,
        target: None,
        unsettled: Vec::new(),
        incomplete_unsettled: false,
        initial_delivery_count: (role == Role::Sender).then_some(0),
        max_message_size: None,
        offered_capabilities: Vec::new(),
        desired_capabilities: Vec::new(),
        properties: Vec::new(),
    }
}

#[test]
fn a_frame_body_that_does_not_decode_is_a_decode_error() {
    let mut pair = Pair::connected();
    let mut raw = BytesMut::new();
    raw.put_slice(&[0, 0, 0, 16, 2, 0, 0, 0]);
    raw.put_slice(b"garbage!");
    pair.inject_to_server(&raw);
    assert_server_closed_with(&mut pair, condition::DECODE_ERROR);
}

#[test]
fn text_after_the_handshake_is_a_framing_error() {
    let mut pair = Pair::connected();
    // Read as a frame header, "this" declares a frame of ~1.9 GB.
    pair.inject_to_server(b"this is not AMQP at all");
    assert_server_closed_with(&mut pair, condition::FRAMING_ERROR);
}

#[test]
fn a_frame_declaring_two_gibibytes_is_refused_before_buffering() {
    let mut pair = Pair::connected();
    pair.inject_to_server(&[0x80, 0, 0, 0, 2, 0, 0, 0]);
    assert_server_closed_with(&mut pair, condition::FRAMING_ERROR);
}

#[test]
fn malformed_frame_headers_are_framing_errors() {
    let headers: [&[u8]; 4] = [
        &[0, 0, 0, 4, 2, 0, 0, 0],  // size below the header
        &[0, 0, 0, 8, 1, 0, 0, 0],  // data offset inside the header
        &[0, 0, 0, 8, 2, 9, 0, 0],  // unknown frame type
        &[0, 0, 0, 12, 2, 1, 0, 0], // a SASL frame after SASL
    ];
    for header in headers {
        let mut pair = Pair::connected();
        pair.inject_to_server(header);
        assert_server_closed_with(&mut pair, condition::FRAMING_ERROR);
    }
}

#[test]
fn a_transfer_on_an_unattached_handle_is_refused() {
    let mut pair = Pair::connected();
    pair.begin();
    inject(&mut pair, 0, &first_transfer(7, 0, false), &message(0));
    assert_server_closed_with(&mut pair, condition::UNATTACHED_HANDLE);
}

#[test]
fn flow_and_detach_on_unattached_handles_are_refused() {
    let mut pair = Pair::connected();
    pair.begin();
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 10,
        outgoing_window: 10,
        handle: Some(3),
        link_credit: Some(1),
        ..Flow::default()
    };
    inject(&mut pair, 0, &flow, &[]);
    assert_server_closed_with(&mut pair, condition::UNATTACHED_HANDLE);

    let mut pair = Pair::connected();
    pair.begin();
    inject(
        &mut pair,
        0,
        &Detach {
            handle: 3,
            ..Detach::default()
        },
        &[],
    );
    assert_server_closed_with(&mut pair, condition::UNATTACHED_HANDLE);
}

#[test]
fn a_frame_on_a_channel_without_a_session_is_refused() {
    let mut pair = Pair::connected();
    inject(&mut pair, 3, &attach("stray", 0, Role::Sender), &[]);
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);
}

#[test]
fn attach_reusing_a_handle_is_refused() {
    let mut pair = Pair::connected();
    let (sender, _) = pair.sender("first");
    inject(
        &mut pair,
        0,
        &attach("second", sender.handle, Role::Sender),
        &[],
    );
    assert_server_closed_with(&mut pair, condition::HANDLE_IN_USE);
}

#[test]
fn attach_above_handle_max_is_refused() {
    let mut pair = Pair::connected();
    pair.begin();
    inject(
        &mut pair,
        0,
        &attach("high", HANDLE_MAX + 1, Role::Sender),
        &[],
    );
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);
}

#[test]
fn begin_on_a_channel_in_use_or_above_channel_max_is_refused() {
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 10,
        outgoing_window: 10,
        handle_max: 7,
        offered_capabilities: Vec::new(),
        desired_capabilities: Vec::new(),
        properties: Vec::new(),
    };
    let mut pair = Pair::connected();
    pair.begin();
    inject(&mut pair, 0, &begin, &[]);
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);

    let mut pair = Pair::connected();
    inject(&mut pair, 256, &begin, &[]);
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);

    // A begin that claims to answer a session the server never began.
    let mut pair = Pair::connected();
    inject(
        &mut pair,
        0,
        &Begin {
            remote_channel: Some(4),
            ..begin
        },
        &[],
    );
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);
}

/// More transfers in one burst than the session's incoming window allows.
#[test]
fn a_burst_beyond_the_session_window_is_a_window_violation() {
    let server = ConnectionConfig {
        session_window: 4,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), server);
    let (sender, receiver) = pair.sender("bursty");
    pair.grant(sender, receiver, 100);
    let mut raw = BytesMut::new();
    for id in 0..5 {
        raw_frame(
            &mut raw,
            0,
            &first_transfer(sender.handle, id, false),
            &message(id),
        );
    }
    pair.inject_to_server(&raw);
    let events = pair.server_events();
    assert_eq!(events.len(), 5, "{events:#?}");
    for (id, event) in (0..4).zip(&events) {
        assert!(
            matches!(event, Event::Delivery { delivery, .. } if delivery.id == id),
            "{event:#?}"
        );
    }
    assert!(
        closed_locally(&events[4], condition::WINDOW_VIOLATION),
        "{events:#?}"
    );
    assert!(pair.server.is_finished());
    pair.drive();
    assert_eq!(
        close_condition(&pair.server_wire),
        condition::WINDOW_VIOLATION
    );
}

#[test]
fn a_transfer_against_the_link_direction_is_refused() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    // The client receives on this link; it must not send on it.
    let (receiver, _) = pair.attach(session, link_options("backwards", Role::Receiver));
    inject(
        &mut pair,
        0,
        &first_transfer(receiver.handle, 0, false),
        &message(0),
    );
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);
}

#[test]
fn a_new_delivery_inside_an_unfinished_one_is_refused() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("interleaved");
    pair.grant(sender, receiver, 10);
    let mut raw = BytesMut::new();
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 0, true),
        b"part",
    );
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 1, false),
        b"other",
    );
    pair.inject_to_server(&raw);
    assert_server_closed_with(&mut pair, condition::NOT_ALLOWED);
}

#[test]
fn a_first_transfer_without_id_or_tag_is_an_invalid_field() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("anonymous-delivery");
    pair.grant(sender, receiver, 10);
    inject(
        &mut pair,
        0,
        &Transfer {
            handle: sender.handle,
            ..Transfer::default()
        },
        b"who am I",
    );
    assert_server_closed_with(&mut pair, condition::INVALID_FIELD);
}

/// A hostile disposition range over the whole id space costs nothing and
/// touches nothing that is not unsettled.
#[test]
fn a_disposition_over_every_id_is_harmless() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("range");
    pair.grant(sender, receiver, 10);
    let delivery = pair.send(sender, 0);
    pair.drive();
    assert_events!(pair.server_events(), [Event::Delivery { .. }]);
    let mut raw = BytesMut::new();
    let everything = Disposition {
        role: Role::Receiver,
        first: 1,
        last: Some(0),
        settled: true,
        state: accepted(),
        batchable: false,
    };
    raw_frame(&mut raw, 0, &everything, &[]);
    // As if from the server to the client: the only unsettled delivery is 0.
    pair.client.handle_bytes(pair.now, &raw);
    assert_events!(
        pair.client_events(),
        [Event::Disposition { delivery: d, settled: true, .. } if *d == delivery]
    );
    assert!(!pair.client.is_finished());
}

#[test]
fn an_open_with_max_frame_size_below_512_is_an_invalid_field() {
    let now = base_instant();
    let auth = TestAuth::guest();
    let mut server = lone_server(server_config(), auth, now);
    let mut raw = BytesMut::new();
    raw.put_slice(&ProtocolId::Amqp.header());
    let open = Open {
        max_frame_size: 100,
        ..Open::new("tiny")
    };
    raw_frame(&mut raw, 0, &open, &[]);
    server.handle_bytes(now, &raw);

    assert!(server.is_finished());
    assert!(matches!(
        server.poll_event(),
        Some(Event::Authenticated { .. })
    ));
    assert!(
        matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::INVALID_FIELD))
    );
    assert_eq!(server.poll_event(), None);
    let out = server.poll_transmit().expect("header, open and close");
    let units = units(&out);
    assert_eq!(units.len(), 3, "{units:#?}");
    assert_eq!(units[0], Unit::Header(ProtocolId::Amqp.header()));
    assert!(matches!(
        &units[1],
        Unit::Frame {
            frame: Frame::Amqp {
                performative: Performative::Open(_),
                ..
            },
            ..
        }
    ));
    assert_eq!(close_condition(&out), condition::INVALID_FIELD);
}

#[test]
fn frames_before_open_and_a_second_open_are_illegal_state() {
    let auth = TestAuth::guest();
    let now = base_instant();
    let mut server = lone_server(server_config(), auth.clone(), now);
    let mut raw = BytesMut::new();
    raw.put_slice(&ProtocolId::Amqp.header());
    raw_frame(&mut raw, 0, &attach("early", 0, Role::Sender), &[]);
    server.handle_bytes(now, &raw);
    assert!(server.is_finished());
    assert_eq!(
        close_condition(&server.poll_transmit().expect("open and close")),
        condition::ILLEGAL_STATE
    );

    let mut pair = Pair::connected();
    inject(&mut pair, 0, &Open::new("again"), &[]);
    assert_server_closed_with(&mut pair, condition::ILLEGAL_STATE);
}

/// Anything but an AMQP 1.0 header gets the server's own (SASL) header in
/// answer, then the end of the connection.
#[test]
fn a_bad_protocol_header_is_answered_with_ours() {
    let headers: [&[u8; 8]; 5] = [
        b"AMQP\x00\x00\x09\x01",             // AMQP 0-9-1
        b"AMQP\x03\x02\x00\x00",             // a SASL header of another version
        b"GET / HT",                         // HTTP
        b"\x16\x03\x01\x02\x00\x01\x00\x01", // a raw TLS ClientHello
        b"AMQP\x02\x01\x00\x00",             // AMQP's TLS header: not supported
    ];
    for header in headers {
        for split in 1..=8 {
            let now = base_instant();
            let mut server = lone_server(server_config(), TestAuth::default(), now);
            server.handle_bytes(now, &header[..split]);
            if split < 8 {
                assert!(
                    !server.is_finished(),
                    "{header:?}: waits for the whole header"
                );
                assert_eq!(server.poll_transmit(), None);
                server.handle_bytes(now, &header[split..]);
            }
            // Trailing bytes are ignored.
            server.handle_bytes(now, b"more junk");
            assert!(server.is_finished(), "{header:?}");
            assert_eq!(
                server.poll_transmit().as_deref(),
                Some(&ProtocolId::Sasl.header()[..]),
                "{header:?}"
            );
            assert!(
                matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::FRAMING_ERROR))
            );
            assert_eq!(server.poll_event(), None);
            assert_eq!(server.poll_timeout(), None);
        }
    }
}

#[test]
fn an_unexpected_sasl_frame_ends_the_exchange() {
    let now = base_instant();
    let mut server = lone_server(server_config(), TestAuth::default(), now);
    let mut raw = BytesMut::new();
    raw.put_slice(&ProtocolId::Sasl.header());
    // A second mechanisms list is no answer to ours.
    crate::amqp::frame::put_sasl_frame(
        &mut raw,
        &SaslFrame::Mechanisms(crate::amqp::types::SaslMechanisms {
            mechanisms: Vec::new(),
        }),
    );
    server.handle_bytes(now, &raw);
    assert!(server.is_finished());
    assert!(
        matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::FRAMING_ERROR))
    );
    assert_eq!(server.poll_event(), None);
}

/// What a well-behaved client sends over a whole session, for mutation.
fn scripted_client_wire() -> Vec<u8> {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("script");
    pair.grant(sender, receiver, 10);
    for i in 0..3 {
        pair.send(sender, i);
    }
    pair.client
        .send(sender, tag(3), bytes::Bytes::from(vec![7u8; 3000]), true)
        .expect("send under credit");
    pair.drive();
    for event in pair.server_events() {
        if let Event::Delivery {
            delivery,
            settled: false,
            ..
        } = event
        {
            pair.server
                .disposition(delivery, accepted(), false)
                .expect("an unsettled delivery");
        }
    }
    pair.drive();
    for event in pair.client_events() {
        if let Event::Disposition { delivery, .. } = event {
            pair.client
                .disposition(delivery, accepted(), true)
                .expect("unsettled at the sender");
        }
    }
    pair.client
        .detach(sender, true, None)
        .expect("detach an attached link");
    pair.client
        .end(sender.session, None)
        .expect("end a mapped session");
    pair.client.close(pair.now, None);
    pair.drive();
    assert!(pair.client.is_finished());
    pair.client_wire
}

/// Random corruption of a real client's byte stream, fed to a fresh server
/// in random chunks: the server never panics, and whatever it writes is a
/// well-formed stream. Replay a failure with its printed seed.
#[test]
fn corrupted_client_streams_never_panic_the_server() {
    const SEEDS: u64 = 300;
    let wire = scripted_client_wire();
    let mut seeds_past_handshake = 0;
    for seed in 0..SEEDS {
        let mut delivered = 0u32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut mutated = wire.clone();
        for _ in 0..rng.gen_range(1..=4) {
            let at = rng.gen_range(0..mutated.len());
            match rng.gen_range(0..3) {
                0 => mutated[at] ^= 1 << rng.gen_range(0..8),
                1 => mutated[at] = rng.r#gen(),
                _ => mutated.truncate(at.max(1)),
            }
        }
        let now = base_instant();
        let mut auth = TestAuth::default();
        let mut server = lone_server(server_config(), auth.clone(), now);
        let mut out = Vec::new();
        let mut rest = &mutated[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.gen_range(1..=rest.len().min(200)));
            server.handle_bytes(now, chunk);
            // The application reacts like a broker: it accepts links and
            // grants credit, and settles what arrives.
            while let Some(event) = server.poll_event() {
                if let Some(verdict) = auth.answer(&event) {
                    let _ = server.answer_sasl(verdict);
                    continue;
                }
                match event {
                    Event::LinkAttached {
                        link,
                        initiated_by_peer: true,
                        ..
                    } => {
                        let _ = server.accept_link(link, Default::default());
                        let _ = server.flow(link, 10, false);
                    }
                    Event::Delivery {
                        delivery,
                        settled: false,
                        ..
                    } => {
                        delivered += 1;
                        let _ = server.disposition(delivery, accepted(), true);
                    }
                    _ => {}
                }
            }
            if let Some(bytes) = server.poll_transmit() {
                out.extend_from_slice(&bytes);
            }
            rest = tail;
        }
        server.handle_timeout(now + std::time::Duration::from_secs(3600));
        if let Some(bytes) = server.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        assert!(
            server.is_finished(),
            "seed {seed}: an hour of silence ends any connection"
        );
        // `units` panics unless the output is a well-formed stream.
        let _ = units(&out);
        if delivered > 0 {
            seeds_past_handshake += 1;
        }
    }
    // Most corruptions land in the AMQP part of the stream, so most runs
    // must get as far as a delivery: proof the mutations are not all
    // stopped at the door.
    assert!(
        seeds_past_handshake > SEEDS / 4,
        "only {seeds_past_handshake} of {SEEDS} runs reached a delivery"
    );
}
