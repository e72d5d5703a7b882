//! Record framing: `len u32 BE | crc32c u32 BE | payload`.
//!
//! The checksum covers the payload; the length is checked against
//! [`RECORD_BYTES_MAX`] and against the bytes that remain, so a damaged
//! length can neither allocate nor read past the file.

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

/// Appends `payload`, framed, to `out`.
pub(super) fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(size_ok(payload.len()), "record size is checked on append");
    let len = u32::try_from(payload.len()).expect("RECORD_BYTES_MAX fits in u32");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
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
