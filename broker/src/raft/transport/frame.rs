//! Frames of the node-to-node transport: `len u32 BE | kind u8 | body`,
//! where `len` counts the kind byte and the body.
//!
//! Sans-IO and strict, like rustls' codec: "need more bytes" (`Ok(None)`) is
//! kept apart from "malformed" (`Err`), and the declared length and the
//! kind are checked before any of the body is buffered, so a header that
//! declares 4 GiB costs nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest `len` any frame may declare (kind byte plus body). A batch
/// is cut to fit, and a payload that cannot fit even alone is refused at
/// [`super::Transport::send`].
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The largest `len` accepted before a peer has authenticated. Handshake
/// frames are under 100 bytes; the bound keeps a stranger from making us
/// buffer a full-size frame on every connection it opens.
pub const HANDSHAKE_FRAME_BYTES_MAX: u32 = 128;

/// The length field and the kind byte.
pub const HEADER_BYTES: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Dialer to acceptor: who is calling whom, and the dialer's key
    /// exchange message.
    Hello,
    /// Acceptor to dialer: the acceptor's key exchange message and its
    /// proof of the key.
    Challenge,
    /// Dialer to acceptor: the dialer's proof of the key.
    Proof,
    /// Either way, once authenticated: payloads, encrypted and
    /// authenticated under the session's key for that direction.
    Batch,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Challenge => 2,
            Kind::Proof => 3,
            Kind::Batch => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Kind::Hello),
            2 => Some(Kind::Challenge),
            3 => Some(Kind::Proof),
            4 => Some(Kind::Batch),
            _ => None,
        }
    }
}

/// One decoded frame. The body is a zero-copy slice of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds.
    pub kind: Kind,
    /// Everything after the kind byte.
    pub body: Bytes,
}

/// Why the byte stream could not be split into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `len` is 0: a frame holds at least its kind byte.
    #[error("frame length 0: a frame holds at least its kind")]
    Empty,
    /// `len` exceeds what the decoder accepts at this stage.
    #[error("frame length {len} exceeds the maximum {max}")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// The decoder's bound.
        max: u32,
    },
    /// A kind byte this version does not define.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// Splits a byte stream into frames no longer than its bound.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    frame_bytes_max: u32,
}

impl Decoder {
    /// A decoder for frames whose `len` is at most `frame_bytes_max`.
    pub fn new(frame_bytes_max: u32) -> Self {
        assert!(frame_bytes_max >= 1, "a frame holds at least its kind");
        assert!(frame_bytes_max <= FRAME_BYTES_MAX);
        Self { frame_bytes_max }
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` until it is whole,
    /// without consuming anything.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(&[a, b, c, d]) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        let Some(&code) = buf.get(4) else {
            return Ok(None);
        };
        let kind = Kind::from_code(code).ok_or(FrameError::UnknownKind(code))?;
        // `len` ≤ FRAME_BYTES_MAX, so this cannot overflow on any platform.
        let frame_bytes = 4 + len as usize;
        if buf.len() < frame_bytes {
            return Ok(None);
        }
        let mut body = buf.split_to(frame_bytes).freeze();
        body.advance(HEADER_BYTES);
        Ok(Some(Frame { kind, body }))
    }
}

/// Writes the header of a frame whose body is `body_bytes` long; the caller
/// writes exactly that many bytes after it.
pub fn put_header(kind: Kind, body_bytes: usize, out: &mut BytesMut) {
    let len = u32::try_from(body_bytes + 1).expect("frame length fits in u32");
    assert!(
        len <= FRAME_BYTES_MAX,
        "frame length {len} over the maximum"
    );
    out.reserve(HEADER_BYTES + body_bytes);
    out.put_u32(len);
    out.put_u8(kind.code());
}

/// Writes a whole frame.
pub fn put_frame(kind: Kind, body: &[u8], out: &mut BytesMut) {
    put_header(kind, body.len(), out);
    out.put_slice(body);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(bytes: &[u8], max: u32) -> (Result<Option<Frame>, FrameError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let result = Decoder::new(max).decode(&mut buf);
        (result, buf.len())
    }

    #[test]
    fn a_frame_round_trips_and_leaves_what_follows() {
        let mut buf = BytesMut::new();
        put_frame(Kind::Proof, b"abc", &mut buf);
        put_frame(Kind::Batch, b"", &mut buf);
        let decoder = Decoder::new(FRAME_BYTES_MAX);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!((first.kind, &first.body[..]), (Kind::Proof, &b"abc"[..]));
        let second = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!((second.kind, second.body.len()), (Kind::Batch, 0));
        assert!(buf.is_empty());
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }

    #[test]
    fn a_truncated_frame_waits_without_consuming() {
        let mut whole = BytesMut::new();
        put_frame(Kind::Hello, &[7; 40], &mut whole);
        for cut in 0..whole.len() {
            let (result, left) = decode(&whole[..cut], FRAME_BYTES_MAX);
            assert_eq!(result, Ok(None), "cut at {cut}");
            assert_eq!(left, cut, "cut at {cut} consumed bytes");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let header = 1_000_u32.to_be_bytes();
        assert_eq!(
            decode(&header, HANDSHAKE_FRAME_BYTES_MAX).0,
            Err(FrameError::TooLarge {
                len: 1_000,
                max: HANDSHAKE_FRAME_BYTES_MAX
            })
        );
        let header = u32::MAX.to_be_bytes();
        assert_eq!(
            decode(&header, FRAME_BYTES_MAX).0,
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: FRAME_BYTES_MAX
            })
        );
        // At the bound exactly, it waits for the body.
        let header = HANDSHAKE_FRAME_BYTES_MAX.to_be_bytes();
        assert_eq!(decode(&header, HANDSHAKE_FRAME_BYTES_MAX).0, Ok(None));
    }

    #[test]
    fn an_unknown_kind_is_refused_before_the_body_arrives() {
        for code in [0, 5, 0xff] {
            let header = [0, 0, 0, 50, code];
            assert_eq!(
                decode(&header, FRAME_BYTES_MAX).0,
                Err(FrameError::UnknownKind(code))
            );
        }
    }

    #[test]
    fn a_zero_length_is_refused() {
        assert_eq!(decode(&[0; 4], FRAME_BYTES_MAX).0, Err(FrameError::Empty));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder: each call takes one whole
        /// frame (exactly its declared length), waits without consuming, or
        /// fails.
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            small in any::<bool>(),
        ) {
            let max = if small { HANDSHAKE_FRAME_BYTES_MAX } else { FRAME_BYTES_MAX };
            let decoder = Decoder::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert_eq!(before - buf.len(), HEADER_BYTES + frame.body.len());
                    }
                    Ok(None) => {
                        prop_assert_eq!(buf.len(), before);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
