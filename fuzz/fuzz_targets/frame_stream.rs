//! Fuzz target: an arbitrary byte stream, split at arbitrary points, fed to
//! a server-role engine.
//!
//! Properties:
//! - the engine never panics, whatever arrives, in whatever pieces;
//! - memory stays bounded: between inputs it buffers less than one frame of
//!   our max-frame-size, and it never emits more bytes than the input can
//!   account for (no amplification loop).
//!
//! The broker side reacts like a real one — it accepts every link, grants
//! credit and settles every delivery — so that transfers, flow and
//! disposition paths are reached, not only the handshake. The first byte of
//! the input chooses the split points, the rest is the stream.

#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice::amqp::engine::{
    AuthOutcome, Authenticator, Connection, ConnectionConfig, Event, LinkReply,
};
use sluice::amqp::types::{Accepted, DeliveryState, Role};

const MAX_FRAME_SIZE: u32 = 4096;

struct Anonymous;

impl Authenticator for Anonymous {
    fn mechanisms(&self) -> Vec<String> {
        vec!["ANONYMOUS".into(), "PLAIN".into()]
    }

    fn authenticate(&self, mechanism: &str, response: &[u8], _: Option<&str>) -> AuthOutcome {
        match (mechanism, response) {
            ("ANONYMOUS", _) | ("PLAIN", b"\0user\0pass") => AuthOutcome::Ok {
                identity: "fuzz".into(),
            },
            _ => AuthOutcome::Denied,
        }
    }

    fn unauthenticated_identity(&self) -> Option<String> {
        Some("anonymous".into())
    }
}

fn config() -> ConnectionConfig {
    let mut config = ConnectionConfig::new("fuzz-broker");
    config.max_frame_size = MAX_FRAME_SIZE;
    config.max_message_size = 64 * 1024;
    config.session_window = 16;
    config.idle_timeout = Some(Duration::from_secs(30));
    config
}

/// Reacts to events as a broker would, so that deeper states are reached.
fn react(conn: &mut Connection, event: Event) {
    match event {
        Event::LinkAttached {
            link,
            remote,
            initiated_by_peer: true,
        } => {
            let reply = LinkReply {
                source: remote.source.clone(),
                target: remote.target.clone(),
                ..LinkReply::default()
            };
            if conn.accept_link(link, reply).is_ok() && remote.role == Role::Sender {
                let _ = conn.flow(link, 8, false);
            }
        }
        Event::Credit { link, credit, drain, .. } if credit > 0 => {
            let _ = conn.send(link, bytes::Bytes::from_static(b"t"), bytes::Bytes::from_static(b"\x00\x53\x77\x45"), false);
            if drain {
                let _ = conn.drain_complete(link);
            }
        }
        Event::Delivery { delivery, settled: false, .. } => {
            let _ = conn.disposition(delivery, Some(DeliveryState::Accepted(Accepted)), true);
            let _ = conn.flow(delivery.link, 8, false);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, stream)) = data.split_first() else {
        return;
    };
    #[allow(clippy::disallowed_methods)] // The fuzzer has no seam; only differences matter.
    let mut now = Instant::now();
    let mut conn = Connection::server(config(), Arc::new(Anonymous), now);
    let mut emitted = 0usize;
    let mut rest = stream;
    let mut chunk = usize::from(split_seed % 64) + 1;
    while !rest.is_empty() && !conn.is_finished() {
        let (piece, tail) = rest.split_at(chunk.min(rest.len()));
        rest = tail;
        now += Duration::from_millis(u64::from(split_seed));
        conn.handle_bytes(now, piece);
        conn.handle_timeout(now);
        loop {
            while let Some(bytes) = conn.poll_transmit() {
                emitted += bytes.len();
            }
            let Some(event) = conn.poll_event() else { break };
            react(&mut conn, event);
        }
        assert!(
            conn.buffered_bytes() < MAX_FRAME_SIZE as usize,
            "buffered {} bytes, more than one frame",
            conn.buffered_bytes()
        );
        // Vary the split points deterministically from the seed.
        chunk = (chunk * 7 + usize::from(split_seed)) % 97 + 1;
    }
    // Every frame we send answers input; a few kilobytes of handshake and
    // answers per input byte would mean an amplification bug.
    assert!(
        emitted <= 1024 + stream.len() * 64,
        "emitted {emitted} bytes for {} input bytes",
        stream.len()
    );
});
