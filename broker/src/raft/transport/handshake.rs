//! Mutual authentication with the cluster secret, and the integrity of every
//! batch after it. Sans-IO: frames in, frames out, randomness from the
//! caller's seeded RNG.
//!
//! The secret never crosses the wire. Each side proves it knows the secret
//! by a MAC over both node ids and both nonces:
//!
//! ```text
//! dialer   → Hello     { version, dialer id, acceptor id, nonce_d }
//! acceptor → Challenge { acceptor id, nonce_a, mac_a }
//! dialer   → Proof     { mac_d }
//!
//! transcript  = version | dialer id | acceptor id | nonce_d | nonce_a
//! mac_a       = HMAC(secret, "sluice-cluster acceptor\0" | transcript)
//! mac_d       = HMAC(secret, "sluice-cluster dialer\0"   | transcript)
//! session key = HMAC(secret, "sluice-cluster session\0"  | transcript)
//! ```
//!
//! Distinct labels stop a MAC from being reflected back as the other
//! side's; fresh nonces on both sides stop a recorded handshake from being
//! replayed. A relay that forwards both sides' frames unchanged gains
//! nothing: it never learns the session key.
//!
//! Each batch then carries `seq u64 | count u32 | (len u32 | payload)* |
//! tag[32]`, with `tag = HMAC(session key, direction | everything before
//! the tag)`. The sequence number starts at 0 and grows by one per batch in
//! each direction, so a batch cannot be forged, altered, replayed,
//! reordered, dropped from the middle, or reflected to its sender without
//! the receiver noticing.
//!
//! The handshake is a typestate rather than a `handle_*`/`poll_*` machine:
//! with three messages and no timers, each step consumes its state and
//! returns the frame to send, which leaves no wrong order to call it in.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::frame::{self, FRAME_BYTES_MAX, Frame, FrameError, Kind};
use crate::io::SeededRng;

/// The transport's protocol version, first in every Hello.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes in each side's nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes in a MAC or a batch tag (HMAC-SHA256).
pub const TAG_BYTES: usize = 32;

/// A batch's fixed fields: sequence number, count and tag.
pub const BATCH_OVERHEAD_BYTES: usize = 8 + 4 + TAG_BYTES;

/// What each payload adds to a batch besides its bytes: its length.
pub const PAYLOAD_OVERHEAD_BYTES: usize = 4;

/// Room in one batch frame for payloads and their lengths.
pub const BATCH_PAYLOAD_BYTES_MAX: usize = FRAME_BYTES_MAX as usize - 1 - BATCH_OVERHEAD_BYTES;

/// The largest payload a batch can carry: one alone in a full frame.
pub const PAYLOAD_BYTES_MAX: usize = BATCH_PAYLOAD_BYTES_MAX - PAYLOAD_OVERHEAD_BYTES;

const ACCEPTOR_LABEL: &[u8] = b"sluice-cluster acceptor\0";
const DIALER_LABEL: &[u8] = b"sluice-cluster dialer\0";
const SESSION_LABEL: &[u8] = b"sluice-cluster session\0";

/// The direction byte each batch tag starts with.
const DIALER_TO_ACCEPTOR: u8 = 0;
const ACCEPTOR_TO_DIALER: u8 = 1;

const TRANSCRIPT_BYTES: usize = 1 + 8 + 8 + NONCE_BYTES + NONCE_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// Why a peer's frame was refused. Each closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The byte stream did not split into frames.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame of the wrong kind for this stage.
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedFrame {
        /// What this stage takes.
        expected: Kind,
        /// What arrived.
        got: Kind,
    },
    /// The body ended inside the named field.
    #[error("{0}: missing data")]
    MissingData(&'static str),
    /// Bytes after the last field of the named frame.
    #[error("{0}: trailing data")]
    TrailingData(&'static str),
    /// The dialer speaks another protocol version.
    #[error("protocol version {0}; this node speaks {PROTOCOL_VERSION}")]
    Version(u8),
    /// The dialer meant to reach another node (stale address book).
    #[error("the peer dialled node {wanted}, but this is node {local}")]
    NotForUs {
        /// The node the dialer expected.
        wanted: u64,
        /// This node.
        local: u64,
    },
    /// Another node answered than the one dialled.
    #[error("node {got} answered, but node {expected} was dialled")]
    WrongPeer {
        /// The node dialled.
        expected: u64,
        /// The node that answered.
        got: u64,
    },
    /// The dialer claims a node id that is not in the configuration.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    /// The peer's MAC does not verify: it does not know the cluster secret.
    #[error("the peer's proof of the cluster secret does not verify")]
    BadProof,
    /// A batch's tag does not verify: forged, altered or reflected.
    #[error("a batch failed its integrity check")]
    BadTag,
    /// An authentic batch out of sequence: replayed, reordered or after a
    /// lost one.
    #[error("batch {got} arrived where batch {expected} was due")]
    OutOfOrder {
        /// The sequence number due.
        expected: u64,
        /// The one that arrived.
        got: u64,
    },
}

/// The cluster secret, ready to MAC with. The secret itself is not kept
/// apart from the HMAC state, and is never printed.
#[derive(Clone)]
pub struct ClusterKey(HmacSha256);

impl ClusterKey {
    /// Keys HMAC-SHA256 with the cluster secret.
    pub fn new(secret: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// The MAC state after `label | transcript`, to finalize or verify.
    fn mac(&self, label: &[u8], transcript: &Transcript) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.update(&transcript.0);
        mac
    }

    fn tag(&self, label: &[u8], transcript: &Transcript) -> [u8; TAG_BYTES] {
        self.mac(label, transcript).finalize().into_bytes().into()
    }

    /// Compares in constant time (`hmac`'s `verify_slice`).
    fn verify(
        &self,
        label: &[u8],
        transcript: &Transcript,
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), ProtocolError> {
        self.mac(label, transcript)
            .verify_slice(tag)
            .map_err(|_| ProtocolError::BadProof)
    }

    fn session(&self, transcript: &Transcript, local_is_dialer: bool, peer: u64) -> Session {
        let key = self.tag(SESSION_LABEL, transcript);
        let key = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
        let (send, receive) = if local_is_dialer {
            (DIALER_TO_ACCEPTOR, ACCEPTOR_TO_DIALER)
        } else {
            (ACCEPTOR_TO_DIALER, DIALER_TO_ACCEPTOR)
        };
        Session {
            peer,
            sealer: Sealer {
                key: key.clone(),
                direction: send,
                seq: 0,
            },
            opener: Opener {
                key,
                direction: receive,
                seq: 0,
            },
        }
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Everything both MACs and the session key are bound to.
#[derive(Debug)]
struct Transcript([u8; TRANSCRIPT_BYTES]);

impl Transcript {
    fn new(
        dialer: u64,
        acceptor: u64,
        nonce_d: &[u8; NONCE_BYTES],
        nonce_a: &[u8; NONCE_BYTES],
    ) -> Self {
        let mut bytes = Vec::with_capacity(TRANSCRIPT_BYTES);
        bytes.put_u8(PROTOCOL_VERSION);
        bytes.put_u64(dialer);
        bytes.put_u64(acceptor);
        bytes.put_slice(nonce_d);
        bytes.put_slice(nonce_a);
        Self(bytes.try_into().expect("the transcript's fields fill it"))
    }
}

fn nonce(rng: &mut SeededRng) -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    nonce
}

fn encode(kind: Kind, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    frame::put_frame(kind, body, &mut out);
    out.freeze()
}

fn expect_kind(frame: &Frame, expected: Kind) -> Result<(), ProtocolError> {
    if frame.kind == expected {
        Ok(())
    } else {
        Err(ProtocolError::UnexpectedFrame {
            expected,
            got: frame.kind,
        })
    }
}

/// The dialing side, between its Hello and the acceptor's Challenge.
#[derive(Debug)]
pub struct Dialer {
    key: ClusterKey,
    local: u64,
    remote: u64,
    nonce: [u8; NONCE_BYTES],
}

impl Dialer {
    /// Starts a handshake from node `local` to node `remote`; returns the
    /// Hello frame to send.
    pub fn new(key: &ClusterKey, local: u64, remote: u64, rng: &mut SeededRng) -> (Self, Bytes) {
        let dialer = Self {
            key: key.clone(),
            local,
            remote,
            nonce: nonce(rng),
        };
        let mut body = Vec::with_capacity(1 + 8 + 8 + NONCE_BYTES);
        body.put_u8(PROTOCOL_VERSION);
        body.put_u64(local);
        body.put_u64(remote);
        body.put_slice(&dialer.nonce);
        (dialer, encode(Kind::Hello, &body))
    }

    /// Checks the acceptor's Challenge; returns the session and the Proof
    /// frame to send.
    pub fn handle_challenge(self, frame: Frame) -> Result<(Session, Bytes), ProtocolError> {
        expect_kind(&frame, Kind::Challenge)?;
        let mut r = Reader::new(&frame.body);
        let acceptor = r.u64("challenge node id")?;
        let nonce_a = r.array::<NONCE_BYTES>("challenge nonce")?;
        let mac_a = r.array::<TAG_BYTES>("challenge mac")?;
        r.expect_empty("challenge")?;
        if acceptor != self.remote {
            return Err(ProtocolError::WrongPeer {
                expected: self.remote,
                got: acceptor,
            });
        }
        let transcript = Transcript::new(self.local, self.remote, &self.nonce, &nonce_a);
        self.key.verify(ACCEPTOR_LABEL, &transcript, &mac_a)?;
        let proof = self.key.tag(DIALER_LABEL, &transcript);
        let session = self.key.session(&transcript, true, self.remote);
        Ok((session, encode(Kind::Proof, &proof)))
    }
}

/// The accepting side, between its Challenge and the dialer's Proof.
#[derive(Debug)]
pub struct Acceptor {
    key: ClusterKey,
    remote: u64,
    transcript: Transcript,
}

impl Acceptor {
    /// Answers a Hello sent to node `local`, if it comes from a node for
    /// which `is_peer` holds; returns the state awaiting the Proof and the
    /// Challenge frame to send.
    pub fn handle_hello(
        key: &ClusterKey,
        local: u64,
        is_peer: impl Fn(u64) -> bool,
        rng: &mut SeededRng,
        frame: Frame,
    ) -> Result<(Self, Bytes), ProtocolError> {
        expect_kind(&frame, Kind::Hello)?;
        let mut r = Reader::new(&frame.body);
        let version = r.u8("hello version")?;
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(version));
        }
        let dialer = r.u64("hello node id")?;
        let wanted = r.u64("hello peer id")?;
        let nonce_d = r.array::<NONCE_BYTES>("hello nonce")?;
        r.expect_empty("hello")?;
        if wanted != local {
            return Err(ProtocolError::NotForUs { wanted, local });
        }
        if dialer == local || !is_peer(dialer) {
            return Err(ProtocolError::UnknownPeer(dialer));
        }
        let nonce_a = nonce(rng);
        let transcript = Transcript::new(dialer, local, &nonce_d, &nonce_a);
        let mut body = Vec::with_capacity(8 + NONCE_BYTES + TAG_BYTES);
        body.put_u64(local);
        body.put_slice(&nonce_a);
        body.put_slice(&key.tag(ACCEPTOR_LABEL, &transcript));
        let acceptor = Self {
            key: key.clone(),
            remote: dialer,
            transcript,
        };
        Ok((acceptor, encode(Kind::Challenge, &body)))
    }

    /// Checks the dialer's Proof; returns the session with the now
    /// authenticated peer.
    pub fn handle_proof(self, frame: Frame) -> Result<Session, ProtocolError> {
        expect_kind(&frame, Kind::Proof)?;
        let mut r = Reader::new(&frame.body);
        let mac_d = r.array::<TAG_BYTES>("proof mac")?;
        r.expect_empty("proof")?;
        self.key.verify(DIALER_LABEL, &self.transcript, &mac_d)?;
        Ok(self.key.session(&self.transcript, false, self.remote))
    }
}

/// An authenticated connection's two directions, which the driver uses
/// from separate futures.
#[derive(Debug)]
pub struct Session {
    /// The peer's node id, proven by the handshake.
    pub peer: u64,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the peer sends.
    pub opener: Opener,
}

/// Seals payloads into Batch frames.
pub struct Sealer {
    key: HmacSha256,
    direction: u8,
    seq: u64,
}

impl Sealer {
    /// Appends one Batch frame carrying `payloads` to `out`. The caller
    /// keeps their total within [`BATCH_PAYLOAD_BYTES_MAX`], counting
    /// [`PAYLOAD_OVERHEAD_BYTES`] each; none is a heartbeat.
    pub fn seal(&mut self, payloads: &[Bytes], out: &mut BytesMut) {
        let payload_bytes: usize = payloads
            .iter()
            .map(|payload| PAYLOAD_OVERHEAD_BYTES + payload.len())
            .sum();
        assert!(
            payload_bytes <= BATCH_PAYLOAD_BYTES_MAX,
            "batch of {payload_bytes} bytes over the maximum"
        );
        frame::put_header(Kind::Batch, BATCH_OVERHEAD_BYTES + payload_bytes, out);
        let body_start = out.len();
        out.put_u64(self.seq);
        out.put_u32(u32::try_from(payloads.len()).expect("bounded by the batch size"));
        for payload in payloads {
            out.put_u32(u32::try_from(payload.len()).expect("bounded by the batch size"));
            out.put_slice(payload);
        }
        let tag = tag(&self.key, self.direction, &out[body_start..]);
        out.put_slice(&tag.finalize().into_bytes());
        self.seq += 1;
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("seq", &self.seq).finish()
    }
}

/// Checks and unpacks Batch frames.
pub struct Opener {
    key: HmacSha256,
    direction: u8,
    seq: u64,
}

impl Opener {
    /// Verifies one Batch frame and returns its payloads, as slices of the
    /// frame. The tag is checked before anything is parsed.
    pub fn open(&mut self, frame: Frame) -> Result<Vec<Bytes>, ProtocolError> {
        expect_kind(&frame, Kind::Batch)?;
        let body = frame.body;
        let signed_bytes = body
            .len()
            .checked_sub(TAG_BYTES)
            .ok_or(ProtocolError::MissingData("batch tag"))?;
        let (signed, received_tag) = body.split_at(signed_bytes);
        tag(&self.key, self.direction, signed)
            .verify_slice(received_tag)
            .map_err(|_| ProtocolError::BadTag)?;

        let mut r = Reader::new(signed);
        let seq = r.u64("batch seq")?;
        if seq != self.seq {
            return Err(ProtocolError::OutOfOrder {
                expected: self.seq,
                got: seq,
            });
        }
        self.seq += 1;
        let count = r.u32("batch count")?;
        // Each payload takes at least its length field: a larger count
        // cannot be honest, and must not size the allocation below.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > r.remaining() / PAYLOAD_OVERHEAD_BYTES {
            return Err(ProtocolError::MissingData("batch payloads"));
        }
        let mut payloads = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32("payload length")?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            payloads.push(body.slice_ref(r.take(len, "payload")?));
        }
        r.expect_empty("batch")?;
        Ok(payloads)
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener").field("seq", &self.seq).finish()
    }
}

/// The MAC state over `direction | signed`.
fn tag(key: &HmacSha256, direction: u8, signed: &[u8]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(&[direction]);
    mac.update(signed);
    mac
}

/// A bounded cursor over a frame body, rustls style: never reads past the
/// end, and names the field it was reading when data runs out.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if len > self.rest.len() {
            return Err(ProtocolError::MissingData(field));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ProtocolError::MissingData(field))?;
        self.rest = rest;
        Ok(*taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        self.array::<1>(field).map(|[byte]| byte)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn expect_empty(&self, frame: &'static str) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingData(frame))
        }
    }
}

#[cfg(test)]
mod tests;
