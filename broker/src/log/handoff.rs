//! The records between the log's owner and its writer task.
//!
//! The owner frames each record straight into the batch the writer will
//! take next, so a record costs no allocation, no channel message and no
//! wake-up of its own: the writer is woken only when records arrive with
//! none waiting, and then takes a whole batch at once. Records that arrive
//! while a batch is being written and fsynced fill the next one, so the
//! batch size follows the load (group commit).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::record;
use super::{BATCH_BYTES_MAX, LogError};

/// A returned buffer is kept for the next batch only up to this capacity, so
/// that one burst does not pin a large allocation for good.
const SPARE_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// Framed records waiting for the writer.
#[derive(Debug, Default)]
pub(super) struct Handoff {
    state: Mutex<State>,
    /// Wakes the writer when records arrive with none waiting.
    arrived: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first. Only the last one takes more records.
    batches: VecDeque<Batch>,
    /// An emptied buffer the writer gave back.
    spare: Option<BytesMut>,
}

/// Records the writer makes durable with one write and one fsync.
#[derive(Debug)]
pub(super) struct Batch {
    /// The records, framed, in submission order.
    pub(super) frames: BytesMut,
    /// How many records `frames` holds (at least one).
    pub(super) records: u64,
    /// `frames` cut into runs of records of one kind, in order: the writer
    /// splits a batch along them when the disk is full (see
    /// [`super::reserve`]).
    pub(super) runs: Vec<Run>,
}

/// Consecutive records of a batch that are all reserved or all not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// How many records.
    pub(super) records: u64,
    /// Their framed bytes.
    pub(super) bytes: usize,
    /// Whether they may be written into the disk reserve.
    pub(super) reserved: bool,
}

impl Batch {
    /// Whether any of its records may be written into the disk reserve.
    pub(super) fn has_reserved(&self) -> bool {
        self.runs.iter().any(|run| run.reserved)
    }

    /// Whether any of its records may not.
    pub(super) fn has_ordinary(&self) -> bool {
        self.runs.iter().any(|run| !run.reserved)
    }

    /// Counts a record of `bytes` framed bytes just added to `frames`.
    fn count(&mut self, bytes: usize, reserved: bool) {
        self.records += 1;
        match self.runs.last_mut() {
            Some(run) if run.reserved == reserved => {
                run.records += 1;
                run.bytes += bytes;
            }
            _ => self.runs.push(Run {
                records: 1,
                bytes,
                reserved,
            }),
        }
    }
}

impl Handoff {
    /// Frames the record that `write` appends into the open batch, opening
    /// a new batch once the last one holds [`BATCH_BYTES_MAX`] bytes.
    /// `reserved` records may be written into the disk reserve.
    ///
    /// A record of the wrong size is refused with [`LogError::RecordSize`]
    /// and leaves nothing behind. If a `write` ever panicked here, the
    /// handoff stays poisoned and is never written again (its last frame may
    /// be partial): every later push fails with [`LogError::Closed`].
    pub(super) fn push(
        &self,
        reserved: bool,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), LogError> {
        let mut state = self.lock().ok_or(LogError::Closed)?;
        let was_empty = state.batches.is_empty();
        let open = state
            .batches
            .back()
            .is_some_and(|batch| batch.frames.len() < BATCH_BYTES_MAX);
        if !open {
            let frames = state.spare.take().unwrap_or_default();
            state.batches.push_back(Batch {
                frames,
                records: 0,
                runs: Vec::new(),
            });
        }
        let State { batches, spare } = &mut *state;
        let batch = batches.back_mut().ok_or(LogError::Closed)?;
        let start = batch.frames.len();
        if let Err(len) = record::encode_with(&mut batch.frames, write) {
            if batch.records == 0 {
                *spare = batches.pop_back().map(|batch| batch.frames);
            }
            return Err(LogError::RecordSize { len });
        }
        let framed = batch.frames.len() - start;
        batch.count(framed, reserved);
        drop(state);
        if was_empty {
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// The oldest batch, if any. `None` also once the handoff is poisoned.
    pub(super) fn take(&self) -> Option<Batch> {
        self.lock()?.batches.pop_front()
    }

    /// How many batches are waiting (0 once the handoff is poisoned).
    pub(super) fn batches(&self) -> usize {
        self.lock().map_or(0, |state| state.batches.len())
    }

    /// Gives a written batch's buffer back for a later batch.
    pub(super) fn recycle(&self, mut frames: BytesMut) {
        frames.clear();
        if frames.capacity() <= SPARE_BYTES_MAX
            && let Some(mut state) = self.lock()
        {
            state.spare = Some(frames);
        }
    }

    /// Waits until records arrive with none waiting. A push between the
    /// writer's last [`Handoff::take`] and this call is not missed: `Notify`
    /// keeps the wake-up until it is awaited.
    pub(super) async fn arrival(&self) {
        self.arrived.notified().await;
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }
}
