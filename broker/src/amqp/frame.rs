//! Framing (spec part 2 §2.2 – §2.3): protocol headers and frames.
//!
//! "Need more bytes" (`Ok(None)`) is kept apart from "malformed" (`Err`), and
//! a frame's declared size is checked against the negotiated maximum before
//! any of it is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{Decode, DecodeError, Encode, Reader};
use super::types::{Performative, SaslFrame, Transfer, condition};

/// Length of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 8;

/// Length of a protocol header (`AMQP` + id + version).
pub const PROTOCOL_HEADER_LEN: usize = 8;

/// The smallest max-frame-size a peer may declare (spec §2.7.1).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// A frame with no body: the heartbeat that keeps an idle connection alive.
pub const EMPTY_FRAME: [u8; FRAME_HEADER_LEN] = [0, 0, 0, 8, 2, 0, 0, 0];

const FRAME_TYPE_AMQP: u8 = 0;
const FRAME_TYPE_SASL: u8 = 1;

/// The protocol layers a connection can announce in its protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolId {
    /// Plain AMQP (id 0).
    Amqp,
    /// TLS (id 2).
    Tls,
    /// SASL (id 3).
    Sasl,
}

impl ProtocolId {
    /// The 8-byte header that announces this layer at version 1.0.0.
    pub fn header(self) -> [u8; PROTOCOL_HEADER_LEN] {
        let id = match self {
            ProtocolId::Amqp => 0,
            ProtocolId::Tls => 2,
            ProtocolId::Sasl => 3,
        };
        [b'A', b'M', b'Q', b'P', id, 1, 0, 0]
    }

    /// Parses a protocol header. `None` for anything but AMQP 1.0.0 with a
    /// known protocol id: the answer to that is our own header, then close.
    pub fn parse(header: &[u8; PROTOCOL_HEADER_LEN]) -> Option<Self> {
        match header {
            [b'A', b'M', b'Q', b'P', 0, 1, 0, 0] => Some(ProtocolId::Amqp),
            [b'A', b'M', b'Q', b'P', 2, 1, 0, 0] => Some(ProtocolId::Tls),
            [b'A', b'M', b'Q', b'P', 3, 1, 0, 0] => Some(ProtocolId::Sasl),
            _ => None,
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An empty AMQP frame (heartbeat).
    Empty,
    /// An AMQP frame.
    Amqp {
        /// The session channel.
        channel: u16,
        /// The performative.
        performative: Performative,
        /// What follows the performative: message bytes of a transfer.
        payload: Bytes,
    },
    /// A SASL frame.
    Sasl(SaslFrame),
}

/// Why the byte stream could not be split into valid frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The size field is smaller than the header.
    #[error("frame size {0} is smaller than the 8-byte header")]
    SizeTooSmall(u32),
    /// The frame is larger than the negotiated max-frame-size.
    #[error("frame size {size} exceeds the negotiated maximum {max}")]
    TooLarge {
        /// Declared size.
        size: u32,
        /// Negotiated maximum.
        max: u32,
    },
    /// The data offset points into the header or past the frame.
    #[error("data offset {0} is invalid")]
    BadDataOffset(u8),
    /// A frame type other than AMQP (0) or SASL (1).
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A frame of the wrong layer (SASL during AMQP or the reverse).
    #[error("unexpected frame type {0} at this stage")]
    UnexpectedType(u8),
    /// An empty frame where a body is required (the SASL layer has no heartbeats).
    #[error("empty frame where a body is required")]
    MissingBody,
    /// Bytes after a performative that carries no payload.
    #[error("payload after a {0} performative")]
    UnexpectedPayload(&'static str),
    /// The body did not decode.
    #[error("frame body: {0}")]
    Decode(#[from] DecodeError),
}

impl FrameError {
    /// The AMQP error condition to close the connection with.
    pub fn condition(&self) -> &'static str {
        match self {
            FrameError::Decode(_) | FrameError::UnexpectedPayload(_) => condition::DECODE_ERROR,
            _ => condition::FRAMING_ERROR,
        }
    }
}

/// Which layer's frames the decoder expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// SASL negotiation.
    Sasl,
    /// The AMQP connection proper.
    Amqp,
}

/// Splits a byte stream into frames.
pub struct FrameDecoder {
    max_frame_size: u32,
}

impl FrameDecoder {
    /// A decoder that accepts frames up to `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> Self {
        Self { max_frame_size }
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` until it is whole.
    pub fn decode(&self, buf: &mut BytesMut, layer: Layer) -> Result<Option<Frame>, FrameError> {
        let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let (doff, frame_type) = (header[4], header[5]);
        let channel = u16::from_be_bytes([header[6], header[7]]);
        if size < FRAME_HEADER_LEN as u32 {
            return Err(FrameError::SizeTooSmall(size));
        }
        if size > self.max_frame_size {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_size,
            });
        }
        let body_offset = usize::from(doff) * 4;
        if body_offset < FRAME_HEADER_LEN || body_offset > size as usize {
            return Err(FrameError::BadDataOffset(doff));
        }
        let expected = match (layer, frame_type) {
            (Layer::Amqp, FRAME_TYPE_AMQP) | (Layer::Sasl, FRAME_TYPE_SASL) => frame_type,
            (_, FRAME_TYPE_AMQP | FRAME_TYPE_SASL) => {
                return Err(FrameError::UnexpectedType(frame_type));
            }
            _ => return Err(FrameError::UnknownType(frame_type)),
        };
        if buf.len() < size as usize {
            return Ok(None);
        }
        let mut frame = buf.split_to(size as usize).freeze();
        // The extended header, if any, carries nothing defined: skip it.
        frame.advance(body_offset);
        decode_body(expected, channel, frame).map(Some)
    }
}

fn decode_body(frame_type: u8, channel: u16, body: Bytes) -> Result<Frame, FrameError> {
    if body.is_empty() {
        return match frame_type {
            FRAME_TYPE_AMQP => Ok(Frame::Empty),
            _ => Err(FrameError::MissingBody),
        };
    }
    let mut r = Reader::new(body);
    if frame_type == FRAME_TYPE_SASL {
        let frame = SaslFrame::decode(&mut r)?;
        r.expect_empty()?;
        return Ok(Frame::Sasl(frame));
    }
    let performative = Performative::decode(&mut r)?;
    let payload = r.take_rest();
    if !payload.is_empty() && !matches!(performative, Performative::Transfer(_)) {
        return Err(FrameError::UnexpectedPayload(performative.name()));
    }
    Ok(Frame::Amqp {
        channel,
        performative,
        payload,
    })
}

/// Appends a frame whose body `write_body` produces, filling in its size.
fn put_frame(
    buf: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    write_body: impl FnOnce(&mut BytesMut),
) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u8(2);
    buf.put_u8(frame_type);
    buf.put_u16(channel);
    write_body(buf);
    set_frame_size(buf, start);
}

/// Appends an AMQP frame: `performative`, then `payload` (transfers only).
pub fn put_amqp_frame(
    buf: &mut BytesMut,
    channel: u16,
    performative: &impl Encode,
    payload: &[u8],
) {
    put_frame(buf, FRAME_TYPE_AMQP, channel, |buf| {
        performative.encode(buf);
        buf.put_slice(payload);
    });
}

/// Appends one transfer frame carrying as much of `payload` as fits in
/// `max_frame_size`, setting `transfer.more` when some is left over.
/// Returns how many payload bytes it carried, or `None` (writing nothing) if
/// not even the performative fits (`amqp:frame-size-too-small`).
///
/// The common case — the whole message fits — encodes the performative once.
pub fn put_transfer_frame(
    buf: &mut BytesMut,
    channel: u16,
    transfer: &mut Transfer,
    payload: &[u8],
    max_frame_size: usize,
) -> Option<usize> {
    let start = buf.len();
    transfer.more = false;
    put_amqp_frame(buf, channel, &*transfer, &[]);
    let carried = if buf.len() - start + payload.len() <= max_frame_size {
        payload.len()
    } else {
        buf.truncate(start);
        transfer.more = true;
        put_amqp_frame(buf, channel, &*transfer, &[]);
        let header_len = buf.len() - start;
        if header_len >= max_frame_size {
            buf.truncate(start);
            return None;
        }
        max_frame_size - header_len
    };
    buf.put_slice(&payload[..carried]);
    set_frame_size(buf, start);
    Some(carried)
}

/// Writes the size of the frame that starts at `start` and ends the buffer.
fn set_frame_size(buf: &mut BytesMut, start: usize) {
    let size = u32::try_from(buf.len() - start).expect("a frame is smaller than 4 GiB");
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a SASL frame.
pub fn put_sasl_frame(buf: &mut BytesMut, frame: &SaslFrame) {
    put_frame(buf, FRAME_TYPE_SASL, 0, |buf| frame.encode(buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::types::{Close, Open};

    fn decode_all(bytes: &[u8], max: u32) -> Result<Option<Frame>, FrameError> {
        FrameDecoder::new(max).decode(&mut BytesMut::from(bytes), Layer::Amqp)
    }

    #[test]
    fn round_trips_a_performative() {
        let mut buf = BytesMut::new();
        put_amqp_frame(&mut buf, 3, &Open::new("c1"), &[]);
        let frame = decode_all(&buf, 512).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Amqp {
                channel: 3,
                performative: Performative::Open(Open::new("c1")),
                payload: Bytes::new()
            }
        );
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let mut buf = BytesMut::new();
        put_amqp_frame(&mut buf, 0, &Close::default(), &[]);
        for len in 0..buf.len() {
            assert_eq!(
                decode_all(&buf[..len], 512),
                Ok(None),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn rejects_oversized_frames_before_buffering_them() {
        // A header declaring 2 GiB, with nothing behind it.
        let header = [0x80, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(
            decode_all(&header, 65_536),
            Err(FrameError::TooLarge {
                size: 0x8000_0000,
                max: 65_536
            })
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(
            decode_all(&[0, 0, 0, 4, 2, 0, 0, 0], 512),
            Err(FrameError::SizeTooSmall(4))
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 8, 1, 0, 0, 0], 512),
            Err(FrameError::BadDataOffset(1))
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 8, 3, 0, 0, 0], 512),
            Err(FrameError::BadDataOffset(3))
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 8, 2, 7, 0, 0], 512),
            Err(FrameError::UnknownType(7))
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 8, 2, 1, 0, 0], 512),
            Err(FrameError::UnexpectedType(1))
        );
    }

    #[test]
    fn empty_frames_are_heartbeats() {
        assert_eq!(decode_all(&EMPTY_FRAME, 512), Ok(Some(Frame::Empty)));
    }

    #[test]
    fn rejects_payload_on_other_performatives() {
        let mut buf = BytesMut::new();
        put_amqp_frame(&mut buf, 0, &Close::default(), b"x");
        assert_eq!(
            decode_all(&buf, 512),
            Err(FrameError::UnexpectedPayload("close"))
        );
    }

    #[test]
    fn protocol_headers() {
        assert_eq!(
            ProtocolId::parse(b"AMQP\x03\x01\x00\x00"),
            Some(ProtocolId::Sasl)
        );
        assert_eq!(
            ProtocolId::parse(b"AMQP\x00\x01\x00\x00"),
            Some(ProtocolId::Amqp)
        );
        assert_eq!(
            ProtocolId::parse(b"AMQP\x02\x01\x00\x00"),
            Some(ProtocolId::Tls)
        );
        assert_eq!(ProtocolId::parse(b"AMQP\x00\x00\x09\x01"), None);
        assert_eq!(ProtocolId::Sasl.header(), *b"AMQP\x03\x01\x00\x00");
    }
}
