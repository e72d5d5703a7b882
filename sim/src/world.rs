//! A world from a seed: the turmoil simulation, the broker hosts (one
//! broker, or the nodes of a cluster), the workload's clients, and the
//! phases of a run.
//!
//! A run is a pure function of its [`RunOptions`] and the code: turmoil's
//! RNG, the workload's RNGs and the broker's own RNG all derive from the
//! seed, the epoch is fixed, and the host order is turmoil's seeded one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sluice::config::{Config, QueueOverride};
use sluice::node::NodeHandle;
use sluice::server::{self, Listening, shutdown_channel};
use tokio::sync::oneshot;

use crate::SimError;
use crate::at_rest::AtRest;
use crate::checker::{self, CheckReport, LastValueDrain};
use crate::client_net::{CLIENTS_HOST, ClientLinks};
use crate::cluster::{self, Replicas};
use crate::history::{ClientId, History, MessageKind, MsgId, NodeId, Op, Outcome, broker_name};
use crate::nemesis::{Bias, BrokerIo, FaultEvent, FaultKinds, Nemesis};
use crate::queue_types::Grouped;
use crate::schedule::Schedule;
use crate::shape::{self, WorkloadShape};
use crate::trace::Trace;
use crate::transactions::{Fate, Transactions};
use crate::volatile::VolatileLinks;
use crate::workload::{self, CONVERGE_WAIT_MAX, Phase, Shared, WorkloadParams};
use crate::{intruder, request_reply};

/// How often a cluster node reports its groups' leaders to the nemesis, in
/// the fault phase.
const REPLICA_POLL: Duration = Duration::from_millis(250);
/// The simulated wall clock at the start: 2024-01-01T00:00:00Z, the same
/// epoch `TurmoilIo` reports, so that timestamps replay.
const EPOCH_UNIX_S: u64 = 1_704_067_200;
/// After the liveness phase, how long clients get to close and exit, and
/// the inspector to read the broker's state.
const WIND_DOWN: Duration = Duration::from_secs(8);
/// The drain is over once every accepted message is consumed and no
/// delivery arrived for this long (so unconfirmed leftovers drain too).
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// The run is cut short past this many deliveries per send (a limit on
/// everything: see [`DrainTracker::runaway`]).
const DELIVERIES_PER_SEND_MAX: u64 = 20;
/// The drain lasts at least this long, so that consumers reconnect to a
/// restarted broker and leftovers (unconfirmed sends) come out too.
const DRAIN_MIN: Duration = Duration::from_secs(2);

/// A named set of simulation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The name on the command line and in replay files.
    pub name: &'static str,
    /// turmoil's step: how much simulated time one `step()` advances.
    pub tick: Duration,
    /// Network latency bounds.
    pub min_latency: Duration,
    /// See `min_latency`.
    pub max_latency: Duration,
    /// The bound on the liveness phase: every accepted message must be
    /// consumed within this much simulated time after the faults stop.
    pub liveness_max: Duration,
    /// How the nemesis leans its draws.
    pub bias: Bias,
}

/// The profiles, by name.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "default",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_micros(100),
        max_latency: Duration::from_millis(5),
        liveness_max: Duration::from_secs(30),
        bias: Bias::DEFAULT,
    },
    // Longer latencies: more messages in flight when a fault hits.
    Profile {
        name: "slow-net",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(50),
        liveness_max: Duration::from_secs(60),
        bias: Bias::DEFAULT,
    },
    // More and longer network faults, half of the client links' lossy,
    // dropping up to 40 %. Loss stays on client links: see
    // docs/simulation.md ("Profiles").
    Profile {
        name: "lossy-net",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_micros(100),
        max_latency: Duration::from_millis(5),
        liveness_max: Duration::from_secs(60),
        bias: Bias {
            kind_weights: [4, 1, 1, 1],
            net_faults_max: 4,
            net_lasts_max: Duration::from_secs(6),
            lossy_percent: 50,
            loss_permille_max: 400,
            ..Bias::DEFAULT
        },
    },
    // More disk faults, of every sort, and slow disks on a single node too.
    Profile {
        name: "bad-disk",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_micros(100),
        max_latency: Duration::from_millis(5),
        liveness_max: Duration::from_secs(30),
        bias: Bias {
            kind_weights: [1, 1, 4, 1],
            slow_disk_percent: 25,
            slow_single: true,
            disk_weights: [2, 3, 2, 2, 2, 2, 2],
            ..Bias::DEFAULT
        },
    },
];

/// The name that, in `explore`, draws each seed's profile from the seed
/// (see [`Profile::drawn`]).
pub const PROFILE_MIX: &str = "mix";

impl Profile {
    /// The profile a seed of a `mix` exploration runs with: drawn from the
    /// seed alone, by a mixing function, so that it does not follow the
    /// seeds' order nor the nemesis's own draws; written into the run's
    /// command and replay file as the profile it is.
    pub fn drawn(seed: u64) -> Profile {
        // splitmix64's finaliser.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let index = usize::try_from(z % PROFILES.len() as u64).unwrap_or(0);
        PROFILES[index]
    }

    /// The profile named `name`.
    pub fn named(name: &str) -> Result<Profile, SimError> {
        PROFILES
            .iter()
            .find(|p| p.name == name)
            .copied()
            .ok_or_else(|| SimError::UnknownProfile(name.to_owned()))
    }
}

/// Which faults may be injected; kept here (rather than the nemesis's
/// `FaultKinds`) so it can be printed, compared and written to replay files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Network faults.
    pub net: bool,
    /// Process crashes and restarts.
    pub crash: bool,
    /// Disk faults.
    pub disk: bool,
    /// Wall clocks stepped ahead or back.
    pub clock: bool,
}

impl Faults {
    /// Every kind on.
    pub const ALL: Faults = Faults {
        net: true,
        crash: true,
        disk: true,
        clock: true,
    };

    /// Parses `net,crash,disk,clock` (any subset; `none` or empty for none, `all` for every kind).
    pub fn parse(list: &str) -> Result<Faults, SimError> {
        let mut faults = Faults::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "net" => faults.net = true,
                "crash" => faults.crash = true,
                "disk" => faults.disk = true,
                "clock" => faults.clock = true,
                "none" => {}
                "all" => faults = Faults::ALL,
                other => return Err(SimError::UnknownFault(other.to_owned())),
            }
        }
        Ok(faults)
    }

    /// The names of the kinds that are on.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (on, name) in [
            (self.net, "net"),
            (self.crash, "crash"),
            (self.disk, "disk"),
            (self.clock, "clock"),
        ] {
            if on {
                names.push(name);
            }
        }
        names
    }

    fn kinds(self) -> FaultKinds {
        FaultKinds {
            net: self.net,
            crash: self.crash,
            disk: self.disk,
            clock: self.clock,
        }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Everything a run depends on besides the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// The profile's name.
    pub profile: String,
    /// Simulated length of the fault phase.
    pub duration: Duration,
    /// Which faults the nemesis may inject.
    pub faults: Faults,
    /// The planted bug to enable, if any.
    pub plant: Option<String>,
    /// Broker nodes: 1 for the single-node world, more for a cluster.
    pub nodes: u32,
    /// An explicit fault schedule, injected instead of drawing faults from
    /// the seed (replay files and the shrinker).
    pub schedule: Option<Schedule>,
    /// Client counts pinned over the drawn workload's.
    pub workload: Option<WorkloadShape>,
}

/// The options as a run's first trace line words them: the fields a drawn
/// run has, as they always were, so that adding the explicit schedule and
/// workload changed no drawn run's trace, and a schedule recorded from a
/// seed traces exactly as the seed did (the schedule shows in the
/// nemesis's lines, the workload in the next one).
struct TracedOptions<'a>(&'a RunOptions);

impl fmt::Debug for TracedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.0;
        f.debug_struct("RunOptions")
            .field("seed", &options.seed)
            .field("profile", &options.profile)
            .field("duration", &options.duration)
            .field("faults", &options.faults)
            .field("plant", &options.plant)
            .field("nodes", &options.nodes)
            .finish()
    }
}

impl RunOptions {
    /// The default options for `seed`: default profile, 10 s, all faults,
    /// one node.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            profile: "default".to_owned(),
            duration: Duration::from_secs(10),
            faults: Faults::ALL,
            plant: None,
            nodes: 1,
            schedule: None,
            workload: None,
        }
    }

    /// Whether this is a cluster world.
    pub fn is_cluster(&self) -> bool {
        self.nodes > 1
    }

    /// The command line that runs these options again.
    pub fn command(&self) -> String {
        let mut command = format!(
            "sluice-sim run --seed {:#x} --profile {} --duration {}ms --faults {}",
            self.seed,
            self.profile,
            self.duration.as_millis(),
            self.faults
        );
        if let Some(plant) = &self.plant {
            command.push_str(&format!(" --plant {plant}"));
        }
        if self.nodes != 1 {
            command.push_str(&format!(" --nodes {}", self.nodes));
        }
        if self.schedule.is_some() || self.workload.is_some() {
            // The command line cannot carry them; the replay file does.
            command.push_str(" (with its replay file's schedule and workload: use `replay FILE`)");
        }
        command
    }

    /// The workload the run has: drawn from the seed, with the pinned
    /// counts if any.
    pub fn workload_params(&self) -> Result<WorkloadParams, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let drawn = WorkloadParams::draw(&mut rng);
        match &self.workload {
            None => Ok(drawn),
            Some(shape) => shape.apply(&drawn).map_err(SimError::BadWorkload),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// The options it ran with.
    pub options: RunOptions,
    /// The workload's shape, drawn from the seed.
    pub params: WorkloadParams,
    /// The clients' history.
    pub history: History,
    /// The trace: history and faults, for determinism checks.
    pub trace: Trace,
    /// The checker's verdict.
    pub check: CheckReport,
    /// The faults it injected, as an explicit schedule.
    pub schedule: Schedule,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl RunReport {
    /// True if the checker found nothing wrong.
    pub fn passed(&self) -> bool {
        self.check.passed()
    }

    /// The failure message: the seed, the first bad event, and how to
    /// replay it; `None` if the run passed.
    pub fn failure(&self) -> Option<String> {
        let first = self.check.violations.first()?;
        Some(format!(
            "seed {:#x} FAILED ({} violation(s){}); first: {first}\n  replay: {}",
            self.options.seed,
            self.check.stats.violations_total,
            self.check.rules_broken(),
            self.options.command()
        ))
    }
}

/// Enables the planted bug `plant` in the broker's configuration.
#[cfg(feature = "planted-bugs")]
fn apply_plant(config: &mut Config, plant: Option<&str>) -> Result<(), SimError> {
    config.plants = plant
        .map(str::parse::<sluice::planted::Plant>)
        .transpose()
        .map(sluice::planted::Plants::new)
        .map_err(|e| SimError::UnknownPlant(e.to_string()))?;
    Ok(())
}

/// Without the feature every plant is refused, so a run never silently
/// passes "with" a bug that was not planted.
#[cfg(not(feature = "planted-bugs"))]
fn apply_plant(_config: &mut Config, plant: Option<&str>) -> Result<(), SimError> {
    match plant {
        None => Ok(()),
        Some(name) => Err(SimError::PlantUnavailable(name.to_owned())),
    }
}

/// The single node's memory watermark in a run.
const SINGLE_NODE_MEMORY_BYTES: u64 = 16 << 10;

/// The configuration of broker `node` for a run.
fn broker_config(
    options: &RunOptions,
    params: &WorkloadParams,
    node: NodeId,
) -> Result<Config, SimError> {
    let mut config = Config {
        listen: (Ipv4Addr::UNSPECIFIED, workload::AMQP_PORT).into(),
        data_dir: "/data".into(),
        seed: options.seed,
        ..Config::default()
    };
    if let Some(id) = node {
        config.cluster = cluster::cluster_config(id, options.nodes);
    }
    // Small, so that snapshots (and their recovery path) happen in every run.
    config.storage.snapshot_every_records = 200;
    // Small, so that making it costs a run no simulated time to speak of
    // (its fsyncs are slow here), yet it holds a run's whole state.
    config.storage.disk_reserve_bytes = 256 << 10;
    // Small, so that a single node pages its queues once a few messages
    // wait (see `queue::paging`): a group pages past an eighth of it,
    // a queue past an eighth of that. A cluster does not page yet, and
    // would only stop its producers at it.
    if node.is_none() {
        config.limits.memory_high_watermark_bytes = SINGLE_NODE_MEMORY_BYTES;
    }
    config.limits.page_transient_messages = !params.refuse_transient;
    // Off: the simulated disk cannot tell its free space (but under a
    // disk-full fault), and the nemesis fills the disk to exercise the
    // reserve, which this limit would keep it from reaching.
    config.limits.disk_free_min_bytes = 0;
    // Unlimited: the workload releases and modifies messages at random, and
    // a dead-lettered message (dropped, with no dead-letter queue) would be
    // an unexplained loss to the checker. Only the queue that dead-letters
    // into the workload's dead-letter queue, if any, has a limit.
    config.queues.delivery_limit = 0;
    if let Some((max_length, overflow)) = params.limit {
        config.queue_overrides.push(QueueOverride {
            name: params.queues[1].clone(),
            max_length: Some(max_length),
            overflow: Some(overflow),
            ..QueueOverride::default()
        });
    }
    if let Some(queue) = &params.dead_lettering {
        config.queue_overrides.push(QueueOverride {
            name: queue.clone(),
            delivery_limit: Some(params.delivery_limit),
            dead_letter_queue: Some(workload::DEAD_LETTER_QUEUE.to_owned()),
            ..QueueOverride::default()
        });
    }
    config
        .queue_overrides
        .extend(params.queue_types.overrides());
    if params.grouped.is_some() {
        config.queue_overrides.push(Grouped::queue_override());
    }
    // Dead clients (crashed or partitioned away) are detected quickly, so
    // that their unsettled deliveries are released within the run.
    config.amqp.idle_timeout_ms = 2_000;
    // Short, so that the intruder's stalled handshakes meet it within a run.
    config.amqp.handshake_timeout_ms = intruder::HANDSHAKE_DEADLINE
        .as_millis()
        .try_into()
        .unwrap_or(u32::MAX);
    (config.users, config.permissions) = intruder::users_and_permissions();
    apply_plant(&mut config, options.plant.as_deref())?;
    Ok(config)
}

/// What every incarnation of one broker host shares.
struct BrokerHost {
    node: NodeId,
    config: Config,
    io: BrokerIo,
    at_rest: Rc<AtRest>,
    shared: Rc<Shared>,
    /// In a cluster, where the node reports its groups for the nemesis.
    replicas: Option<Rc<Replicas>>,
}

/// The broker host, one incarnation: flips or restores a bit of its log if
/// the nemesis asked, runs the production server, and records its start,
/// its node handle (for the inspector) and how it stopped. A cluster node
/// also reports its groups' leaders to the nemesis while it serves.
async fn broker(host: Rc<BrokerHost>) -> turmoil::Result {
    let (shared, at_rest, node) = (&host.shared, &host.at_rest, host.node);
    match at_rest.before_start().await {
        Ok(Some(what)) => shared.record(Op::Fault(FaultEvent::AtRest(what))),
        Ok(None) => {}
        Err(error) => return Err(format!("corrupting the log at rest: {error}").into()),
    }
    shared.record(Op::BrokerStart { node });
    // Kept alive for the host's life: shutdown only by crash.
    let (_never_triggered, shutdown) = shutdown_channel();
    // `ready` must be `Send`; the history is not: a channel carries the
    // news across.
    let (ready, listening) = oneshot::channel();
    let serve = server::run(host.config.clone(), host.io.clone(), shutdown, move |l| {
        let _ = ready.send(l);
    });
    let serve = with_running_flips(serve, at_rest, shared);
    let result = match (&host.replicas, node) {
        (Some(replicas), Some(id)) => {
            replicas.forget(id);
            let report = report_replicas(listening, &host, replicas, id);
            tokio::pin!(serve);
            tokio::select! {
                biased;
                result = &mut serve => result,
                // Never: it reports for as long as the node serves.
                () = report => serve.await,
            }
        }
        _ => {
            let announce = async {
                announce(listening, &host).await;
            };
            let (result, ()) = tokio::join!(serve, announce);
            result
        }
    };
    at_rest.on_stop(&result);
    // A broker that stops (a failed fsync under disk faults) is recorded,
    // not a simulation error: staying down until healed is allowed; losing
    // what it accepted is not.
    shared.record(Op::BrokerStopped {
        node,
        result: format!("{result:?}"),
    });
    Ok(())
}

/// `serve`, with the side line that flips a bit of the log while the
/// broker runs when the nemesis asks (see [`AtRest::flips_while_running`]).
/// Polled after `serve` and only when woken, so a run that never asks is
/// the same as one without it.
async fn with_running_flips<T>(
    serve: impl std::future::Future<Output = T>,
    at_rest: &AtRest,
    shared: &Shared,
) -> T {
    let report = |what| shared.record(Op::Fault(FaultEvent::AtRest(what)));
    tokio::select! {
        biased;
        result = serve => result,
        () = at_rest.flips_while_running(report) => unreachable!("it never returns"),
    }
}

/// Once the broker listens: hands its node to the inspector, and reports
/// a flip at rest it started on. `None` if it never listened.
async fn announce(
    listening: oneshot::Receiver<Listening>,
    host: &BrokerHost,
) -> Option<NodeHandle> {
    let node = listening.await.ok()?.node;
    let handles = &host.shared.broker_nodes;
    handles.borrow_mut().insert(host.node, node.clone());
    if let Some(what) = host.at_rest.on_ready() {
        host.shared.record(Op::Fault(FaultEvent::AtRest(what)));
    }
    Some(node)
}

/// A cluster node's side line: announces it, then, in the fault phase,
/// reports its groups (leaders) to the nemesis every [`REPLICA_POLL`].
/// Never returns.
async fn report_replicas(
    listening: oneshot::Receiver<Listening>,
    host: &BrokerHost,
    replicas: &Replicas,
    id: u64,
) {
    let Some(node) = announce(listening, host).await else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(REPLICA_POLL).await;
        if host.shared.phase.get() != Phase::Faults {
            continue;
        }
        if let Ok(statuses) = node.replica_status().await {
            replicas.update(id, statuses);
            for (group, leader) in replicas.leader_changes() {
                host.shared.record(Op::LeaderObserved { group, leader });
            }
        }
    }
}

/// The workload's clients, each counted in `clients_exited` when it ends,
/// and the inspector, which waits for them all: tasks of the one clients'
/// host (see [`crate::client_net`]).
fn spawn_clients(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    params: &WorkloadParams,
    shared: &Rc<Shared>,
) {
    let mut clients: Vec<workload::ClientFuture> = Vec::new();
    for client in params.clients() {
        let (params, owned) = (params.clone(), Rc::clone(shared));
        let future: workload::ClientFuture = match client {
            ClientId::Producer(n) => Box::pin(workload::producer(n, seed, params, owned)),
            ClientId::Consumer(n) => Box::pin(workload::consumer(n, seed, params, owned)),
            ClientId::Subscriber(n) => Box::pin(workload::subscriber(n, seed, params, owned)),
            ClientId::DeadLetters(n) => Box::pin(workload::dead_letter_consumer(n, seed, owned)),
            ClientId::Browser(n) => Box::pin(workload::browser(n, seed, params, owned)),
            ClientId::Requester(n) => Box::pin(request_reply::requester(n, seed, owned)),
            ClientId::Responder(n) => Box::pin(request_reply::responder(n, seed, owned)),
            ClientId::Intruder(n) => Box::pin(intruder::intruder(n, seed, owned)),
        };
        let shared = Rc::clone(shared);
        clients.push(Box::pin(async move {
            let result = future.await;
            shared.clients_exited.set(shared.clients_exited.get() + 1);
            result
        }));
    }
    let count = u32::try_from(clients.len()).expect("a handful of clients");
    let inspector = workload::inspector(count, Rc::clone(shared));
    sim.client(CLIENTS_HOST, async move {
        let mut tasks = tokio::task::JoinSet::new();
        for client in clients {
            tasks.spawn_local(client);
        }
        tasks.spawn_local(inspector);
        // The first client to fail fails the run, as it would on a host of
        // its own; a panic stays a panic.
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok(result) => result?,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        Ok(())
    });
}

/// Adds every broker host to `sim`, each on the nemesis's I/O seam.
fn add_brokers(
    sim: &mut turmoil::Sim<'_>,
    options: &RunOptions,
    params: &WorkloadParams,
    nemesis: &Nemesis,
    shared: &Rc<Shared>,
    replicas: Option<&Rc<Replicas>>,
) -> Result<(), SimError> {
    for &node in &shared.brokers {
        let name = broker_name(node);
        let host = Rc::new(BrokerHost {
            node,
            config: broker_config(options, params, node)?,
            // Every restart shares the same disk faults.
            io: nemesis.broker_io(&name),
            at_rest: nemesis.at_rest(&name),
            shared: Rc::clone(shared),
            replicas: replicas.cloned(),
        });
        sim.host(name, move || broker(Rc::clone(&host)));
    }
    Ok(())
}

/// A running world: the simulation, the nemesis, what the clients share,
/// and the trace.
struct World {
    sim: turmoil::Sim<'static>,
    nemesis: Nemesis,
    shared: Rc<Shared>,
    trace: Trace,
    drain: DrainTracker,
    hosts: Vec<String>,
    /// After the liveness phase, how long clients get to close and the
    /// inspector to report.
    wind_down: Duration,
}

/// Runs one simulation and checks its history.
///
/// # Errors
///
/// Bad options ([`SimError::UnknownProfile`], …), or turmoil failing the
/// simulation (a client panicked or returned an error).
pub fn run(options: &RunOptions) -> Result<RunReport, SimError> {
    let profile = Profile::named(&options.profile)?;
    if !(1..=cluster::NODES_MAX).contains(&options.nodes) {
        return Err(SimError::BadNodes(options.nodes));
    }
    let params = options.workload_params()?;
    if let Some(schedule) = &options.schedule {
        check_hosts(schedule, options, &params)?;
    }
    watch_panics();
    let mut world = World::new(options, &profile, &params)?;
    world.run(options, &profile)?;
    Ok(world.finish(options, params))
}

/// The hosts a schedule may name in a world of `options` with the
/// workload `params`: its brokers, and its clients, each at its end of its
/// links (see [`crate::client_net`]).
pub fn hosts(options: &RunOptions, params: &WorkloadParams) -> BTreeSet<String> {
    let brokers = cluster::broker_nodes(options.nodes)
        .into_iter()
        .map(broker_name);
    brokers.chain(shape::client_names(params)).collect()
}

/// Refuses a schedule that names a host the world does not have (a
/// replay file is input).
fn check_hosts(
    schedule: &Schedule,
    options: &RunOptions,
    params: &WorkloadParams,
) -> Result<(), SimError> {
    let known = hosts(options, params);
    match schedule
        .hosts()
        .into_iter()
        .find(|host| !known.contains(*host))
    {
        Some(unknown) => Err(SimError::UnknownHost(unknown.to_owned())),
        None => Ok(()),
    }
}

impl World {
    fn new(
        options: &RunOptions,
        profile: &Profile,
        params: &WorkloadParams,
    ) -> Result<Self, SimError> {
        let links = ClientLinks::new(options.seed);
        let shared = Shared::new(
            cluster::broker_nodes(options.nodes),
            Rc::clone(&links),
            options.seed,
        );
        let hosts: Vec<String> = shared.brokers.iter().map(|&n| broker_name(n)).collect();
        let host_names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let kinds = options.faults.kinds();
        let mut nemesis = match &options.schedule {
            Some(schedule) => Nemesis::scripted(schedule, kinds, options.duration, &host_names),
            None => Nemesis::new(options.seed, kinds, options.duration, &host_names)
                .base_latency(profile.max_latency)
                .bias(profile.bias),
        }
        .clients(&shape::client_names(params), links);
        let replicas = options.is_cluster().then(Rc::<Replicas>::default);
        if let Some(replicas) = &replicas {
            nemesis = nemesis.cluster(Rc::clone(replicas));
        }
        let wind_down = if options.is_cluster() {
            WIND_DOWN + CONVERGE_WAIT_MAX
        } else {
            WIND_DOWN
        };

        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(options.seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
            .tick_duration(profile.tick)
            .min_message_latency(profile.min_latency)
            .max_message_latency(profile.max_latency)
            .simulation_duration(options.duration + profile.liveness_max + wind_down * 2);
        nemesis.configure(&mut builder);
        let mut sim = builder.build();
        add_brokers(
            &mut sim,
            options,
            params,
            &nemesis,
            &shared,
            replicas.as_ref(),
        )?;
        spawn_clients(&mut sim, options.seed, params, &shared);

        let mut trace = Trace::new();
        let traced = TracedOptions(options);
        trace.record(Duration::ZERO, format!("options {traced:?}"));
        trace.record(Duration::ZERO, format!("workload {params:?}"));
        Ok(Self {
            sim,
            nemesis,
            shared,
            trace,
            drain: DrainTracker::new(params.clone()),
            hosts,
            wind_down,
        })
    }

    /// Whether a broker host is down.
    fn any_broker_down(&mut self) -> bool {
        let sim = &mut self.sim;
        self.hosts
            .iter()
            .any(|host| !sim.is_host_running(host.as_str()))
    }

    /// Restarts every broker host that is down, noting each as `why`.
    fn restart_down_brokers(&mut self, why: Option<&str>) {
        let now = self.sim.elapsed();
        for host in &self.hosts {
            if !self.sim.is_host_running(host.as_str()) {
                if let Some(why) = why {
                    self.trace.record(now, format!("{why} {host}"));
                }
                self.sim.bounce(host.as_str());
            }
        }
    }

    /// Ends the liveness phase at `now`, saying `why` in the trace: the
    /// clients close.
    fn end_liveness(&mut self, now: Duration, why: &str) {
        self.shared.phase.set(Phase::Finished);
        self.shared
            .history
            .borrow_mut()
            .push(now, Op::LivenessEnded);
        self.trace.record(now, why);
    }

    /// The phases: faults, liveness, wind-down, a step at a time.
    fn run(&mut self, options: &RunOptions, profile: &Profile) -> Result<(), SimError> {
        let liveness_end = options.duration + profile.liveness_max;
        let mut finished_at = None;
        loop {
            let now = self.sim.elapsed();
            match self.shared.phase.get() {
                Phase::Faults if now >= options.duration => {
                    self.nemesis.heal(&mut self.sim, &mut self.trace);
                    // Heal may leave a broker down; the liveness phase needs
                    // them all.
                    self.restart_down_brokers(None);
                    self.shared.phase.set(Phase::Drain);
                    self.trace.record(now, "phase: liveness");
                }
                Phase::Faults => self
                    .nemesis
                    .before_step(&mut self.sim, now, &mut self.trace),
                Phase::Drain
                    if (now >= options.duration + DRAIN_MIN && self.drain.done(now))
                        || now >= liveness_end =>
                {
                    self.end_liveness(now, "phase: finished");
                    finished_at = Some(now);
                }
                // A broker that stopped on its own in the liveness phase (a
                // failed fsync it saw late) is restarted, as a supervisor
                // would: stopping was right, staying down would only hide
                // what the checker must see after recovery.
                Phase::Drain if self.any_broker_down() => {
                    self.restart_down_brokers(Some("supervisor: restart"));
                }
                Phase::Drain | Phase::Finished => {}
            }
            if self.shared.phase.get() != Phase::Finished && self.drain.runaway() {
                // A broker redelivering without end (double-deliver) would
                // otherwise fill memory until the liveness bound; the
                // history already shows the violation.
                self.end_liveness(now, "phase: finished (delivery storm)");
                finished_at = Some(now);
            }
            self.copy_faults_to_history();
            let all_clients_done = self.step(options.seed)?;
            if all_clients_done {
                return Ok(());
            }
            if finished_at.is_some_and(|at| self.sim.elapsed() >= at + self.wind_down) {
                // A client stuck closing must not hold the run hostage; the
                // verdict only needs the history.
                self.trace.record(self.sim.elapsed(), "wind-down cut short");
                return Ok(());
            }
        }
    }

    /// The checker needs the faults too (disk-full windows excuse some
    /// redeliveries): what the nemesis did goes into the history as it is;
    /// the nemesis wrote it into the trace already.
    fn copy_faults_to_history(&mut self) {
        let mut history = self.shared.history.borrow_mut();
        for (time, event) in self.nemesis.take_events() {
            history.push(time, Op::Fault(event));
        }
    }

    /// One step; moves what the clients recorded during it into the trace.
    /// True once every client is done, or once a host panicked: under
    /// turmoil that stops the simulation, and the run is cut short with the
    /// panic in its history (a finding, not a simulator failure).
    fn step(&mut self, seed: u64) -> Result<bool, SimError> {
        let traced = self.shared.history.borrow().events().len();
        let sim = &mut self.sim;
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
        let all_clients_done = match stepped {
            Ok(result) => result.map_err(|error| SimError::Turmoil(seed, error.to_string()))?,
            Err(panic) => {
                let why = first_panic().unwrap_or_else(|| panic_message(&*panic));
                let now = self.sim.elapsed();
                self.shared
                    .history
                    .borrow_mut()
                    .push(now, Op::Aborted { why });
                true
            }
        };
        let history = self.shared.history.borrow();
        for (index, event) in history.events().iter().enumerate().skip(traced) {
            if event.op.in_trace() {
                self.trace.record(event.time, &event.op);
            }
            self.drain.observe(index, event);
        }
        Ok(all_clients_done)
    }

    /// Checks the history and reports.
    fn finish(self, options: &RunOptions, params: WorkloadParams) -> RunReport {
        let World {
            sim,
            nemesis,
            shared,
            mut trace,
            ..
        } = self;
        let schedule = nemesis.schedule();
        let simulated = sim.elapsed();
        drop(sim);
        let history = shared.history.borrow().clone();
        let mut check = checker::check(&history, &params);
        checker::require_all_checked(&mut check, options.nodes, &history);
        trace.record(
            simulated,
            format!("verdict: {} violation(s)", check.stats.violations_total),
        );
        RunReport {
            options: options.clone(),
            params,
            history,
            trace,
            check,
            schedule,
            simulated,
        }
    }
}

std::thread_local! {
    /// The first panic on this thread since [`watch_panics`] last cleared it.
    static FIRST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Remembers the first panic of each run on its thread (turmoil reports a
/// host's panic as its own, "a spawned task panicked", which hides the
/// first), and then prints it as the default hook does.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            FIRST_PANIC.with(|first| {
                first.borrow_mut().get_or_insert_with(|| info.to_string());
            });
            previous(info);
        }));
    });
    FIRST_PANIC.with(|first| first.borrow_mut().take());
}

/// The first panic of this run on this thread, if any.
fn first_panic() -> Option<String> {
    FIRST_PANIC.with(|first| first.borrow().clone())
}

/// A panic's message.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|m| (*m).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Runs `options` twice and compares the traces.
///
/// # Errors
///
/// As [`run`].
pub fn check_determinism(options: &RunOptions) -> Result<Determinism, SimError> {
    let first = run(options)?;
    let second = run(options)?;
    let difference = first
        .trace
        .first_difference(&second.trace)
        .map(|(index, a, b)| {
            let show = |e: Option<&crate::trace::TraceEvent>| {
                e.map_or_else(|| "(end of trace)".to_owned(), ToString::to_string)
            };
            format!(
                "first difference at trace event {index}:\n  run 1: {}\n  run 2: {}",
                show(a),
                show(b)
            )
        });
    Ok(Determinism {
        hashes: (first.trace.hash(), second.trace.hash()),
        difference,
        report: first,
    })
}

/// The result of [`check_determinism`].
#[derive(Debug)]
pub struct Determinism {
    /// The two runs' trace hashes.
    pub hashes: (u64, u64),
    /// The first differing event, if the traces differ.
    pub difference: Option<String>,
    /// The first run.
    pub report: RunReport,
}

impl Determinism {
    /// True if both runs produced the same trace.
    pub fn deterministic(&self) -> bool {
        self.difference.is_none() && self.hashes.0 == self.hashes.1
    }
}

/// Tracks, during the drain, whether every accepted message was consumed
/// from every queue it must reach (or from its dead-letter queue), but for
/// those the checker lets vanish. A message sent in a transaction counts
/// once its transaction's commit is accepted, or, for a commit with no
/// answer, once another of its messages is delivered (all or nothing, so
/// the rest must follow). A live volatile subscription's link must have
/// got what it is owed (see [`crate::volatile`]), or have ended.
#[derive(Debug)]
struct DrainTracker {
    params: WorkloadParams,
    volatile: VolatileLinks,
    /// Accepted requests still waiting for their reply.
    requests: request_reply::Awaited,
    txns: Transactions,
    outstanding: BTreeSet<(String, MsgId)>,
    consumed: BTreeSet<(String, MsgId)>,
    /// The last-value queue's messages are awaited per key: a replaced
    /// value never comes.
    last_values: LastValueDrain,
    kinds: BTreeMap<MsgId, MessageKind>,
    starts: Vec<Duration>,
    last_delivery: Duration,
    sends: u64,
    deliveries: u64,
}

impl DrainTracker {
    fn new(params: WorkloadParams) -> Self {
        Self {
            volatile: VolatileLinks::new(&params),
            params,
            requests: request_reply::Awaited::default(),
            txns: Transactions::default(),
            outstanding: BTreeSet::new(),
            consumed: BTreeSet::new(),
            last_values: LastValueDrain::default(),
            kinds: BTreeMap::new(),
            starts: Vec::new(),
            last_delivery: Duration::ZERO,
            sends: 0,
            deliveries: 0,
        }
    }

    fn observe(&mut self, index: usize, event: &crate::history::Event) {
        self.txns.observe(index, event);
        self.requests.observe(&event.op);
        self.volatile.observe(index, event);
        match &event.op {
            // A message's outcome in a transaction is provisional.
            Op::ProducerOutcome {
                msg,
                outcome: Outcome::Accepted,
                ..
            } if self.txns.of(*msg).is_none() => self.expect(*msg, event.time),
            Op::Discharged { txn, .. } => {
                let committed = self
                    .txns
                    .get(*txn)
                    .filter(|t| matches!(t.fate, Fate::Committed { .. }));
                let members: Vec<MsgId> = committed
                    .into_iter()
                    .flat_map(|t| t.applied_members())
                    .collect();
                for msg in members {
                    self.expect(msg, event.time);
                }
            }
            Op::Settled {
                queue,
                msg,
                outcome,
                ..
            } if outcome.consumes() => {
                self.last_values.consumed(index, *msg);
                // A dead-lettered message counts for the queue it left.
                let origin = match &self.params.dead_lettering {
                    Some(origin) if self.params.is_dead_letter_queue(queue) => origin,
                    _ => queue,
                };
                let key = (origin.clone(), *msg);
                self.outstanding.remove(&key);
                self.consumed.insert(key);
            }
            Op::BrokerStart { .. } => {
                self.starts.push(event.time);
                // What is transient may be gone now.
                let kinds = &self.kinds;
                self.outstanding
                    .retain(|(_, msg)| kinds.get(msg).is_none_or(|kind| kind.durable));
            }
            Op::Delivered { msg, .. } => {
                self.deliveries += 1;
                self.last_delivery = self.last_delivery.max(event.time);
                let unanswered = self.txns.of(*msg).filter(|(_, t)| t.fate == Fate::Unknown);
                let members: Vec<MsgId> = unanswered
                    .into_iter()
                    .flat_map(|(_, t)| t.applied_members())
                    .collect();
                for member in members {
                    self.expect(member, event.time);
                }
            }
            Op::Send { msg, kind, .. } => {
                self.sends += 1;
                self.kinds.entry(*msg).or_insert(*kind);
                if let Some(key) = kind.key {
                    self.last_values.sent(index, *msg, key);
                }
            }
            _ => {}
        }
    }

    /// `msg`, accepted at `time`, must be consumed from each of its
    /// queues, unless the checker lets it vanish.
    fn expect(&mut self, msg: MsgId, time: Duration) {
        let kind = self.kinds.get(&msg).copied().unwrap_or(MessageKind::PLAIN);
        if checker::may_vanish(kind, time, &self.starts) {
            return;
        }
        if self.last_values.has(msg) {
            return self.last_values.accepted(msg);
        }
        for queue in self.params.destinations_of(msg.producer) {
            if self.params.may_drop(&queue, kind.durable) {
                continue;
            }
            let key = (queue, msg);
            if !self.consumed.contains(&key) {
                self.outstanding.insert(key);
            }
        }
    }

    /// Far more deliveries than sends: releases and modifies legitimately
    /// redeliver a message a few times, never dozens of times on average.
    fn runaway(&self) -> bool {
        self.deliveries > DELIVERIES_PER_SEND_MAX * self.sends + 1_000
    }

    fn done(&self, now: Duration) -> bool {
        let vanishes = |msg: MsgId, time: Duration| {
            let kind = self.kinds.get(&msg).copied().unwrap_or(MessageKind::PLAIN);
            checker::may_vanish(kind, time, &self.starts)
        };
        self.outstanding.is_empty()
            && !self.volatile.awaiting(vanishes)
            && self.last_values.done()
            && self.requests.is_empty()
            && now >= self.last_delivery + DRAIN_QUIET
    }
}
