//! Transfers: the bulk in-memory run, multi-frame messages, size limits and
//! aborts.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use super::util::*;
use crate::amqp::engine::{
    ConnectionConfig, DeliveryId, EngineError, Event, LinkId, UnfinishedBytes,
};
use crate::amqp::frame::Frame;
use crate::amqp::types::{
    Accepted, DeliveryState, Disposition, Message, Performative, ReceiverSettleMode, Role,
    Transfer, condition,
};

/// The test: 10,000 transfers under a refilled credit window, each
/// accepted and settled by the server, every outcome seen by the client, in
/// far fewer disposition frames than deliveries; then a clean close.
#[test]
fn ten_thousand_transfers_are_accepted_in_coalesced_dispositions() {
    const DELIVERIES: u32 = 10_000;
    const CREDIT_WINDOW: u32 = 100;
    const ROUNDS_MAX: u32 = 1_000;

    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("bulk");
    pair.grant(sender, receiver, CREDIT_WINDOW);

    let mut sent = 0u32;
    let mut received = 0u32;
    // Credit the server granted that the client has not used yet.
    let mut credit_left = CREDIT_WINDOW;
    let mut outcomes = BTreeSet::new();
    let mut rounds = 0;
    while outcomes.len() < DELIVERIES as usize {
        rounds += 1;
        assert!(
            rounds <= ROUNDS_MAX,
            "no progress: sent {sent}, received {received}"
        );

        // The client sends only while it has credit.
        while sent < DELIVERIES && pair.client.credit(sender) > 0 {
            let delivery = pair.send(sender, sent);
            assert_eq!(
                delivery,
                DeliveryId {
                    link: sender,
                    id: sent
                }
            );
            sent += 1;
        }
        if sent < DELIVERIES {
            assert_eq!(
                pair.client.send(sender, tag(sent), message(sent), false),
                Err(EngineError::NoCredit)
            );
        }
        pair.drive();

        for event in pair.server_events() {
            let Event::Delivery {
                delivery,
                tag: t,
                message: m,
                settled: false,
                rcv_settle_mode: ReceiverSettleMode::First,
                state: None,
                message_format: 0,
            } = event
            else {
                panic!("expected an unsettled delivery, got {event:#?}");
            };
            assert_eq!(
                delivery,
                DeliveryId {
                    link: receiver,
                    id: received
                }
            );
            assert_eq!(t, tag(received));
            assert_eq!(m, message(received));
            pair.server
                .disposition(delivery, accepted(), true)
                .expect("an unsettled delivery");
            received += 1;
            credit_left -= 1;
        }
        // Refill the window once half of it is used.
        if credit_left <= CREDIT_WINDOW / 2 && received < DELIVERIES {
            pair.server
                .flow(receiver, CREDIT_WINDOW, false)
                .expect("flow on a receiving link");
            credit_left = CREDIT_WINDOW;
        }
        pair.drive();

        for event in pair.client_events() {
            match event {
                Event::Disposition {
                    delivery,
                    state: Some(DeliveryState::Accepted(Accepted)),
                    settled: true,
                } => {
                    assert_eq!(delivery.link, sender);
                    assert!(
                        delivery.id < sent,
                        "an outcome for a delivery never sent: {delivery:?}"
                    );
                    assert!(
                        outcomes.insert(delivery.id),
                        "a second outcome for {delivery:?}"
                    );
                }
                Event::Credit {
                    link,
                    credit,
                    drain: false,
                    available: None,
                } => {
                    assert_eq!(link, sender);
                    assert_eq!(credit, CREDIT_WINDOW);
                }
                other => panic!("unexpected client event {other:#?}"),
            }
        }
    }
    assert_eq!(sent, DELIVERIES);
    assert_eq!(received, DELIVERIES);
    assert_eq!(outcomes, (0..DELIVERIES).collect::<BTreeSet<_>>());

    // Dispositions went out as ranges: far fewer frames than deliveries,
    // together covering every delivery exactly once.
    let dispositions: Vec<Disposition> = performatives(&pair.server_wire)
        .into_iter()
        .filter_map(|(_, p)| match p {
            Performative::Disposition(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        dispositions.len() < DELIVERIES as usize / 10,
        "{} disposition frames for {DELIVERIES} deliveries",
        dispositions.len()
    );
    let mut covered = 0u32;
    for d in &dispositions {
        assert_eq!(d.role, Role::Receiver);
        assert!(d.settled);
        assert_eq!(d.state, accepted());
        assert_eq!(d.first, covered, "ranges are in order and contiguous");
        covered = d.last.unwrap_or(d.first) + 1;
    }
    assert_eq!(covered, DELIVERIES);
    let transfers = performatives(&pair.client_wire)
        .iter()
        .filter(|(_, p)| matches!(p, Performative::Transfer(_)))
        .count();
    assert_eq!(
        transfers, DELIVERIES as usize,
        "one frame per small message"
    );

    // Close both ways.
    pair.client.close(pair.now, None);
    pair.drive();
    assert_events!(
        pair.client_events(),
        [Event::Closed {
            local: None,
            remote: None
        }]
    );
    assert_events!(
        pair.server_events(),
        [Event::Closed {
            local: None,
            remote: None
        }]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(pair.server.poll_timeout(), None);
    assert_eq!(pair.client.begin(), Err(EngineError::Closed));
}

/// A 10 KB message through a 512-byte max-frame-size arrives whole, as one
/// delivery, with every frame within the limit.
fn multi_frame_message(seed: Option<u64>, session_window: u32) {
    let server = ConnectionConfig {
        max_frame_size: 512,
        session_window,
        ..server_config()
    };
    let mut pair = Pair::new(
        client_config(),
        crate::amqp::engine::ClientSasl::Anonymous,
        server,
        TestAuth::default(),
    );
    if let Some(seed) = seed {
        pair = pair.chunked(seed);
    }
    pair.handshake();
    let (sender, receiver) = pair.sender("big");
    pair.grant(sender, receiver, 2);

    let body: Vec<u8> = (0..10 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big = Message::data(body).encode();
    let delivery = pair
        .client
        .send(sender, tag(0), big.clone(), false)
        .expect("send under credit");
    // A small one after it must not overtake or interleave.
    pair.send(sender, 1);
    pair.drive();

    assert_events!(
        pair.server_events(),
        [
            Event::Delivery { delivery: d, message: m, settled: false, .. } if d.id == delivery.id && *m == big,
            Event::Delivery { delivery: d, message: m, .. } if d.id == 1 && *m == message(1),
        ]
    );
    let transfers: Vec<(u32, Transfer)> = units(&pair.client_wire)
        .into_iter()
        .filter_map(|u| match u {
            Unit::Frame {
                size,
                frame:
                    Frame::Amqp {
                        performative: Performative::Transfer(t),
                        ..
                    },
            } => Some((size, t)),
            _ => None,
        })
        .collect();
    assert!(transfers.len() > 20, "{} transfer frames", transfers.len());
    // The last frame is the whole small message; the rest are the big one.
    let (small, big_frames) = transfers.split_last().expect("transfers were sent");
    assert!(!small.1.more);
    assert_eq!(small.1.delivery_id, Some(1));
    let (tail, body_frames) = big_frames
        .split_last()
        .expect("the big message took several frames");
    assert!(!tail.1.more, "the big message's last frame ends it");
    for (i, (size, transfer)) in big_frames.iter().enumerate() {
        assert!(*size <= 512, "frame {i} is {size} bytes");
        assert_eq!(
            transfer.delivery_id.is_some(),
            i == 0,
            "only the first frame names the delivery"
        );
    }
    for (size, transfer) in body_frames {
        assert!(transfer.more);
        assert_eq!(*size, 512, "continuation frames are filled");
    }
    assert!(!pair.server.is_finished());
}

#[test]
fn multi_frame_message_is_reassembled() {
    multi_frame_message(None, 2048);
}

#[test]
fn multi_frame_message_is_reassembled_across_arbitrary_splits() {
    for seed in 0..8 {
        multi_frame_message(Some(seed), 2048);
    }
}

#[test]
fn multi_frame_message_crosses_a_small_session_window() {
    multi_frame_message(None, 4);
}

#[test]
fn a_message_above_the_receivers_max_message_size_detaches_the_link() {
    let server = ConnectionConfig {
        max_message_size: 1000,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), server);
    let (sender, receiver) = pair.sender("limited");
    pair.grant(sender, receiver, 10);

    // The sender learned the limit from the server's attach.
    assert_eq!(
        pair.client
            .send(sender, tag(0), Bytes::from(vec![0u8; 1001]), false),
        Err(EngineError::MessageTooLarge {
            size: 1001,
            max: 1000
        })
    );
    assert_eq!(
        pair.client.credit(sender),
        10,
        "a refused send uses no credit"
    );

    // A sender that ignores it: three frames, 600 + 600 + 100 bytes.
    let mut raw = BytesMut::new();
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 0, true),
        &[1; 600],
    );
    raw_frame(
        &mut raw,
        0,
        &Transfer {
            handle: sender.handle,
            more: true,
            ..Transfer::default()
        },
        &[2; 600],
    );
    raw_frame(
        &mut raw,
        0,
        &Transfer {
            handle: sender.handle,
            ..Transfer::default()
        },
        &[3; 100],
    );
    pair.inject_to_server(&raw);
    pair.drive();

    assert_events!(
        pair.client_events(),
        [
            Event::LinkDetached { link, closed: true, error: Some(e) }
            if *link == sender && e.condition == condition::MESSAGE_SIZE_EXCEEDED,
        ]
    );
    // The server saw no delivery, only the client's answer to its detach.
    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == receiver]
    );
    assert!(
        !pair.server.is_finished(),
        "a link error does not close the connection"
    );
    assert!(!pair.client.is_finished());
}

/// Injects one transfer of `len` bytes on the client's `link`, the first
/// of delivery `first` if given.
fn inject_transfer(pair: &mut Pair, link: LinkId, first: Option<u32>, len: usize, more: bool) {
    let transfer = match first {
        Some(id) => first_transfer(link.handle, id, more),
        None => Transfer {
            handle: link.handle,
            more,
            ..Transfer::default()
        },
    };
    let mut raw = BytesMut::new();
    raw_frame(&mut raw, link.session.0, &transfer, &vec![7; len]);
    pair.inject_to_server(&raw);
    pair.drive();
}

#[test]
fn unfinished_messages_of_every_connection_share_one_pool() {
    let pool = UnfinishedBytes::new(1500);
    let server = || ConnectionConfig {
        unfinished: Some(pool.clone()),
        ..server_config()
    };
    let mut first = Pair::connected_with(client_config(), server());
    let mut second = Pair::connected_with(client_config(), server());
    let (hog, hog_receiver) = first.sender("hog");
    first.grant(hog, hog_receiver, 10);
    let (other, other_receiver) = first.sender("other");
    first.grant(other, other_receiver, 10);
    let (modest, modest_receiver) = second.sender("modest");
    second.grant(modest, modest_receiver, 10);

    inject_transfer(&mut first, hog, Some(0), 1000, true);
    inject_transfer(&mut second, modest, Some(0), 400, true);
    assert_eq!(pool.held_bytes(), 1400);

    // 200 more would take the pool to 1600: the hog's link goes, and what
    // it held returns to the pool.
    inject_transfer(&mut first, hog, None, 200, true);
    assert_events!(
        first.client_events(),
        [
            Event::LinkDetached { link, closed: true, error: Some(e) }
            if *link == hog && e.condition == condition::RESOURCE_LIMIT_EXCEEDED
                && e.description.as_deref().is_some_and(|d| d.contains("at most 1500 bytes")),
        ]
    );
    assert_events!(
        first.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == hog_receiver]
    );
    assert_eq!(pool.held_bytes(), 400);

    // The other connection's message completes in the room freed.
    inject_transfer(&mut second, modest, None, 600, true);
    inject_transfer(&mut second, modest, None, 100, false);
    assert_events!(
        second.server_events(),
        [
            Event::Delivery { delivery, message, .. }
            if delivery.link == modest_receiver && message.len() == 1100,
        ]
    );
    assert_eq!(pool.held_bytes(), 0);

    // The hog's connection carries on with its other link.
    inject_transfer(&mut first, other, Some(0), 1000, true);
    inject_transfer(&mut first, other, None, 400, false);
    assert_events!(
        first.server_events(),
        [
            Event::Delivery { delivery, message, .. }
            if delivery.link == other_receiver && message.len() == 1400,
        ]
    );
    assert!(!first.server.is_finished());

    // A connection that goes away gives back what its links held.
    inject_transfer(&mut first, other, Some(1), 900, true);
    assert_eq!(pool.held_bytes(), 900);
    drop(first);
    assert_eq!(pool.held_bytes(), 0);
}

#[test]
fn an_aborted_transfer_yields_no_delivery() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("abort");
    pair.grant(sender, receiver, 10);

    let mut raw = BytesMut::new();
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 0, true),
        b"half a mess",
    );
    raw_frame(
        &mut raw,
        0,
        &Transfer {
            handle: sender.handle,
            aborted: true,
            ..Transfer::default()
        },
        &[],
    );
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 1, false),
        &message(1),
    );
    pair.inject_to_server(&raw);

    assert_events!(
        pair.server_events(),
        [Event::Delivery { delivery, message: m, .. } if delivery.id == 1 && *m == message(1)]
    );
    // The aborted delivery used credit but left nothing to settle.
    assert_eq!(pair.server.credit(receiver), 8);
    assert_eq!(
        pair.server.disposition(
            DeliveryId {
                link: receiver,
                id: 0
            },
            accepted(),
            true
        ),
        Err(EngineError::NoSuchDelivery)
    );
    assert_eq!(
        pair.server.disposition(
            DeliveryId {
                link: receiver,
                id: 1
            },
            accepted(),
            true
        ),
        Ok(())
    );
    pair.drive();
    assert!(!pair.server.is_finished());
}

/// The server as sender: the client attaches a receiver, grants credit, and
/// settles what arrives.
#[test]
fn server_sends_to_a_client_receiver() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let (receiver, sender) = pair.attach(session, link_options("consumer", Role::Receiver));
    assert_eq!(
        pair.server.send(sender, tag(0), message(0), false),
        Err(EngineError::NoCredit)
    );
    assert_eq!(
        pair.client.send(receiver, tag(0), message(0), false),
        Err(EngineError::WrongRole)
    );
    assert_eq!(
        pair.server.flow(sender, 3, false),
        Err(EngineError::WrongRole)
    );

    pair.client
        .flow(receiver, 3, false)
        .expect("flow on a receiving link");
    pair.drive();
    assert_events!(
        pair.server_events(),
        [Event::Credit { link, credit: 3, drain: false, .. } if *link == sender]
    );
    for i in 0..3 {
        let d = pair
            .server
            .send(sender, tag(i), message(i), false)
            .expect("send under credit");
        assert_eq!(d.id, i);
    }
    assert_eq!(pair.server.credit(sender), 0);
    pair.drive();
    let events = pair.client_events();
    assert_eq!(events.len(), 3, "{events:#?}");
    for (i, event) in (0..).zip(events) {
        let Event::Delivery {
            delivery,
            message: m,
            ..
        } = event
        else {
            panic!("expected a delivery, got {event:#?}");
        };
        assert_eq!(
            delivery,
            DeliveryId {
                link: receiver,
                id: i
            }
        );
        assert_eq!(m, message(i));
        pair.client
            .disposition(delivery, accepted(), true)
            .expect("an unsettled delivery");
    }
    pair.drive();
    let events = pair.server_events();
    let expected: Vec<Event> = (0..3)
        .map(|id| Event::Disposition {
            delivery: DeliveryId { link: sender, id },
            state: accepted(),
            settled: true,
        })
        .collect();
    assert_eq!(events, expected);
}

/// Under a credit window far larger than the engine encodes ahead, the
/// transfers leave as output is taken, a bounded amount per poll, every one
/// in order: the engine holds queued messages, not their frames.
#[test]
fn transfers_under_a_large_credit_window_are_encoded_as_output_is_taken() {
    const DELIVERIES: u32 = 1_000;
    const MESSAGE_BYTES: usize = 1024;
    // What one poll may carry: the engine's lead, plus the frame that
    // crossed it.
    const POLL_MAX: usize = 64 * 1024 + MESSAGE_BYTES + 64;

    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("deep");
    pair.grant(sender, receiver, DELIVERIES);
    for i in 0..DELIVERIES {
        pair.client
            .send(sender, tag(i), sized_message(i, MESSAGE_BYTES), false)
            .expect("send under credit");
    }
    let mut polls = 0;
    while let Some(bytes) = pair.client.poll_transmit() {
        assert!(
            bytes.len() <= POLL_MAX,
            "poll {polls} carried {} bytes",
            bytes.len()
        );
        polls += 1;
        pair.inject_to_server(&bytes);
    }
    assert!(polls >= 15, "a megabyte of transfers left in {polls} polls");
    let received: Vec<u32> = pair
        .server_events()
        .into_iter()
        .map(|event| match event {
            Event::Delivery {
                delivery, message, ..
            } => {
                assert_eq!(message, sized_message(delivery.id, MESSAGE_BYTES));
                delivery.id
            }
            other => panic!("expected a delivery, got {other:#?}"),
        })
        .collect();
    assert_eq!(received, (0..DELIVERIES).collect::<Vec<_>>());
}

/// Sessions share the output: one with a deep queue of transfers does not
/// hold back another's until it has written them all.
#[test]
fn sessions_with_queued_transfers_take_turns() {
    const DELIVERIES: u32 = 500;
    const MESSAGE_BYTES: usize = 1024;

    let mut pair = Pair::connected();
    let (busy, busy_receiver) = pair.sender("busy");
    let (other, other_receiver) = pair.sender("other");
    pair.grant(busy, busy_receiver, DELIVERIES);
    pair.grant(other, other_receiver, 1);
    for i in 0..DELIVERIES {
        pair.client
            .send(busy, tag(i), sized_message(i, MESSAGE_BYTES), false)
            .expect("send under credit");
    }
    pair.client
        .send(other, tag(0), sized_message(0, MESSAGE_BYTES), false)
        .expect("send under credit");
    let mut busy_before_other = 0;
    while let Some(bytes) = pair.client.poll_transmit() {
        pair.inject_to_server(&bytes);
        let events = pair.server_events();
        if events.iter().any(
            |event| matches!(event, Event::Delivery { delivery, .. } if delivery.link == other_receiver),
        ) {
            break;
        }
        busy_before_other += events.len();
    }
    assert!(
        busy_before_other < 100,
        "{busy_before_other} of the busy link's transfers went before the other's one"
    );
}
