//! The payload of a Raft entry in a data group: a batch of commands that one
//! node proposed at once, strictly encoded.
//!
//! ```text
//! origin u64 | now_ms u64 | count u16 | count × (token u64 | guard u64 | len u32 | command)
//! ```
//!
//! `origin` names the proposing node's incarnation and `token` numbers its
//! items in that group, 1, 2, 3, … (see [`super::state`]); `guard` is the
//! consumer a settle comes from (0 for every other command); `command` is
//! the queue state machine's [`Command`] as the single-node log stores it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::origin::Origin;
use crate::amqp::codec::DecodeError;
use crate::queue::{Command, ConsumerId};

/// The most items in one batch: the count is 16 bits.
pub const ITEMS_MAX: usize = 1 << 16;

/// Bytes before the first item.
const HEADER_BYTES: usize = 8 + 8 + 2;

/// One proposed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its number in its origin's session with the group.
    pub token: u64,
    /// For a settle, the consumer that sent it: the settle applies only
    /// while that consumer still holds the message.
    pub guard: Option<ConsumerId>,
    /// What to apply.
    pub command: Command,
}

/// Commands proposed together.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Who proposed them.
    pub origin: Origin,
    /// The proposer's clock when it proposed them, Unix milliseconds.
    pub now_ms: u64,
    /// The commands, in token order.
    pub items: Vec<Item>,
}

/// Why an entry's payload is not a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The payload ends inside the header or an item.
    #[error("the batch is truncated")]
    Truncated,
    /// Bytes follow the last item.
    #[error("{0} bytes follow the batch's last item")]
    Trailing(usize),
    /// An item's command does not decode.
    #[error("item {item} does not decode: {error}")]
    Command {
        /// The item's place in the batch.
        item: usize,
        /// Why.
        error: DecodeError,
    },
}

/// What a batch's first bytes say, read without decoding its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Who proposed the batch.
    pub origin: Origin,
    /// The proposer's clock, Unix milliseconds.
    pub now_ms: u64,
    /// How many items it holds.
    pub count: usize,
    /// The first item's token, if it has one.
    pub first_token: Option<u64>,
}

impl BatchHeader {
    /// The header of `payload`, if it is long enough to hold one.
    pub fn peek(payload: &[u8]) -> Option<Self> {
        let mut header = payload.get(..HEADER_BYTES + 8).unwrap_or(payload);
        let origin = Origin::from_bits(header.try_get_u64().ok()?);
        let now_ms = header.try_get_u64().ok()?;
        let count = usize::from(header.try_get_u16().ok()?);
        let first_token = header.try_get_u64().ok();
        Some(Self {
            origin,
            now_ms,
            count,
            first_token,
        })
    }
}

impl Batch {
    /// A batch from all of `payload`.
    pub fn decode(mut payload: Bytes) -> Result<Batch, BatchError> {
        if payload.len() < HEADER_BYTES {
            return Err(BatchError::Truncated);
        }
        let origin = Origin::from_bits(payload.get_u64());
        let now_ms = payload.get_u64();
        let count = usize::from(payload.get_u16());
        let mut items = Vec::with_capacity(count);
        for item in 0..count {
            if payload.len() < 8 + 8 + 4 {
                return Err(BatchError::Truncated);
            }
            let token = payload.get_u64();
            let guard = Some(payload.get_u64()).filter(|&consumer| consumer != 0);
            let len = payload.get_u32() as usize;
            if payload.len() < len {
                return Err(BatchError::Truncated);
            }
            let command = Command::decode(payload.split_to(len))
                .map_err(|error| BatchError::Command { item, error })?;
            items.push(Item {
                token,
                guard,
                command,
            });
        }
        if !payload.is_empty() {
            return Err(BatchError::Trailing(payload.len()));
        }
        Ok(Batch {
            origin,
            now_ms,
            items,
        })
    }
}

/// Writes the payload of a batch of `items` into `out`, without building a
/// [`Batch`] first.
pub fn encode<'a>(
    origin: Origin,
    now_ms: u64,
    items: impl IntoIterator<Item = &'a Item, IntoIter: ExactSizeIterator>,
    out: &mut BytesMut,
) {
    let items = items.into_iter();
    assert!(items.len() < ITEMS_MAX, "batch of {}", items.len());
    out.put_u64(origin.to_bits());
    out.put_u64(now_ms);
    out.put_u16(items.len() as u16);
    for item in items {
        out.put_u64(item.token);
        out.put_u64(item.guard.unwrap_or(0));
        let length_at = out.len();
        out.put_u32(0);
        crate::amqp::codec::Encode::encode(&item.command, out);
        let length = u32::try_from(out.len() - length_at - 4).expect("a command under 4 GiB");
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Outcome;

    fn sample() -> Batch {
        Batch {
            origin: Origin::new(2, 7),
            now_ms: 1_700_000_000_000,
            items: vec![
                Item {
                    token: 1,
                    guard: None,
                    command: Command::Expire,
                },
                Item {
                    token: 2,
                    guard: Some(9),
                    command: Command::Settle {
                        queue: "q".into(),
                        seq: 5,
                        outcome: Outcome::Accepted,
                    },
                },
            ],
        }
    }

    fn encoded(batch: &Batch) -> Bytes {
        let mut out = BytesMut::new();
        encode(batch.origin, batch.now_ms, &batch.items, &mut out);
        out.freeze()
    }

    #[test]
    fn a_batch_survives_the_round_trip() {
        let batch = sample();
        assert_eq!(Batch::decode(encoded(&batch)).unwrap(), batch);
    }

    /// A batch is a single node's log record and a Raft entry's payload,
    /// byte for byte: a change to it is a format change (a new
    /// `single.rs` `FORMAT`, and a cluster that cannot mix versions).
    #[test]
    fn the_batch_encoding_is_stable() {
        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let bytes = encoded(&sample());
        // One line each: the header, then each item's token, guard and
        // length, and its command.
        let (header, mut rest) = bytes.split_at(HEADER_BYTES);
        let mut lines = vec![hex(header)];
        while !rest.is_empty() {
            let length = u32::from_be_bytes(rest[16..20].try_into().expect("4 bytes")) as usize;
            let (item, after) = rest.split_at(20 + length);
            lines.push(format!("{} {}", hex(&item[..20]), hex(&item[20..])));
            rest = after;
        }
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn every_cut_of_a_batch_is_refused() {
        let bytes = encoded(&sample());
        for len in 0..bytes.len() {
            assert!(
                Batch::decode(bytes.slice(..len)).is_err(),
                "a batch cut to {len} bytes decoded"
            );
        }
    }

    #[test]
    fn a_header_is_read_without_the_items() {
        let batch = sample();
        let header = BatchHeader::peek(&encoded(&batch)).expect("a header");
        assert_eq!(
            header,
            BatchHeader {
                origin: batch.origin,
                now_ms: batch.now_ms,
                count: 2,
                first_token: Some(1),
            }
        );
        assert_eq!(BatchHeader::peek(&[0; HEADER_BYTES - 1]), None);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = BytesMut::from(&encoded(&sample())[..]);
        bytes.put_u8(0);
        assert!(matches!(
            Batch::decode(bytes.freeze()),
            Err(BatchError::Trailing(1))
        ));
    }
}
