//! One Raft group hosted on this node, as a task: its [`Replica`], its
//! write-ahead log, and the node-to-node transport.
//!
//! The task is the replica's owner in the sense of [`super::replica`]: it
//! ticks it on a timer, steps it with what peers send, proposes what the
//! broker asks, and runs its ready cycles. What a cycle asks to persist is
//! submitted to the log without waiting; the log's group commit makes many
//! cycles durable with one fsync, and only its completion releases the
//! votes and acknowledgements that vouch for them. Committed entries go to
//! the broker, in log order, on a channel.
//!
//! A failed log write stops the group (like a failed fsync stops the
//! single-node broker): what is on disk is then unknown, and a member that
//! acknowledged what it may not have would break Raft's guarantees.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use super::replica::{NodeId, Output, Replica, ReplicaError, Timing};
use super::transport::Transport;
use super::wal::{self, GroupId, WalError};
use crate::io::Io;
use crate::log::{self, Log, LogError, LogOptions, Ticket};

/// What a group needs to start.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group, as its log records and messages name it.
    pub group: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// Every member, this node included.
    pub voters: Vec<NodeId>,
    /// Election and heartbeat lengths, in ticks.
    pub timing: Timing,
    /// How long a tick is.
    pub tick: Duration,
    /// The run's seed: fixes election timeouts.
    pub seed: u64,
    /// A planted bug for the simulator (feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<crate::planted::Plant>,
}

/// Why a group could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The log could not be opened, or a write to it failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record in the log does not decode.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// raft-rs refused the configuration or the recovered log.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// The broker's side of a running group.
#[derive(Debug)]
pub struct GroupHandle {
    proposals: mpsc::UnboundedSender<Bytes>,
}

impl GroupHandle {
    /// Proposes an entry. It comes back on the committed channel, on every
    /// member, once a quorum has it on disk; if this member is not the
    /// leader (or leadership moves), it is dropped and never committed.
    /// Returns false if the group has stopped.
    pub fn propose(&self, data: Bytes) -> bool {
        self.proposals.send(data).is_ok()
    }
}

/// Opens the group's log in `dir`, recovers its replica, and starts its
/// task with [`Io::spawn`]. Returns the handle, the channel of committed
/// entries (after a restart, it starts again from the first entry: the
/// broker's state is rebuilt from them) and the task's result.
///
/// # Errors
///
/// [`GroupError`] if the log cannot be opened or recovered.
pub async fn start<I: Io>(
    io: I,
    dir: &Path,
    config: GroupConfig,
    transport: Transport,
    inbound: mpsc::Receiver<(NodeId, Bytes)>,
) -> Result<
    (
        GroupHandle,
        mpsc::UnboundedReceiver<Entry>,
        tokio::task::JoinHandle<Result<(), GroupError>>,
    ),
    GroupError,
> {
    let (log, recovered) = log::open(io.clone(), dir, LogOptions::default()).await?;
    let mut groups = wal::recover(recovered.records.into_iter().map(|(_, record)| record))?;
    let durable = groups.remove(&config.group).unwrap_or_default();
    #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
    let mut replica = Replica::recover(
        config.node_id,
        &config.voters,
        config.timing,
        config.seed,
        &durable,
    )?;
    #[cfg(feature = "planted-bugs")]
    replica.plant(config.plant);
    let (proposals, proposed) = mpsc::unbounded_channel();
    let (committed, applied) = mpsc::unbounded_channel();
    let span = info_span!("raft_group", group = config.group, node = config.node_id);
    let host = Host {
        group: config.group,
        replica,
        log,
        transport,
        committed,
        persisting: VecDeque::new(),
    };
    let task = io.spawn(host.run(config.tick, inbound, proposed).instrument(span));
    Ok((GroupHandle { proposals }, applied, task))
}

/// The task's state.
struct Host {
    group: GroupId,
    replica: Replica,
    log: Log,
    transport: Transport,
    committed: mpsc::UnboundedSender<Entry>,
    /// Ready numbers submitted to the log, with the ticket of their record,
    /// in order.
    persisting: VecDeque<(Ticket, u64)>,
}

impl Host {
    async fn run(
        mut self,
        tick: Duration,
        mut inbound: mpsc::Receiver<(NodeId, Bytes)>,
        mut proposed: mpsc::UnboundedReceiver<Bytes>,
    ) -> Result<(), GroupError> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.replica.tick(),
                Some((from, payload)) = inbound.recv() => self.receive(from, &payload),
                Some(data) = proposed.recv() => {
                    if let Err(error) = self.replica.propose(data.to_vec()) {
                        debug!(%error, "proposal dropped");
                    }
                }
                completion = self.log.completion(), if self.log.outstanding() > 0 => {
                    let end = completion.end();
                    completion.outcome?;
                    let mut durable = None;
                    while self.persisting.front().is_some_and(|(ticket, _)| *ticket < end) {
                        durable = self.persisting.pop_front().map(|(_, number)| number);
                    }
                    if let Some(number) = durable {
                        let output = self.replica.persisted(number);
                        self.handle(output)?;
                    }
                }
            }
            loop {
                let output = self.replica.advance();
                if output.messages.is_empty()
                    && output.committed.is_empty()
                    && output.persist.is_none()
                {
                    break;
                }
                self.handle(output)?;
            }
        }
    }

    /// A payload from peer `from`: a Raft message of this group, which must
    /// come from the node the transport authenticated.
    fn receive(&mut self, from: NodeId, payload: &[u8]) {
        let message = match Message::parse_from_bytes(payload) {
            Ok(message) => message,
            Err(error) => {
                warn!(from, %error, "undecodable raft message dropped");
                return;
            }
        };
        if message.from != from {
            warn!(
                from,
                claimed = message.from,
                "raft message from an impostor dropped"
            );
            return;
        }
        if let Err(error) = self.replica.step(message) {
            debug!(from, %error, "raft message refused");
        }
    }

    fn handle(&mut self, output: Output) -> Result<(), GroupError> {
        for message in output.messages {
            self.send(&message);
        }
        for entry in output.committed {
            // The broker has gone: nothing to apply to, and the task ends
            // with the runtime.
            let _ = self.committed.send(entry);
        }
        if let Some(persist) = output.persist {
            let group = self.group;
            let ticket = self.log.submit(|buf| wal::encode(group, &persist, buf))?;
            self.persisting.push_back((ticket, persist.number));
        }
        Ok(())
    }

    fn send(&self, message: &Message) {
        let payload = match message.write_to_bytes() {
            Ok(payload) => payload,
            Err(error) => {
                warn!(%error, "raft message not encodable");
                return;
            }
        };
        // Raft tolerates a lost message: it retries what matters.
        if let Err(error) = self.transport.send(message.to, Bytes::from(payload)) {
            debug!(to = message.to, %error, "raft message dropped");
        }
    }
}
