//! Link and session lifecycles: detach, refusal, end.

use std::time::Duration;

use bytes::Bytes;

use super::util::*;
use crate::amqp::engine::{ConnectionConfig, EngineError, Event, LinkId, LinkReply};
use crate::amqp::types::{Detach, End, Error, Performative, Role, condition};

#[test]
fn a_peer_detach_is_answered() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("short-lived");
    pair.client
        .detach(sender, true, None)
        .expect("detach an attached link");
    // A second detach before the answer is a no-op.
    pair.client
        .detach(sender, true, None)
        .expect("detach is idempotent");
    pair.drive();

    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == receiver]
    );
    assert_events!(
        pair.client_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == sender]
    );
    // One detach each way: the server answered, the client did not answer
    // the answer.
    let detaches = |wire: &[u8]| {
        performatives(wire)
            .into_iter()
            .filter(|(_, p)| matches!(p, Performative::Detach(Detach { closed: true, .. })))
            .count()
    };
    assert_eq!(detaches(&pair.client_wire), 1);
    assert_eq!(detaches(&pair.server_wire), 1);
    // The link is gone on both sides; its handle can be reused.
    assert_eq!(
        pair.client.send(sender, tag(0), message(0), false),
        Err(EngineError::NoSuchLink)
    );
    assert_eq!(
        pair.server.flow(receiver, 1, false),
        Err(EngineError::NoSuchLink)
    );
    let (again, _) = pair.attach(sender.session, link_options("short-lived", Role::Sender));
    assert_eq!(again.handle, sender.handle);
}

#[test]
fn a_refused_link_is_attached_then_detached_with_the_error() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let sender = pair
        .client
        .attach(session, link_options("forbidden", Role::Sender))
        .expect("attach");
    pair.drive();
    let server_link = match pair.server_events().as_slice() {
        [
            Event::LinkAttached {
                link,
                initiated_by_peer: true,
                ..
            },
        ] => *link,
        other => panic!("expected LinkAttached, got {other:#?}"),
    };
    let error = Error::new(condition::NOT_FOUND, "no such queue");
    pair.server
        .refuse_link(server_link, error.clone())
        .expect("refuse a link the peer attached");
    // It can be answered only once.
    assert_eq!(
        pair.server.accept_link(server_link, LinkReply::default()),
        Err(EngineError::NotAttached)
    );
    pair.drive();

    assert_events!(
        pair.client_events(),
        [
            Event::LinkAttached { link, remote, initiated_by_peer: false }
            if *link == sender && remote.source.is_none() && remote.target.is_none(),
            Event::LinkDetached { link, closed: true, error: Some(e) } if *link == sender && *e == error,
        ]
    );
    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == server_link]
    );
    assert!(!pair.client.is_finished());
}

#[test]
fn a_peer_end_detaches_its_links_then_ends_the_session() {
    let mut pair = Pair::connected();
    let (session, server_session) = pair.begin();
    let (a, server_a) = pair.attach(session, link_options("a", Role::Sender));
    let (b, server_b) = pair.attach(session, link_options("b", Role::Receiver));
    let error = Error::new(condition::DETACH_FORCED, "going away");
    pair.client
        .end(session, Some(error.clone()))
        .expect("end a mapped session");
    pair.drive();

    assert_events!(
        pair.server_events(),
        [
            Event::LinkDetached { link, closed: false, error: None } if *link == server_a,
            Event::LinkDetached { link, closed: false, error: None } if *link == server_b,
            Event::SessionEnded { session: s, error: Some(e) } if *s == server_session && *e == error,
        ]
    );
    assert_events!(
        pair.client_events(),
        [
            Event::LinkDetached { link, .. } if *link == a,
            Event::LinkDetached { link, .. } if *link == b,
            Event::SessionEnded { session: s, error: None } if *s == session,
        ]
    );
    let ends = |wire: &[u8]| {
        performatives(wire)
            .into_iter()
            .filter(|(_, p)| matches!(p, Performative::End(End { .. })))
            .count()
    };
    assert_eq!(ends(&pair.client_wire), 1);
    assert_eq!(ends(&pair.server_wire), 1);
    assert_eq!(
        pair.server.flow(server_b, 1, false),
        Err(EngineError::NoSuchSession)
    );
    // The channel is free again.
    let (again, _) = pair.begin();
    assert_eq!(again, session);
    assert!(!pair.server.is_finished());
}

/// The race the engine must survive: the receiver opens its session window
/// while the sender's detach is in flight. Transfers still queued for the
/// detached link must not be written after the detach, or the receiver sees
/// them on an unattached handle and kills the connection.
#[test]
fn queued_transfers_do_not_follow_a_detach() {
    let server = ConnectionConfig {
        session_window: 4,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), server);
    let (sender, receiver) = pair.sender("racing");
    pair.grant(sender, receiver, 100);
    for i in 0..10 {
        pair.send(sender, i);
    }
    // The window's worth reaches the server, which opens the window again...
    assert!(pair.client_to_server());
    assert_eq!(pair.server_events().len(), 4);
    // ...while the client, not knowing yet, detaches.
    pair.client
        .detach(sender, true, None)
        .expect("detach an attached link");
    assert!(pair.server_to_client(), "the server's window update");
    pair.drive();

    assert_events!(
        pair.server_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == receiver]
    );
    assert_events!(
        pair.client_events(),
        [Event::LinkDetached { link, closed: true, error: None } if *link == sender]
    );
    assert!(
        !pair.server.is_finished(),
        "{:#?}",
        performatives(&pair.server_wire).last()
    );
    assert!(!pair.client.is_finished());
}

#[test]
fn commands_on_unknown_ids_are_errors() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    let nowhere = LinkId {
        session,
        handle: 42,
    };
    assert_eq!(
        pair.client.send(nowhere, Bytes::new(), Bytes::new(), false),
        Err(EngineError::NoSuchLink)
    );
    assert_eq!(
        pair.client.detach(nowhere, false, None),
        Err(EngineError::NoSuchLink)
    );
    let other_session = LinkId {
        session: crate::amqp::engine::SessionId(9),
        handle: 0,
    };
    assert_eq!(
        pair.client.flow(other_session, 1, false),
        Err(EngineError::NoSuchSession)
    );
    assert_eq!(
        pair.client.end(other_session.session, None),
        Err(EngineError::NoSuchSession)
    );
    // Nothing went out, and the connection is fine.
    assert!(pair.client.poll_transmit().is_none());
    pair.advance(Duration::ZERO);
    assert!(!pair.client.is_finished());
}

/// The same race for `end`: transfers queued behind the session window must
/// not be written after our `end`, where the peer no longer has the session.
#[test]
fn queued_transfers_do_not_follow_an_end() {
    let server = ConnectionConfig {
        session_window: 4,
        ..server_config()
    };
    let mut pair = Pair::connected_with(client_config(), server);
    let (sender, receiver) = pair.sender("ending");
    pair.grant(sender, receiver, 100);
    for i in 0..10 {
        pair.send(sender, i);
    }
    assert!(pair.client_to_server());
    assert_eq!(pair.server_events().len(), 4);
    pair.client
        .end(sender.session, None)
        .expect("end a mapped session");
    // Once ended, the session's links take no more commands.
    assert_eq!(
        pair.client.send(sender, tag(10), message(10), false),
        Err(EngineError::NotAttached)
    );
    assert_eq!(
        pair.client
            .attach(sender.session, link_options("late", Role::Sender)),
        Err(EngineError::NoSuchSession)
    );
    assert!(pair.server_to_client(), "the server's window update");
    pair.drive();

    assert_events!(
        pair.server_events(),
        [
            Event::LinkDetached { link, .. } if *link == receiver,
            Event::SessionEnded { session, error: None } if *session == receiver.session,
        ]
    );
    assert_events!(
        pair.client_events(),
        [
            Event::LinkDetached { link, .. } if *link == sender,
            Event::SessionEnded { session, error: None } if *session == sender.session,
        ]
    );
    assert!(
        !pair.server.is_finished(),
        "{:#?}",
        performatives(&pair.server_wire).last()
    );
}

/// Both sides begin a session at once, both on channel 0: each must answer
/// the other's on a fresh channel and route frames by the channel mapping,
/// not by equal numbers.
#[test]
fn simultaneous_begins_map_channels_both_ways() {
    let mut pair = Pair::connected();
    let client_session = pair.client.begin().expect("begin");
    let server_session = pair.server.begin().expect("begin");
    assert_eq!((client_session.0, server_session.0), (0, 0));
    pair.drive();
    // Each side answered the other's begin on its channel 1.
    assert_events!(
        pair.client_events(),
        [
            Event::SessionBegun { session, remote } if session.0 == 1 && remote.remote_channel.is_none(),
            Event::SessionBegun { session, remote } if *session == client_session && remote.remote_channel == Some(0),
        ]
    );
    assert_events!(
        pair.server_events(),
        [
            Event::SessionBegun { session, remote } if session.0 == 1 && remote.remote_channel.is_none(),
            Event::SessionBegun { session, remote } if *session == server_session && remote.remote_channel == Some(0),
        ]
    );

    // The client's session 0 is the server's session 1.
    let (sender, receiver) = pair.attach(client_session, link_options("mapped", Role::Sender));
    assert_eq!(receiver.session.0, 1);
    pair.grant(sender, receiver, 1);
    let delivery = pair.send(sender, 0);
    pair.drive();
    let server_delivery = match pair.server_events().as_slice() {
        [Event::Delivery { delivery, .. }] => *delivery,
        other => panic!("expected one delivery, got {other:#?}"),
    };
    assert_eq!(server_delivery.link, receiver);
    pair.server
        .disposition(server_delivery, accepted(), true)
        .expect("settle");
    pair.drive();
    assert_eq!(
        pair.client_events(),
        vec![Event::Disposition {
            delivery,
            state: accepted(),
            settled: true
        }]
    );
    // Ending the server's session 0 ends the client's session 1.
    pair.server.end(server_session, None).expect("end");
    pair.drive();
    assert_events!(
        pair.client_events(),
        [Event::SessionEnded { session, .. } if session.0 == 1]
    );
    assert_events!(
        pair.server_events(),
        [Event::SessionEnded { session, .. } if *session == server_session]
    );
}

#[test]
fn detaching_an_unanswered_link_attaches_it_first() {
    let mut pair = Pair::connected();
    let (session, _) = pair.begin();
    pair.client
        .attach(session, link_options("unanswered", Role::Sender))
        .expect("attach");
    pair.drive();
    let server_link = match pair.server_events().as_slice() {
        [Event::LinkAttached { link, .. }] => *link,
        other => panic!("expected LinkAttached, got {other:#?}"),
    };
    pair.server
        .detach(server_link, true, None)
        .expect("detach a link the peer attached");
    pair.drive();

    // The peer must have seen the handle in an attach before the detach.
    let server_frames: Vec<&'static str> = performatives(&pair.server_wire)
        .iter()
        .map(|(_, p)| p.name())
        .filter(|name| matches!(*name, "attach" | "detach"))
        .collect();
    assert_eq!(server_frames, ["attach", "detach"]);
}
