//! A world from a seed: the turmoil simulation, the broker host, the
//! workload's clients, and the phases of a run.
//!
//! A run is a pure function of its [`RunOptions`] and the code: turmoil's
//! RNG, the workload's RNGs and the broker's own RNG all derive from the
//! seed, the epoch is fixed, and the host order is turmoil's seeded one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sluice::config::Config;
use sluice::io::TurmoilIo;
use sluice::io::faulty::FaultyIo;
use sluice::server::{self, shutdown_channel};

use crate::SimError;
use crate::at_rest::AtRest;
use crate::checker::{self, CheckReport};
use crate::history::{ClientId, History, MsgId, Op, Outcome};
use crate::nemesis::{FaultKinds, Nemesis};
use crate::trace::Trace;
use crate::workload::{self, Phase, Shared, WorkloadParams};

/// The broker host's name.
pub const BROKER: &str = "broker";
/// The simulated wall clock at the start: 2024-01-01T00:00:00Z, the same
/// epoch `TurmoilIo` reports, so that timestamps replay.
const EPOCH_UNIX_S: u64 = 1_704_067_200;
/// After the liveness phase, how long clients get to close and exit, and
/// the inspector to read the broker's state.
const WIND_DOWN: Duration = Duration::from_secs(8);
/// The inspector's host name (it talks to the broker in-process, not over
/// the network, so the nemesis never sees it).
const INSPECTOR: &str = "inspector";
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
}

/// The profiles, by name.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "default",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_micros(100),
        max_latency: Duration::from_millis(5),
        liveness_max: Duration::from_secs(30),
    },
    // Longer latencies: more messages in flight when a fault hits.
    Profile {
        name: "slow-net",
        tick: Duration::from_millis(1),
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(50),
        liveness_max: Duration::from_secs(60),
    },
];

impl Profile {
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
}

impl Faults {
    /// Every kind on.
    pub const ALL: Faults = Faults {
        net: true,
        crash: true,
        disk: true,
    };

    /// Parses `net,crash,disk` (any subset; `none` or empty for none).
    pub fn parse(list: &str) -> Result<Faults, SimError> {
        let mut faults = Faults::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "net" => faults.net = true,
                "crash" => faults.crash = true,
                "disk" => faults.disk = true,
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
}

impl RunOptions {
    /// The default options for `seed`: default profile, 10 s, all faults.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            profile: "default".to_owned(),
            duration: Duration::from_secs(10),
            faults: Faults::ALL,
            plant: None,
        }
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
        command
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
            "seed {:#x} FAILED ({} violation(s)); first: {first}\n  replay: {}",
            self.options.seed,
            self.check.stats.violations_total,
            self.options.command()
        ))
    }
}

/// Enables the planted bug `plant` in the broker's configuration.
#[cfg(feature = "planted-bugs")]
fn apply_plant(config: &mut Config, plant: Option<&str>) -> Result<(), SimError> {
    config.plant = plant
        .map(str::parse::<sluice::planted::Plant>)
        .transpose()
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

/// The broker's configuration for a run.
fn broker_config(options: &RunOptions) -> Result<Config, SimError> {
    let mut config = Config {
        listen: (Ipv4Addr::UNSPECIFIED, 5672).into(),
        data_dir: "/data".into(),
        seed: options.seed,
        ..Config::default()
    };
    // Small, so that snapshots (and their recovery path) happen in every run.
    config.storage.snapshot_every_records = 200;
    // Unlimited: the workload releases and modifies messages at random, and
    // a dead-lettered message (dropped, with no dead-letter queue) would be
    // an unexplained loss to the checker.
    config.queues.delivery_limit = 0;
    // Dead clients (crashed or partitioned away) are detected quickly, so
    // that their unsettled deliveries are released within the run.
    config.amqp.idle_timeout_ms = 2_000;
    apply_plant(&mut config, options.plant.as_deref())?;
    Ok(config)
}

/// The broker host, one incarnation: flips or restores a bit of its log if
/// the nemesis asked, runs the production server, and records its start,
/// its node handle (for the inspector) and how it stopped.
async fn broker(
    config: Config,
    io: FaultyIo<TurmoilIo>,
    at_rest: Rc<AtRest>,
    shared: Rc<Shared>,
) -> turmoil::Result {
    match at_rest.before_start().await {
        Ok(Some(what)) => shared.record(Op::Fault { what }),
        Ok(None) => {}
        Err(error) => return Err(format!("corrupting the log at rest: {error}").into()),
    }
    shared.record(Op::BrokerStart);
    // Kept alive for the host's life: shutdown only by crash.
    let (_never_triggered, shutdown) = shutdown_channel();
    // `ready` must be `Send`; the history is not: a channel carries the
    // news across.
    let (ready, listening) = tokio::sync::oneshot::channel();
    let serve = server::run(config, io, shutdown, move |listening| {
        let _ = ready.send(listening.node);
    });
    let announce = async {
        let Ok(node) = listening.await else {
            return;
        };
        *shared.broker_node.borrow_mut() = Some(node);
        if let Some(what) = at_rest.on_ready() {
            shared.record(Op::Fault { what });
        }
    };
    let (result, ()) = tokio::join!(serve, announce);
    at_rest.on_stop(&result);
    // A broker that stops (a failed fsync under disk faults) is recorded,
    // not a simulation error: staying down until healed is allowed; losing
    // what it accepted is not.
    shared.record(Op::BrokerStopped {
        result: format!("{result:?}"),
    });
    Ok(())
}

/// The workload's clients, each counted in `clients_exited` when it ends,
/// and the inspector, which waits for them all.
fn spawn_clients(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    params: &WorkloadParams,
    shared: &Rc<Shared>,
) {
    let mut clients = 0;
    let mut spawn = |client: ClientId, future: workload::ClientFuture| {
        clients += 1;
        let shared = Rc::clone(shared);
        sim.client(client.to_string(), async move {
            let result = future.await;
            shared.clients_exited.set(shared.clients_exited.get() + 1);
            result
        });
    };
    for n in params.all_producers() {
        let future = workload::producer(n, seed, params.clone(), Rc::clone(shared));
        spawn(ClientId::Producer(n), Box::pin(future));
    }
    for n in 0..params.consumers {
        let future = workload::consumer(n, seed, params.clone(), Rc::clone(shared));
        spawn(ClientId::Consumer(n), Box::pin(future));
    }
    for n in 0..params.subscribers {
        let future = workload::subscriber(n, seed, params.clone(), Rc::clone(shared));
        spawn(ClientId::Subscriber(n), Box::pin(future));
    }
    sim.client(INSPECTOR, workload::inspector(clients, Rc::clone(shared)));
}

/// Runs one simulation and checks its history.
///
/// # Errors
///
/// Bad options ([`SimError::UnknownProfile`], …), or turmoil failing the
/// simulation (a client panicked or returned an error).
pub fn run(options: &RunOptions) -> Result<RunReport, SimError> {
    let profile = Profile::named(&options.profile)?;
    let config = broker_config(options)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let params = WorkloadParams::draw(&mut rng);
    let nemesis_hosts = [BROKER];
    let mut nemesis = Nemesis::new(
        options.seed,
        options.faults.kinds(),
        options.duration,
        &nemesis_hosts,
    )
    .base_latency(profile.max_latency);
    // The broker's disk goes through the nemesis's fault switches; every
    // restart gets a clone sharing the same switches.
    let broker_io = nemesis.broker_io(BROKER);
    let at_rest = nemesis.at_rest(BROKER);

    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .tick_duration(profile.tick)
        .min_message_latency(profile.min_latency)
        .max_message_latency(profile.max_latency)
        .simulation_duration(options.duration + profile.liveness_max + WIND_DOWN * 2);
    nemesis.configure(&mut builder);
    let mut sim = builder.build();

    let shared = Shared::new();
    let broker_shared = Rc::clone(&shared);
    sim.host(BROKER, move || {
        broker(
            config.clone(),
            broker_io.clone(),
            Rc::clone(&at_rest),
            Rc::clone(&broker_shared),
        )
    });
    spawn_clients(&mut sim, options.seed, &params, &shared);

    let mut trace = Trace::new();
    trace.record(Duration::ZERO, format!("options {options:?}"));
    trace.record(Duration::ZERO, format!("workload {params:?}"));
    let mut drain = DrainTracker::new(params.clone());
    let liveness_end = options.duration + profile.liveness_max;
    let mut finished_at = None;
    loop {
        let now = sim.elapsed();
        let nemesis_from = trace.events().len();
        match shared.phase.get() {
            Phase::Faults if now >= options.duration => {
                nemesis.heal(&mut sim, &mut trace);
                // Heal may leave the broker down; the liveness phase needs it.
                if !sim.is_host_running(BROKER) {
                    sim.bounce(BROKER);
                }
                shared.phase.set(Phase::Drain);
                trace.record(now, "phase: liveness");
            }
            Phase::Faults => nemesis.before_step(&mut sim, now, &mut trace),
            Phase::Drain
                if (now >= options.duration + DRAIN_MIN && drain.done(now))
                    || now >= liveness_end =>
            {
                shared.phase.set(Phase::Finished);
                finished_at = Some(now);
                trace.record(now, "phase: finished");
            }
            // A broker that stopped on its own in the liveness phase (a
            // failed fsync it saw late) is restarted, as a supervisor would:
            // stopping was right, staying down would only hide what the
            // checker must see after recovery.
            Phase::Drain if !sim.is_host_running(BROKER) => {
                trace.record(now, "supervisor: restart broker");
                sim.bounce(BROKER);
            }
            Phase::Drain | Phase::Finished => {}
        }
        if shared.phase.get() != Phase::Finished && drain.runaway() {
            // A broker redelivering without end (double-deliver) would
            // otherwise fill memory until the liveness bound; the history
            // already shows the violation.
            shared.phase.set(Phase::Finished);
            finished_at = Some(now);
            trace.record(now, "phase: finished (delivery storm)");
        }
        // The checker needs the faults too (disk-full windows excuse some
        // redeliveries): copied into the history, not back into the trace.
        for event in &trace.events()[nemesis_from..] {
            if let Some(what) = event.what.strip_prefix("nemesis: ") {
                shared.history.borrow_mut().push(
                    event.time,
                    Op::Fault {
                        what: what.to_owned(),
                    },
                );
            }
        }
        let traced = shared.history.borrow().events().len();
        let all_clients_done = sim
            .step()
            .map_err(|error| SimError::Turmoil(options.seed, error.to_string()))?;
        // Moves what the clients recorded during the step into the trace.
        {
            let history = shared.history.borrow();
            for event in &history.events()[traced..] {
                trace.record(event.time, &event.op);
                drain.observe(event);
            }
        }
        if all_clients_done {
            break;
        }
        if finished_at.is_some_and(|at| sim.elapsed() >= at + WIND_DOWN) {
            // A client stuck closing must not hold the run hostage; the
            // verdict only needs the history.
            trace.record(sim.elapsed(), "wind-down cut short");
            break;
        }
    }

    let simulated = sim.elapsed();
    drop(sim);
    let history = shared.history.borrow().clone();
    let check = checker::check(&history, &params);
    trace.record(
        simulated,
        format!("verdict: {} violation(s)", check.stats.violations_total),
    );
    Ok(RunReport {
        options: options.clone(),
        params,
        history,
        trace,
        check,
        simulated,
    })
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
/// from every queue it must reach.
#[derive(Debug)]
struct DrainTracker {
    params: WorkloadParams,
    outstanding: BTreeSet<(String, MsgId)>,
    consumed: BTreeSet<(String, MsgId)>,
    last_delivery: Duration,
    sends: u64,
    deliveries: u64,
}

impl DrainTracker {
    fn new(params: WorkloadParams) -> Self {
        Self {
            params,
            outstanding: BTreeSet::new(),
            consumed: BTreeSet::new(),
            last_delivery: Duration::ZERO,
            sends: 0,
            deliveries: 0,
        }
    }

    fn observe(&mut self, event: &crate::history::Event) {
        match &event.op {
            Op::ProducerOutcome {
                msg,
                outcome: Outcome::Accepted,
                ..
            } => {
                for queue in self.params.destinations_of(msg.producer) {
                    let key = (queue, *msg);
                    if !self.consumed.contains(&key) {
                        self.outstanding.insert(key);
                    }
                }
            }
            Op::Settled {
                queue,
                msg,
                outcome,
                ..
            } if outcome.consumes() => {
                let key = (queue.clone(), *msg);
                self.outstanding.remove(&key);
                self.consumed.insert(key);
            }
            Op::Delivered { .. } => {
                self.deliveries += 1;
                self.last_delivery = self.last_delivery.max(event.time);
            }
            Op::Send { .. } => self.sends += 1,
            _ => {}
        }
    }

    /// Far more deliveries than sends: releases and modifies legitimately
    /// redeliver a message a few times, never dozens of times on average.
    fn runaway(&self) -> bool {
        self.deliveries > DELIVERIES_PER_SEND_MAX * self.sends + 1_000
    }

    fn done(&self, now: Duration) -> bool {
        self.outstanding.is_empty() && now >= self.last_delivery + DRAIN_QUIET
    }
}
