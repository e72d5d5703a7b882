//! `sluice-sim`: runs Sluice under turmoil with faults drawn from a seed.
//! The simulator is the library (`sluice_sim`); this is its command line.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_sim::checker::Rule;
use sluice_sim::cli::{
    Cli, Command, ExploreArgs, RaftArgs, ReplayArgs, RunArgs, ShrinkArgs, SimArgs,
};
use sluice_sim::html;
use sluice_sim::replay::{self, Repin, ReplayFile, Verdict};
use sluice_sim::world::{self, RunOptions, RunReport};
use sluice_sim::{raft, shape, shrink};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The broker's own log, on stderr, only when asked for with RUST_LOG
    // (e.g. `RUST_LOG=sluice=debug sluice-sim replay FILE`): formatting
    // every line costs more than the simulation itself.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            // Simulated time, not wall-clock time: two logs of one seed must
            // be equal, and lines must line up with the trace.
            .with_timer(SimTime)
            .init();
    }
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Explore(args) => explore(&args),
        Command::Replay(args) => replay_files(&args),
        Command::Shrink(args) => shrink_run(&args),
        Command::Raft(args) => raft_seeds(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("sluice-sim: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Log timestamps in simulated time (as the trace shows them), or `-`
/// outside a simulation.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(elapsed) => write!(w, "[{:>10.3}ms]", elapsed.as_secs_f64() * 1e3),
            None => write!(w, "-"),
        }
    }
}

/// `sluice-sim raft`: every seed of the range, a line each, then a summary;
/// true if all passed.
#[allow(clippy::disallowed_methods)] // Wall time, only to report speed.
fn raft_seeds(args: &RaftArgs) -> Result<bool> {
    let started = std::time::Instant::now(); // determinism-ok: reports speed only
    let mut simulated = Duration::ZERO;
    let mut failing = Vec::new();
    for seed in args.seeds.clone() {
        let options = raft::RaftOptions {
            seed,
            duration: args.duration,
            plant: args.plant.clone(),
        };
        let report = raft::run(&options)?;
        simulated += report.simulated;
        match &report.violation {
            None => println!(
                "seed {seed:#x}: pass in {:.1}s simulated; {} entries committed, longest stall {:?}",
                report.simulated.as_secs_f64(),
                report.entries_committed,
                report.longest_stall
            ),
            Some(violation) => {
                println!("seed {seed:#x}: FAIL: {violation}");
                failing.push(seed);
            }
        }
    }
    let wall = started.elapsed();
    println!(
        "\n{} seeds in {:.1}s wall, {:.0} simulated s per wall s; {} failing{}",
        args.seeds.end.saturating_sub(args.seeds.start),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        failing.len(),
        if failing.is_empty() {
            String::new()
        } else {
            format!(": {failing:x?}")
        }
    );
    Ok(failing.is_empty())
}

/// What the typed queues' rules saw over `reports`: in how many seeds
/// each queue was drawn, and how many deliveries each rule judged (those
/// faults excused not counted), so that a rule checked on every seed is
/// also seen to bite.
fn queue_types_summary(reports: &[&RunReport]) -> String {
    let seeds = |drawn: &dyn Fn(&RunReport) -> bool| reports.iter().filter(|r| drawn(r)).count();
    let sum = |count: &dyn Fn(&RunReport) -> u64| reports.iter().map(|r| count(r)).sum::<u64>();
    let last_value = seeds(&|r| r.params.queue_types.last_value_keys.is_some());
    let priority = seeds(&|r| r.params.queue_types.priority);
    let grouped = seeds(&|r| r.params.grouped.is_some());
    format!(
        "typed queues: lvq in {last_value}/{n} seeds, {} deliveries judged by rule 16 ({} excused as late), {} accepted values excused as superseded; pq in {priority}/{n} seeds, {} deliveries judged by rule 18; gq in {grouped}/{n} seeds, {} deliveries judged by rule 21",
        sum(&|r| r.check.stats.last_value_judged),
        sum(&|r| r.check.stats.last_value_late_excused),
        sum(&|r| r.check.stats.superseded_excused),
        sum(&|r| r.check.stats.priority_judged),
        sum(&|r| r.check.stats.groups_judged),
        n = reports.len(),
    )
}

/// What rules 12 and 22 saw over `reports`: in how many seeds the
/// selective consumer used each filter, and in how many seeds subscribers
/// were volatile, with the deliveries rule 22 judged and the owed messages
/// it excused (their subscription died first).
fn filters_and_volatile_summary(reports: &[&RunReport]) -> String {
    use sluice_sim::workload::SelectiveFilter;
    let seeds = |drawn: &dyn Fn(&RunReport) -> bool| reports.iter().filter(|r| drawn(r)).count();
    let sum = |count: &dyn Fn(&RunReport) -> u64| reports.iter().map(|r| count(r)).sum::<u64>();
    let selective = |filter| {
        seeds(&|r| r.params.selective_consumer().is_some() && r.params.selective_filter == filter)
    };
    format!(
        "selective consumer: JMS selector in {}/{n} seeds, application-properties filter in {}/{n}; volatile subscribers in {}/{n} seeds, {} deliveries judged by rule 22, {} owed messages excused (their subscription died first)",
        selective(SelectiveFilter::JmsSelector),
        selective(SelectiveFilter::ApplicationProperties),
        seeds(&|r| r.params.volatile_subscribers > 0),
        sum(&|r| r.check.stats.volatile_delivered),
        sum(&|r| r.check.stats.volatile_excused),
        n = reports.len(),
    )
}

/// What rule 23 saw over `reports`: the intruder's attempts the brokers
/// refused, and those that failed or went unanswered (faults).
fn intruder_summary(reports: &[&RunReport]) -> String {
    let sum = |count: &dyn Fn(&RunReport) -> u64| reports.iter().map(|r| count(r)).sum::<u64>();
    format!(
        "intruder: {} attempts refused, {} failed or unanswered (rule 23)",
        sum(&|r| r.check.stats.intrusions_refused),
        sum(&|r| r.check.stats.intrusions_failed),
    )
}

/// How many of `reports` each rule that applies to `nodes` nodes was
/// checked on: a rule that could not run on a seed is not a pass there.
fn rules_checked(reports: &[&RunReport], nodes: u32) -> String {
    let counts: Vec<String> = Rule::ALL
        .into_iter()
        .filter(|rule| rule.applies_to(nodes))
        .map(|rule| {
            let checked = reports
                .iter()
                .filter(|report| report.check.stats.checked.contains(&rule))
                .count();
            format!("{} {checked}/{}", rule.name(), reports.len())
        })
        .collect();
    format!("rules checked (seeds): {}", counts.join(", "))
}

fn summary(report: &RunReport) -> String {
    let stats = &report.check.stats;
    format!(
        "seed {:#x}: {} in {:.1}s simulated; {} sent, {} accepted, {} consumed, {} redeliveries, {} duplicates",
        report.options.seed,
        if report.passed() { "pass" } else { "FAIL" },
        report.simulated.as_secs_f64(),
        stats.messages_sent,
        stats.messages_accepted,
        stats.messages_consumed,
        stats.redeliveries,
        stats.duplicates,
    )
}

/// Writes the timeline page of `report` to `path`, if asked for.
fn write_page(path: Option<&std::path::Path>, report: &RunReport) -> Result<()> {
    if let Some(path) = path {
        html::write_html(report, path)?;
        println!("  timeline: {}", path.display());
    }
    Ok(())
}

/// Writes the failing `report` as a replay file (unless told not to).
fn write_replay(sim: &SimArgs, report: &RunReport) -> Result<()> {
    if sim.no_replay {
        return Ok(());
    }
    let file = ReplayFile::from_report(report, Verdict::Fail, replay::current_commit());
    let path = file.write(&sim.replay_dir)?;
    println!("  wrote {}", path.display());
    Ok(())
}

fn run(args: &RunArgs) -> Result<bool> {
    let options = args.sim.options(args.seed);
    println!("{}", options.command());
    let report = if args.check_determinism {
        let determinism = world::check_determinism(&options)?;
        let (a, b) = determinism.hashes;
        if !determinism.deterministic() {
            println!(
                "seed {:#x}: NOT DETERMINISTIC: trace hashes {} and {}",
                options.seed,
                replay::format_hash(a),
                replay::format_hash(b)
            );
            if let Some(difference) = &determinism.difference {
                println!("{difference}");
            }
            return Ok(false);
        }
        println!("deterministic: trace hash {} twice", replay::format_hash(a));
        determinism.report
    } else {
        world::run(&options)?
    };
    if args.trace {
        for event in report.trace.events() {
            println!("{event}");
        }
    }
    println!("{}", summary(&report));
    write_page(args.html.as_deref(), &report)?;
    if let Some(failure) = report.failure() {
        println!("{failure}");
        write_replay(&args.sim, &report)?;
        return Ok(false);
    }
    Ok(true)
}

/// A progress bar on stderr when it is a terminal; none in CI logs.
fn progress_bar(seeds: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    Some(ProgressBar::new(seeds as u64).with_style(style))
}

/// The result of one seed in `explore`.
struct Explored {
    seed: u64,
    outcome: Result<RunReport, String>,
}

fn explore(args: &ExploreArgs) -> Result<bool> {
    let seeds: Vec<u64> = args.seeds.clone().collect();
    let jobs = args.jobs.clamp(1, seeds.len().max(1));
    println!(
        "exploring {} seeds ({}..{}) with {jobs} job(s): {}",
        seeds.len(),
        args.seeds.start,
        args.seeds.end,
        // As given: a `mix` exploration draws each seed's profile.
        RunOptions {
            profile: args.sim.profile.clone(),
            ..args.sim.options(args.seeds.start)
        }
        .command()
    );
    // Wall time, only to report speed: it never reaches a simulation.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now(); // determinism-ok: reports speed only
    let progress = progress_bar(seeds.len());
    let run_seed = |seed: u64| {
        let outcome = world::run(&args.sim.options(seed)).map_err(|e| e.to_string());
        let line = match &outcome {
            Ok(report) => summary(report),
            Err(error) => format!("seed {seed:#x}: ERROR {error}"),
        };
        match &progress {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => println!("{line}"),
        }
        Explored { seed, outcome }
    };
    let mut results: Vec<Explored> = if jobs == 1 {
        seeds.iter().map(|&seed| run_seed(seed)).collect()
    } else {
        // Each simulation is single-threaded and owns its world; threads
        // only run independent seeds side by side, so they cannot affect
        // any run's determinism.
        #[allow(clippy::disallowed_methods)]
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..jobs)
                .map(|job| {
                    let mine: Vec<u64> = seeds.iter().copied().skip(job).step_by(jobs).collect();
                    let run_seed = &run_seed;
                    scope.spawn(move || mine.into_iter().map(run_seed).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                // A panicked job's seeds are missing from the results (the
                // panic itself is printed by the default hook); the count
                // check below reports it.
                .flat_map(|handle| handle.join().unwrap_or_default())
                .collect()
        })
    };
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    #[allow(clippy::disallowed_methods)]
    let wall = started.elapsed();
    results.sort_by_key(|r| r.seed);

    let simulated: Duration = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .map(|report| report.simulated)
        .sum();
    let failing: Vec<&Explored> = results
        .iter()
        .filter(|r| r.outcome.as_ref().map_or(true, |report| !report.passed()))
        .collect();
    let wall_s = wall.as_secs_f64().max(1e-9);
    println!(
        "\n{} seeds in {:.1}s wall: {:.1} seeds/minute, {:.1} simulated s per wall s \
         ({:.1} per job); {} failing",
        results.len(),
        wall_s,
        results.len() as f64 * 60.0 / wall_s,
        simulated.as_secs_f64() / wall_s,
        simulated.as_secs_f64() / wall_s / jobs as f64,
        failing.len()
    );
    let reports: Vec<&RunReport> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .collect();
    println!("{}", rules_checked(&reports, args.sim.nodes));
    println!("{}", queue_types_summary(&reports));
    println!("{}", filters_and_volatile_summary(&reports));
    println!("{}", intruder_summary(&reports));
    let idle = reports
        .iter()
        .filter(|report| report.check.stats.faults_in_traffic == 0)
        .count();
    println!(
        "seeds with no fault while messages flowed: {idle}/{}",
        reports.len()
    );
    let mut wrote_one = false;
    for failed in &failing {
        match &failed.outcome {
            Ok(report) => {
                if let Some(failure) = report.failure() {
                    println!("{failure}");
                }
                // One replay file per exploration: a planted bug can fail
                // most seeds, and one file is enough to reproduce it.
                if !wrote_one {
                    write_replay(&args.sim, report)?;
                    wrote_one = true;
                }
            }
            Err(error) => println!("seed {:#x}: ERROR {error}", failed.seed),
        }
    }
    if results.len() != seeds.len() {
        anyhow::bail!("{} seed(s) panicked", seeds.len() - results.len());
    }
    Ok(failing.is_empty())
}

/// `sluice-sim replay`: each file in turn; true if every one holds (or,
/// with `--repin`, could be pinned).
fn replay_files(args: &ReplayArgs) -> Result<bool> {
    if args.html.is_some() && args.files.len() > 1 {
        anyhow::bail!("--html writes the page of one run: give one replay file");
    }
    let commit = replay::current_commit();
    let mut failing = 0;
    for path in &args.files {
        let holds = if args.repin {
            repin_file(path, &commit, args.explicit)?
        } else {
            replay_file(path, args.trace, args.html.as_deref())?
        };
        failing += usize::from(!holds);
    }
    if args.files.len() > 1 {
        println!("\n{} replay(s), {failing} failing", args.files.len());
    }
    Ok(failing == 0)
}

fn replay_file(path: &Path, trace: bool, html: Option<&Path>) -> Result<bool> {
    let outcome = replay::replay(path).with_context(|| format!("replaying {}", path.display()))?;
    if trace {
        for event in outcome.report.trace.events() {
            println!("{event}");
        }
    }
    println!("{}: {}", path.display(), outcome.report.options.command());
    println!("{}", summary(&outcome.report));
    write_page(html, &outcome.report)?;
    if let Some(failure) = outcome.report.failure() {
        println!("{failure}");
    }
    match outcome.problem(path) {
        Some(problem) => println!("{problem}"),
        None => println!(
            "verdict {:?} as expected, trace hash {} as pinned: ok",
            outcome.verdict, outcome.file.trace_hash
        ),
    }
    Ok(outcome.holds())
}

fn repin_file(path: &Path, commit: &str, explicit: bool) -> Result<bool> {
    let (repin, outcome) = replay::repin(path, commit, explicit)
        .with_context(|| format!("re-pinning {}", path.display()))?;
    let name = path.display();
    match repin {
        Repin::Unchanged => println!(
            "{name}: already pinned to this run ({})",
            outcome.file.trace_hash
        ),
        Repin::Repinned { was, now } => {
            println!("{name}: re-pinned: trace hash {was} -> {now}, commit {commit}");
        }
        Repin::VerdictDiffers(verdict) => {
            println!(
                "{name}: NOT re-pinned: verdict {verdict:?}, expected {:?}{}",
                outcome.file.expected,
                outcome
                    .report
                    .failure()
                    .map_or_else(String::new, |failure| format!("\n{failure}"))
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// `sluice-sim shrink`: shrinks, prints each run, writes the smallest
/// failing run as a replay file.
fn shrink_run(args: &ShrinkArgs) -> Result<bool> {
    let (options, source, comment) = match (&args.file, args.seed) {
        (Some(path), _) => {
            let file = ReplayFile::read(path)?;
            let comment = replay::leading_comment(path)?;
            (file.options(path)?, path.display().to_string(), comment)
        }
        (None, Some(seed)) => (
            args.sim.options(seed),
            format!("seed {seed:#x}"),
            String::new(),
        ),
        (None, None) => anyhow::bail!("shrink: give a replay FILE or --seed"),
    };
    println!("shrinking {source}: {}", options.command());
    let mut report_progress = |p: &shrink::Progress| {
        println!(
            "run {:>3}: {:<24} {:<8} smallest so far: {} fault(s), {} client(s)",
            p.runs,
            p.step,
            if p.kept { "kept" } else { "rejected" },
            p.faults,
            p.clients
        );
    };
    let shrunk = shrink::shrink(&options, args.max_runs, &mut report_progress)?;
    let (original, smallest) = (&shrunk.original, &shrunk.smallest);
    let note = format!(
        "#\n\
         # Shrunk by `sluice-sim shrink` in {} runs{}, from\n\
         # {source}: {} -> {} fault(s), {} -> {} client(s), fault phase\n\
         # {:?} -> {:?}; fails with rule {}, as the original run did.\n",
        shrunk.runs,
        if shrunk.budget_spent {
            " (budget spent)"
        } else {
            ""
        },
        original.schedule.faults.len(),
        smallest.schedule.faults.len(),
        shape::client_names(&original.params).len(),
        shape::client_names(&smallest.params).len(),
        original.options.duration,
        smallest.options.duration,
        shrunk.rule.name(),
    );
    print!("{}", note.replace("#\n", "").replace("# ", ""));
    println!("{}", summary(smallest));
    if let Some(failure) = smallest.failure() {
        println!("{failure}");
    }
    let file = ReplayFile::from_report(smallest, Verdict::Fail, replay::current_commit());
    let out = args.out.clone().unwrap_or_else(|| {
        let name = file.file_name().replace(".toml", "-shrunk.toml");
        match &args.file {
            Some(path) => path.with_file_name(name),
            None => args.sim.replay_dir.join(name),
        }
    });
    file.write_to(&out, &format!("{comment}{note}"))?;
    println!("wrote {}", out.display());
    Ok(true)
}
