//! A Raft world: three nodes each hosting two Raft groups (`sluice::raft::group`:
//! a replica per group, one write-ahead log per node on turmoil's disk, the
//! authenticated transport) under crashes, power loss and partitions drawn
//! from the seed. Every node proposes entries to both groups all along; the
//! checker holds Raft to its promises, per group.
//!
//! This is the replication layer on its own, without the broker on top
//! (the cluster world, `cluster.rs`, has that): what it shows holds for
//! whatever state machine rides on top.
//!
//! Faults (from the seed, one at a time, every 0.3–1.5 s of the fault
//! phase): crash a node (turmoil drops its unsynced writes; fsyncs take
//! 1–20 ms, so crashes land between writes and their fsync) and restart it
//! 0.1–1 s later; kill a node's process (restart at once, page cache kept;
//! a series of them is a rolling restart); power loss of every node; for
//! 0.2–2 s, isolate a node from the others (the leader, a third of the
//! time), cut two nodes apart while the third reaches both (a bridge), or
//! cut one direction between two nodes. Then every fault heals and the
//! nodes must converge.
//!
//! Rules:
//! 1. **Agreement.** No two nodes ever apply different entries at one index
//!    (every node applies from index 1 after each start, so this covers what
//!    a restarted node recovers from its log too).
//! 2. **Liveness.** After the heal, within a bound of simulated time, every
//!    node has applied the same entries, including entries proposed after
//!    the heal.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::io::TurmoilIo;
use sluice::io::faulty::FaultyIo;
use sluice::raft::group::{self, Committed, GroupsConfig};
use sluice::raft::replica::Timing;
use sluice::raft::transport::TransportConfig;
use sluice::raft::wal::GroupId;

use crate::SimError;
use crate::trace::Trace;

/// The nodes.
const NODES: [u64; 3] = [1, 2, 3];
/// The groups every node hosts.
const GROUPS: [GroupId; 2] = [1, 2];
/// Where nodes listen for each other.
const PORT: u16 = 7300;
const SECRET: &[u8] = b"the simulated cluster's shared secret";
/// Mixed into the seed for the fault schedule, so that it is independent of
/// turmoil's stream.
const SEED_SALT: u64 = 0x7261_6674_2121_2121;
/// How often each node proposes an entry (a follower's go to the leader).
const PROPOSE_INTERVAL: Duration = Duration::from_millis(25);
/// After the heal, how long the nodes get to converge.
const LIVENESS_MAX: Duration = Duration::from_secs(20);
/// Entries a node must apply after the heal before convergence counts:
/// proof that the group makes progress again, not only agrees.
const PROGRESS_AFTER_HEAL: usize = 10;

/// What a Raft run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftOptions {
    /// The seed.
    pub seed: u64,
    /// Simulated length of the fault phase.
    pub duration: Duration,
    /// The planted bug, if any.
    pub plant: Option<String>,
}

/// What a Raft run found.
#[derive(Debug)]
pub struct RaftReport {
    /// The options it ran with.
    pub options: RaftOptions,
    /// Every fault and the verdict, with simulated times.
    pub trace: Trace,
    /// The first broken rule, if any.
    pub violation: Option<String>,
    /// Distinct indexes some node applied.
    pub entries_committed: usize,
    /// The longest time no new entry committed (faults included): how long
    /// the worst fault stopped the groups, failovers among them.
    pub longest_stall: Duration,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl RaftReport {
    /// True if no rule was broken.
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

/// What the nodes applied, shared with the world.
#[derive(Debug, Default)]
struct Applied {
    /// Per (node, group), the entries applied since the node's last start:
    /// (index, data).
    by_node: BTreeMap<(u64, GroupId), Vec<(u64, Bytes)>>,
    /// The first entry any node applied at each (group, index).
    at_index: BTreeMap<(GroupId, u64), Bytes>,
    /// The first disagreement seen.
    violation: Option<String>,
    /// When some node last applied an index no node had applied before.
    last_new_commit: Duration,
    /// The longest time without a new commit so far: how long a fault
    /// (a lost leader, a power loss) stopped the groups.
    longest_stall: Duration,
}

impl Applied {
    fn record(&mut self, node: u64, group: GroupId, index: u64, data: Bytes) {
        match self.at_index.get(&(group, index)) {
            Some(first) if *first != data => {
                self.violation.get_or_insert_with(|| {
                    format!(
                        "agreement: node {node} applied {data:?} at index {index} of group \
                         {group}, another node {first:?}"
                    )
                });
            }
            Some(_) => {}
            None => {
                self.at_index.insert((group, index), data.clone());
                let now = turmoil::sim_elapsed().unwrap_or_default();
                self.longest_stall = self
                    .longest_stall
                    .max(now.saturating_sub(self.last_new_commit));
                self.last_new_commit = now;
            }
        }
        self.by_node
            .entry((node, group))
            .or_default()
            .push((index, data));
    }

    /// How many entries the first node applied in the first group.
    fn progress(&self) -> usize {
        self.by_node.get(&(NODES[0], GROUPS[0])).map_or(0, Vec::len)
    }

    /// Whether, in every group, every node applied the same entries, and
    /// the first node at least `min` of them in the first group.
    fn converged(&self, min: usize) -> bool {
        self.progress() >= min
            && GROUPS.iter().all(|&group| {
                let first = self.by_node.get(&(NODES[0], group));
                NODES
                    .iter()
                    .all(|&node| self.by_node.get(&(node, group)) == first)
            })
    }
}

fn host(node: u64) -> String {
    format!("node{node}")
}

async fn run_node(
    node: u64,
    seed: u64,
    plant: Option<sluice::planted::Plant>,
    applied: Rc<RefCell<Applied>>,
) -> turmoil::Result {
    for group in GROUPS {
        applied
            .borrow_mut()
            .by_node
            .insert((node, group), Vec::new());
    }
    let peers = NODES
        .into_iter()
        .filter(|&peer| peer != node)
        .map(|peer| (peer, format!("{}:{PORT}", host(peer))))
        .collect();
    let transport = TransportConfig {
        node_id: node,
        listen: (Ipv4Addr::UNSPECIFIED, PORT).into(),
        peers,
        secret: Arc::from(SECRET),
        seed,
    };
    // An fsync that takes a while before it makes anything durable: the
    // window in which a crash finds written, unsynced data.
    let sync_latency = Duration::from_millis(1 + (seed ^ node) % 20);
    let io = FaultyIo::with_sync_latency(TurmoilIo, sync_latency);
    let config = GroupsConfig {
        groups: GROUPS.to_vec(),
        node_id: node,
        voters: NODES.to_vec(),
        timing: Timing::default(),
        tick: Duration::from_millis(20),
        seed,
        votes: PathBuf::from("/votes"),
        plants: sluice::planted::Plants::new(plant),
        metrics: sluice::metrics::Metrics::default(),
    };
    let (handle, mut committed, task) =
        group::start(io, Path::new("/raft"), config, transport).await?;
    let mut proposals = tokio::time::interval(PROPOSE_INTERVAL);
    let mut next = 0u64;
    loop {
        tokio::select! {
            _ = proposals.tick() => {
                next += 1;
                let group = GROUPS[(next % GROUPS.len() as u64) as usize];
                handle.propose(group, Bytes::from(format!("{node}:{next}")));
            }
            committed = committed.recv() => {
                let Some((group, committed)) = committed else {
                    task.await??;
                    return Err("the groups stopped".into());
                };
                // This world never compacts, so it never gets a snapshot.
                if let Committed::Entry(entry) = committed
                    && !entry.data.is_empty()
                {
                    applied.borrow_mut().record(node, group, entry.index, entry.data);
                }
            }
        }
    }
}

/// One fault in flight, and what undoes it.
#[derive(Debug, Clone)]
enum Fault {
    /// The node's machine crashes: unsynced writes are lost.
    Crash(u64),
    /// The node's process restarts at once; the page cache survives.
    Kill(u64),
    /// Every node crashes at once.
    PowerLoss,
    /// The node is cut off from both others.
    Isolate(u64),
    /// Two nodes cannot reach each other; the third reaches both.
    Bridge(u64, u64),
    /// Nothing from the first node reaches the second.
    OneWay(u64, u64),
}

/// Runs one seed.
///
/// # Errors
///
/// An unknown plant, or turmoil failing the simulation (a node's task
/// returned an error).
pub fn run(options: &RaftOptions) -> Result<RaftReport, SimError> {
    let plant = options
        .plant
        .as_deref()
        .map(str::parse::<sluice::planted::Plant>)
        .transpose()
        .map_err(|e| SimError::UnknownPlant(e.to_string()))?;
    let mut world = World::new(options, plant);
    world.fault_phase(options.duration)?;
    let converged = world.liveness_phase()?;
    Ok(world.report(options, converged))
}

/// The simulation, what its nodes applied, and the trace.
struct World {
    sim: turmoil::Sim<'static>,
    applied: Rc<RefCell<Applied>>,
    trace: Trace,
    seed: u64,
}

impl World {
    fn new(options: &RaftOptions, plant: Option<sluice::planted::Plant>) -> Self {
        let seed = options.seed;
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
            .simulation_duration(options.duration + LIVENESS_MAX + Duration::from_secs(5))
            .build();
        let applied = Rc::new(RefCell::new(Applied::default()));
        for node in NODES {
            let applied = Rc::clone(&applied);
            sim.host(host(node), move || {
                run_node(node, seed, plant, Rc::clone(&applied))
            });
        }
        let mut trace = Trace::new();
        trace.record(Duration::ZERO, format!("raft options {options:?}"));
        Self {
            sim,
            applied,
            trace,
            seed,
        }
    }

    /// One simulation step. A node that panics (raft-rs asserts its
    /// invariants, and a planted bug breaks them) is a finding, not a crash
    /// of the simulator.
    fn step(&mut self) -> Result<(), SimError> {
        let sim = &mut self.sim;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
            Ok(result) => result
                .map(|_| ())
                .map_err(|error| SimError::Turmoil(self.seed, error.to_string())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|m| (*m).to_owned()))
                    .unwrap_or_default();
                self.applied
                    .borrow_mut()
                    .violation
                    .get_or_insert(format!("a node panicked: {message}"));
                Ok(())
            }
        }
    }

    fn failed(&self) -> bool {
        self.applied.borrow().violation.is_some()
    }

    /// Faults from the seed, one at a time, for `duration`; then heals.
    fn fault_phase(&mut self, duration: Duration) -> Result<(), SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ SEED_SALT);
        let mut active: Option<(Duration, Fault)> = None;
        let mut next_fault = Duration::from_millis(500);
        while self.sim.elapsed() < duration && !self.failed() {
            let now = self.sim.elapsed();
            if let Some((ends, fault)) = active.clone()
                && now >= ends
            {
                undo(&mut self.sim, &fault);
                self.trace.record(now, format!("ended {fault:?}"));
                active = None;
            }
            if active.is_none() && now >= next_fault {
                let fault = draw(&mut rng);
                let lasts = inject(&mut self.sim, &fault, &mut rng);
                self.trace.record(now, format!("{fault:?} for {lasts:?}"));
                active = Some((now + lasts, fault));
                next_fault = now + lasts + Duration::from_millis(rng.gen_range(300..=1_500));
            }
            self.step()?;
        }
        if let Some((_, fault)) = active {
            undo(&mut self.sim, &fault);
            self.trace
                .record(self.sim.elapsed(), format!("healed {fault:?}"));
        }
        Ok(())
    }

    /// Runs until the nodes converge, with progress since the heal, or the
    /// bound passes; true if they converged.
    fn liveness_phase(&mut self) -> Result<bool, SimError> {
        let healed_at = self.sim.elapsed();
        let needed = self.applied.borrow().progress() + PROGRESS_AFTER_HEAL;
        self.trace.record(healed_at, "phase: liveness");
        while !self.failed() && self.sim.elapsed() < healed_at + LIVENESS_MAX {
            self.step()?;
            if self.applied.borrow().converged(needed) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The verdict, with each node's last applied entry in the trace.
    fn report(mut self, options: &RaftOptions, converged: bool) -> RaftReport {
        let applied = self.applied.borrow();
        let violation = applied.violation.clone().or_else(|| {
            (!converged).then(|| {
                let lengths: Vec<((u64, GroupId), usize)> = applied
                    .by_node
                    .iter()
                    .map(|(key, entries)| (*key, entries.len()))
                    .collect();
                format!(
                    "liveness: no convergence within {LIVENESS_MAX:?} of the heal: applied \
                     {lengths:?}"
                )
            })
        });
        let now = self.sim.elapsed();
        for ((node, group), entries) in &applied.by_node {
            let last = entries.last().map(|(index, data)| (*index, data.clone()));
            let what = format!(
                "node {node} applied {} entries of group {group}, last {last:?}",
                entries.len()
            );
            self.trace.record(now, what);
        }
        self.trace.record(now, format!("verdict: {violation:?}"));
        RaftReport {
            options: options.clone(),
            entries_committed: applied.at_index.len(),
            longest_stall: applied.longest_stall,
            violation,
            simulated: now,
            trace: std::mem::take(&mut self.trace),
        }
    }
}

fn draw(rng: &mut ChaCha8Rng) -> Fault {
    let index = rng.gen_range(0..NODES.len());
    let node = NODES[index];
    let other = NODES[(index + rng.gen_range(1..NODES.len())) % NODES.len()];
    match rng.gen_range(0..10) {
        0..4 => Fault::Crash(node),
        4 => Fault::Kill(node),
        5 => Fault::PowerLoss,
        6..8 => Fault::Isolate(node),
        8 => Fault::Bridge(node, other),
        _ => Fault::OneWay(node, other),
    }
}

/// Injects `fault`; returns how long it lasts.
fn inject(sim: &mut turmoil::Sim<'_>, fault: &Fault, rng: &mut ChaCha8Rng) -> Duration {
    match fault {
        Fault::Crash(node) => {
            sim.crash(host(*node));
            Duration::from_millis(rng.gen_range(100..=1_000))
        }
        Fault::PowerLoss => {
            for node in NODES {
                sim.crash(host(node));
            }
            Duration::from_millis(rng.gen_range(100..=1_000))
        }
        Fault::Kill(node) => {
            sim.bounce(host(*node));
            Duration::ZERO
        }
        Fault::Isolate(node) => {
            for other in NODES.into_iter().filter(|other| other != node) {
                sim.partition(host(*node), host(other));
            }
            Duration::from_millis(rng.gen_range(200..=2_000))
        }
        Fault::Bridge(a, b) => {
            sim.partition(host(*a), host(*b));
            Duration::from_millis(rng.gen_range(200..=2_000))
        }
        Fault::OneWay(from, to) => {
            sim.partition_oneway(host(*from), host(*to));
            Duration::from_millis(rng.gen_range(200..=2_000))
        }
    }
}

fn undo(sim: &mut turmoil::Sim<'_>, fault: &Fault) {
    match fault {
        Fault::Crash(node) => sim.bounce(host(*node)),
        Fault::PowerLoss => {
            for node in NODES {
                sim.bounce(host(node));
            }
        }
        Fault::Kill(_) => {}
        Fault::Isolate(node) => {
            for other in NODES.into_iter().filter(|other| other != node) {
                sim.repair(host(*node), host(other));
            }
        }
        Fault::Bridge(a, b) => sim.repair(host(*a), host(*b)),
        Fault::OneWay(from, to) => sim.repair_oneway(host(*from), host(*to)),
    }
}
