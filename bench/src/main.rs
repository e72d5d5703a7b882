//! `sluice-bench`: a load generator for any AMQP 1.0 broker (see `--help`).
//!
//! Modules: [`cli`] (options), [`conn`] (one connection's engine and
//! socket), [`producer`] and [`consumer`] (one link each), [`probe`] (what a
//! body carries), [`stats`] (counting and the report), [`cpu`] (/proc),
//! [`fleet`] (the `fleet` subcommand).

mod cli;
mod conn;
mod consumer;
mod cpu;
mod fleet;
mod probe;
mod producer;
mod stats;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice::io::{Io, TokioIo};
use tokio::sync::{Barrier, Semaphore};

use crate::cli::{Args, Command};
use crate::conn::{ConnPlan, ConnResult};
use crate::cpu::Pid;
use crate::producer::ProducerPlan;
use crate::stats::{CpuReport, Merge, PidCpu, Report, Shared, Stall, rate};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Fleet(fleet)) = &args.command {
        return run_fleet(fleet);
    }
    args.validate()?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// The `fleet` subcommand, on one thread.
fn run_fleet(args: &fleet::FleetArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(fleet::run(args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Which connection each link goes on: consumers first, then producers,
/// round-robin over `connections`.
fn assign(consumers: usize, producers: usize, connections: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut plans = vec![(Vec::new(), Vec::new()); connections];
    let mut next = 0;
    for c in 0..consumers {
        plans[next % connections].0.push(c as u32);
        next += 1;
    }
    for p in 0..producers {
        plans[next % connections].1.push(p as u32);
        next += 1;
    }
    plans.retain(|(c, p)| !c.is_empty() || !p.is_empty());
    plans
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let io = TokioIo;
    let target = cli::parse_url(&args.url)?;
    let consumer_target = match &args.consumer_url {
        Some(url) => cli::parse_url(url)?,
        None => target.clone(),
    };
    let base = io.now();
    // Set against `base`, to put wall-clock times on stalls.
    let base_unix_ms = io.unix_time_ms() as f64;
    // Tells this run's messages from leftovers of earlier ones.
    let run_id = args
        .run_id
        .unwrap_or((io.unix_time_ms() & 0xffff_ffff) as u32);
    let shape = probe::Shape {
        durable: args.durable(),
        priority: args.priority,
        properties: args.properties.clone(),
    };
    let template = probe::Template::new(args.size, &shape);
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.producers.max(1) as f64 / r));
    let connections = args.connections.unwrap_or(args.producers + args.consumers);
    let layout = assign(args.consumers, args.producers, connections);
    let shared = Arc::new(Shared::default());
    let consumers_ready = Arc::new(Barrier::new(layout.len()));
    let go = Arc::new(Barrier::new(layout.len() + 1));
    let connecting = Arc::new(Semaphore::new(conn::CONNECTS_AT_ONCE));
    let mut tasks = Vec::new();
    for (id, (consumers, producers)) in layout.iter().enumerate() {
        let producers = producers
            .iter()
            .map(|&n| ProducerPlan {
                id: n,
                run_id,
                count: args.count.map(|count| {
                    let each = count / args.producers as u64;
                    each + u64::from(u64::from(n) < count % args.producers as u64)
                }),
                deadline: None,
                interval,
                presettled: args.presettled,
                window: args.window,
                drain_timeout: args.drain_timeout,
                stall_threshold: args.stall_threshold,
            })
            .collect();
        // Without --connections (which --consumer-url excludes) a
        // connection with a consumer carries nothing else.
        let to = if consumers.is_empty() {
            &target
        } else {
            &consumer_target
        };
        let plan = ConnPlan {
            addr: to.addr.clone(),
            host: to.host.clone(),
            sasl: to.sasl.clone(),
            address: args.address.clone(),
            queues: args.queues,
            copies: args.copies(),
            selector: args.selector.clone(),
            consumers: consumers.clone(),
            producers,
            prefetch: args.prefetch,
            presettled: args.presettled,
            total_producers: args.producers,
            count: args.count,
            deadline_after: args.send_duration(),
            drain_timeout: args.drain_timeout,
            template: template.clone(),
            run_id,
            base,
            trace: args.trace,
        };
        tasks.push(io.spawn(conn::run(
            io,
            id,
            plan,
            shared.clone(),
            consumers_ready.clone(),
            go.clone(),
            connecting.clone(),
        )));
    }
    go.wait().await;
    let started = io.now();
    let broker_pids: Vec<Pid> = args.broker_pids.iter().map(|&p| Pid::Other(p)).collect();
    let broker_cpu_start = cpu::each(&io, &broker_pids)
        .await
        .context("reading the broker's CPU time (--broker-pid)")?;
    let client_cpu_start = cpu::total(&io, &[Pid::Myself]).await.ok();

    let progress = (!args.quiet && std::io::stderr().is_terminal())
        .then(|| io.spawn(show_progress(io, shared.clone(), args.count)));

    let mut results: Vec<ConnResult> = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => errors.push(error.to_string()),
            Err(join) => errors.push(format!("connection task failed: {join}")),
        }
    }
    let wall = io.now().saturating_duration_since(started);
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    if !errors.is_empty() {
        // Once per kind: a refused connection stops every other.
        errors.sort();
        errors.dedup();
        bail!("{}", errors.join("; "));
    }
    let broker_cpu: Vec<Duration> = cpu::each(&io, &broker_pids)
        .await
        .context("reading the broker's CPU time at the end (--broker-pid)")?
        .into_iter()
        .zip(&broker_cpu_start)
        .map(|(end, start)| end.saturating_sub(*start))
        .collect();
    let client_cpu = match client_cpu_start {
        Some(start) => cpu::total(&io, &[Pid::Myself])
            .await
            .ok()
            .map(|end| end.saturating_sub(start)),
        None => None,
    };

    let mut producers: Vec<_> = results
        .iter_mut()
        .flat_map(|r| r.producers.drain(..))
        .collect();
    producers.sort_by_key(|(id, _)| *id);
    let unix_ms = |t: Instant| base_unix_ms + t.saturating_duration_since(base).as_secs_f64() * 1e3;
    let mut stalls: Vec<Stall> = producers
        .iter()
        .flat_map(|(id, p)| {
            p.stalls.iter().map(move |&(from, to)| Stall {
                producer: *id,
                from_unix_ms: unix_ms(from),
                to_unix_ms: to.map(unix_ms),
                ms: to.map(|to| to.saturating_duration_since(from).as_secs_f64() * 1e3),
            })
        })
        .collect();
    stalls.sort_by(|a, b| a.from_unix_ms.total_cmp(&b.from_unix_ms));
    let merge = Merge {
        producers: producers.into_iter().map(|(_, p)| p).collect(),
        consumers: results.into_iter().flat_map(|r| r.consumers).collect(),
        fanout: args.fanout,
    };
    let t = merge.totals(args.presettled);
    let confirmed = if args.presettled { t.sent } else { t.accepted };
    let messages = t.received.max(confirmed).max(1);
    let percent = |used: Duration| 100.0 * used.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let us_per_msg = |used: Duration| used.as_secs_f64() * 1e6 / messages as f64;
    let cpu_report = |pids: Vec<u32>, each: &[Duration]| {
        let used: Duration = each.iter().sum();
        let per_pid = if each.len() > 1 {
            pids.iter()
                .zip(each)
                .map(|(&pid, &used)| PidCpu {
                    pid,
                    percent: percent(used),
                    us_per_msg: us_per_msg(used),
                })
                .collect()
        } else {
            Vec::new()
        };
        CpuReport {
            pids,
            percent: percent(used),
            us_per_msg: us_per_msg(used),
            per_pid,
        }
    };
    let send_msg_s = rate(confirmed, t.send_span);
    let recv_msg_s = rate(t.received, t.recv_span);
    let mb = |msg_s: f64| msg_s * args.size as f64 / 1e6;
    Ok(Report {
        label: args.label.clone(),
        url: redact(&args.url),
        consumer_url: args.consumer_url.as_deref().map(redact),
        address: args.address.clone(),
        queues: args.queues,
        fanout: args.fanout,
        producers: args.producers,
        consumers: args.consumers,
        connections: layout.len(),
        size: args.size,
        durable: args.durable(),
        presettled: args.presettled,
        window: args.window,
        prefetch: args.prefetch,
        rate: args.rate,
        elapsed_s: t.elapsed.as_secs_f64(),
        sent: t.sent,
        accepted: t.accepted,
        rejected: t.rejected,
        released: t.released,
        unconfirmed: t.unconfirmed,
        send_msg_s,
        send_mb_s: mb(send_msg_s),
        received: t.received,
        recv_msg_s,
        recv_mb_s: mb(recv_msg_s),
        lost: t.lost,
        duplicates: t.duplicates,
        stale: t.stale,
        undecodable: t.undecodable,
        latency: t.latency,
        broker_cpu: (!args.broker_pids.is_empty())
            .then(|| cpu_report(args.broker_pids.clone(), &broker_cpu)),
        client_cpu: client_cpu.map(|used| cpu_report(vec![std::process::id()], &[used])),
        stalls,
    })
}

/// The URL with its password replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &url[scheme + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A progress line on stderr, refreshed four times a second.
async fn show_progress(io: TokioIo, shared: Arc<Shared>, count: Option<u64>) {
    let bar = match count {
        Some(count) => ProgressBar::with_draw_target(Some(count), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let style = match count {
        Some(_) => ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"),
        None => ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}"),
    };
    if let Ok(style) = style {
        bar.set_style(style);
    }
    let (mut last_sent, mut last_received) = (0, 0);
    let period = Duration::from_millis(250);
    loop {
        sluice::io::sleep_until(io.now() + period).await;
        let sent = Shared::get(&shared.sent);
        let received = Shared::get(&shared.received);
        let per_s = |now: u64, before: u64| (now - before) as f64 / period.as_secs_f64();
        bar.set_position(received);
        bar.set_message(format!(
            "sent {sent} ({:.0}/s)  confirmed {}  received {received} ({:.0}/s)",
            per_s(sent, last_sent),
            Shared::get(&shared.confirmed),
            per_s(received, last_received),
        ));
        (last_sent, last_received) = (sent, received);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_links_round_robin() {
        let plans = assign(2, 2, 4);
        assert_eq!(plans.len(), 4);
        assert_eq!(plans[0], (vec![0], vec![]));
        assert_eq!(plans[3], (vec![], vec![1]));
        let plans = assign(1, 3, 2);
        assert_eq!(plans, vec![(vec![0], vec![1]), (vec![], vec![0, 2])]);
        assert_eq!(assign(1, 1, 5).len(), 2);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("amqp://u:secret@h:1"), "amqp://u:***@h:1");
        assert_eq!(redact("amqp://h:1"), "amqp://h:1");
    }
}
