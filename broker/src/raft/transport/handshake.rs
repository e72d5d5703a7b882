//! Mutual authentication with the cluster secret, and the secrecy and
//! integrity of every batch after it. Sans-IO: frames in, frames out,
//! randomness from the caller's RNG.
//!
//! The secret never crosses the wire, and nothing that does lets anyone
//! test guesses of it offline: the two sides run SPAKE2 (a
//! password-authenticated key exchange) on the secret, and each proves it
//! got the same key by a MAC under that key.
//!
//! ```text
//! dialer   → Hello     { version, dialer id, acceptor id, pake_d }
//! acceptor → Challenge { acceptor id, pake_a, confirm_a }
//! dialer   → Proof     { confirm_d }
//!
//! K           = SPAKE2(secret, pake_d, pake_a)   (symmetric, Ed25519 group)
//! transcript  = version | dialer id | acceptor id | pake_d | pake_a
//! confirm_a   = HMAC(K, "sluice-cluster acceptor\0" | transcript)
//! confirm_d   = HMAC(K, "sluice-cluster dialer\0"   | transcript)
//! key d→a     = HMAC(K, "sluice-cluster dialer to acceptor\0" | transcript)
//! key a→d     = HMAC(K, "sluice-cluster acceptor to dialer\0" | transcript)
//! ```
//!
//! SPAKE2's messages are blinded by the secret: a passive eavesdropper
//! learns nothing it could test guesses against, and an active one, on
//! either side, can test one guess per handshake it runs with a real node,
//! online, where the handshake limits and logs see it. Fresh randomness on
//! both sides makes every session key new, so a recorded handshake cannot
//! be replayed; distinct labels stop a MAC from being reflected back as the
//! other side's; the ids in the transcript stop a handshake meant for one
//! node from being passed to another.
//!
//! Each batch is then sealed with AES-256-GCM under its direction's key:
//! `ciphertext(count u32 | (len u32 | payload)*) | tag[16]`, with the
//! nonce `0u32 | seq u64`. The sequence number starts at 0 and grows by one
//! per batch in each direction, and is not sent: a batch forged, altered,
//! replayed, reordered, dropped from the middle, or reflected to its
//! sender fails to open. Nobody without the secret can read a batch.
//!
//! The handshake is a typestate rather than a `handle_*`/`poll_*` machine:
//! with three messages and no timers, each step consumes its state and
//! returns the frame to send, which leaves no wrong order to call it in.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::frame::{self, FRAME_BYTES_MAX, Frame, FrameError, Kind};
use crate::io::SeededRng;

/// The transport's protocol version, first in every Hello. Version 1 was
/// HMAC-only: its Challenge let anyone who connected test guesses of the
/// secret offline, and its batches were not encrypted.
pub const PROTOCOL_VERSION: u8 = 2;

/// Bytes in each side's SPAKE2 message: a side byte and a point.
pub const PAKE_BYTES: usize = 33;

/// Bytes in a key confirmation (HMAC-SHA256).
pub const CONFIRM_BYTES: usize = 32;

/// Bytes in a batch's AES-GCM tag.
pub const TAG_BYTES: usize = 16;

/// A batch's fixed fields: count and tag.
pub const BATCH_OVERHEAD_BYTES: usize = 4 + TAG_BYTES;

/// What each payload adds to a batch besides its bytes: its length.
pub const PAYLOAD_OVERHEAD_BYTES: usize = 4;

/// Room in one batch frame for payloads and their lengths.
pub const BATCH_PAYLOAD_BYTES_MAX: usize = FRAME_BYTES_MAX as usize - 1 - BATCH_OVERHEAD_BYTES;

/// The largest payload a batch can carry: one alone in a full frame.
pub const PAYLOAD_BYTES_MAX: usize = BATCH_PAYLOAD_BYTES_MAX - PAYLOAD_OVERHEAD_BYTES;

/// SPAKE2's identity: both sides use the same one (symmetric mode).
const PAKE_IDENTITY: &[u8] = b"sluice-cluster v2";

const ACCEPTOR_LABEL: &[u8] = b"sluice-cluster acceptor\0";
const DIALER_LABEL: &[u8] = b"sluice-cluster dialer\0";
const DIALER_TO_ACCEPTOR_LABEL: &[u8] = b"sluice-cluster dialer to acceptor\0";
const ACCEPTOR_TO_DIALER_LABEL: &[u8] = b"sluice-cluster acceptor to dialer\0";

const TRANSCRIPT_BYTES: usize = 1 + 8 + 8 + PAKE_BYTES + PAKE_BYTES;

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
    /// The peer's key exchange message is not a SPAKE2 message.
    #[error("the peer's key exchange message is malformed")]
    BadKeyExchange,
    /// The peer's key confirmation does not verify: it does not know the
    /// cluster secret.
    #[error("the peer's proof of the cluster secret does not verify")]
    BadProof,
    /// A batch does not open: forged, altered, replayed, reordered, after a
    /// lost one, or reflected.
    #[error("a batch failed its integrity check")]
    BadTag,
}

/// The cluster secret, for SPAKE2. Never printed.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// Holds the cluster secret.
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.into())
    }

    /// Starts a SPAKE2 exchange: the state, and the message to send.
    fn start(&self, rng: &mut SeededRng) -> (Spake2<Ed25519Group>, [u8; PAKE_BYTES]) {
        let (state, message) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
            &Password::new(&self.0),
            &Identity::new(PAKE_IDENTITY),
            rng,
        );
        let message = message
            .try_into()
            .expect("a SPAKE2 Ed25519 message is a side byte and a 32-byte point");
        (state, message)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// The key both sides agreed on with SPAKE2, before either has proven it.
struct Agreed(HmacSha256);

impl Agreed {
    /// Finishes SPAKE2 with the peer's message.
    fn finish(
        state: Spake2<Ed25519Group>,
        peer_message: &[u8; PAKE_BYTES],
    ) -> Result<Self, ProtocolError> {
        let key = state
            .finish(peer_message)
            .map_err(|_| ProtocolError::BadKeyExchange)?;
        Ok(Self(
            HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length"),
        ))
    }

    fn tag(&self, label: &[u8], transcript: &Transcript) -> [u8; CONFIRM_BYTES] {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.update(&transcript.0);
        mac.finalize().into_bytes().into()
    }

    /// Compares in constant time (`hmac`'s `verify_slice`).
    fn verify(
        &self,
        label: &[u8],
        transcript: &Transcript,
        tag: &[u8; CONFIRM_BYTES],
    ) -> Result<(), ProtocolError> {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.update(&transcript.0);
        mac.verify_slice(tag).map_err(|_| ProtocolError::BadProof)
    }

    fn session(&self, transcript: &Transcript, local_is_dialer: bool, peer: u64) -> Session {
        let aead_key = |label| {
            let key = UnboundKey::new(&AES_256_GCM, &self.tag(label, transcript))
                .expect("AES-256-GCM takes a 32-byte key");
            LessSafeKey::new(key)
        };
        let (send, receive) = if local_is_dialer {
            (DIALER_TO_ACCEPTOR_LABEL, ACCEPTOR_TO_DIALER_LABEL)
        } else {
            (ACCEPTOR_TO_DIALER_LABEL, DIALER_TO_ACCEPTOR_LABEL)
        };
        Session {
            peer,
            sealer: Sealer {
                key: aead_key(send),
                seq: 0,
            },
            opener: Opener {
                key: aead_key(receive),
                seq: 0,
            },
        }
    }
}

/// Everything the confirmations and the session keys are bound to.
#[derive(Debug)]
struct Transcript([u8; TRANSCRIPT_BYTES]);

impl Transcript {
    fn new(
        dialer: u64,
        acceptor: u64,
        pake_d: &[u8; PAKE_BYTES],
        pake_a: &[u8; PAKE_BYTES],
    ) -> Self {
        let mut bytes = Vec::with_capacity(TRANSCRIPT_BYTES);
        bytes.put_u8(PROTOCOL_VERSION);
        bytes.put_u64(dialer);
        bytes.put_u64(acceptor);
        bytes.put_slice(pake_d);
        bytes.put_slice(pake_a);
        Self(bytes.try_into().expect("the transcript's fields fill it"))
    }
}

/// The AES-GCM nonce of batch `seq`: unique per key, since each direction
/// has its own key and counts its batches.
fn batch_nonce(seq: u64) -> Nonce {
    let mut nonce = [0; NONCE_LEN];
    nonce[NONCE_LEN - 8..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
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
pub struct Dialer {
    local: u64,
    remote: u64,
    pake: Spake2<Ed25519Group>,
    pake_d: [u8; PAKE_BYTES],
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// Starts a handshake from node `local` to node `remote`; returns the
    /// Hello frame to send.
    pub fn new(key: &ClusterKey, local: u64, remote: u64, rng: &mut SeededRng) -> (Self, Bytes) {
        let (pake, pake_d) = key.start(rng);
        let mut body = Vec::with_capacity(1 + 8 + 8 + PAKE_BYTES);
        body.put_u8(PROTOCOL_VERSION);
        body.put_u64(local);
        body.put_u64(remote);
        body.put_slice(&pake_d);
        let dialer = Self {
            local,
            remote,
            pake,
            pake_d,
        };
        (dialer, encode(Kind::Hello, &body))
    }

    /// Checks the acceptor's Challenge; returns the session and the Proof
    /// frame to send.
    pub fn handle_challenge(self, frame: Frame) -> Result<(Session, Bytes), ProtocolError> {
        expect_kind(&frame, Kind::Challenge)?;
        let mut r = Reader::new(&frame.body);
        let acceptor = r.u64("challenge node id")?;
        let pake_a = r.array::<PAKE_BYTES>("challenge key exchange")?;
        let confirm_a = r.array::<CONFIRM_BYTES>("challenge confirmation")?;
        r.expect_empty("challenge")?;
        if acceptor != self.remote {
            return Err(ProtocolError::WrongPeer {
                expected: self.remote,
                got: acceptor,
            });
        }
        let agreed = Agreed::finish(self.pake, &pake_a)?;
        let transcript = Transcript::new(self.local, self.remote, &self.pake_d, &pake_a);
        agreed.verify(ACCEPTOR_LABEL, &transcript, &confirm_a)?;
        let confirm_d = agreed.tag(DIALER_LABEL, &transcript);
        let session = agreed.session(&transcript, true, self.remote);
        Ok((session, encode(Kind::Proof, &confirm_d)))
    }
}

/// The accepting side, between its Challenge and the dialer's Proof.
pub struct Acceptor {
    remote: u64,
    agreed: Agreed,
    transcript: Transcript,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
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
        let pake_d = r.array::<PAKE_BYTES>("hello key exchange")?;
        r.expect_empty("hello")?;
        if wanted != local {
            return Err(ProtocolError::NotForUs { wanted, local });
        }
        if dialer == local || !is_peer(dialer) {
            return Err(ProtocolError::UnknownPeer(dialer));
        }
        let (pake, pake_a) = key.start(rng);
        let agreed = Agreed::finish(pake, &pake_d)?;
        let transcript = Transcript::new(dialer, local, &pake_d, &pake_a);
        let mut body = Vec::with_capacity(8 + PAKE_BYTES + CONFIRM_BYTES);
        body.put_u64(local);
        body.put_slice(&pake_a);
        body.put_slice(&agreed.tag(ACCEPTOR_LABEL, &transcript));
        let acceptor = Self {
            remote: dialer,
            agreed,
            transcript,
        };
        Ok((acceptor, encode(Kind::Challenge, &body)))
    }

    /// Checks the dialer's Proof; returns the session with the now
    /// authenticated peer.
    pub fn handle_proof(self, frame: Frame) -> Result<Session, ProtocolError> {
        expect_kind(&frame, Kind::Proof)?;
        let mut r = Reader::new(&frame.body);
        let confirm_d = r.array::<CONFIRM_BYTES>("proof confirmation")?;
        r.expect_empty("proof")?;
        self.agreed
            .verify(DIALER_LABEL, &self.transcript, &confirm_d)?;
        Ok(self.agreed.session(&self.transcript, false, self.remote))
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
    key: LessSafeKey,
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
        out.put_u32(u32::try_from(payloads.len()).expect("bounded by the batch size"));
        for payload in payloads {
            out.put_u32(u32::try_from(payload.len()).expect("bounded by the batch size"));
            out.put_slice(payload);
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(batch_nonce(self.seq), Aad::empty(), &mut out[body_start..])
            .expect("AES-GCM seals any batch within the frame limit");
        out.put_slice(tag.as_ref());
        self.seq += 1;
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("seq", &self.seq).finish()
    }
}

/// Opens and unpacks Batch frames.
pub struct Opener {
    key: LessSafeKey,
    seq: u64,
}

impl Opener {
    /// Opens one Batch frame and returns its payloads, as slices of the
    /// decrypted body. The tag is checked before anything is parsed.
    pub fn open(&mut self, frame: Frame) -> Result<Vec<Bytes>, ProtocolError> {
        expect_kind(&frame, Kind::Batch)?;
        if frame.body.len() < TAG_BYTES {
            return Err(ProtocolError::MissingData("batch tag"));
        }
        // Decrypted in place: in the frame's own buffer when nothing else
        // holds it, in a copy otherwise.
        let mut body = frame
            .body
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let plain_bytes = self
            .key
            .open_in_place(batch_nonce(self.seq), Aad::empty(), &mut body)
            .map_err(|_| ProtocolError::BadTag)?
            .len();
        self.seq += 1;
        body.truncate(plain_bytes);
        let body = body.freeze();

        let mut r = Reader::new(&body);
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
