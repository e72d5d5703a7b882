//! The nemesis: a fault schedule drawn from the run's seed.
//!
//! Everything random here comes from one ChaCha8 stream seeded from the run's
//! seed (salted, so that it is independent of the workload's stream); the
//! only other input is the simulated time the world passes in. The same seed
//! therefore injects the same faults at the same instants, and every fault,
//! and every end of one, is recorded in the trace.
//!
//! The schedule is generated as the run goes: before each step, faults whose
//! time is up are undone, and once the next injection is due one more fault
//! is drawn from the enabled kinds, within the failure bounds:
//!
//! - at most one process fault (crash, kill, power loss) in flight, and none
//!   starts within [`PROCESS_QUIET`] of the last one ending;
//! - at most one network fault per link, and at most
//!   [`Bias::net_faults_max`] at once;
//! - at most one disk fault in flight (those that also restart the host:
//!   corruption at rest, read errors, corruption while running, a damaged
//!   votes file, count as process faults too).
//!
//! A profile leans the draws ([`Bias`]): which kinds come more often, how
//! long and lossy network faults are, which disk faults come.
//!
//! The faults between a client and a broker act on the client's links
//! ([`ClientLinks`]), since every client shares one turmoil host; those
//! between cluster nodes, and everything else, act on turmoil.
//!
//! In a cluster ([`Nemesis::cluster`]) it also cuts nodes apart (isolates
//! the leader of a group, or any node; bridges two sides through one node;
//! cuts one direction between two nodes), at most one such cut at a time;
//! restarts every node in turn (a rolling restart, a process fault); makes
//! the leader's disk slow (a disk fault); aims crashes at leaders half of
//! the time; and plays the supervisor that restarts a node that stopped on
//! its own (a disk error), once no fault holds it down. It corrupts one
//! node's log at a time: not again until the node last corrupted reports
//! that every group has rejoined. A single-node world draws none of these,
//! and its stream of draws is unchanged.
//!
//! Given an explicit [`Schedule`] instead ([`Nemesis::scripted`]: replay
//! files, the shrinker), it draws nothing: it injects the listed faults at
//! their times on the listed disk, and undoes them, supervises and restores
//! as above. Every run records what it injected ([`Nemesis::schedule`]), so
//! a seed's schedule, run explicitly, is the same run.
//!
//! [`Nemesis::heal`] undoes everything at once when the fault phase ends, so
//! that the liveness phase starts from a whole cluster. `docs/simulation.md`
//! ("Fault model") lists every fault, how it is injected, and what the
//! broker must do.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sluice::io::TurmoilIo;
use sluice::io::faulty::{Faults, FaultyIo};

use crate::at_rest::AtRest;
use crate::client_net::ClientLinks;
use crate::cluster::Replicas;
use crate::history::broker_name;
use crate::schedule::{Schedule, Scheduled};
use crate::toml_text;
use crate::trace::Trace;

/// The I/O seam a broker host runs on: turmoil's, behind the nemesis's
/// disk faults and its slow-disk switch.
pub type BrokerIo = FaultyIo<TurmoilIo>;

/// Mixed into the seed so that the nemesis's stream differs from the
/// workload's, which is seeded with the bare seed.
const SEED_SALT: u64 = 0x6e65_6d65_7369_7321;

/// How a profile leans the nemesis's draws (`world::Profile`): which kinds
/// come more often, how long and how lossy network faults are, and which
/// disk faults come. Only drawn runs read it; an explicit schedule is what
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bias {
    /// How often each enabled kind is drawn, relatively: net, crash, disk,
    /// clock.
    pub kind_weights: [u32; 4],
    /// At most this many network faults at once (turmoil does not support
    /// a hold combined with a one-way partition on one link, so one per
    /// link whatever this says).
    pub net_faults_max: usize,
    /// Client-broker network faults last up to this long.
    pub net_lasts_max: Duration,
    /// Of the client-broker network faults, the percentage that are lossy
    /// links on top of those the other draws make lossy.
    pub lossy_percent: u32,
    /// A lossy link drops at most this many messages in a thousand.
    pub loss_permille_max: u32,
    /// The percentage of disk faults that slow a disk's fsyncs instead
    /// (always a cluster's; a single node's only if `slow_single`).
    pub slow_disk_percent: u32,
    /// Whether a single node's disk is slowed too.
    pub slow_single: bool,
    /// How often each disk fault is drawn, relatively, in the order of
    /// [`DISK_FAULTS`]; the votes file's only in a cluster.
    pub disk_weights: [u32; 7],
}

/// The disk faults [`Bias::disk_weights`] weighs, in its order.
pub const DISK_FAULTS: [&str; 7] = [
    "corrupt at rest",
    "disk full",
    "fsync EIO",
    "read EIO",
    "corrupt while running",
    "damaged write",
    "corrupt votes",
];

impl Bias {
    /// The default profile's leaning: every enabled kind alike.
    pub const DEFAULT: Bias = Bias {
        kind_weights: [1, 1, 1, 1],
        net_faults_max: 2,
        net_lasts_max: Duration::from_secs(3),
        lossy_percent: 0,
        loss_permille_max: 200,
        slow_disk_percent: 25,
        slow_single: false,
        disk_weights: [2, 6, 2, 1, 1, 1, 1],
    };
}

/// The index `rng` draws among `weights`, each as likely as its weight;
/// `None` if they are all 0.
fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[u32]) -> Option<usize> {
    let total: u32 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let mut roll = rng.gen_range(0..total);
    for (index, &weight) in weights.iter().enumerate() {
        if roll < weight {
            return Some(index);
        }
        roll -= weight;
    }
    None
}
/// After a process fault ends (the host is back), no other starts for this
/// long, so that the broker gets to recover and serve in between.
const PROCESS_QUIET: Duration = Duration::from_secs(1);
/// No fault starts before this: the broker gets to start and clients to
/// connect once.
const WARM_UP: Duration = Duration::from_millis(500);
/// A cluster node that stopped on its own is restarted this long after the
/// nemesis first sees it down (and no fault holds it down).
const SUPERVISOR_DELAY: Duration = Duration::from_millis(200);

/// Which kinds of fault the schedule may inject (`--faults net,crash,disk,clock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultKinds {
    /// Partitions (symmetric and one-way), holds (delay storms), latency
    /// spikes and lossy links between clients and brokers.
    pub net: bool,
    /// Crash and restart of one broker host, kill (restart without losing
    /// the page cache), power loss of every broker host.
    pub crash: bool,
    /// Torn writes and slow fsyncs (for the whole run), slow I/O, and, on
    /// broker hosts that run on [`Nemesis::broker_io`], disk-full windows,
    /// failed fsyncs, read errors, damaged writes; corruption of the log at
    /// rest and while running; a cluster node's votes file damaged.
    pub disk: bool,
    /// A broker host's wall clock stepped ahead or back for a while (on
    /// hosts that run on [`Nemesis::broker_io`]).
    pub clock: bool,
}

/// The disk as the nemesis sets it for the whole run: drawn from the seed,
/// or given by an explicit [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskModel {
    /// turmoil's `block_size`: on a crash, each unsynced write keeps a random
    /// whole number of these blocks. `None`: writes are atomic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// turmoil's `io_latency` bounds (min, max), if any: every file
    /// operation then sleeps afterwards. Slows the broker; makes nothing
    /// less durable.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "toml_text::duration_range"
    )]
    pub io_latency: Option<(Duration, Duration)>,
    /// How long a broker fsync ([`Nemesis::broker_io`]) waits before it
    /// makes anything durable: the window in which a crash finds written,
    /// unsynced data.
    #[serde(with = "toml_text::duration")]
    pub sync_latency: Duration,
}

impl DiskModel {
    /// Draws the disk for `kinds` from the nemesis's stream (the first
    /// draws of a run).
    fn draw(rng: &mut ChaCha8Rng, kinds: FaultKinds) -> Self {
        if kinds.disk {
            DiskModel {
                block_size: Some(*[64_u64, 512, 4096].choose(rng).expect("not empty")),
                io_latency: rng.gen_bool(0.5).then(|| {
                    let max_us = rng.gen_range(500..=10_000);
                    (Duration::from_micros(50), Duration::from_micros(max_us))
                }),
                sync_latency: Duration::from_millis(rng.gen_range(1..=50)),
            }
        } else {
            DiskModel {
                block_size: None,
                io_latency: None,
                // Even a healthy disk takes a while to fsync: without it a
                // crash could never land between a write and its fsync.
                sync_latency: if kinds.crash {
                    Duration::from_millis(rng.gen_range(1..=50))
                } else {
                    Duration::ZERO
                },
            }
        }
    }
}

/// One fault in flight, with what undoes it. In a replay file's schedule,
/// `kind` names the variant (`kind = "partition-oneway"`) next to its
/// fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The client's link to the broker cut both ways; undone by the
    /// repair.
    Partition { client: String, broker: String },
    /// A client's link to a broker cut one way, `from` one end `to` the
    /// other; undone by the repair.
    PartitionOneway { from: String, to: String },
    /// The client's link to the broker holds what it carries; undone by
    /// the release, which delivers it all at once.
    Hold { client: String, broker: String },
    /// Up to `max` more latency on the client's link to the broker;
    /// undone by taking it away.
    Latency {
        client: String,
        broker: String,
        #[serde(with = "toml_text::duration")]
        max: Duration,
    },
    /// The client's link to the broker loses `rate_permille` / 1000 of
    /// what it carries, and a connection with it; undone by a rate of 0.
    Lossy {
        client: String,
        broker: String,
        rate_permille: u32,
    },
    /// `bounce(host)` alone: the process dies and restarts at once, and
    /// the page cache (unsynced writes) survives, as with `kill -9`.
    Kill { host: String },
    /// `crash(host)`: unsynced writes lost (torn at `block_size`); undone by
    /// `bounce(host)`.
    Crash { host: String },
    /// Every broker crashed at once; undone by bouncing them all.
    PowerLoss { hosts: Vec<String> },
    /// The host's disk is full: writes fail with `StorageFull`.
    DiskFull { host: String },
    /// The host's next fsync fails with EIO; the broker stops, as it must.
    /// Undone by restarting it if it stopped.
    SyncError { host: String },
    /// `crash(host)`, and a bit of its log flipped while it is down (see
    /// [`AtRest`]), `flip` picking which; undone by `bounce(host)`.
    Corrupt {
        host: String,
        #[serde(with = "toml_text::hex_u64")]
        flip: u64,
    },
    /// Cluster: `host` cut off from every other node (`partition`); undone
    /// by `repair`. Clients still reach it.
    Isolate {
        host: String,
        others: Vec<String>,
        /// The group it was found leading, if it was picked as a leader.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_of: Option<u32>,
    },
    /// Cluster: every node of `left` cut off from every node of `right`,
    /// while `bridge` reaches both sides; undone by `repair`.
    Bridge {
        left: Vec<String>,
        bridge: String,
        right: Vec<String>,
    },
    /// Cluster: nothing from node `from` reaches node `to`
    /// (`partition_oneway`); undone by `repair_oneway`.
    NodeOneway { from: String, to: String },
    /// Cluster: every node killed in turn (`bounce`, page cache kept), one
    /// every `every`; the first at once, the others as the schedule comes
    /// due.
    RollingRestart {
        hosts: Vec<String>,
        #[serde(with = "toml_text::duration")]
        every: Duration,
    },
    /// Cluster: the host's fsyncs take `extra` longer; undone by setting it
    /// back to nothing.
    SlowDisk {
        host: String,
        #[serde(with = "toml_text::duration")]
        extra: Duration,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_of: Option<u32>,
    },
    /// The host's wall clock is `offset_ms` off the true time (ahead if
    /// positive), as when NTP steps it; undone by stepping it back.
    ClockJump { host: String, offset_ms: i64 },
    /// Cluster: the link between nodes `a` and `b` slowed to `max`
    /// latency (`set_link_max_message_latency`); undone by setting it back.
    NodeLatency { a: String, b: String, max: Duration },
    /// The host's file reads fail with EIO once `after_reads` more have
    /// passed, and the host is killed (`bounce`) so that its broker
    /// recovers meanwhile; undone by making reads succeed and restarting
    /// the broker if it stopped.
    ReadError { host: String, after_reads: u32 },
    /// A bit of the running broker's log flipped (see
    /// [`AtRest::arm_running`]), `flip` picking which; undone by killing
    /// the host (`bounce`), so that the broker reads it back at once.
    CorruptRunning {
        host: String,
        #[serde(with = "toml_text::hex_u64")]
        flip: u64,
    },
    /// The host's next log write lands with a bit of its last record
    /// flipped, and its fsync fails with EIO
    /// ([`Faults::damage_next_log_write`]), `flip` picking the bit; undone
    /// by disarming it and restarting the broker if it stopped.
    DamagedWrite {
        host: String,
        #[serde(with = "toml_text::hex_u64")]
        flip: u64,
    },
    /// Cluster: `crash(host)`, and its votes file damaged while it is down:
    /// a bit flipped, `flip` picking which, or (`flip`'s top bit set) the
    /// file replaced by a valid one with no ballot; undone by
    /// `bounce(host)`.
    CorruptVotes {
        host: String,
        #[serde(with = "toml_text::hex_u64")]
        flip: u64,
    },
}

/// What the nemesis did, as the history and the checker see it; its
/// `Display` is the trace's text after `nemesis: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultEvent {
    /// At the first step: the fault kinds and disk settings drawn.
    Announced(String),
    /// `fault` began; it lasts `lasts`.
    Injected { fault: Fault, lasts: Duration },
    /// `fault` was undone when its time was up.
    Ended(Fault),
    /// `fault` was undone when the fault phase ended.
    Healed(Fault),
    /// Every link and disk was made healthy: the fault phase is over.
    HealedAll,
    /// A rolling restart killed `host`.
    RollingKill(String),
    /// `host` stopped on its own, and was restarted as a supervisor would.
    SupervisorRestart(String),
    /// `host` refused to start on a flipped bit and was restored.
    Restored(String),
    /// A broker flipped or put back a bit of its log at rest (the text
    /// says which).
    AtRest(String),
}

impl FaultEvent {
    /// The fault that began, ended or was healed, if the event is one of
    /// those.
    fn window_edge(&self) -> Option<(&Fault, bool)> {
        match self {
            FaultEvent::Injected { fault, .. } => Some((fault, true)),
            FaultEvent::Ended(fault) | FaultEvent::Healed(fault) => Some((fault, false)),
            _ => None,
        }
    }
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultEvent::Announced(what) | FaultEvent::AtRest(what) => f.write_str(what),
            FaultEvent::Injected { fault, lasts } => write!(f, "{fault} for {lasts:?}"),
            FaultEvent::Ended(fault) => write!(f, "ended {fault}"),
            FaultEvent::Healed(fault) => write!(f, "healed {fault}"),
            FaultEvent::HealedAll => f.write_str("healed all"),
            FaultEvent::RollingKill(host) => write!(f, "rolling restart: kill {host}"),
            FaultEvent::SupervisorRestart(host) => write!(f, "supervisor restarts {host}"),
            FaultEvent::Restored(host) => write!(f, "restore {host} from a backup"),
        }
    }
}

/// One fault's life in a history: when it was injected, and when it was
/// ended or healed (`None` if never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSpan<'a> {
    /// The fault.
    pub fault: &'a Fault,
    /// When it was injected.
    pub start: Duration,
    /// When it was undone, if it was.
    pub end: Option<Duration>,
}

/// The spans of the faults among `events` (with their times), from
/// injection to end or heal, in the order they were injected.
pub fn fault_spans<'a>(
    events: impl IntoIterator<Item = (Duration, &'a FaultEvent)>,
) -> Vec<FaultSpan<'a>> {
    let mut spans: Vec<FaultSpan<'a>> = Vec::new();
    for (time, event) in events {
        let Some((fault, begins)) = event.window_edge() else {
            continue;
        };
        let open = spans
            .iter_mut()
            .find(|span| span.end.is_none() && span.fault == fault);
        match (begins, open) {
            (true, None) => spans.push(FaultSpan {
                fault,
                start: time,
                end: None,
            }),
            (false, Some(span)) => span.end = Some(time),
            _ => {}
        }
    }
    spans
}

/// The [start, end] windows of the effects of the faults `selected` picks
/// among `events` (with their times), from injection to end or heal, and
/// on for as long as what the fault delayed may still arrive (see
/// [`Fault::lingers`]); one never ended lasts to the end of the run
/// (`Duration::MAX`).
pub fn fault_windows<'a>(
    events: impl IntoIterator<Item = (Duration, &'a FaultEvent)>,
    selected: impl Fn(&Fault) -> bool,
) -> Vec<(Duration, Duration)> {
    fault_spans(events)
        .into_iter()
        .filter(|span| selected(span.fault))
        .map(|span| {
            let end = span.end.map_or(Duration::MAX, |end| {
                end.saturating_add(span.fault.lingers())
            });
            (span.start, end)
        })
        .collect()
}

impl Fault {
    /// The cluster nodes the fault cuts off from other nodes (to the
    /// checker, an excuse for what those nodes could not hear).
    pub fn nodes_cut_off(&self) -> Vec<&str> {
        match self {
            Fault::Isolate { host, .. } => vec![host.as_str()],
            Fault::Bridge { left, right, .. } => {
                left.iter().chain(right).map(String::as_str).collect()
            }
            Fault::NodeOneway { from, to } => vec![from.as_str(), to.as_str()],
            // Slowed, not cut: a node heard late may be taken for gone.
            Fault::NodeLatency { a, b, .. } => vec![a.as_str(), b.as_str()],
            _ => Vec::new(),
        }
    }

    /// Whether what `client` sends towards a broker may be dropped while
    /// the fault lasts: a partition in that direction, or a lossy link.
    /// turmoil drops whole writes of a TCP stream there without breaking
    /// the connection.
    pub fn drops_uplink_of(&self, name: &str) -> bool {
        match self {
            Fault::Partition { client, .. } | Fault::Lossy { client, .. } => client == name,
            Fault::PartitionOneway { from, .. } => from == name,
            _ => false,
        }
    }

    /// Every host the fault names.
    pub fn hosts(&self) -> Vec<&str> {
        match self {
            Fault::Partition { client, broker }
            | Fault::Hold { client, broker }
            | Fault::Latency { client, broker, .. }
            | Fault::Lossy { client, broker, .. } => vec![client.as_str(), broker.as_str()],
            Fault::PartitionOneway { from, to } | Fault::NodeOneway { from, to } => {
                vec![from.as_str(), to.as_str()]
            }
            Fault::NodeLatency { a, b, .. } => vec![a.as_str(), b.as_str()],
            Fault::Kill { host }
            | Fault::Crash { host }
            | Fault::DiskFull { host }
            | Fault::SyncError { host }
            | Fault::Corrupt { host, .. }
            | Fault::SlowDisk { host, .. }
            | Fault::ClockJump { host, .. }
            | Fault::ReadError { host, .. }
            | Fault::CorruptRunning { host, .. }
            | Fault::DamagedWrite { host, .. }
            | Fault::CorruptVotes { host, .. } => vec![host.as_str()],
            Fault::PowerLoss { hosts } | Fault::RollingRestart { hosts, .. } => {
                hosts.iter().map(String::as_str).collect()
            }
            Fault::Isolate { host, others, .. } => std::iter::once(host)
                .chain(others)
                .map(String::as_str)
                .collect(),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => (left.iter().chain(right))
                .chain(std::iter::once(bridge))
                .map(String::as_str)
                .collect(),
        }
    }

    /// Whether a broker's disk fails writes while the fault lasts.
    pub fn fails_writes(&self) -> bool {
        matches!(
            self,
            Fault::DiskFull { .. } | Fault::SyncError { .. } | Fault::DamagedWrite { .. }
        )
    }

    /// Whether what passes between `client` and its broker may be late
    /// while the fault lasts (held, slowed, or dropped and never retried).
    pub fn delays_link_of(&self, name: &str) -> bool {
        self.link().is_some_and(|(a, b)| a == name || b == name)
    }

    /// How long after the fault ends what it delayed may still arrive: a
    /// slowed link's last messages keep the latency they were sent with.
    pub fn lingers(&self) -> Duration {
        match self {
            Fault::Latency { max, .. } | Fault::NodeLatency { max, .. } => *max,
            _ => Duration::ZERO,
        }
    }

    /// Whether the broker's commits may be late while the fault lasts:
    /// its disk fails writes or is slow.
    pub fn delays_commits(&self) -> bool {
        self.fails_writes() || matches!(self, Fault::SlowDisk { .. })
    }

    /// Whether the fault may cost a cluster's group its leader: what was
    /// proposed before is proposed again, and committed later (with the
    /// clock it was proposed with), once a leader is elected and reached.
    pub fn costs_a_leader(&self) -> bool {
        self.is_process() || self.is_node_net()
    }

    /// How long after it ends a broker's clock may still be off the true
    /// time, if the fault steps it: a group's clock never goes back, so
    /// after a step ahead it stays ahead until the true time catches up
    /// (expiry is reckoned from a later time); during a step back it
    /// stands still (expiry is judged at an earlier time), and it runs
    /// again once the clock is put right.
    pub fn clock_off_after(&self) -> Option<Duration> {
        match self {
            Fault::ClockJump { offset_ms, .. } => {
                let ahead = u64::try_from(*offset_ms).unwrap_or(0);
                Some(Duration::from_millis(ahead))
            }
            _ => None,
        }
    }

    /// The client-broker link a network fault occupies.
    pub fn link(&self) -> Option<(String, String)> {
        match self {
            Fault::Partition { client, broker }
            | Fault::Hold { client, broker }
            | Fault::Latency { client, broker, .. }
            | Fault::Lossy { client, broker, .. } => Some((client.clone(), broker.clone())),
            Fault::PartitionOneway { from, to } => Some(ordered(from, to)),
            _ => None,
        }
    }

    /// Whether it is a process fault (crash, kill, power loss, …).
    pub fn is_process(&self) -> bool {
        matches!(
            self,
            Fault::Kill { .. }
                | Fault::Crash { .. }
                | Fault::PowerLoss { .. }
                | Fault::Corrupt { .. }
                | Fault::RollingRestart { .. }
                | Fault::ReadError { .. }
                | Fault::CorruptRunning { .. }
                | Fault::CorruptVotes { .. }
        )
    }

    /// Whether it is a disk fault.
    pub fn is_disk(&self) -> bool {
        matches!(
            self,
            Fault::DiskFull { .. }
                | Fault::SyncError { .. }
                | Fault::Corrupt { .. }
                | Fault::SlowDisk { .. }
                | Fault::ReadError { .. }
                | Fault::CorruptRunning { .. }
                | Fault::DamagedWrite { .. }
                | Fault::CorruptVotes { .. }
        )
    }

    /// A cut between cluster nodes, or a slowed link between two.
    pub fn is_node_net(&self) -> bool {
        matches!(
            self,
            Fault::Isolate { .. }
                | Fault::Bridge { .. }
                | Fault::NodeOneway { .. }
                | Fault::NodeLatency { .. }
        )
    }

    /// Whether the fault keeps `host` down or its disk failing, so that the
    /// supervisor must leave it alone.
    fn holds_down(&self, host: &str) -> bool {
        match self {
            Fault::Crash { host: h }
            | Fault::Corrupt { host: h, .. }
            | Fault::DiskFull { host: h }
            | Fault::SyncError { host: h }
            | Fault::ReadError { host: h, .. }
            | Fault::CorruptRunning { host: h, .. }
            | Fault::DamagedWrite { host: h, .. }
            | Fault::CorruptVotes { host: h, .. } => h == host,
            Fault::PowerLoss { hosts } => hosts.iter().any(|h| h == host),
            _ => false,
        }
    }
}

/// With `leader_of`: ` (leader of group G)`.
fn leader_note(leader_of: Option<u32>) -> String {
    leader_of.map_or_else(String::new, |group| format!(" (leader of group {group})"))
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { client, broker } => write!(f, "partition {client} <-> {broker}"),
            Fault::PartitionOneway { from, to } => write!(f, "partition {from} -> {to}"),
            Fault::Hold { client, broker } => write!(f, "hold {client} <-> {broker}"),
            Fault::Latency {
                client,
                broker,
                max,
            } => write!(f, "latency {client} <-> {broker} max {max:?}"),
            Fault::Lossy {
                client,
                broker,
                rate_permille,
            } => write!(
                f,
                "lossy {client} <-> {broker} fail rate {rate_permille}/1000"
            ),
            Fault::Kill { host } => write!(f, "kill {host}"),
            Fault::Crash { host } => write!(f, "crash {host}"),
            Fault::PowerLoss { hosts } => write!(f, "power loss {}", hosts.join(",")),
            Fault::DiskFull { host } => write!(f, "disk full {host}"),
            Fault::SyncError { host } => write!(f, "fsync EIO {host}"),
            Fault::Corrupt { host, .. } => write!(f, "crash and corrupt at rest {host}"),
            Fault::Isolate {
                host,
                others,
                leader_of,
            } => write!(
                f,
                "isolate {host} from {}{}",
                others.join(","),
                leader_note(*leader_of)
            ),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => write!(
                f,
                "bridge {} | {bridge} | {}",
                left.join(","),
                right.join(",")
            ),
            Fault::NodeOneway { from, to } => write!(f, "cut {from} -> {to}"),
            Fault::NodeLatency { a, b, max } => write!(f, "latency {a} <-> {b} max {max:?}"),
            Fault::RollingRestart { hosts, every } => {
                write!(f, "rolling restart {} every {every:?}", hosts.join(","))
            }
            Fault::SlowDisk {
                host,
                extra,
                leader_of,
            } => write!(
                f,
                "slow disk {host}{} fsync +{extra:?}",
                leader_note(*leader_of)
            ),
            Fault::ClockJump { host, offset_ms } => {
                write!(f, "clock of {host} stepped {offset_ms:+}ms")
            }
            Fault::ReadError { host, after_reads } => {
                write!(f, "read EIO {host} after {after_reads} reads, and kill")
            }
            Fault::CorruptRunning { host, .. } => write!(f, "corrupt while running {host}"),
            Fault::DamagedWrite { host, .. } => write!(f, "damaged write and fsync EIO {host}"),
            Fault::CorruptVotes { host, .. } => write!(f, "crash and corrupt votes {host}"),
        }
    }
}

/// `hosts`, sorted.
fn sorted(mut hosts: Vec<String>) -> Vec<String> {
    hosts.sort();
    hosts
}

/// The two host names of a link, in a fixed order.
fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// A fault schedule derived from the seed, or given explicitly.
#[derive(Debug)]
pub struct Nemesis {
    rng: ChaCha8Rng,
    /// An explicit schedule's faults still to inject, earliest first; `None`
    /// when they are drawn from `rng`.
    script: Option<VecDeque<Scheduled>>,
    /// Every fault injected so far, as a schedule that injects them again.
    injections: Vec<Scheduled>,
    kinds: FaultKinds,
    /// How the profile leans the draws.
    bias: Bias,
    fault_phase: Duration,
    brokers: Vec<String>,
    /// The workload's clients, sorted, and their links, which carry the
    /// faults between a client and a broker (see [`ClientLinks`]).
    clients: Vec<String>,
    links: Rc<ClientLinks>,
    disk: DiskModel,
    /// The link latency a latency spike returns to ([`Nemesis::base_latency`]);
    /// without it, no latency spikes.
    base_max_latency: Option<Duration>,
    /// Faults shared with each broker's [`Nemesis::broker_io`], by host.
    disk_faults: Vec<(String, Arc<Faults>)>,
    /// Corruption at rest, shared with each broker's host factory, by host.
    at_rest: Vec<(String, Rc<AtRest>)>,
    /// In a cluster, the nodes' view of their groups' leaders; `None` on a
    /// single node, which draws no cluster fault.
    cluster: Option<Rc<Replicas>>,
    /// A rolling restart's kills still to come, and when.
    rolling: Vec<(Duration, String)>,
    /// Cluster: the host whose log was last corrupted at rest.
    damaged: Option<String>,
    /// Cluster hosts the supervisor has seen stopped, and since when.
    stopped_since: BTreeSet<(String, Duration)>,
    /// Faults in flight and when each ends.
    active: Vec<(Duration, Fault)>,
    /// When the next fault is drawn.
    next_at: Duration,
    /// The longest gap between two injections this run.
    gap_max: Duration,
    /// When the last process fault ended.
    process_ended_at: Option<Duration>,
    announced: bool,
    injected: u64,
    /// What it did since the world last took it (see
    /// [`Nemesis::take_events`]).
    events: Vec<(Duration, FaultEvent)>,
}

impl Nemesis {
    /// The schedule for `seed`: faults of `kinds` during the first
    /// `fault_phase` of simulated time, against the broker `hosts`.
    pub fn new(seed: u64, kinds: FaultKinds, fault_phase: Duration, hosts: &[&str]) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SEED_SALT);
        let disk = DiskModel::draw(&mut rng, kinds);
        let gap_max = Duration::from_millis(rng.gen_range(500..=3_000));
        Self::with_disk(rng, kinds, fault_phase, hosts, disk, gap_max)
    }

    /// The explicit `schedule`: its faults at their times, on its disk,
    /// with latency spikes undone to its base latency; nothing is drawn.
    /// `kinds` only names what the run enabled, in its first trace line.
    /// The bounds are the schedule's business: a schedule recorded from a
    /// drawn run (see [`Nemesis::schedule`]) keeps them, and shrinking it
    /// only drops and shortens faults.
    pub fn scripted(
        schedule: &Schedule,
        kinds: FaultKinds,
        fault_phase: Duration,
        hosts: &[&str],
    ) -> Self {
        // Never drawn from: the seed does not matter.
        let rng = ChaCha8Rng::seed_from_u64(SEED_SALT);
        // No gap is drawn either.
        let gap_max = Duration::ZERO;
        let mut nemesis = Self::with_disk(rng, kinds, fault_phase, hosts, schedule.disk, gap_max);
        let mut faults = schedule.faults.clone();
        faults.sort_by_key(|scheduled| scheduled.at);
        nemesis.next_at = faults.first().map_or(Duration::MAX, |first| first.at);
        nemesis.script = Some(faults.into());
        nemesis.base_max_latency = schedule.base_latency;
        nemesis
    }

    fn with_disk(
        rng: ChaCha8Rng,
        kinds: FaultKinds,
        fault_phase: Duration,
        hosts: &[&str],
        disk: DiskModel,
        gap_max: Duration,
    ) -> Self {
        let brokers: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let disk_faults = brokers
            .iter()
            .map(|host| {
                let faults = Arc::new(Faults::with_sync_latency(disk.sync_latency));
                (host.clone(), faults)
            })
            .collect();
        let at_rest = brokers
            .iter()
            .map(|host| (host.clone(), Rc::default()))
            .collect();
        Self {
            rng,
            script: None,
            injections: Vec::new(),
            kinds,
            bias: Bias::DEFAULT,
            fault_phase,
            brokers,
            clients: Vec::new(),
            links: ClientLinks::new(0),
            disk,
            base_max_latency: None,
            disk_faults,
            at_rest,
            cluster: None,
            rolling: Vec::new(),
            damaged: None,
            stopped_since: BTreeSet::new(),
            active: Vec::new(),
            next_at: WARM_UP,
            gap_max,
            process_ended_at: None,
            announced: false,
            events: Vec::new(),
            injected: 0,
        }
    }

    /// Tells the nemesis the links' normal max latency (the `Builder`'s
    /// `max_message_latency`), so that latency spikes can be undone. Without
    /// it, no latency spikes are injected.
    #[must_use]
    pub fn base_latency(mut self, max: Duration) -> Self {
        self.base_max_latency = Some(max);
        self
    }

    /// Leans the draws as `bias` says (a profile's), instead of
    /// [`Bias::DEFAULT`].
    #[must_use]
    pub fn bias(mut self, bias: Bias) -> Self {
        self.bias = bias;
        self
    }

    /// The workload's `clients`, whose links to the brokers are `links`:
    /// without them, no fault between a client and a broker.
    #[must_use]
    pub fn clients(mut self, clients: &[String], links: Rc<ClientLinks>) -> Self {
        self.clients = clients.to_vec();
        self.clients.sort();
        self.links = links;
        self
    }

    /// Makes this the nemesis of a cluster whose nodes report their
    /// groups to `replicas`: it then draws the cluster's faults too (see the
    /// module documentation) and supervises the nodes.
    #[must_use]
    pub fn cluster(mut self, replicas: Rc<Replicas>) -> Self {
        self.cluster = Some(replicas);
        self
    }

    /// The I/O seam a broker host should run on: turmoil's, behind the
    /// faults this nemesis switches (slow fsyncs always; disk-full windows
    /// and fsync errors when disk faults are on; a slow disk in a cluster).
    /// Call it inside the host factory, so that every restart shares the
    /// same faults.
    ///
    /// # Panics
    ///
    /// If `host` is not one of the broker hosts given to [`Nemesis::new`].
    pub fn broker_io(&self, host: &str) -> BrokerIo {
        FaultyIo::with_faults(TurmoilIo, Arc::clone(self.faults_of(host)))
    }

    /// The faults shared with `host`'s [`Nemesis::broker_io`].
    fn faults_of(&self, host: &str) -> &Arc<Faults> {
        self.disk_faults
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, faults)| faults)
            .unwrap_or_else(|| panic!("{host} is not a broker host"))
    }

    /// The corruption-at-rest switch of `host`: its factory calls
    /// [`AtRest::before_start`] before starting the broker, and reports the
    /// broker's start and stop.
    ///
    /// # Panics
    ///
    /// If `host` is not one of the broker hosts given to [`Nemesis::new`].
    pub fn at_rest(&self, host: &str) -> Rc<AtRest> {
        self.at_rest
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, at_rest)| Rc::clone(at_rest))
            .unwrap_or_else(|| panic!("{host} is not a broker host"))
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// What it injected so far, as an explicit schedule that injects it
    /// again: with the disk and base latency it ran with.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            base_latency: self.base_max_latency,
            disk: self.disk,
            faults: self.injections.clone(),
        }
    }

    /// Called before every `sim.step()`; injects due faults and records each
    /// in the trace.
    pub fn before_step(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        if !self.announced {
            self.announced = true;
            let announced = format!("{:?} disk {:?}", self.kinds, self.disk);
            self.record(trace, now, FaultEvent::Announced(announced));
        }
        self.end_due(sim, now, trace);
        self.roll_on(sim, now, trace);
        self.restore_refused(sim, now, trace);
        if self.cluster.is_some() {
            self.supervise(sim, now, trace);
        }
        if now < self.next_at || now >= self.fault_phase {
            return;
        }
        if self.script.is_some() {
            self.inject_scripted(sim, now, trace);
        } else {
            self.inject_drawn(sim, now, trace);
        }
    }

    /// Draws the next fault (if the bounds leave room) and when to draw
    /// again.
    fn inject_drawn(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        let gap_min = self.gap_max / 4;
        let gap = self.rng.gen_range(gap_min..=self.gap_max);
        self.next_at = now + gap;
        if let Some((fault, lasts)) = self.draw(sim, now) {
            self.start(sim, now, fault, lasts, trace);
        }
    }

    /// Injects the explicit schedule's faults that are due.
    fn inject_scripted(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        let Some(script) = self.script.as_mut() else {
            return;
        };
        let due_count = script.iter().take_while(|next| next.at <= now).count();
        let due: Vec<Scheduled> = script.drain(..due_count).collect();
        self.next_at = script.front().map_or(Duration::MAX, |next| next.at);
        for next in due {
            self.start(sim, now, next.fault, next.lasts, trace);
        }
    }

    /// Injects `fault` for `lasts`, and records it.
    fn start(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: Duration,
        fault: Fault,
        lasts: Duration,
        trace: &mut Trace,
    ) {
        self.inject(sim, &fault);
        self.injected += 1;
        self.injections.push(Scheduled {
            at: now,
            lasts,
            fault: fault.clone(),
        });
        let injected = FaultEvent::Injected {
            fault: fault.clone(),
            lasts,
        };
        self.record(trace, now, injected);
        self.active.push((now + lasts, fault));
    }

    /// Heals everything (repairs every link, restarts crashed hosts, clears
    /// disk faults): called once when the fault phase ends.
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>, trace: &mut Trace) {
        let now = sim.elapsed();
        for (_, fault) in std::mem::take(&mut self.active) {
            self.undo(sim, &fault);
            self.record(trace, now, FaultEvent::Healed(fault));
        }
        // Belt and braces: every client-broker link healthy, and every disk
        // fault off, whatever the bookkeeping says.
        self.links.heal();
        for broker in &self.brokers {
            self.faults_of(broker).clear();
            self.faults_of(broker).slow_syncs(Duration::ZERO);
            self.faults_of(broker).set_clock_offset(0);
        }
        if self.cluster.is_some() {
            for (i, a) in self.brokers.iter().enumerate() {
                for b in &self.brokers[i + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
        }
        self.rolling.clear();
        self.next_at = Duration::MAX;
        self.record(trace, now, FaultEvent::HealedAll);
    }

    /// turmoil settings the faults need (fs `block_size` for torn writes,
    /// `io_latency`), applied to the Builder before build().
    pub fn configure(&self, builder: &mut turmoil::Builder) {
        let fs = builder.fs();
        if let Some(block_size) = self.disk.block_size {
            fs.block_size(block_size);
        }
        if let Some((min, max)) = self.disk.io_latency {
            fs.io_latency().min_latency(min).max_latency(max);
        }
    }

    // ---- the schedule -----------------------------------------------------

    /// Draws the next fault and how long it lasts, or nothing if the bounds
    /// leave no room for the kind drawn.
    fn draw(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) -> Option<(Fault, Duration)> {
        let enabled = [
            self.kinds.net,
            self.kinds.crash,
            self.kinds.disk,
            self.kinds.clock,
        ];
        let mut weights = self.bias.kind_weights;
        for (weight, on) in weights.iter_mut().zip(enabled) {
            if !on {
                *weight = 0;
            }
        }
        match pick_weighted(&mut self.rng, &weights)? {
            0 => self.draw_net(sim),
            1 => self.draw_process(sim, now),
            2 => self.draw_disk(sim, now),
            _ => self.draw_clock(),
        }
    }

    /// A broker's wall clock stepped 50 ms to 5 s ahead or back, for 0.5
    /// to 3 s: what expiry, the de-duplication window and the group clock
    /// read. One clock off at a time, so that the fault is one node's.
    fn draw_clock(&mut self) -> Option<(Fault, Duration)> {
        let stepped = self
            .active
            .iter()
            .any(|(_, fault)| matches!(fault, Fault::ClockJump { .. }));
        if stepped {
            return None;
        }
        let host = self.brokers.choose(&mut self.rng)?.clone();
        let size = self.rng.gen_range(50..=5_000_i64);
        let offset_ms = if self.rng.gen_bool(0.5) { size } else { -size };
        let lasts = Duration::from_millis(self.rng.gen_range(500..=3_000));
        Some((Fault::ClockJump { host, offset_ms }, lasts))
    }

    fn draw_net(&mut self, sim: &mut turmoil::Sim<'_>) -> Option<(Fault, Duration)> {
        if self.cluster.is_some() && self.rng.gen_bool(0.5) {
            return self.draw_node_net(sim);
        }
        let client = self.clients.choose(&mut self.rng)?.clone();
        let broker = self.brokers.choose(&mut self.rng)?.clone();
        let lasts_max_ms = u64::try_from(self.bias.net_lasts_max.as_millis()).unwrap_or(3_000);
        let lasts = Duration::from_millis(self.rng.gen_range(50..=lasts_max_ms.max(50)));
        let lossy = self.rng.gen_range(0..100) < self.bias.lossy_percent;
        let kind = if lossy { 5 } else { self.rng.gen_range(0..5) };
        let fault = match kind {
            0 => Fault::Partition { client, broker },
            1 if self.rng.gen_bool(0.5) => Fault::PartitionOneway {
                from: client,
                to: broker,
            },
            1 => Fault::PartitionOneway {
                from: broker,
                to: client,
            },
            2 => Fault::Hold { client, broker },
            3 if self.base_max_latency.is_some() => Fault::Latency {
                client,
                broker,
                max: Duration::from_millis(self.rng.gen_range(200..=2_000)),
            },
            _ => Fault::Lossy {
                client,
                broker,
                rate_permille: self.rng.gen_range(10..=self.bias.loss_permille_max.max(10)),
            },
        };
        let link = fault.link();
        let nets = self.active.iter().filter(|(_, f)| f.link().is_some());
        let busy: BTreeSet<(String, String)> = nets.filter_map(|(_, f)| f.link()).collect();
        if busy.len() >= self.bias.net_faults_max || link.is_some_and(|l| busy.contains(&l)) {
            return None;
        }
        Some((fault, lasts))
    }

    /// Whether the bounds allow a process fault to start now.
    fn process_fault_allowed(&self, now: Duration) -> bool {
        let busy = self.active.iter().any(|(_, f)| f.is_process());
        let quiet = self
            .process_ended_at
            .is_some_and(|ended| now < ended + PROCESS_QUIET);
        !busy && !quiet
    }

    /// How long a crashed host stays down.
    fn draw_down_time(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(50..=2_000))
    }

    fn draw_process(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: Duration,
    ) -> Option<(Fault, Duration)> {
        if !self.process_fault_allowed(now) {
            return None;
        }
        let down = self.draw_down_time();
        let kinds = if self.cluster.is_some() { 5 } else { 4 };
        let fault = match self.rng.gen_range(0..kinds) {
            // A kill: the process restarts at once, the page cache survives.
            0 => {
                let host = self.pick_target(sim)?.0;
                return Some((Fault::Kill { host }, Duration::ZERO));
            }
            1 => Fault::PowerLoss {
                hosts: self.brokers.clone(),
            },
            4 => return Some(self.draw_rolling_restart()),
            _ => Fault::Crash {
                host: self.pick_target(sim)?.0,
            },
        };
        Some((fault, down))
    }

    /// A broker host to aim a fault at: in a cluster, half of the time the
    /// leader of a group (with the group), if one is known and running;
    /// otherwise any broker.
    fn pick_target(&mut self, sim: &mut turmoil::Sim<'_>) -> Option<(String, Option<u32>)> {
        if self.cluster.is_some()
            && self.rng.gen_bool(0.5)
            && let Some((host, group)) = self.pick_leader(sim)
        {
            return Some((host, Some(group)));
        }
        Some((self.brokers.choose(&mut self.rng)?.clone(), None))
    }

    /// The leader of a group drawn at random, as the nodes last reported
    /// it, if it is running.
    fn pick_leader(&mut self, sim: &mut turmoil::Sim<'_>) -> Option<(String, u32)> {
        let replicas = self.cluster.as_ref()?;
        let groups = replicas.groups();
        let group = *groups.choose(&mut self.rng)?;
        let host = broker_name(Some(replicas.leader_of(group)?));
        let known = self.brokers.contains(&host);
        (known && sim.is_host_running(host.as_str())).then_some((host, group))
    }

    /// Cluster: every node killed in turn, in an order drawn at random.
    fn draw_rolling_restart(&mut self) -> (Fault, Duration) {
        let mut hosts = self.brokers.clone();
        hosts.shuffle(&mut self.rng);
        let every = Duration::from_millis(self.rng.gen_range(300..=2_000));
        // Over one `every` after the last kill.
        let kills = u32::try_from(hosts.len()).unwrap_or(u32::MAX);
        let lasts = every * kills;
        (Fault::RollingRestart { hosts, every }, lasts)
    }

    /// Cluster: a cut between nodes, at most one at a time, for 0.2–4 s.
    fn draw_node_net(&mut self, sim: &mut turmoil::Sim<'_>) -> Option<(Fault, Duration)> {
        if self.active.iter().any(|(_, f)| f.is_node_net()) {
            return None;
        }
        let lasts = Duration::from_millis(self.rng.gen_range(200..=4_000));
        let mut nodes = self.brokers.clone();
        nodes.shuffle(&mut self.rng);
        let fault = match self.rng.gen_range(0..6) {
            0 | 1 => {
                let leader = if self.rng.gen_bool(0.5) {
                    self.pick_leader(sim)
                } else {
                    None
                };
                let (host, leader_of) = match leader {
                    Some((host, group)) => (host, Some(group)),
                    None => (nodes[0].clone(), None),
                };
                let others = self.brokers.iter().filter(|h| **h != host).cloned();
                let others = others.collect();
                Fault::Isolate {
                    host,
                    others,
                    leader_of,
                }
            }
            2 | 3 => {
                // The bridge is the first node; the others split in two
                // halves, each side one at least.
                let bridge = nodes.remove(0);
                let right = nodes.split_off(nodes.len() / 2);
                Fault::Bridge {
                    left: sorted(nodes),
                    bridge,
                    right: sorted(right),
                }
            }
            4 => Fault::NodeOneway {
                from: nodes[0].clone(),
                to: nodes[1].clone(),
            },
            _ if self.base_max_latency.is_some() => Fault::NodeLatency {
                a: nodes[0].clone(),
                b: nodes[1].clone(),
                max: Duration::from_millis(self.rng.gen_range(20..=1_000)),
            },
            _ => return None,
        };
        Some((fault, lasts))
    }

    fn draw_disk(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: Duration,
    ) -> Option<(Fault, Duration)> {
        if self.active.iter().any(|(_, f)| f.is_disk()) {
            return None;
        }
        let slow_allowed = self.cluster.is_some() || self.bias.slow_single;
        if slow_allowed && self.rng.gen_range(0..100) < self.bias.slow_disk_percent {
            return self.draw_slow_disk(sim);
        }
        let host = self.brokers.choose(&mut self.rng)?.clone();
        let mut weights = self.bias.disk_weights;
        if self.cluster.is_none() {
            // A single node keeps no votes file.
            weights[6] = 0;
        }
        let drawn = pick_weighted(&mut self.rng, &weights)?;
        if drawn >= 3 {
            return self.draw_disk_damage(sim, now, host, drawn);
        }
        if drawn == 0 {
            // A crash too, so within the bounds on process faults.
            if !self.process_fault_allowed(now) || !self.corruption_allowed() {
                return None;
            }
            // The flip is drawn last, where injecting it once drew it: the
            // stream stays what it was before faults were recorded.
            let down = self.draw_down_time();
            let flip = self.rng.r#gen();
            return Some((Fault::Corrupt { host, flip }, down));
        }
        if drawn == 1 {
            let lasts = Duration::from_millis(self.rng.gen_range(100..=2_000));
            Some((Fault::DiskFull { host }, lasts))
        } else {
            // The broker stops at the failed fsync; a supervisor restarts it
            // a little later.
            let lasts = Duration::from_millis(self.rng.gen_range(200..=1_000));
            Some((Fault::SyncError { host }, lasts))
        }
    }

    /// The disk faults of issue 14's item 5 ([`DISK_FAULTS`] from 3 on):
    /// read errors, corruption while running, a damaged write, a damaged
    /// votes file; `None` if the bounds leave no room.
    fn draw_disk_damage(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: Duration,
        host: String,
        drawn: usize,
    ) -> Option<(Fault, Duration)> {
        let process_allowed = self.process_fault_allowed(now);
        match drawn {
            // A kill too, so within the bounds on process faults. Up to a
            // few reads pass first: recovery may have read part of
            // its log when the error comes (it makes about two reads a file:
            // the format and incarnation files, a snapshot, the segments).
            3 if process_allowed => {
                let after_reads = self.rng.gen_range(0..=8);
                let lasts = Duration::from_millis(self.rng.gen_range(200..=1_500));
                Some((Fault::ReadError { host, after_reads }, lasts))
            }
            // Ends in a kill, and damages a log: within both bounds. Only
            // a running broker can be corrupted while it runs.
            4 if process_allowed
                && self.corruption_allowed()
                && sim.is_host_running(host.as_str()) =>
            {
                let lasts = Duration::from_millis(self.rng.gen_range(100..=2_000));
                let flip = self.rng.r#gen();
                Some((Fault::CorruptRunning { host, flip }, lasts))
            }
            5 => {
                let lasts = Duration::from_millis(self.rng.gen_range(200..=1_000));
                let flip = self.rng.r#gen();
                Some((Fault::DamagedWrite { host, flip }, lasts))
            }
            6 if process_allowed => {
                let down = self.draw_down_time();
                let flip: u64 = self.rng.r#gen();
                // A stale file (top bit: see `AtRest::arm_votes`) forgets
                // that a node is rejoining, which would let it vote before
                // it caught up: only while no node is.
                let stale = flip >> 63 == 1;
                if stale && !self.corruption_allowed() {
                    return None;
                }
                Some((Fault::CorruptVotes { host, flip }, down))
            }
            _ => None,
        }
    }

    /// Cluster: one node's log damaged at a time. A node counts as damaged
    /// from the corruption until it reports, after its restart, that every
    /// group has rejoined: damaging a second node's log before then could
    /// destroy every copy of a committed entry, a loss no replication
    /// survives (a cluster tolerates losing a minority of its copies).
    fn corruption_allowed(&self) -> bool {
        let Some(replicas) = &self.cluster else {
            return true;
        };
        let damaged_rejoined = (self.damaged.as_ref()).is_none_or(|host| replicas.rejoined(host));
        damaged_rejoined && !replicas.any_rejoining()
    }

    /// Cluster: a group's leader (or any node) gets a disk whose fsyncs
    /// take 20–500 ms longer, for 0.5–3 s.
    fn draw_slow_disk(&mut self, sim: &mut turmoil::Sim<'_>) -> Option<(Fault, Duration)> {
        let (host, leader_of) = match self.pick_leader(sim) {
            Some((host, group)) => (host, Some(group)),
            None => (self.brokers.choose(&mut self.rng)?.clone(), None),
        };
        let extra = Duration::from_millis(self.rng.gen_range(20..=500));
        let lasts = Duration::from_millis(self.rng.gen_range(500..=3_000));
        let fault = Fault::SlowDisk {
            host,
            extra,
            leader_of,
        };
        Some((fault, lasts))
    }

    /// Switches `fault`, one between a client and a broker, on or off on
    /// the client's link.
    fn switch_client_link(&self, fault: &Fault, on: bool) {
        match fault {
            Fault::Partition { client, broker } => self.links.update(client, broker, |link| {
                link.cut_toward_broker = on;
                link.cut_toward_client = on;
            }),
            // Either end of a one-way cut may be the broker.
            Fault::PartitionOneway { from, to } if self.brokers.contains(from) => {
                self.links
                    .update(to, from, |link| link.cut_toward_client = on);
            }
            Fault::PartitionOneway { from, to } => {
                self.links
                    .update(from, to, |link| link.cut_toward_broker = on);
            }
            Fault::Hold { client, broker } => {
                self.links.update(client, broker, |link| link.held = on);
            }
            Fault::Latency {
                client,
                broker,
                max,
            } => self.links.update(client, broker, |link| {
                link.extra_latency = on.then_some(*max);
            }),
            Fault::Lossy {
                client,
                broker,
                rate_permille,
            } => {
                let rate = if on {
                    f64::from(*rate_permille) / 1000.0
                } else {
                    0.0
                };
                self.links.update(client, broker, |link| link.loss = rate);
            }
            other => unreachable!("{other} is no fault of a client's link"),
        }
    }

    // ---- turmoil ------------------------------------------------------------

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        match fault {
            Fault::Partition { .. }
            | Fault::PartitionOneway { .. }
            | Fault::Hold { .. }
            | Fault::Latency { .. }
            | Fault::Lossy { .. } => self.switch_client_link(fault, true),
            Fault::Kill { host } => sim.bounce(host.as_str()),
            Fault::Crash { host } => {
                if sim.is_host_running(host.as_str()) {
                    sim.crash(host.as_str());
                }
            }
            Fault::PowerLoss { hosts } => {
                for host in hosts {
                    if sim.is_host_running(host.as_str()) {
                        sim.crash(host.as_str());
                    }
                }
            }
            Fault::DiskFull { host } => {
                let faults = self.faults_of(host);
                faults.fail_writes(Some(std::io::ErrorKind::StorageFull));
            }
            Fault::SyncError { host } => {
                let faults = self.faults_of(host);
                faults.fail_next_sync(std::io::ErrorKind::Other);
            }
            Fault::Corrupt { host, flip } => {
                if sim.is_host_running(host.as_str()) {
                    sim.crash(host.as_str());
                }
                self.at_rest(host).arm(*flip);
                if let Some(replicas) = &self.cluster {
                    replicas.forget_host(host);
                    self.damaged = Some(host.clone());
                }
            }
            Fault::Isolate { host, others, .. } => {
                for other in others {
                    sim.partition(host.as_str(), other.as_str());
                }
            }
            Fault::Bridge { left, right, .. } => {
                for a in left {
                    for b in right {
                        sim.partition(a.as_str(), b.as_str());
                    }
                }
            }
            Fault::NodeOneway { from, to } => sim.partition_oneway(from.as_str(), to.as_str()),
            Fault::NodeLatency { a, b, max } => {
                sim.set_link_max_message_latency(a.as_str(), b.as_str(), *max);
            }
            Fault::RollingRestart { hosts, every } => {
                let now = sim.elapsed();
                let mut at = now;
                for host in hosts {
                    self.rolling.push((at, host.clone()));
                    at += *every;
                }
            }
            Fault::SlowDisk { host, extra, .. } => self.faults_of(host).slow_syncs(*extra),
            Fault::ClockJump { host, offset_ms } => {
                self.faults_of(host).set_clock_offset(*offset_ms);
            }
            Fault::ReadError { host, after_reads } => {
                let read_error = (std::io::ErrorKind::Other, u64::from(*after_reads));
                self.faults_of(host).fail_reads(Some(read_error));
                sim.bounce(host.as_str());
            }
            // Only a running broker: armed while it is down, the flip would
            // come as it starts, in the middle of its recovery.
            Fault::CorruptRunning { host, flip } => {
                if sim.is_host_running(host.as_str()) {
                    self.at_rest(host).arm_running(*flip);
                }
            }
            Fault::DamagedWrite { host, flip } => {
                self.faults_of(host).damage_next_log_write(Some(*flip));
            }
            Fault::CorruptVotes { host, flip } => {
                if sim.is_host_running(host.as_str()) {
                    sim.crash(host.as_str());
                }
                self.at_rest(host).arm_votes(*flip);
            }
        }
    }

    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        match fault {
            Fault::Partition { .. }
            | Fault::PartitionOneway { .. }
            | Fault::Hold { .. }
            | Fault::Latency { .. }
            | Fault::Lossy { .. } => self.switch_client_link(fault, false),
            Fault::Kill { .. } => self.process_ended_at = Some(sim.elapsed()),
            Fault::Crash { host } | Fault::Corrupt { host, .. } => {
                sim.bounce(host.as_str());
                self.process_ended_at = Some(sim.elapsed());
            }
            Fault::PowerLoss { hosts } => {
                for host in hosts {
                    sim.bounce(host.as_str());
                }
                self.process_ended_at = Some(sim.elapsed());
            }
            Fault::DiskFull { host } => self.faults_of(host).fail_writes(None),
            Fault::SyncError { host } => {
                // Disarm it if it has not fired; restart the broker if it
                // did (a failed fsync stops the broker).
                self.faults_of(host).clear();
                if !sim.is_host_running(host.as_str()) {
                    sim.bounce(host.as_str());
                }
            }
            Fault::Isolate { host, others, .. } => {
                for other in others {
                    sim.repair(host.as_str(), other.as_str());
                }
            }
            Fault::Bridge { left, right, .. } => {
                for a in left {
                    for b in right {
                        sim.repair(a.as_str(), b.as_str());
                    }
                }
            }
            Fault::NodeOneway { from, to } => sim.repair_oneway(from.as_str(), to.as_str()),
            Fault::NodeLatency { a, b, .. } => {
                let base = self.base_max_latency.unwrap_or_default();
                sim.set_link_max_message_latency(a.as_str(), b.as_str(), base);
            }
            // Over after its last kill (the schedule is empty by then).
            Fault::RollingRestart { .. } => self.process_ended_at = Some(sim.elapsed()),
            Fault::SlowDisk { host, .. } => self.faults_of(host).slow_syncs(Duration::ZERO),
            Fault::ClockJump { host, .. } => self.faults_of(host).set_clock_offset(0),
            Fault::ReadError { host, .. } | Fault::DamagedWrite { host, .. } => {
                // As after a failed fsync: the fault off, and the broker
                // restarted if it stopped on it.
                self.faults_of(host).clear();
                if !sim.is_host_running(host.as_str()) {
                    sim.bounce(host.as_str());
                }
                if fault.is_process() {
                    self.process_ended_at = Some(sim.elapsed());
                }
            }
            Fault::CorruptRunning { host, .. } => {
                // The broker reads its log only when it starts: a kill makes
                // it read the flip now.
                sim.bounce(host.as_str());
                self.process_ended_at = Some(sim.elapsed());
                if let Some(replicas) = &self.cluster {
                    replicas.forget_host(host);
                    self.damaged = Some(host.clone());
                }
            }
            Fault::CorruptVotes { host, .. } => {
                sim.bounce(host.as_str());
                self.process_ended_at = Some(sim.elapsed());
            }
        }
    }

    /// Kills the next nodes of a rolling restart once they are due.
    fn roll_on(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rolling)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.rolling = later;
        for (_, host) in due {
            sim.bounce(host.as_str());
            self.record(trace, now, FaultEvent::RollingKill(host));
        }
    }

    /// Cluster: restarts a node that stopped on its own (a failed write to
    /// its log stops it), as a supervisor would, once no fault holds it down
    /// and it has been down for [`SUPERVISOR_DELAY`].
    fn supervise(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        for host in self.brokers.clone() {
            let seen = self.stopped_since.iter().find(|(h, _)| *h == host).cloned();
            if sim.is_host_running(host.as_str()) {
                if let Some(seen) = seen {
                    self.stopped_since.remove(&seen);
                }
                continue;
            }
            let held = self.active.iter().any(|(_, f)| f.holds_down(&host));
            if held || self.at_rest(&host).awaits_restore() {
                continue;
            }
            match seen {
                None => {
                    self.stopped_since.insert((host, now));
                }
                Some(seen) if now >= seen.1 + SUPERVISOR_DELAY => {
                    self.stopped_since.remove(&seen);
                    sim.bounce(host.as_str());
                    self.record(trace, now, FaultEvent::SupervisorRestart(host));
                }
                Some(_) => {}
            }
        }
    }

    /// Restarts a broker that refused to start on a flipped bit, as an
    /// operator would once the disk is restored (its factory puts the byte
    /// back first).
    fn restore_refused(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        // Every step asks this of every broker: the at-rest state first, a
        // field, as turmoil looks a host's name up (a new string, hashed)
        // to say whether it runs; nothing is copied unless a restore is due
        // (restoring one broker changes no other's answer).
        let due: Vec<String> = self
            .brokers
            .iter()
            .filter(|host| {
                self.at_rest(host).awaits_restore() && !sim.is_host_running(host.as_str())
            })
            .cloned()
            .collect();
        for host in due {
            sim.bounce(host.as_str());
            self.record(trace, now, FaultEvent::Restored(host));
            self.process_ended_at = Some(now);
        }
    }

    /// Records what it did: in the trace, as text, and for the history, as
    /// it is.
    fn record(&mut self, trace: &mut Trace, now: Duration, event: FaultEvent) {
        trace.record(now, format!("nemesis: {event}"));
        self.events.push((now, event));
    }

    /// What it did since last asked, with when, for the history.
    pub fn take_events(&mut self) -> Vec<(Duration, FaultEvent)> {
        std::mem::take(&mut self.events)
    }

    /// Undoes the faults whose time is up.
    fn end_due(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, trace: &mut Trace) {
        let (due, active): (Vec<_>, Vec<_>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|(ends, _)| *ends <= now);
        self.active = active;
        for (_, fault) in due {
            self.undo(sim, &fault);
            self.record(trace, now, FaultEvent::Ended(fault));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_net::CLIENTS_HOST;

    const BROKER: &str = "broker";
    const FAULT_PHASE: Duration = Duration::from_secs(10);

    /// Two clients that never connect: the nemesis still cuts their links.
    fn idle_clients() -> Vec<String> {
        vec!["producer0".to_owned(), "consumer0".to_owned()]
    }

    /// Runs an idle broker and two idle clients through a fault phase and a
    /// heal, returning the trace and whether the broker runs at the end.
    fn run(seed: u64, kinds: FaultKinds) -> (Vec<String>, bool, u64) {
        let mut nemesis = Nemesis::new(seed, kinds, FAULT_PHASE, &[BROKER])
            .base_latency(Duration::from_millis(50))
            .clients(&idle_clients(), ClientLinks::new(seed));
        let mut builder = turmoil::Builder::new();
        builder.rng_seed(seed).simulation_duration(FAULT_PHASE * 2);
        nemesis.configure(&mut builder);
        let mut sim = builder.build();
        let io = nemesis.broker_io(BROKER);
        sim.host(BROKER, move || {
            let _io = io.clone();
            async {
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        sim.client(CLIENTS_HOST, async {
            tokio::time::sleep(FAULT_PHASE + Duration::from_secs(1)).await;
            Ok(())
        });
        let mut trace = Trace::new();
        let mut healed = false;
        loop {
            let now = sim.elapsed();
            if now >= FAULT_PHASE && !healed {
                nemesis.heal(&mut sim, &mut trace);
                healed = true;
            } else if !healed {
                nemesis.before_step(&mut sim, now, &mut trace);
            }
            if sim.step().expect("idle hosts do not fail") {
                break;
            }
        }
        let running = sim.is_host_running(BROKER);
        let events = trace.events().iter().map(ToString::to_string).collect();
        (events, running, nemesis.injected())
    }

    const ALL: FaultKinds = FaultKinds {
        net: true,
        crash: true,
        disk: true,
        clock: true,
    };

    const NODES: [&str; 3] = ["node1", "node2", "node3"];

    /// Runs three idle cluster nodes (node 2 reported as every group's
    /// leader) and two idle clients through a fault phase and a heal,
    /// returning the trace and whether every node runs at the end.
    /// A 3-node cluster's trace lines, whether every node runs at the end,
    /// and what the nemesis did.
    fn run_cluster(seed: u64) -> (Vec<String>, bool, Vec<(Duration, FaultEvent)>) {
        let replicas = Rc::new(Replicas::default());
        let status = |group| sluice::node::ReplicaStatus {
            group,
            leader: Some(2),
            applied: 0,
            digest: 0,
            rejoining: false,
        };
        replicas.update(2, vec![status(1), status(2), status(3)]);
        let mut nemesis = Nemesis::new(seed, ALL, FAULT_PHASE, &NODES)
            .base_latency(Duration::from_millis(50))
            .clients(&idle_clients(), ClientLinks::new(seed))
            .cluster(replicas);
        let mut builder = turmoil::Builder::new();
        builder.rng_seed(seed).simulation_duration(FAULT_PHASE * 2);
        nemesis.configure(&mut builder);
        let mut sim = builder.build();
        for node in NODES {
            let io = nemesis.broker_io(node);
            sim.host(node, move || {
                let _io = io.clone();
                std::future::pending::<turmoil::Result>()
            });
        }
        sim.client(CLIENTS_HOST, async {
            tokio::time::sleep(FAULT_PHASE + Duration::from_secs(1)).await;
            Ok(())
        });
        let mut trace = Trace::new();
        let mut healed = false;
        loop {
            let now = sim.elapsed();
            if now >= FAULT_PHASE && !healed {
                nemesis.heal(&mut sim, &mut trace);
                healed = true;
            } else if !healed {
                nemesis.before_step(&mut sim, now, &mut trace);
            }
            if sim.step().expect("idle hosts do not fail") {
                break;
            }
        }
        let running = NODES.iter().all(|node| sim.is_host_running(*node));
        let events = trace.events().iter().map(ToString::to_string).collect();
        (events, running, nemesis.take_events())
    }

    /// The cluster-only kinds, as the trace words them.
    const CLUSTER_KINDS: [&str; 7] = [
        "isolate",
        "bridge",
        "cut",
        "rolling restart",
        "slow disk",
        "crash and corrupt votes",
        "supervisor restarts",
    ];

    #[test]
    fn a_cluster_gets_every_cluster_fault_and_heals() {
        // The supervisor only acts on nodes that stop on their own, which
        // idle hosts never do.
        let expected = CLUSTER_KINDS.len() - 1;
        let mut seen = BTreeSet::new();
        let mut leader_aimed = false;
        for seed in 0..40 {
            if seen.len() == expected && leader_aimed {
                break;
            }
            let (events, running, _) = run_cluster(seed);
            assert!(
                running,
                "seed {seed}: every node runs after heal: {events:#?}"
            );
            for event in &events {
                for kind in CLUSTER_KINDS {
                    if event.contains(&format!("nemesis: {kind} ")) {
                        seen.insert(kind);
                    }
                }
                leader_aimed |= event.contains("node2 (leader of group");
            }
        }
        assert_eq!(seen.len(), expected, "kinds seen: {seen:?}");
        assert!(leader_aimed, "no fault aimed at the reported leader");
    }

    #[test]
    fn at_most_one_cut_between_nodes_at_a_time() {
        for seed in 0..8 {
            let (events, _, faults) = run_cluster(seed);
            let mut in_flight = 0;
            for (_, event) in &faults {
                let Some((fault, begins)) = event.window_edge() else {
                    continue;
                };
                if fault.nodes_cut_off().is_empty() {
                    continue;
                }
                let ending = !begins;
                in_flight += if ending { -1 } else { 1 };
                assert!((0..=1).contains(&in_flight), "seed {seed}: {events:#?}");
            }
        }
    }

    #[test]
    fn a_single_node_gets_no_cluster_fault() {
        for seed in 0..8 {
            let (events, _, _) = run(seed, ALL);
            for event in &events {
                for kind in CLUSTER_KINDS {
                    assert!(!event.contains(&format!("nemesis: {kind} ")), "{event}");
                }
            }
        }
    }

    #[test]
    fn the_nodes_a_cut_leaves_out_of_reach() {
        let names = |hosts: &[&str]| hosts.iter().map(|h| (*h).to_owned()).collect();
        let isolate = Fault::Isolate {
            host: "node2".to_owned(),
            others: names(&["node1", "node3"]),
            leader_of: Some(1),
        };
        assert_eq!(isolate.nodes_cut_off(), ["node2"]);
        let bridge = Fault::Bridge {
            left: names(&["node1", "node4"]),
            bridge: "node2".to_owned(),
            right: names(&["node3", "node5"]),
        };
        assert_eq!(bridge.nodes_cut_off(), ["node1", "node4", "node3", "node5"]);
        let cut = Fault::NodeOneway {
            from: "node3".to_owned(),
            to: "node1".to_owned(),
        };
        assert_eq!(cut.nodes_cut_off(), ["node3", "node1"]);
        let partition = Fault::Partition {
            client: "consumer0".to_owned(),
            broker: "node1".to_owned(),
        };
        assert!(partition.nodes_cut_off().is_empty());
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let (first, _, injected) = run(1, ALL);
        let (second, _, _) = run(1, ALL);
        assert_eq!(first, second);
        assert!(injected >= 5, "{first:#?}");
        let (other, _, _) = run(4, ALL);
        assert_ne!(first, other, "another seed, another schedule");
    }

    #[test]
    fn every_kind_is_injected_and_healed() {
        let mut seen = BTreeSet::new();
        for seed in 0..16 {
            let (events, running, _) = run(seed, ALL);
            assert!(
                running,
                "seed {seed}: the broker runs after heal: {events:#?}"
            );
            assert!(
                events
                    .last()
                    .is_some_and(|e| e.ends_with("nemesis: healed all")),
                "seed {seed}: {events:#?}"
            );
            for event in &events {
                for kind in [
                    "partition",
                    "hold",
                    "latency",
                    "lossy",
                    "kill",
                    "crash",
                    "power loss",
                    "disk full",
                    "fsync EIO",
                    "crash and corrupt at rest",
                    "clock of",
                    "read EIO",
                    "corrupt while running",
                    "damaged write",
                ] {
                    if event.contains(&format!("nemesis: {kind}")) {
                        seen.insert(kind);
                    }
                }
            }
        }
        assert_eq!(seen.len(), 14, "kinds seen: {seen:?}");
    }

    #[test]
    fn disabled_kinds_inject_nothing() {
        let none = FaultKinds::default();
        let (events, running, injected) = run(1, none);
        assert_eq!(injected, 0, "{events:#?}");
        assert!(running);
        let net_only = FaultKinds {
            net: true,
            ..FaultKinds::default()
        };
        let (events, _, injected) = run(1, net_only);
        assert!(injected > 0);
        for event in &events {
            for kind in [
                "kill",
                "crash",
                "power loss",
                "disk full",
                "fsync EIO",
                "clock of",
                "read EIO",
                "corrupt while running",
                "damaged write",
                "crash and corrupt votes",
            ] {
                assert!(!event.contains(&format!("nemesis: {kind}")), "{event}");
            }
        }
    }

    #[test]
    fn at_most_one_process_fault_at_a_time() {
        for seed in 0..8 {
            let (events, _, _) = run(seed, ALL);
            let mut in_flight = 0;
            for event in &events {
                for kind in ["crash", "power loss"] {
                    if event.contains(&format!("nemesis: {kind}")) {
                        in_flight += 1;
                    }
                    if event.contains(&format!("nemesis: ended {kind}"))
                        || event.contains(&format!("nemesis: healed {kind}"))
                    {
                        in_flight -= 1;
                    }
                }
                assert!(in_flight <= 1, "seed {seed}: {events:#?}");
            }
        }
    }
}
