//! Fuzz target: arbitrary bytes, split at arbitrary points, fed to the
//! cluster transport's frame decoder and handshake acceptor.
//!
//! The first byte chooses what the bytes stand for, and the split points:
//! - a stranger's whole stream, from its Hello on;
//! - what follows an honest dialer's Hello (the Proof, and beyond);
//! - what follows a complete honest handshake (batches).
//!
//! Properties:
//! - nothing panics, whatever arrives, in whatever pieces;
//! - each decoded frame consumed exactly its header and body, and "need more
//!   bytes" consumed nothing;
//! - an answered Hello gets exactly one well-formed Challenge;
//! - without the cluster secret, nothing authenticates: no Proof verifies and
//!   no Batch opens (forging either means forging HMAC-SHA256).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice::raft::transport::frame::{
    Decoder, FRAME_BYTES_MAX, Frame, HANDSHAKE_FRAME_BYTES_MAX, HEADER_BYTES, Kind,
};
use sluice::raft::transport::handshake::{
    Acceptor, ClusterKey, Dialer, NONCE_BYTES, Opener, TAG_BYTES,
};
use sluice::io::{SeededRng, seeded_rng};

const DIALER: u64 = 1;
const ACCEPTOR: u64 = 2;
const SECRET: &[u8] = b"the fuzzer never learns this secret";

enum State {
    AwaitingHello,
    AwaitingProof(Acceptor),
    Open(Opener),
}

fn decode_one(bytes: &Bytes) -> Frame {
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = Decoder::new(HANDSHAKE_FRAME_BYTES_MAX)
        .decode(&mut buf)
        .expect("our own frame decodes")
        .expect("our own frame is whole");
    assert!(buf.is_empty(), "bytes after our own frame");
    frame
}

/// The acceptor's state after an honest Hello, and after a whole honest
/// handshake.
fn honest(key: &ClusterKey, rng: &mut SeededRng, handshake_done: bool) -> State {
    let (dialer, hello) = Dialer::new(key, DIALER, ACCEPTOR, rng);
    let (acceptor, challenge) = Acceptor::handle_hello(
        key,
        ACCEPTOR,
        |node| node == DIALER,
        rng,
        decode_one(&hello),
    )
    .expect("an honest hello is answered");
    if !handshake_done {
        return State::AwaitingProof(acceptor);
    }
    let (_, proof) = dialer
        .handle_challenge(decode_one(&challenge))
        .expect("an honest challenge verifies");
    let session = acceptor
        .handle_proof(decode_one(&proof))
        .expect("an honest proof verifies");
    State::Open(session.opener)
}

/// Feeds one frame to the acceptor; `None` once it has refused.
fn step(state: State, frame: Frame, key: &ClusterKey, rng: &mut SeededRng) -> Option<State> {
    match state {
        State::AwaitingHello => {
            let (acceptor, challenge) =
                Acceptor::handle_hello(key, ACCEPTOR, |node| node == DIALER, rng, frame).ok()?;
            let challenge = decode_one(&challenge);
            assert_eq!(challenge.kind, Kind::Challenge);
            assert_eq!(challenge.body.len(), 8 + NONCE_BYTES + TAG_BYTES);
            Some(State::AwaitingProof(acceptor))
        }
        State::AwaitingProof(acceptor) => {
            assert!(
                acceptor.handle_proof(frame).is_err(),
                "a proof verified without the secret"
            );
            None
        }
        State::Open(mut opener) => {
            assert!(
                opener.open(frame).is_err(),
                "a batch opened without the session key"
            );
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let key = ClusterKey::new(SECRET);
    let mut rng = seeded_rng(u64::from(selector));
    let mut state = match selector % 3 {
        0 => State::AwaitingHello,
        1 => honest(&key, &mut rng, false),
        _ => honest(&key, &mut rng, true),
    };
    let mut chunk = usize::from(selector / 3) % 32 + 1;
    let mut buf = BytesMut::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(chunk.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(piece);
        loop {
            let decoder = match state {
                State::Open(_) => Decoder::new(FRAME_BYTES_MAX),
                _ => Decoder::new(HANDSHAKE_FRAME_BYTES_MAX),
            };
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert_eq!(before - buf.len(), HEADER_BYTES + frame.body.len());
                    match step(state, frame, &key, &mut rng) {
                        Some(next) => state = next,
                        None => return,
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting consumed bytes");
                    break;
                }
                Err(_) => return,
            }
        }
        chunk = (chunk * 7 + usize::from(selector)) % 61 + 1;
    }
});
