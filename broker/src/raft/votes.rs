//! Each group's term and vote, kept apart from the Raft log.
//!
//! A member must never vote twice in one term, so the term and vote it last
//! made durable must survive whatever happens to its log. The log holds them
//! too (in its hard-state records), but a log found damaged at start is cut
//! back at the damage, and the records it loses may be the latest votes. So
//! the node also keeps them in this small file, written whenever a group's
//! term or vote changes and before the messages that vouch for it leave;
//! on start it takes the later of the two. The file also marks the groups
//! whose member is rejoining after such damage (see
//! [`Replica::rejoin`](super::replica::Replica::rejoin)), so that a restart
//! before it has caught up does not end the rejoin.
//!
//! It holds two copies of one record, each with a CRC-32C, and is replaced
//! whole ([`crate::io::replace_file`]): a flipped bit in one copy leaves the
//! other. Record: `magic "SLVT" | version u8 | count u32 | count × (group u32
//! | term u64 | vote u64 | rejoining u8) | crc32c u32`, big-endian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut};

use super::replica::NodeId;
use super::wal::GroupId;
use crate::io::Io;

/// One group's durable term and vote, and whether its member is rejoining.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ballot {
    /// The latest term.
    pub term: u64,
    /// Who this member voted for in `term`; 0 for nobody.
    pub vote: NodeId,
    /// The member is rejoining after damage to its log.
    pub rejoining: bool,
}

/// Every group's ballot.
pub type Ballots = BTreeMap<GroupId, Ballot>;

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VotesError {
    /// Reading or replacing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The votes file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Neither copy is intact: the votes this node cast are unknown.
    #[error("{}: both copies are damaged; this node's Raft votes are unknown", path.display())]
    Damaged {
        /// The votes file.
        path: PathBuf,
    },
}

const MAGIC: &[u8; 4] = b"SLVT";
const VERSION: u8 = 1;
const BALLOT_BYTES: usize = 4 + 8 + 8 + 1;

/// The ballots in `path`; `None` if there is no such file yet.
///
/// # Errors
///
/// [`VotesError::Io`] if it cannot be read; [`VotesError::Damaged`] if
/// neither copy is intact.
pub async fn load<I: Io>(io: &I, path: &Path) -> Result<Option<Ballots>, VotesError> {
    let contents = match io.read_file(path).await {
        Ok(contents) => contents,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(VotesError::Io { path, source });
        }
    };
    parse(&contents)
        .map(Some)
        .ok_or_else(|| VotesError::Damaged {
            path: path.to_path_buf(),
        })
}

/// Replaces `path` with `ballots`, durably.
///
/// # Errors
///
/// [`VotesError::Io`] if any step fails: what is durable is then unknown,
/// and the caller must stop, as after a failed fsync of the log.
pub async fn save<I: Io>(io: &I, path: &Path, ballots: &Ballots) -> Result<(), VotesError> {
    crate::io::replace_file(io, path, &contents(ballots))
        .await
        .map_err(|source| VotesError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The file's contents for `ballots`: two copies of one record.
pub fn contents(ballots: &Ballots) -> Vec<u8> {
    let record = encode(ballots);
    [record.as_slice(), record.as_slice()].concat()
}

/// The ballots in the file's `contents`: from the first of its two halves
/// that is a whole record; `None` if neither is.
pub fn parse(contents: &[u8]) -> Option<Ballots> {
    let (first, second) = contents.split_at(contents.len() / 2);
    decode(first).or_else(|| decode(second))
}

/// One copy: the record for `ballots`.
pub fn encode(ballots: &Ballots) -> Vec<u8> {
    let mut record = Vec::with_capacity(13 + ballots.len() * BALLOT_BYTES);
    record.put_slice(MAGIC);
    record.put_u8(VERSION);
    // At most 2^32 groups: group ids are u32.
    record.put_u32(ballots.len() as u32);
    for (&group, ballot) in ballots {
        record.put_u32(group);
        record.put_u64(ballot.term);
        record.put_u64(ballot.vote);
        record.put_u8(u8::from(ballot.rejoining));
    }
    record.put_u32(crc32c::crc32c(&record));
    record
}

/// One copy, if it is whole: right length, magic, version and checksum.
fn decode(copy: &[u8]) -> Option<Ballots> {
    let (body, crc) = copy.split_at_checked(copy.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let mut body = body.strip_prefix(MAGIC.as_slice())?;
    if body.try_get_u8().ok()? != VERSION {
        return None;
    }
    let count = body.try_get_u32().ok()? as usize;
    if body.len() != count.checked_mul(BALLOT_BYTES)? {
        return None;
    }
    let mut ballots = Ballots::new();
    for _ in 0..count {
        let group = body.get_u32();
        let term = body.get_u64();
        let vote = body.get_u64();
        // Strict, so that one state has one encoding: flags 0 or 1, and
        // groups in increasing order, as written.
        let rejoining = match body.get_u8() {
            0 => false,
            1 => true,
            _ => return None,
        };
        if ballots
            .last_key_value()
            .is_some_and(|(&last, _)| last >= group)
        {
            return None;
        }
        ballots.insert(
            group,
            Ballot {
                term,
                vote,
                rejoining,
            },
        );
    }
    Some(ballots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TokioIo;

    fn sample() -> Ballots {
        Ballots::from([
            (
                1,
                Ballot {
                    term: 7,
                    vote: 2,
                    rejoining: false,
                },
            ),
            (
                2,
                Ballot {
                    term: 3,
                    vote: 0,
                    rejoining: true,
                },
            ),
        ])
    }

    #[tokio::test]
    async fn ballots_survive_a_round_trip_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("votes");
        assert!(load(&TokioIo, &path).await.unwrap().is_none());
        save(&TokioIo, &path, &sample()).await.unwrap();
        assert_eq!(load(&TokioIo, &path).await.unwrap(), Some(sample()));
    }

    /// The on-disk record, byte for byte: a change to it is a format change.
    #[test]
    fn the_record_encoding_is_stable() {
        let record = encode(&sample());
        let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        // One line each: magic, version and count; a ballot; the checksum.
        let (header, rest) = record.split_at(9);
        let (ballots, crc) = rest.split_at(rest.len() - 4);
        let mut lines: Vec<String> = vec![hex(header)];
        lines.extend(ballots.chunks(BALLOT_BYTES).map(hex));
        lines.push(hex(crc));
        insta::assert_snapshot!(lines.join("\n"));
    }

    /// Any one flipped bit leaves a good copy; one in each copy leaves none.
    #[test]
    fn one_damaged_copy_is_survived_and_two_are_refused() {
        let whole = contents(&sample());
        let half = whole.len() / 2;
        for bit in 0..whole.len() * 8 {
            let mut damaged = whole.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(parse(&damaged), Some(sample()), "bit {bit}");
            damaged[(bit / 8 + half) % whole.len()] ^= 1 << (bit % 8);
            assert_eq!(parse(&damaged), None, "bit {bit}");
        }
    }

    #[tokio::test]
    async fn a_file_with_both_copies_damaged_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("votes");
        let mut damaged = contents(&sample());
        let half = damaged.len() / 2;
        damaged[5] ^= 1;
        damaged[half + 5] ^= 1;
        crate::io::replace_file(&TokioIo, &path, &damaged)
            .await
            .unwrap();
        let refused = load(&TokioIo, &path).await;
        assert!(
            matches!(refused, Err(VotesError::Damaged { .. })),
            "{refused:?}"
        );
    }
}
