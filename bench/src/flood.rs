//! A bad-login flood: many login attempts with a wrong password from one
//! source, as fast as the broker lets them through, each on its own
//! connection. `bench/login-flood.sh` runs it against a broker that serves a
//! `sluice-bench` workload at the same time.
//!
//! Each attempt connects, sends the SASL PLAIN or SCRAM-SHA-256 exchange and
//! waits for the outcome; at most `--parallel` attempts are in flight. The
//! report counts the outcomes: `auth` (the password was checked and found
//! wrong), `sys-temp` (refused at once: the broker's checks were busy, or the
//! source's turn was too far off), anything else (a socket closed at accept,
//! say), and how long the attempts took.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice::amqp::engine::{ClientSasl, ConnectionConfig};
use sluice::client::{Client, ClientError};
use sluice::io::{Io, TokioIo};
use tokio::sync::Semaphore;

/// Login attempts with a wrong password, many connections in parallel.
#[derive(Debug, Parser)]
#[command(name = "sluice-login-flood", version)]
struct Args {
    /// The broker's AMQP address, host:port.
    #[arg(long, default_value = "127.0.0.1:5672")]
    addr: String,
    /// The user name every attempt gives (an existing account makes the
    /// broker check the password, the expensive case).
    #[arg(long)]
    user: String,
    /// The password every attempt gives.
    #[arg(long, default_value = "not-the-password")]
    password: String,
    /// The SASL mechanism.
    #[arg(long, value_enum, default_value = "plain")]
    mechanism: Mechanism,
    /// How many attempts in all.
    #[arg(long, default_value_t = 1000)]
    attempts: u32,
    /// How many attempts are in flight at once, each on its own connection.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// How long one attempt may take before it counts as timed out.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mechanism {
    Plain,
    Scram,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The broker checked the password: SASL outcome `auth`.
    Auth,
    /// Refused without a check: SASL outcome `sys-temp`.
    SysTemp,
    /// Logged in: the password was right after all.
    Admitted,
    /// No outcome within `--timeout-s`.
    TimedOut,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    mechanism: String,
    attempts: u32,
    parallel: usize,
    auth: u32,
    sys_temp: u32,
    admitted: u32,
    other: u32,
    timed_out: u32,
    elapsed_s: f64,
    attempts_per_s: f64,
    attempt_p50_ms: f64,
    attempt_p99_ms: f64,
    attempt_max_ms: f64,
    /// The first few `other` outcomes, to see what they were.
    other_examples: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.parallel > 0, "--parallel must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let io = TokioIo;
    let slots = Arc::new(Semaphore::new(args.parallel));
    let started = io.now();
    let mut tasks = Vec::new();
    for n in 0..args.attempts {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let sasl = sasl(args, n, io.unix_time_ms());
        let addr = args.addr.clone();
        let timeout = Duration::from_secs(args.timeout_s);
        tasks.push(io.spawn(async move {
            let began = io.now();
            let outcome = tokio::time::timeout(timeout, attempt(io, &addr, sasl, n)).await;
            drop(permit);
            let took = io.now().saturating_duration_since(began);
            (outcome.unwrap_or(Ok(Outcome::TimedOut)), took)
        }));
    }
    let mut report = Report {
        mechanism: format!("{:?}", args.mechanism).to_lowercase(),
        attempts: args.attempts,
        parallel: args.parallel,
        ..Report::default()
    };
    let mut took = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for task in tasks {
        let (outcome, duration) = task.await?;
        took.saturating_record(duration.as_micros().try_into().unwrap_or(u64::MAX));
        match outcome {
            Ok(Outcome::Auth) => report.auth += 1,
            Ok(Outcome::SysTemp) => report.sys_temp += 1,
            Ok(Outcome::Admitted) => report.admitted += 1,
            Ok(Outcome::TimedOut) => report.timed_out += 1,
            Err(why) => {
                report.other += 1;
                if report.other_examples.len() < 5 {
                    report.other_examples.push(why);
                }
            }
        }
    }
    let elapsed = io.now().saturating_duration_since(started).as_secs_f64();
    report.elapsed_s = elapsed;
    report.attempts_per_s = f64::from(args.attempts) / elapsed.max(f64::EPSILON);
    report.attempt_p50_ms = took.value_at_quantile(0.5) as f64 / 1000.0;
    report.attempt_p99_ms = took.value_at_quantile(0.99) as f64 / 1000.0;
    report.attempt_max_ms = took.max() as f64 / 1000.0;
    Ok(report)
}

fn sasl(args: &Args, n: u32, unix_ms: u64) -> ClientSasl {
    let username = args.user.clone();
    let password = args.password.clone();
    match args.mechanism {
        Mechanism::Plain => ClientSasl::Plain { username, password },
        // Unique per attempt, which is all RFC 5802 asks of a client nonce;
        // nothing here needs it unpredictable.
        Mechanism::Scram => ClientSasl::Scram {
            username,
            password,
            nonce: format!("flood{unix_ms:x}n{n}"),
        },
    }
}

/// One login attempt; `Err` describes an ending that is neither outcome.
async fn attempt(io: TokioIo, addr: &str, sasl: ClientSasl, n: u32) -> Result<Outcome, String> {
    let config = ConnectionConfig::new(format!("sluice-login-flood-{n}"));
    match Client::connect(io, addr, config, sasl).await {
        Ok(client) => {
            // Closing politely or not changes nothing measured here.
            let _ = client.close().await;
            Ok(Outcome::Admitted)
        }
        // The engine turns a SASL outcome other than `ok` into a local
        // close whose description names the code (`SaslCode`'s Debug form).
        Err(ClientError::Closed(Some(error))) => match error.description.as_deref() {
            Some(d) if d.ends_with("SysTemp") => Ok(Outcome::SysTemp),
            Some(d) if d.ends_with("Auth") => Ok(Outcome::Auth),
            _ => Err(format!("{error:?}")),
        },
        Err(error) => Err(error.to_string()),
    }
}
