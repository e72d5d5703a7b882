//! Record framing: `len u32 BE | crc32c u32 BE | payload`.
//!
//! The checksum covers the payload; the length is checked against
//! [`RECORD_BYTES_MAX`] and against the bytes that remain, so a damaged
//! length can neither allocate nor read past the file.

use bytes::{BufMut, BytesMut};

use super::RECORD_BYTES_MAX;

/// Bytes in front of each payload: length then checksum.
pub(super) const FRAME_HEADER_BYTES: usize = 8;

/// Whether a payload of `len` bytes may be framed. Empty records are refused
/// so that a zero-filled region (what a file system shows for blocks it
/// allocated but never wrote) can never parse as a valid record.
pub(super) fn size_ok(len: usize) -> bool {
    (1..=RECORD_BYTES_MAX).contains(&len)
}

/// The framed size of a payload of `len` bytes.
pub(super) fn framed_len(len: usize) -> usize {
    FRAME_HEADER_BYTES + len
}

/// Appends a record to `out`, framed: `write` appends the payload in place,
/// then its length and checksum go in front of it, so that a record is
/// never built in one buffer and copied into another. A payload that is
/// empty or larger than [`RECORD_BYTES_MAX`] is taken back off `out`, and
/// its length returned.
pub(super) fn encode_with(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), usize> {
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_BYTES);
    write(out);
    let payload = &out[start + FRAME_HEADER_BYTES..];
    if !size_ok(payload.len()) {
        let len = payload.len();
        out.truncate(start);
        return Err(len);
    }
    let header = header(payload);
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header);
    Ok(())
}

/// Appends `payload`, framed, to `out`: for tests that build segments by
/// hand.
#[cfg(test)]
pub(super) fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(size_ok(payload.len()), "test records have a valid size");
    out.extend_from_slice(&header(payload));
    out.extend_from_slice(payload);
}

/// The frame header of a payload whose size is valid.
fn header(payload: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    let len = u32::try_from(payload.len()).expect("RECORD_BYTES_MAX fits in u32");
    let mut header = [0; FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    header
}

/// What the bytes at the start of `input` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// A whole record with a matching checksum: its payload is
    /// `input[FRAME_HEADER_BYTES..end]`.
    Record {
        /// Where the frame ends in `input`.
        end: usize,
    },
    /// `input` ends inside the frame's header or payload.
    Incomplete,
    /// The length is zero or above [`RECORD_BYTES_MAX`].
    BadLength(u32),
    /// The frame is whole but its payload fails the checksum.
    BadChecksum {
        /// Where the frame ends in `input`.
        end: usize,
    },
}

/// Reads the frame at the start of `input`. Total: never panics, never reads
/// past `input`.
pub(super) fn decode(input: &[u8]) -> Frame {
    let Some((len, crc)) = read_header(input) else {
        return Frame::Incomplete;
    };
    let Some(payload_len) = usize::try_from(len).ok().filter(|&len| size_ok(len)) else {
        return Frame::BadLength(len);
    };
    let end = framed_len(payload_len);
    let Some(payload) = input.get(FRAME_HEADER_BYTES..end) else {
        return Frame::Incomplete;
    };
    if crc32c::crc32c(payload) == crc {
        Frame::Record { end }
    } else {
        Frame::BadChecksum { end }
    }
}

/// The length and checksum fields, if `input` holds them.
fn read_header(input: &[u8]) -> Option<(u32, u32)> {
    let len = u32::from_be_bytes(field(input, 0)?);
    let crc = u32::from_be_bytes(field(input, 4)?);
    Some((len, crc))
}

/// The `N` bytes of `input` at `at`, if it holds them: for reading
/// fixed-size fields without indexing into file contents.
pub(super) fn field<const N: usize>(input: &[u8], at: usize) -> Option<[u8; N]> {
    input.get(at..at.checked_add(N)?)?.try_into().ok()
}
