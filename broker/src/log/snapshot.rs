//! Snapshot files: the broker's state as of one LSN, written whole and
//! renamed into place, so that a snapshot on disk is either complete or
//! absent.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::error::Context;
use super::record::field;
use super::{Corruption, LogError, Lsn, files};
use crate::io::{File, Io, OpenMode};

/// The first bytes of every snapshot.
const MAGIC: [u8; 8] = *b"SLUICSNP";

/// The snapshot format this build writes and reads.
const VERSION: u32 = 1;

/// Bytes before the state.
const HEADER_BYTES: usize = 32;

/// Bytes of the header that the checksum covers ahead of the state.
const CHECKED_HEADER_BYTES: usize = 28;

/// The header of a snapshot of `state` covering records up to `upto`:
/// `magic[8] | version u32 | upto u64 | state length u64 | crc32c u32`
/// (big-endian), the checksum covering the 28 bytes before it and the state.
fn encode_header(upto: Lsn, state: &[u8]) -> Vec<u8> {
    let state_len = u64::try_from(state.len()).expect("a usize fits in u64");
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&upto.0.to_be_bytes());
    header.extend_from_slice(&state_len.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), state);
    header.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    header
}

/// The state in a snapshot file named for `named`, or where and why the file
/// is damaged.
pub(super) fn decode(contents: &Bytes, named: Lsn) -> Result<Bytes, (u64, Corruption)> {
    let (Some(magic), Some(version), Some(upto), Some(state_len), Some(crc)) = (
        field::<8>(contents, 0),
        field(contents, 8).map(u32::from_be_bytes),
        field(contents, 12).map(u64::from_be_bytes).map(Lsn),
        field(contents, 20).map(u64::from_be_bytes),
        field(contents, 28).map(u32::from_be_bytes),
    ) else {
        return Err((0, Corruption::Truncated));
    };
    if magic != MAGIC {
        return Err((0, Corruption::BadMagic));
    }
    if version != VERSION {
        return Err((8, Corruption::UnsupportedVersion(version)));
    }
    let end = usize::try_from(state_len)
        .ok()
        .and_then(|len| len.checked_add(HEADER_BYTES))
        .unwrap_or(usize::MAX);
    let Some(state) = contents.get(HEADER_BYTES..end) else {
        return Err((HEADER_BYTES as u64, Corruption::Truncated));
    };
    if contents.len() > end {
        return Err((end as u64, Corruption::TrailingBytes));
    }
    let checked_header = contents.get(..CHECKED_HEADER_BYTES).unwrap_or_default();
    if crc32c::crc32c_append(crc32c::crc32c(checked_header), state) != crc {
        return Err((0, Corruption::Checksum));
    }
    if upto != named {
        return Err((12, Corruption::NameMismatch { named, found: upto }));
    }
    Ok(contents.slice(HEADER_BYTES..end))
}

/// Writes a snapshot durably, then removes what it makes redundant: the
/// segments holding only records up to `upto`, and older snapshots.
///
/// Nothing is removed before the snapshot is durable, so a crash at any
/// point leaves either the old snapshot and its segments or the new one.
pub(super) async fn take<I: Io>(
    io: &I,
    dir: &Path,
    upto: Lsn,
    state: Bytes,
) -> Result<(), LogError> {
    let path = write(io, dir, upto, &state).await?;
    let redundant = files::list(io, dir).await?.redundant(upto);
    files::remove_all(io, dir, &redundant).await?;
    tracing::info!(
        snapshot = %path.display(),
        state_bytes = state.len(),
        removed_files = redundant.len(),
        "log snapshot written"
    );
    Ok(())
}

/// Writes the snapshot to a temporary file, syncs it, renames it into
/// place and syncs the directory. Returns its path.
async fn write<I: Io>(io: &I, dir: &Path, upto: Lsn, state: &[u8]) -> Result<PathBuf, LogError> {
    let temp = dir.join(files::snapshot_temp_name(upto));
    let path = dir.join(files::snapshot_name(upto));
    if let Err(error) = write_temp(io, &temp, upto, state).await {
        // Give back the space a half-written state holds, durably, as a
        // discarded segment is: a later snapshot of the same LSN creates a
        // file of the same name, and a removal still pending by then could
        // land after it (turmoil's disk replays it over the new file's
        // synced data). Should this fail too, the next open removes the
        // file.
        let removed = match io.remove_file(&temp).await {
            Ok(()) => io.sync_dir(dir).await,
            Err(error) => Err(error),
        };
        if let Err(cleanup) = removed {
            tracing::warn!(file = %temp.display(), error = %cleanup, "cannot remove a failed snapshot");
        }
        return Err(error);
    }
    io.rename(&temp, &path).await.during("rename", &temp)?;
    io.sync_dir(dir).await.during("sync_dir", dir)?;
    Ok(path)
}

/// Writes header and state to `temp` and syncs it.
async fn write_temp<I: Io>(io: &I, temp: &Path, upto: Lsn, state: &[u8]) -> Result<(), LogError> {
    let mut file = io
        .open(temp, OpenMode::Truncate)
        .await
        .during("open", temp)?;
    let header = encode_header(upto, state);
    file.write_all(&header).await.during("write", temp)?;
    file.write_all(state).await.during("write", temp)?;
    file.sync_all().await.during("fsync", temp)
}

#[cfg(test)]
pub(super) mod test_support {
    //! Snapshot files written by hand, for recovery tests.

    use super::*;

    /// The bytes of a valid snapshot file.
    pub(in super::super) fn encode(upto: Lsn, state: &[u8]) -> Vec<u8> {
        let mut contents = encode_header(upto, state);
        contents.extend_from_slice(state);
        contents
    }
}
