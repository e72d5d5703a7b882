//! Link credit, drain, and session windows.

use bytes::{Bytes, BytesMut};

use super::util::*;
use crate::amqp::codec::{Symbol, Value};
use crate::amqp::engine::{ConnectionConfig, EngineError, Event, LinkId};
use crate::amqp::types::{
    DeliveryState, Fields, Flow, Performative, Role, TransactionalState, condition,
};

#[test]
fn send_without_credit_is_refused() {
    let mut pair = Pair::connected();
    let (sender, _) = pair.sender("no-credit");
    assert_eq!(pair.client.credit(sender), 0);
    assert_eq!(
        pair.client.send(sender, tag(0), message(0), false),
        Err(EngineError::NoCredit)
    );
    pair.drive();
    assert_events!(pair.server_events(), []);
}

#[test]
fn a_transfer_without_credit_detaches_the_link() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("greedy");
    // The server never granted credit; the client sends anyway.
    let mut raw = BytesMut::new();
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 0, false),
        &message(0),
    );
    pair.inject_to_server(&raw);
    pair.drive();

    assert_events!(
        pair.client_events(),
        [
            Event::LinkDetached { link, closed: true, error: Some(e) }
            if *link == sender && e.condition == condition::TRANSFER_LIMIT_EXCEEDED,
        ]
    );
    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == receiver]
    );
    assert!(!pair.server.is_finished());
}

#[test]
fn drain_hands_unused_credit_back() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("drained");

    pair.server
        .flow(receiver, 5, true)
        .expect("flow on a receiving link");
    pair.drive();
    assert_events!(
        pair.client_events(),
        [Event::Credit { link, credit: 5, drain: true, available: None } if *link == sender]
    );
    assert_eq!(pair.client.credit(sender), 5);

    // Use two, give the other three back.
    pair.send(sender, 0);
    pair.send(sender, 1);
    pair.client
        .drain_complete(sender)
        .expect("drain on a sending link");
    assert_eq!(pair.client.credit(sender), 0);
    assert_eq!(
        pair.client.send(sender, tag(2), message(2), false),
        Err(EngineError::NoCredit)
    );
    pair.drive();
    assert_events!(
        pair.server_events(),
        [
            Event::Delivery { delivery, .. } if delivery.id == 0,
            Event::Delivery { delivery, .. } if delivery.id == 1,
            Event::Credit { link, credit: 0, .. } if *link == receiver,
        ]
    );
    assert_eq!(pair.server.credit(receiver), 0);

    // The sender's flow carried its delivery-count advanced past the
    // returned credit, so new credit counts from there.
    let flow = performatives(&pair.client_wire)
        .into_iter()
        .rev()
        .find_map(|(_, p)| match p {
            Performative::Flow(flow) => Some(flow),
            _ => None,
        })
        .expect("the sender answered the drain");
    assert_eq!(flow.delivery_count, Some(5));
    assert_eq!(flow.link_credit, Some(0));

    pair.grant(sender, receiver, 3);
    pair.send(sender, 2);
    pair.drive();
    assert_events!(
        pair.server_events(),
        [Event::Delivery { delivery, .. } if delivery.id == 2]
    );
}

#[test]
fn drain_complete_needs_a_sending_link() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("roles");
    assert_eq!(
        pair.server.drain_complete(receiver),
        Err(EngineError::WrongRole)
    );
    assert_eq!(
        pair.client.flow(sender, 1, false),
        Err(EngineError::WrongRole)
    );
}

/// The sender never overruns the receiver's session window: 50 transfers
/// through a window of 4 all arrive, in order, without a violation.
#[test]
fn transfers_wait_for_the_session_window() {
    let server = ConnectionConfig {
        session_window: 4,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), server);
    let (sender, receiver) = pair.sender("windowed");
    pair.grant(sender, receiver, 100);
    for i in 0..50 {
        pair.send(sender, i);
    }
    // Only the window's worth went out at once.
    let first_burst = pair.client.poll_transmit().expect("transfers");
    let burst = performatives(&first_burst);
    assert_eq!(burst.len(), 4, "{burst:#?}");
    pair.inject_to_server(&first_burst);
    pair.drive();

    let events = pair.server_events();
    assert_eq!(events.len(), 50, "{events:#?}");
    for (i, event) in (0..).zip(&events) {
        assert!(
            matches!(event, Event::Delivery { delivery, .. } if delivery.id == i),
            "{event:#?}"
        );
    }
    // The server reopened its window with session-level flows.
    let session_flows = performatives(&pair.server_wire)
        .into_iter()
        .filter(|(_, p)| matches!(p, Performative::Flow(Flow { handle: None, .. })))
        .count();
    assert!(session_flows >= 12, "{session_flows} window updates");
    assert!(!pair.server.is_finished());
}

#[test]
fn a_flow_asking_for_echo_is_answered_with_the_link_state() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("echo");
    pair.grant(sender, receiver, 7);
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(sender.handle),
        delivery_count: Some(0),
        link_credit: Some(7),
        echo: true,
        ..Flow::default()
    };
    let mut raw = BytesMut::new();
    raw_frame(&mut raw, 0, &flow, &[]);
    pair.inject_to_server(&raw);
    assert_events!(
        pair.server_events(),
        [Event::Credit { link, credit: 7, drain: false, available: None } if *link == receiver]
    );
    let answer = pair.server.poll_transmit().expect("the echo");
    let answer = performatives(&answer);
    assert!(
        matches!(
            answer.as_slice(),
            [(0, Performative::Flow(Flow { handle: Some(h), link_credit: Some(7), delivery_count: Some(0), echo: false, .. }))]
                if *h == receiver.handle
        ),
        "{answer:#?}"
    );
}

#[test]
fn a_delivery_tag_longer_than_32_bytes_is_refused() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("long-tags");
    pair.grant(sender, receiver, 1);
    let long_tag = bytes::Bytes::from(vec![7; 33]);
    assert_eq!(
        pair.client.send(sender, long_tag, message(0), false),
        Err(EngineError::TagTooLong(33))
    );
    // The credit is still there for a legal send.
    assert_eq!(pair.client.credit(sender), 1);
    pair.client
        .send(sender, bytes::Bytes::from(vec![7; 32]), message(0), false)
        .expect("a 32-byte tag is legal");
}

/// A link `name` on which the client was granted 3 and sent 3 transfers,
/// still in flight (returned), when the server lowered the credit to 1.
fn three_sent_then_credit_lowered(name: &str) -> (Pair, LinkId, LinkId, Bytes) {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender(name);
    pair.grant(sender, receiver, 3);
    for i in 0..3 {
        pair.send(sender, i);
    }
    let in_flight = pair.client.poll_transmit().expect("three transfers");
    pair.server
        .flow(receiver, 1, false)
        .expect("flow on a receiving link");
    (pair, sender, receiver, in_flight)
}

/// Credit is relative to delivery-count (spec §2.6.7), so a sender may use
/// what it was granted until it sees a flow that lowers it. Transfers it
/// sent before that flow reached it are legal and must be taken; only a
/// transfer past the highest limit ever advertised is a violation.
#[test]
fn transfers_in_flight_when_credit_is_lowered_are_taken() {
    // The receiver lowers its credit before the transfers arrive.
    let (mut pair, sender, _, in_flight) = three_sent_then_credit_lowered("raced");
    pair.inject_to_server(&in_flight);
    assert_events!(
        pair.server_events(),
        [
            Event::Delivery { delivery, .. } if delivery.id == 0,
            Event::Delivery { delivery, .. } if delivery.id == 1,
            Event::Delivery { delivery, .. } if delivery.id == 2,
        ]
    );

    // One more, past the 3 ever granted, is a violation all the same.
    let mut raw = BytesMut::new();
    raw_frame(
        &mut raw,
        0,
        &first_transfer(sender.handle, 3, false),
        &message(3),
    );
    pair.inject_to_server(&raw);
    pair.drive();
    assert!(
        pair.client_events().iter().any(|event| matches!(
            event,
            Event::LinkDetached { link, closed: true, error: Some(e) }
                if *link == sender && e.condition == condition::TRANSFER_LIMIT_EXCEEDED
        )),
        "the fourth transfer detached the link"
    );
    assert!(!pair.server.is_finished());
}

/// `raise_credit` grants only what the sender does not hold already, so an
/// application counting deliveries behind the engine never takes credit
/// back.
#[test]
fn raise_credit_never_lowers_the_senders_credit() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("raised");
    pair.grant(sender, receiver, 5);
    pair.send(sender, 0);
    pair.send(sender, 1);
    pair.drive();
    assert_eq!(pair.server_events().len(), 2);
    assert_eq!(pair.server.credit(receiver), 3);

    assert_eq!(pair.server.raise_credit(receiver, 3), Ok(false));
    assert_eq!(pair.server.poll_transmit(), None, "no flow for no raise");
    assert_eq!(pair.server.raise_credit(receiver, 4), Ok(true));
    pair.drive();
    assert_events!(
        pair.client_events(),
        [Event::Credit { link, credit: 4, drain: false, .. } if *link == sender]
    );
    assert_eq!(pair.client.credit(sender), 4);
    assert_eq!(
        pair.client.raise_credit(sender, 1),
        Err(EngineError::WrongRole)
    );
}

/// A sender that sees credit lowered below what it has already sent has
/// none left, rather than a negative credit wrapped around to 2^32 − 2.
#[test]
fn a_sender_whose_credit_is_lowered_under_its_transfers_has_none_left() {
    // The lowering flow, at delivery-count 0, reaches the sender first.
    let (mut pair, sender, receiver, in_flight) = three_sent_then_credit_lowered("lowered");
    assert!(pair.server_to_client());
    assert_events!(
        pair.client_events(),
        [Event::Credit { link, credit: 0, drain: false, .. } if *link == sender]
    );
    assert_eq!(pair.client.credit(sender), 0);
    assert_eq!(
        pair.client.send(sender, tag(3), message(3), false),
        Err(EngineError::NoCredit)
    );

    // Once the transfers are in, new credit counts from them.
    pair.inject_to_server(&in_flight);
    assert_eq!(pair.server_events().len(), 3);
    pair.grant(sender, receiver, 2);
    pair.send(sender, 3);
    pair.drive();
    assert_events!(
        pair.server_events(),
        [Event::Delivery { delivery, .. } if delivery.id == 3]
    );
}

/// A flow from the client's receiver `receiver` granting 10 credits,
/// with `properties`.
fn acquiring_flow(receiver: LinkId, properties: Fields) -> BytesMut {
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(receiver.handle),
        delivery_count: Some(0),
        link_credit: Some(10),
        properties,
        ..Flow::default()
    };
    let mut raw = BytesMut::new();
    raw_frame(&mut raw, 0, &flow, &[]);
    raw
}

/// A receiver that names a transaction in its flow's properties acquires
/// in it (AMQP 1.0 §4.4.3): the sender hears so once, and each unsettled
/// transfer carries the transaction's state until a flow without it.
#[test]
fn a_flow_with_a_txn_id_makes_transfers_transactional_until_one_without() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let (receiver, sender) = pair.attach(session, link_options("acquirer", Role::Receiver));
    let txn_id = Bytes::from_static(b"\0\0\0\0\0\0\0\x07");
    let flow = |properties: Fields| acquiring_flow(receiver, properties);
    let txn_property = vec![(Symbol::from_static("txn-id"), Value::Binary(txn_id.clone()))];
    pair.inject_to_server(&flow(txn_property.clone()));
    assert_events!(
        pair.server_events(),
        [
            Event::Acquiring { link, txn_id: Some(id) } if *link == sender && *id == txn_id,
            Event::Credit { link, credit: 10, .. } if *link == sender,
        ]
    );
    // The same transaction again is no news.
    pair.inject_to_server(&flow(txn_property));
    assert_events!(
        pair.server_events(),
        [Event::Credit { link, .. } if *link == sender]
    );
    let transfer_state = |pair: &mut Pair, settled: bool| {
        pair.server
            .send(sender, tag(0), message(0), settled)
            .expect("credit to send");
        let wire = pair.server.poll_transmit().expect("the transfer");
        match performatives(&wire).as_slice() {
            [(_, Performative::Transfer(transfer))] => transfer.state.clone(),
            other => panic!("{other:#?}"),
        }
    };
    assert_eq!(
        transfer_state(&mut pair, false),
        Some(DeliveryState::Transactional(TransactionalState {
            txn_id: txn_id.clone(),
            outcome: None
        }))
    );
    assert_eq!(
        transfer_state(&mut pair, true),
        None,
        "what is sent settled is not acquired"
    );
    pair.inject_to_server(&flow(Vec::new()));
    assert_events!(
        pair.server_events(),
        [
            Event::Acquiring { link, txn_id: None } if *link == sender,
            Event::Credit { link, .. } if *link == sender,
        ]
    );
    assert_eq!(transfer_state(&mut pair, false), None);
}

/// A controller's publish in a transaction (§4.4.1): the transfer names
/// the transaction; a plain send on the same link names none.
#[test]
fn a_transactional_send_names_its_transaction() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let (receiver, sender) = pair.attach(session, link_options("publisher", Role::Receiver));
    pair.inject_to_server(&acquiring_flow(receiver, Vec::new()));
    assert_events!(
        pair.server_events(),
        [Event::Credit { link, credit: 10, .. } if *link == sender]
    );
    let txn_id = Bytes::from_static(b"\0\0\0\0\0\0\0\x03");
    let transfer_state = |pair: &mut Pair, txn_id: Option<Bytes>| {
        let sent = match txn_id {
            Some(txn_id) => pair
                .server
                .send_transactional(sender, tag(0), message(0), txn_id),
            None => pair.server.send(sender, tag(1), message(1), false),
        };
        sent.expect("credit to send");
        let wire = pair.server.poll_transmit().expect("the transfer");
        match performatives(&wire).as_slice() {
            [(_, Performative::Transfer(transfer))] => (transfer.state.clone(), transfer.settled),
            other => panic!("{other:#?}"),
        }
    };
    let state = DeliveryState::Transactional(TransactionalState {
        txn_id: txn_id.clone(),
        outcome: None,
    });
    let (transactional, settled) = transfer_state(&mut pair, Some(txn_id));
    assert_eq!(transactional, Some(state));
    assert_ne!(settled, Some(true), "a transactional publish is unsettled");
    assert_eq!(transfer_state(&mut pair, None).0, None);
}

/// A txn-id longer than a transaction id may be (32 bytes) names no
/// transaction and would not fit the transfers' frames: the link is
/// detached, the connection stays.
#[test]
fn a_txn_id_longer_than_32_bytes_detaches_the_link() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let (receiver, sender) = pair.attach(session, link_options("greedy", Role::Receiver));
    let long = Value::Binary(Bytes::from(vec![7; 33]));
    let properties = vec![(Symbol::from_static("txn-id"), long)];
    pair.inject_to_server(&acquiring_flow(receiver, properties));
    pair.drive();
    assert_events!(
        pair.client_events(),
        [
            Event::LinkDetached { link, closed: true, error: Some(e) }
            if *link == receiver && e.condition == condition::INVALID_FIELD,
        ]
    );
    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == sender]
    );
    assert!(!pair.server.is_finished());
}

/// A drain answered while transfers are still queued behind the engine's
/// lead: the transfers reach the peer before the delivery-count that
/// counts them, so none arrives after the credit is gone.
#[test]
fn a_drain_answer_follows_the_transfers_it_counts() {
    const DELIVERIES: u32 = 200;

    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("drained");
    pair.server
        .flow(receiver, DELIVERIES + 10, true)
        .expect("flow on a receiving link");
    pair.drive();
    pair.client_events();
    for i in 0..DELIVERIES {
        pair.client
            .send(sender, tag(i), sized_message(i, 1024), false)
            .expect("send under credit");
    }
    pair.client
        .drain_complete(sender)
        .expect("drain on a sending link");
    pair.drive();
    let events = pair.server_events();
    assert_eq!(events.len(), DELIVERIES as usize + 1, "{events:#?}");
    assert!(
        events[..DELIVERIES as usize]
            .iter()
            .all(|event| matches!(event, Event::Delivery { .. }))
    );
    assert_events!(
        events[DELIVERIES as usize..].to_vec(),
        [Event::Credit { link, credit: 0, .. } if *link == receiver]
    );
    assert!(!pair.server.is_finished());
}
