//! Segment contents: a header naming the first LSN, then framed records.
//!
//! [`scan`] reads a whole segment and says how far it is good, and, where it
//! is not, whether a torn write can explain the damage. Recovery decides what
//! to do with that: only the last segment may have a torn tail.

use bytes::Bytes;

use super::record::{self, FRAME_HEADER_BYTES, Frame};
use super::{BATCH_BYTES_MAX, Corruption, Lsn, RECORD_BYTES_MAX};

/// Bytes in a segment header.
pub(super) const HEADER_BYTES: usize = 24;

/// The first bytes of every segment.
const MAGIC: [u8; 8] = *b"SLUICSEG";

/// The segment format this build writes and reads.
const VERSION: u32 = 1;

/// The most bytes one unsynced write can leave at the end of the last
/// segment. The writer fsyncs every batch before it writes the next, so only
/// the last batch can be torn, and a batch stops growing once it reaches
/// [`BATCH_BYTES_MAX`], so it holds at most that plus one more record. Damage
/// further from the end than this cannot be a torn write.
const TORN_TAIL_BYTES_MAX: usize = BATCH_BYTES_MAX + FRAME_HEADER_BYTES + RECORD_BYTES_MAX;

/// The most payload bytes [`holds_a_record`] checksums while it looks for a
/// whole record after damage: about a tenth of a second of CRC-32C.
const SEARCH_CHECKSUM_BYTES_MAX: usize = 256 << 20;

/// The header of a segment whose first record is `first`:
/// `magic[8] | version u32 | first LSN u64 | crc32c u32` (big-endian), the
/// checksum covering the 20 bytes before it.
pub(super) fn encode_header(first: Lsn) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&first.0.to_be_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    header
}

/// What [`scan`] found in a segment.
#[derive(Debug)]
pub(super) struct Scan {
    /// The payloads of the whole, checksummed records before any damage, in
    /// order: zero-copy slices of the file's contents.
    pub(super) records: Vec<Bytes>,
    /// The length of the good prefix: the header and those records. Zero
    /// when the header itself is damaged.
    pub(super) valid_bytes: usize,
    /// The first damage, if any.
    pub(super) damage: Option<Damage>,
}

/// Where a segment stops being good, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    /// The offset of the damaged header or record.
    pub(super) offset: usize,
    /// What is wrong there.
    pub(super) reason: Corruption,
    /// Whether an interrupted or failed, unsynced write could have left
    /// exactly this: the damage (a record cut short, a last record failing
    /// its checksum or with a damaged length, or zeros) lies within one
    /// batch of the end, and no whole record follows it. Believed of the
    /// last segment only.
    pub(super) torn: bool,
}

/// Reads a segment whose file name says it starts at `named`.
pub(super) fn scan(contents: &Bytes, named: Lsn) -> Scan {
    if let Err(damage) = check_header(contents, named) {
        return Scan {
            records: Vec::new(),
            valid_bytes: 0,
            damage: Some(damage),
        };
    }
    let mut records = Vec::new();
    let mut offset = HEADER_BYTES;
    while let Some(rest) = contents.get(offset..).filter(|rest| !rest.is_empty()) {
        let reason = match record::decode(rest) {
            Frame::Record { end } => {
                records.push(contents.slice(offset + FRAME_HEADER_BYTES..offset + end));
                offset += end;
                continue;
            }
            Frame::Incomplete => Corruption::Truncated,
            Frame::BadChecksum { .. } => Corruption::Checksum,
            Frame::BadLength(len) => Corruption::BadLength(len),
        };
        let damage = Damage {
            offset,
            reason,
            torn: could_be_torn(rest),
        };
        return Scan {
            records,
            valid_bytes: offset,
            damage: Some(damage),
        };
    }
    Scan {
        records,
        valid_bytes: offset,
        damage: None,
    }
}

/// Counts the frames from `offset` on whose lengths are plausible, checksums
/// aside, plus one for trailing bytes that frame nothing: an estimate, for
/// repair reports, of how many records a cut drops.
pub(super) fn count_frames(contents: &[u8], mut offset: usize) -> u64 {
    let mut count = 0;
    while let Some(rest) = contents.get(offset..).filter(|rest| !rest.is_empty()) {
        count += 1;
        match record::decode(rest) {
            Frame::Record { end } | Frame::BadChecksum { end } => offset += end,
            Frame::Incomplete | Frame::BadLength(_) => break,
        }
    }
    count
}

/// Checks the magic, version, checksum and first LSN.
fn check_header(contents: &[u8], named: Lsn) -> Result<(), Damage> {
    let Some(header) = Header::read(contents) else {
        // A crash while the segment was being created.
        return Err(Damage {
            offset: 0,
            reason: Corruption::Truncated,
            torn: could_be_torn(contents),
        });
    };
    // A whole header was written and fsynced before any record went in, so
    // a crash can only leave it short, or as zeros: blocks allocated but
    // never written (no header is all zeros: it starts with the magic).
    let zeros = contents.iter().all(|&byte| byte == 0);
    let damage = |offset, reason| Damage {
        offset,
        reason,
        torn: zeros && could_be_torn(contents),
    };
    if header.magic != MAGIC {
        return Err(damage(0, Corruption::BadMagic));
    }
    if header.version != VERSION {
        return Err(damage(8, Corruption::UnsupportedVersion(header.version)));
    }
    if contents.get(..20).map(crc32c::crc32c) != Some(header.crc) {
        return Err(damage(20, Corruption::HeaderChecksum));
    }
    if header.first != named {
        let reason = Corruption::NameMismatch {
            named,
            found: header.first,
        };
        return Err(damage(12, reason));
    }
    Ok(())
}

/// A segment header's fields, unchecked.
struct Header {
    magic: [u8; 8],
    version: u32,
    first: Lsn,
    crc: u32,
}

impl Header {
    /// The fields, if `contents` is long enough to hold them.
    fn read(contents: &[u8]) -> Option<Self> {
        Some(Self {
            magic: record::field(contents, 0)?,
            version: u32::from_be_bytes(record::field(contents, 8)?),
            first: Lsn(u64::from_be_bytes(record::field(contents, 12)?)),
            crc: u32::from_be_bytes(record::field(contents, 20)?),
        })
    }
}

/// Whether an unsynced write could explain damage that starts at `rest`:
/// it lies within one batch of the end, and nothing whole follows it.
///
/// Where the damaged frame says it ends is no evidence either way: the
/// damage may be in its length. A write that lands with a bit of its
/// record flipped and then fails its fsync (never acknowledged) may leave
/// a length that frames too much (past the end, or past
/// [`RECORD_BYTES_MAX`]) or too little (a checksum over part of the
/// payload, the rest left over); so may a crash that kept only some of a
/// batch's blocks, or zeros where blocks were allocated but never written.
/// What tells all of these from damage to an acknowledged record is what
/// follows: an acknowledged record is followed by the later ones, whole,
/// unless it is the very last (the log's documented limit).
fn could_be_torn(rest: &[u8]) -> bool {
    rest.len() <= TORN_TAIL_BYTES_MAX && !holds_a_record(rest)
}

/// Whether a whole, checksummed record may start anywhere in `rest` past
/// its first frame header. What survives of a torn write is a prefix of it,
/// so nothing whole follows the damage; a record that does shows the damage
/// is something else, such as a flipped bit in a length that now runs past
/// the end of the file, and cutting there would drop acknowledged records.
///
/// Message bodies can hold a plausible length at many offsets, each costing
/// a checksum over what it frames, so the search is bounded by
/// [`SEARCH_CHECKSUM_BYTES_MAX`]; past it, a record is assumed to follow.
/// The broker then refuses to start rather than cut (`--repair` still can):
/// safe, where a wrong guess the other way loses acknowledged records.
fn holds_a_record(rest: &[u8]) -> bool {
    let mut budget = SEARCH_CHECKSUM_BYTES_MAX;
    for at in FRAME_HEADER_BYTES + 1..rest.len() {
        match rest.get(at..).map(record::decode) {
            Some(Frame::Record { .. }) => return true,
            Some(Frame::BadChecksum { end }) => {
                budget = budget.saturating_sub(end);
                if budget == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}
