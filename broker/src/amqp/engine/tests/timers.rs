//! Timers: idle timeout, heartbeats, and the close handshake's wait.

use std::time::Duration;

use super::util::*;
use crate::amqp::engine::{ClientSasl, ConnectionConfig, Event};
use crate::amqp::frame::{EMPTY_FRAME, ProtocolId};
use crate::amqp::types::{Error, condition};

const SECOND: Duration = Duration::from_secs(1);
const MILLI: Duration = Duration::from_millis(1);

fn idle(config: ConnectionConfig, timeout: Option<Duration>) -> ConnectionConfig {
    ConnectionConfig {
        idle_timeout: timeout,
        ..config
    }
}

#[test]
fn a_silent_peer_trips_the_idle_timeout() {
    let mut pair = Pair::connected_with(client_config(), idle(server_config(), Some(SECOND)));
    // The client advertised 60 s, so the server's own 1 s timeout is due first.
    assert_eq!(pair.server.poll_timeout(), Some(pair.start + SECOND));

    // Nothing is delivered while time passes.
    pair.advance(SECOND - MILLI);
    assert!(!pair.server.is_finished());
    assert_events!(pair.server_events(), []);
    pair.advance(MILLI);
    assert!(pair.server.is_finished());
    assert_events!(
        pair.server_events(),
        [e if closed_locally(e, condition::RESOURCE_LIMIT_EXCEEDED)]
    );
    assert_eq!(pair.server.poll_timeout(), None);

    pair.drive();
    assert_eq!(
        close_condition(&pair.server_wire),
        condition::RESOURCE_LIMIT_EXCEEDED
    );
    assert_events!(
        pair.client_events(),
        [e if closed_remotely(e, condition::RESOURCE_LIMIT_EXCEEDED)]
    );
    assert!(pair.client.is_finished());
}

/// The client enforces a 1 s idle timeout and advertises half of it; the
/// server sends an empty frame every half of what it advertises, 250 ms of
/// silence, so over 60 virtual seconds nobody times out and nothing but
/// heartbeats crosses the wire.
#[test]
fn server_heartbeats_keep_the_client_alive() {
    let mut pair = Pair::connected_with(
        idle(client_config(), Some(SECOND)),
        idle(server_config(), None),
    );
    let (client_wire_len, server_wire_len) = (pair.client_wire.len(), pair.server_wire.len());
    assert_eq!(
        pair.server.poll_timeout(),
        Some(pair.start + SECOND / 4),
        "heartbeat at half what the client advertises"
    );
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.start + SECOND),
        "the client's idle timeout"
    );

    // The first heartbeat is exactly one empty frame, exactly on time.
    assert!(pair.step());
    assert_eq!(pair.elapsed(), SECOND / 4);
    assert_eq!(
        pair.server.poll_transmit().as_deref(),
        Some(&EMPTY_FRAME[..])
    );
    assert!(pair.client.poll_transmit().is_none());
    pair.client.handle_bytes(pair.now, &EMPTY_FRAME);
    assert_eq!(pair.client.poll_timeout(), Some(pair.now + SECOND));
    assert_eq!(pair.server.poll_timeout(), Some(pair.now + SECOND / 4));
    let mut heartbeats = 1;

    // (That first heartbeat was delivered by hand, so `server_wire` lacks it.)
    while pair.elapsed() < 60 * SECOND {
        assert!(pair.step(), "the server always has a heartbeat due");
        pair.drive();
        heartbeats += 1;
    }
    assert_eq!(heartbeats, 240);
    assert!(!pair.client.is_finished());
    assert!(!pair.server.is_finished());
    assert_events!(pair.client_events(), []);
    assert_events!(pair.server_events(), []);
    // The server sent heartbeats and nothing else; the client, told of no
    // server timeout, sent nothing.
    let since = &pair.server_wire[server_wire_len..];
    assert_eq!(since.len(), 239 * EMPTY_FRAME.len());
    assert!(since.chunks(EMPTY_FRAME.len()).all(|c| c == EMPTY_FRAME));
    assert_eq!(pair.client_wire.len(), client_wire_len);
}

/// The mirror image: the server's 1 s idle timeout never trips while the
/// client heartbeats. The server advertises half of it, 500 ms, and the
/// client sends a frame every half of that.
#[test]
fn client_heartbeats_keep_the_server_alive() {
    let mut pair = Pair::connected_with(
        idle(client_config(), None),
        idle(server_config(), Some(SECOND)),
    );
    let client_wire_len = pair.client_wire.len();
    while pair.elapsed() < 60 * SECOND {
        assert!(pair.step());
        pair.drive();
    }
    assert!(!pair.server.is_finished());
    assert_events!(pair.server_events(), []);
    let since = &pair.client_wire[client_wire_len..];
    assert_eq!(since.len(), 240 * EMPTY_FRAME.len());
    assert!(since.chunks(EMPTY_FRAME.len()).all(|c| c == EMPTY_FRAME));
}

#[test]
fn a_spurious_timeout_does_nothing() {
    let mut pair = Pair::connected();
    let (client_deadline, server_deadline) =
        (pair.client.poll_timeout(), pair.server.poll_timeout());
    pair.advance(Duration::ZERO);
    pair.advance(SECOND);
    assert!(pair.client.poll_transmit().is_none());
    assert!(pair.server.poll_transmit().is_none());
    assert_events!(pair.client_events(), []);
    assert_events!(pair.server_events(), []);
    assert_eq!(pair.client.poll_timeout(), client_deadline);
    assert_eq!(pair.server.poll_timeout(), server_deadline);
}

#[test]
fn close_is_answered_and_both_sides_finish() {
    let mut pair = Pair::connected();
    let error = Error::new(condition::CONNECTION_FORCED, "shutting down");
    pair.client.close(pair.now, Some(error.clone()));
    // Waiting for the answer is bounded by the close timeout.
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(10))
    );
    pair.drive();
    assert_events!(
        pair.server_events(),
        [Event::Closed { local: None, remote: Some(e) } if *e == error]
    );
    // Our own close's error is reported back with the peer's answer.
    assert_events!(
        pair.client_events(),
        [Event::Closed { local: Some(e), remote: None } if *e == error]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
    assert_eq!(closing(&pair.client_wire).error, Some(error));
    assert_eq!(closing(&pair.server_wire).error, None);
}

#[test]
fn an_unanswered_close_finishes_after_the_close_timeout() {
    let mut pair = Pair::connected();
    pair.client.close(pair.now, None);
    // The server never hears of it.
    assert!(pair.client.poll_transmit().is_some());
    let deadline = pair.now + Duration::from_secs(10);
    assert_eq!(pair.client.poll_timeout(), Some(deadline));

    pair.advance(Duration::from_secs(10) - MILLI);
    assert!(!pair.client.is_finished());
    assert!(
        pair.client.poll_transmit().is_none(),
        "no heartbeats after close"
    );
    pair.advance(MILLI);
    assert!(pair.client.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
    // The end is reported even though the peer never answered.
    assert_events!(
        pair.client_events(),
        [Event::Closed {
            local: None,
            remote: None
        }]
    );
}

/// A client that connects and says nothing is dropped at the idle timeout,
/// without AMQP frames on a stream that never reached the AMQP layer.
#[test]
fn the_idle_timeout_bounds_a_silent_handshake() {
    let now = base_instant();
    let mut server = lone_server(
        idle(server_config(), Some(SECOND)),
        TestAuth::default(),
        now,
    );
    assert_eq!(server.poll_timeout(), Some(now + SECOND));
    server.handle_timeout(now + SECOND - MILLI);
    assert!(!server.is_finished());
    server.handle_timeout(now + SECOND);
    assert!(server.is_finished());
    assert!(
        matches!(server.poll_event(), Some(ref e) if closed_locally(e, condition::RESOURCE_LIMIT_EXCEEDED))
    );
    assert_eq!(server.poll_event(), None);
    assert_eq!(
        server.poll_transmit(),
        None,
        "nothing may be written before a protocol header"
    );
}

/// The same for a client that stalls in the middle of SASL: the server must
/// not write AMQP frames into the SASL layer.
#[test]
fn the_idle_timeout_bounds_a_stalled_sasl_exchange() {
    let mut pair = Pair::new(
        client_config(),
        ClientSasl::Anonymous,
        idle(server_config(), Some(SECOND)),
        TestAuth::default(),
    );
    // Only the client's SASL header reaches the server; it answers with its
    // header and mechanisms, then hears nothing more.
    assert!(pair.client_to_server());
    let answer = pair.server.poll_transmit().expect("header and mechanisms");
    let units_before = units(&answer);
    assert_eq!(units_before.len(), 2);
    assert_eq!(units_before[0], Unit::Header(ProtocolId::Sasl.header()));

    pair.advance(SECOND);
    assert!(pair.server.is_finished());
    assert_events!(
        pair.server_events(),
        [e if closed_locally(e, condition::RESOURCE_LIMIT_EXCEEDED)]
    );
    assert_eq!(
        pair.server.poll_transmit(),
        None,
        "no AMQP frames in the SASL layer"
    );
}

/// Traffic is as good as a heartbeat: a client sending every 200 ms (more
/// often than half of the 500 ms the server advertises) sends no empty
/// frames, and the server's 1 s idle timeout never trips.
#[test]
fn traffic_makes_heartbeats_unnecessary() {
    let mut pair = Pair::connected_with(
        idle(client_config(), None),
        idle(server_config(), Some(SECOND)),
    );
    let (sender, receiver) = pair.sender("chatty");
    pair.grant(sender, receiver, 100);
    let client_wire_len = pair.client_wire.len();
    for i in 0..50 {
        pair.advance(Duration::from_millis(200));
        pair.send(sender, i);
        pair.drive();
        assert_events!(pair.server_events(), [Event::Delivery { .. }]);
    }
    assert_eq!(pair.elapsed(), 10 * SECOND);
    assert!(!pair.server.is_finished());
    let units = units(&pair.client_wire[client_wire_len..]);
    assert_eq!(units.len(), 50);
    assert!(!units.iter().any(|u| matches!(
        u,
        Unit::Frame {
            frame: crate::amqp::frame::Frame::Empty,
            ..
        }
    )));
}

#[test]
fn frames_after_our_close_are_ignored() {
    let mut pair = Pair::connected();
    let (sender, receiver) = pair.sender("closing");
    pair.grant(sender, receiver, 5);
    pair.server.close(pair.now, None);
    // The client sends before it hears of the close.
    pair.client
        .send(sender, tag(0), message(0), false)
        .expect("send");
    pair.drive();
    let events = pair.server_events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Delivery { .. })),
        "a delivery after our close: {events:#?}"
    );
    assert!(pair.server.is_finished());
}
