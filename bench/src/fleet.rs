//! `sluice-bench fleet`: what a fleet of objects costs a running broker.
//!
//! In order, on one broker: an unrelated client (the [`witness`]) measures
//! its rate; then the tool declares `--queues` queues (by attaching a
//! sender to each, as a client would, and detaching it), opens
//! `--connections` idle connections, attaches `--consumers` consumers each
//! on its own queue, and attaches `--links` consumers of one queue on one
//! connection, which it then drops. Each phase reports its time per
//! `--step` objects as the count grows (a cost that grows with the objects
//! already there shows as a rising time), and, with `--broker-pid`, the
//! broker's resident memory per object. After the drop, the witness makes
//! round trips for `--watch-for`: the worst says how long the broker served
//! nobody while it tore the links down. Last, the witness measures its rate
//! again.

mod links;
mod witness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice::amqp::engine::{ConnectionConfig, EngineError};
use sluice::client::{Client, ClientError};
use sluice::io::{Io, TokioIo};
use tokio::sync::{Semaphore, mpsc};

use crate::cli::{CliError, Target, parse_duration, parse_url};
use crate::cpu;
use links::Kind;
use witness::Witness;

/// Round trips the witness makes for its baseline before the drop.
const BASELINE_ROUND_TRIPS: usize = 20;

/// A round trip this many times the baseline, and at least [`SLOW_MS`],
/// counts as the broker not serving as usual.
const SLOW_FACTOR: f64 = 4.0;

/// See [`SLOW_FACTOR`]: below this a round trip is as good as any.
const SLOW_MS: f64 = 5.0;

/// What a fleet costs a running broker: creation time per step, memory per
/// object, the stall after a big disconnect, and an unrelated client's
/// rate before and after.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Broker URL: amqp://[user:pass@]host:port.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,

    /// The broker's process id: its resident memory (VmRSS) is read before
    /// and after each phase.
    #[arg(long)]
    pub broker_pid: Option<u32>,

    /// Queues to declare.
    #[arg(long, default_value_t = 10_000)]
    pub queues: usize,

    /// Idle connections to open (and keep open to the end).
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,

    /// Consumers to attach, each on its own queue; each connection carries
    /// one step's worth (`--step`).
    #[arg(long, default_value_t = 1_000)]
    pub consumers: usize,

    /// Consumers of one queue to attach on one connection, which is then
    /// dropped.
    #[arg(long, default_value_t = 10_000)]
    pub links: usize,

    /// Objects per timed step.
    #[arg(long, default_value_t = 1_000)]
    pub step: usize,

    /// Link attaches awaiting their answer at once.
    #[arg(long, default_value_t = 100)]
    pub window: usize,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,

    /// Names the run's queues: NAME-q-N, NAME-c-N, NAME-links,
    /// NAME-witness. Give each run on a broker that keeps its queues its
    /// own.
    #[arg(long, default_value = "fleet")]
    pub name: String,

    /// Put before every queue name to make its address (RabbitMQ 4:
    /// `/queue/`, the v1 address that declares a classic queue on attach).
    #[arg(long, default_value = "")]
    pub address_prefix: String,

    /// How long the witness measures its rate.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub rate_for: Duration,

    /// How long the witness makes round trips after the drop.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub watch_for: Duration,

    /// Print the result as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// A label copied into the result (e.g. the broker's name).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Why a fleet run failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A client operation failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The engine refused a command.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The broker refused something.
    #[error("{0}")]
    Refused(String),
    /// Reading /proc failed.
    #[error("reading the broker's memory: {0}")]
    Proc(#[from] std::io::Error),
    /// The options are wrong.
    #[error(transparent)]
    Cli(#[from] CliError),
}

/// One phase: objects of one kind, created in timed steps.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What was created.
    pub name: &'static str,
    /// How many.
    pub count: usize,
    /// Seconds each step took, in order.
    pub step_s: Vec<f64>,
    /// The broker's RSS before and after, bytes (with `--broker-pid`).
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
}

impl Phase {
    /// The broker's memory per object, bytes.
    pub fn bytes_each(&self) -> Option<f64> {
        let grew = self.rss_after?.saturating_sub(self.rss_before?);
        Some(grew as f64 / self.count.max(1) as f64)
    }
}

/// What the drop of the links' connection cost the witness.
#[derive(Debug, Clone, Serialize)]
pub struct Teardown {
    /// Links on the dropped connection.
    pub links: usize,
    /// The witness's median round trip before the drop, ms.
    pub baseline_ms: f64,
    /// Its slowest round trip after the drop, ms.
    pub worst_ms: f64,
    /// From the drop to the end of the last slow round trip (see
    /// [`SLOW_FACTOR`]; 0 if none was), ms.
    pub normal_after_ms: f64,
    /// The broker's RSS once the watch was over, bytes.
    pub rss_after: Option<u64>,
}

/// The result of a fleet run.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub label: String,
    pub url: String,
    pub step: usize,
    /// The witness's rate before the fleet, msg/s.
    pub witness_before_msg_s: f64,
    /// Its rate with the fleet there (the dropped links gone), msg/s.
    pub witness_after_msg_s: f64,
    pub phases: Vec<Phase>,
    pub teardown: Teardown,
    /// Idle connections the broker closed before the end.
    pub idle_closed: usize,
}

/// Times a phase's steps: each mark records the time since the last, and
/// says so on stderr (a run cut short still shows how far it got).
struct Steps {
    io: TokioIo,
    name: &'static str,
    last: Instant,
    step_s: Vec<f64>,
}

impl Steps {
    fn start(io: TokioIo, name: &'static str) -> Self {
        Self {
            io,
            name,
            last: io.now(),
            step_s: Vec::new(),
        }
    }

    /// A step of objects ended with object `done`.
    fn mark(&mut self, done: usize) {
        let now = self.io.now();
        let took = now.saturating_duration_since(self.last).as_secs_f64();
        eprintln!("{} {done}: {took:.3} s", self.name);
        self.step_s.push(took);
        self.last = now;
    }
}

/// Runs the fleet on the broker at `args.url`.
pub async fn run(args: &FleetArgs) -> Result<FleetReport, FleetError> {
    if args.step == 0 || args.window == 0 || args.parallel == 0 {
        return Err(
            CliError::Invalid("--step, --window and --parallel must be at least 1".into()).into(),
        );
    }
    let io = TokioIo;
    let target = parse_url(&args.url)?;
    let client = connect(io, &target, "fleet-witness").await?;
    let address = format!("{}{}-witness", args.address_prefix, args.name);
    let mut fleet = Fleet {
        io,
        args,
        witness: Witness::open(io, client, &address).await?,
        target,
        idle_tasks: Vec::new(),
        idle_closed: Arc::new(AtomicUsize::new(0)),
    };
    let witness_before_msg_s = fleet.witness.rate(args.rate_for).await?;
    let mut phases = vec![fleet.queues().await?, fleet.connections().await?];
    phases.push(fleet.consumers().await?);
    let (links, client) = fleet.links().await?;
    phases.push(links);
    let teardown = watch_drop(&mut fleet.witness, client, args).await?;
    let witness_after_msg_s = fleet.witness.rate(args.rate_for).await?;
    for task in &fleet.idle_tasks {
        task.abort();
    }
    Ok(FleetReport {
        label: args.label.clone(),
        url: crate::redact(&args.url),
        step: args.step,
        witness_before_msg_s,
        witness_after_msg_s,
        phases,
        teardown,
        idle_closed: fleet.idle_closed.load(Ordering::Relaxed),
    })
}

/// A run under way: the witness, and the connections kept open to the end.
struct Fleet<'a> {
    io: TokioIo,
    args: &'a FleetArgs,
    target: Target,
    witness: Witness,
    /// The tasks that keep idle connections (and the consumers') alive.
    idle_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// How many of them the broker closed.
    idle_closed: Arc<AtomicUsize>,
}

impl Fleet<'_> {
    /// The address of queue `name` of this run.
    fn address(&self, name: &str) -> String {
        format!("{}{}-{name}", self.args.address_prefix, self.args.name)
    }

    async fn rss(&self) -> Result<Option<u64>, FleetError> {
        broker_rss(self.io, self.args.broker_pid).await
    }

    /// Queues, each declared by a sender's attach and detached at once.
    async fn queues(&mut self) -> Result<Phase, FleetError> {
        let args = self.args;
        let phase = Phase::new("queues", args.queues, self.rss().await?);
        let mut steps = Steps::start(self.io, phase.name);
        let mut client = connect(self.io, &self.target, "fleet-queues").await?;
        let mut session = client.begin().await?;
        for first in (0..args.queues).step_by(args.step) {
            let count = args.step.min(args.queues - first);
            let queue = |n: usize| self.address(&format!("q-{n}"));
            let (kind, window) = (Kind::Declare, args.window);
            links::attach(&mut client, &mut session, kind, queue, first, count, window).await?;
            // A broker may answer the attach before the queue is made: the
            // witness's message is logged behind the declarations.
            self.witness.round_trip().await?;
            steps.mark(first + count);
        }
        client.close().await?;
        Ok(phase.finish(steps, self.rss().await?))
    }

    /// Idle connections, kept alive (heartbeats) by a task each.
    async fn connections(&mut self) -> Result<Phase, FleetError> {
        let (args, io) = (self.args, self.io);
        let phase = Phase::new("connections", args.connections, self.rss().await?);
        let mut steps = Steps::start(io, phase.name);
        let opening = Arc::new(Semaphore::new(args.parallel));
        for first in (0..args.connections).step_by(args.step) {
            let count = args.step.min(args.connections - first);
            let (opened, mut outcomes) = mpsc::channel(count);
            for n in first..first + count {
                let (target, opening, opened) =
                    (self.target.clone(), opening.clone(), opened.clone());
                let closed = self.idle_closed.clone();
                self.idle_tasks.push(io.spawn(async move {
                    let permit = opening.acquire_owned().await;
                    let connected = connect(io, &target, &format!("fleet-idle-{n}")).await;
                    drop(permit);
                    let mut client = match connected {
                        Ok(client) => client,
                        Err(error) => return drop(opened.send(Err(error.to_string())).await),
                    };
                    let _ = opened.send(Ok(())).await;
                    while client.next_event().await.is_ok() {}
                    closed.fetch_add(1, Ordering::Relaxed);
                }));
            }
            for _ in 0..count {
                match outcomes.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(error)) => return Err(FleetError::Refused(error)),
                    None => return Err(FleetError::Refused("a connection task failed".into())),
                }
            }
            steps.mark(first + count);
        }
        Ok(phase.finish(steps, self.rss().await?))
    }

    /// Consumers, each on its own queue, one step's worth per connection.
    async fn consumers(&mut self) -> Result<Phase, FleetError> {
        let args = self.args;
        let phase = Phase::new("consumers", args.consumers, self.rss().await?);
        let mut steps = Steps::start(self.io, phase.name);
        for first in (0..args.consumers).step_by(args.step) {
            let count = args.step.min(args.consumers - first);
            let name = format!("fleet-consumers-{first}");
            let mut client = connect(self.io, &self.target, &name).await?;
            let mut session = client.begin().await?;
            let queue = |n: usize| self.address(&format!("c-{n}"));
            let (kind, window) = (Kind::Consumer { credit: 10 }, args.window);
            links::attach(&mut client, &mut session, kind, queue, first, count, window).await?;
            self.witness.round_trip().await?;
            steps.mark(first + count);
            let closed = self.idle_closed.clone();
            self.idle_tasks.push(self.io.spawn(async move {
                while client.next_event().await.is_ok() {}
                closed.fetch_add(1, Ordering::Relaxed);
            }));
        }
        Ok(phase.finish(steps, self.rss().await?))
    }

    /// Consumers of one queue on one connection, for the caller to drop.
    async fn links(&mut self) -> Result<(Phase, Client<TokioIo>), FleetError> {
        let args = self.args;
        let phase = Phase::new("links", args.links, self.rss().await?);
        let mut steps = Steps::start(self.io, phase.name);
        let mut client = connect(self.io, &self.target, "fleet-links").await?;
        let mut session = client.begin().await?;
        let address = self.address("links");
        for first in (0..args.links).step_by(args.step) {
            let count = args.step.min(args.links - first);
            let queue = |_: usize| address.clone();
            let (kind, window) = (Kind::Consumer { credit: 1 }, args.window);
            links::attach(&mut client, &mut session, kind, queue, first, count, window).await?;
            self.witness.round_trip().await?;
            steps.mark(first + count);
        }
        Ok((phase.finish(steps, self.rss().await?), client))
    }
}

/// Drops `client` (its links go with its connection) and watches the
/// witness's round trips for `--watch-for`.
async fn watch_drop(
    witness: &mut Witness,
    client: Client<TokioIo>,
    args: &FleetArgs,
) -> Result<Teardown, FleetError> {
    let mut baseline = Vec::with_capacity(BASELINE_ROUND_TRIPS);
    for _ in 0..BASELINE_ROUND_TRIPS {
        baseline.push(witness.round_trip().await?.as_secs_f64() * 1e3);
    }
    baseline.sort_by(f64::total_cmp);
    let baseline_ms = baseline[BASELINE_ROUND_TRIPS / 2];
    let dropped = TokioIo.now();
    drop(client);
    let (mut worst_ms, mut normal_after_ms) = (0.0f64, 0.0);
    while witness.since(dropped) < args.watch_for {
        let took = witness.round_trip().await?.as_secs_f64() * 1e3;
        worst_ms = worst_ms.max(took);
        if took >= (baseline_ms * SLOW_FACTOR).max(SLOW_MS) {
            normal_after_ms = witness.since(dropped).as_secs_f64() * 1e3;
        }
    }
    Ok(Teardown {
        links: args.links,
        baseline_ms,
        worst_ms,
        normal_after_ms,
        rss_after: broker_rss(TokioIo, args.broker_pid).await?,
    })
}

/// The broker's resident memory, with `--broker-pid`.
async fn broker_rss(io: TokioIo, pid: Option<u32>) -> Result<Option<u64>, FleetError> {
    match pid {
        Some(pid) => Ok(Some(cpu::rss_bytes(&io, pid).await?)),
        None => Ok(None),
    }
}

impl Phase {
    fn new(name: &'static str, count: usize, rss_before: Option<u64>) -> Self {
        Self {
            name,
            count,
            step_s: Vec::new(),
            rss_before,
            rss_after: None,
        }
    }

    fn finish(mut self, steps: Steps, rss_after: Option<u64>) -> Self {
        self.step_s = steps.step_s;
        self.rss_after = rss_after;
        self
    }
}

/// Connects to `target` and opens the connection.
async fn connect(io: TokioIo, target: &Target, name: &str) -> Result<Client<TokioIo>, FleetError> {
    let mut config = ConnectionConfig::new(name);
    config.hostname = Some(target.host.clone());
    Ok(Client::connect(io, &target.addr, config, target.sasl.clone()).await?)
}

impl FleetReport {
    /// The report as text.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.label)
        };
        let _ = writeln!(out, "{label}fleet on {}, steps of {}", self.url, self.step);
        for phase in &self.phases {
            let first = phase.step_s.first().copied().unwrap_or(0.0);
            let last = phase.step_s.last().copied().unwrap_or(0.0);
            let total: f64 = phase.step_s.iter().sum();
            let memory = match phase.bytes_each() {
                Some(bytes) => format!(", broker RSS +{bytes:.0} B each"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<11} {:>7}: {total:.2} s, first step {first:.3} s, last step {last:.3} s{memory}",
                phase.name, phase.count
            );
            let steps: Vec<String> = phase.step_s.iter().map(|s| format!("{s:.3}")).collect();
            for line in steps.chunks(10) {
                let _ = writeln!(out, "      {}", line.join(" "));
            }
        }
        let t = &self.teardown;
        let _ = writeln!(
            out,
            "  drop of {} links: witness round trip {:.1} ms before, worst {:.1} ms after, slow until {:.0} ms after the drop",
            t.links, t.baseline_ms, t.worst_ms, t.normal_after_ms
        );
        let _ = writeln!(
            out,
            "  witness: {:.0} msg/s before, {:.0} msg/s after ({:+.0} %); idle connections closed by the broker: {}",
            self.witness_before_msg_s,
            self.witness_after_msg_s,
            100.0 * (self.witness_after_msg_s / self.witness_before_msg_s.max(1e-9) - 1.0),
            self.idle_closed
        );
        out
    }
}
