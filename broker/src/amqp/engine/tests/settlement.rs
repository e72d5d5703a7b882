//! Settlement modes and dispositions.

use super::util::*;
use crate::amqp::engine::{ConnectionConfig, DeliveryId, EngineError, Event};
use crate::amqp::types::{Performative, ReceiverSettleMode, Role, SenderSettleMode};

#[test]
fn pre_settled_sends_leave_nothing_unsettled() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("at-most-once");
    pair.grant(sender, receiver, 10);

    let delivery = pair
        .client
        .send(sender, tag(0), message(0), true)
        .expect("send under credit");
    pair.drive();
    assert_events!(
        pair.server_events(),
        [Event::Delivery { delivery: d, settled: true, state: None, .. } if d.id == delivery.id]
    );
    let transfer = performatives(&pair.client_wire)
        .into_iter()
        .find_map(|(_, p)| match p {
            Performative::Transfer(t) => Some(t),
            _ => None,
        })
        .expect("the client sent a transfer");
    assert_eq!(transfer.settled, Some(true));

    // Neither side has it as unsettled, so neither can disposition it.
    assert_eq!(
        pair.server.disposition(
            DeliveryId {
                link: receiver,
                id: delivery.id
            },
            accepted(),
            true
        ),
        Err(EngineError::NoSuchDelivery)
    );
    assert_eq!(
        pair.client.disposition(delivery, accepted(), true),
        Err(EngineError::NoSuchDelivery)
    );
    pair.drive();
    assert_events!(pair.client_events(), []);
}

#[test]
fn a_settled_sender_mode_settles_every_delivery() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let options = crate::amqp::engine::LinkOptions {
        snd_settle_mode: SenderSettleMode::Settled,
        ..link_options("fire-and-forget", Role::Sender)
    };
    let (sender, receiver) = pair.attach(session, options);
    pair.grant(sender, receiver, 3);
    for i in 0..3 {
        pair.send(sender, i);
    }
    pair.drive();
    assert_events!(
        pair.server_events(),
        [
            Event::Delivery { settled: true, .. },
            Event::Delivery { settled: true, .. },
            Event::Delivery { settled: true, .. },
        ]
    );
}

/// A receiver that does not honour rcv-settle-mode `second` answers
/// `first`, and the sender uses the mode the receiver answered.
#[test]
fn a_receiver_answers_first_unless_it_honours_second() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let options = crate::amqp::engine::LinkOptions {
        rcv_settle_mode: ReceiverSettleMode::Second,
        ..link_options("at-least-once", Role::Sender)
    };
    let (sender, receiver) = pair.attach(session, options);
    assert_eq!(
        pair.server.rcv_settle_mode(receiver),
        Some(ReceiverSettleMode::First)
    );
    assert_eq!(
        pair.client.rcv_settle_mode(sender),
        Some(ReceiverSettleMode::First)
    );
}

/// Receiver settles second (exactly once), where the receiver honours it:
/// the receiver's outcome arrives unsettled, the sender settles, and the
/// receiver learns it is settled.
#[test]
fn rcv_settle_mode_second_settles_in_two_steps() {
    let honours_second = ConnectionConfig {
        rcv_settle_second: true,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), honours_second);
    let (session, _) = pair.begin();
    let options = crate::amqp::engine::LinkOptions {
        rcv_settle_mode: ReceiverSettleMode::Second,
        ..link_options("exactly-once", Role::Sender)
    };
    let (sender, receiver) = pair.attach(session, options);
    pair.grant(sender, receiver, 1);

    let delivery = pair.send(sender, 0);
    pair.drive();
    let server_delivery = match pair.server_events().as_slice() {
        [
            Event::Delivery {
                delivery,
                settled: false,
                rcv_settle_mode: ReceiverSettleMode::Second,
                ..
            },
        ] => *delivery,
        other => panic!("expected one delivery in mode second, got {other:#?}"),
    };

    // 1. The receiver's outcome, not settled.
    pair.server
        .disposition(server_delivery, accepted(), false)
        .expect("an unsettled delivery");
    pair.drive();
    assert_eq!(
        pair.client_events(),
        vec![Event::Disposition {
            delivery,
            state: accepted(),
            settled: false
        }]
    );

    // 2. The sender settles.
    pair.client
        .disposition(delivery, accepted(), true)
        .expect("still unsettled at the sender");
    pair.drive();
    assert_eq!(
        pair.server_events(),
        vec![Event::Disposition {
            delivery: server_delivery,
            state: accepted(),
            settled: true
        }]
    );

    // Both have forgotten it.
    assert_eq!(
        pair.client.disposition(delivery, accepted(), true),
        Err(EngineError::NoSuchDelivery)
    );
    assert_eq!(
        pair.server.disposition(server_delivery, accepted(), true),
        Err(EngineError::NoSuchDelivery)
    );
    // The dispositions on the wire carried the right roles.
    let client_disposition =
        performatives(&pair.client_wire)
            .into_iter()
            .find_map(|(_, p)| match p {
                Performative::Disposition(d) => Some(d),
                _ => None,
            });
    assert!(
        matches!(client_disposition, Some(d) if d.role == Role::Sender && d.settled && d.first == 0)
    );
}

/// Dispositions the application queued before ending the session (or
/// closing the connection) must reach the peer before the `end` (or
/// `close`): after it, the peer can no longer apply them.
#[test]
fn dispositions_queued_before_end_go_out_before_it() {
    let mut pair = Pair::connected();
    let (session, server_session) = pair.begin();
    let (sender, receiver) = pair.attach(session, link_options("ending", Role::Sender));
    pair.grant(sender, receiver, 3);
    for i in 0..3 {
        pair.send(sender, i);
    }
    pair.drive();
    for event in pair.server_events() {
        let Event::Delivery { delivery, .. } = event else {
            panic!("expected a delivery, got {event:#?}");
        };
        pair.server
            .disposition(delivery, accepted(), true)
            .expect("an unsettled delivery");
    }
    pair.server
        .end(server_session, None)
        .expect("end a mapped session");
    pair.drive();

    assert_events!(
        pair.client_events(),
        [
            Event::Disposition { settled: true, .. },
            Event::Disposition { settled: true, .. },
            Event::Disposition { settled: true, .. },
            Event::LinkDetached { link, closed: false, error: None } if *link == sender,
            Event::SessionEnded { session: s, error: None } if *s == session,
        ]
    );
    assert_events!(
        pair.server_events(),
        [
            Event::LinkDetached { link, closed: false, error: None } if *link == receiver,
            Event::SessionEnded { session: s, error: None } if *s == server_session,
        ]
    );
    assert!(!pair.client.is_finished());
    assert!(!pair.server.is_finished());
}

#[test]
fn dispositions_queued_before_close_go_out_before_it() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("closing");
    pair.grant(sender, receiver, 2);
    pair.send(sender, 0);
    pair.send(sender, 1);
    pair.drive();
    for event in pair.server_events() {
        let Event::Delivery { delivery, .. } = event else {
            panic!("expected a delivery, got {event:#?}");
        };
        pair.server
            .disposition(delivery, accepted(), true)
            .expect("an unsettled delivery");
    }
    pair.server.close(pair.now, None);
    pair.drive();
    assert_events!(
        pair.client_events(),
        [
            Event::Disposition { delivery, settled: true, .. } if delivery.id == 0,
            Event::Disposition { delivery, settled: true, .. } if delivery.id == 1,
            Event::Closed {
                local: None,
                remote: None,
            },
        ]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
}
