//! The command line (clap): `run`, `explore`, `replay`, `shrink`, `raft`.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::toml_text;
use crate::world::{Faults, PROFILE_MIX, Profile, RunOptions};

/// Runs Sluice under turmoil with faults drawn from a seed.
#[derive(Debug, Parser)]
#[command(name = "sluice-sim", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one seed and checks it.
    Run(RunArgs),
    /// Runs a range of seeds and summarises.
    Explore(ExploreArgs),
    /// Runs replay files; fails if a verdict differs from the expected one,
    /// or a run is no longer the recorded one (stale: its trace hash
    /// changed). `--repin` pins files to their current run.
    Replay(ReplayArgs),
    /// Shrinks a failing run (a replay file, or a seed and options) to the
    /// smallest explicit fault schedule and workload that fail with the
    /// same rule, and writes them as a replay file.
    Shrink(ShrinkArgs),
    /// Runs the Raft world (three nodes hosting two Raft groups, under
    /// crashes, power loss and partitions) on a range of seeds.
    Raft(RaftArgs),
}

/// Options every run takes.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The simulation profile: `default`, `slow-net`, `lossy-net`,
    /// `bad-disk`, or (in `explore`) `mix`, which draws one of them per
    /// seed.
    #[arg(long, default_value = "default")]
    pub profile: String,
    /// Simulated length of the fault phase (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Fault kinds: any of net,crash,disk,clock (or none, or all).
    #[arg(long, default_value = "net,crash,disk,clock", value_parser = parse_faults)]
    pub faults: Faults,
    /// A planted bug to enable (needs the broker's planted-bugs feature).
    #[arg(long)]
    pub plant: Option<String>,
    /// Broker nodes: 1 for the single-node world, 3 or 5 for a cluster.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Where failing seeds are written as replay files.
    #[arg(long, default_value = "replays")]
    pub replay_dir: PathBuf,
    /// Do not write replay files for failing seeds.
    #[arg(long)]
    pub no_replay: bool,
}

impl SimArgs {
    /// The run options for `seed`.
    pub fn options(&self, seed: u64) -> RunOptions {
        let profile = if self.profile == PROFILE_MIX {
            Profile::drawn(seed).name.to_owned()
        } else {
            self.profile.clone()
        };
        RunOptions {
            seed,
            profile,
            duration: self.duration,
            faults: self.faults,
            plant: self.plant.clone(),
            nodes: self.nodes,
            schedule: None,
            workload: None,
        }
    }
}

/// `sluice-sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The seed (decimal or 0x hex).
    #[arg(long, value_parser = parse_seed)]
    pub seed: u64,
    /// Run twice and compare the traces.
    #[arg(long)]
    pub check_determinism: bool,
    /// Print the whole trace.
    #[arg(long)]
    pub trace: bool,
    /// Write the run's timeline to FILE, one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Shared options.
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `sluice-sim explore`.
#[derive(Debug, Args)]
pub struct ExploreArgs {
    /// Seeds as START..END (END excluded).
    #[arg(long, default_value = "1..200", value_parser = parse_seeds)]
    pub seeds: Range<u64>,
    /// Seeds run in parallel (each run is single-threaded).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Shared options.
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `sluice-sim raft`.
#[derive(Debug, Args)]
pub struct RaftArgs {
    /// Seeds as START..END (END excluded).
    #[arg(long, default_value = "1..100", value_parser = parse_seeds)]
    pub seeds: Range<u64>,
    /// Simulated length of the fault phase (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A planted bug to enable (`vote-without-persist` concerns Raft).
    #[arg(long)]
    pub plant: Option<String>,
}

/// `sluice-sim replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The replay files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the whole trace.
    #[arg(long)]
    pub trace: bool,
    /// Write the run's timeline to FILE, one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Pin each file to its run now: where the verdict is still the
    /// expected one, rewrite `trace_hash` and `commit` (nothing else); a
    /// file whose verdict differs is left alone and fails.
    #[arg(long)]
    pub repin: bool,
    /// With `--repin`: a file whose faults are drawn from the seed also
    /// gets its run's workload and fault schedule, explicit.
    #[arg(long, requires = "repin")]
    pub explicit: bool,
}

/// `sluice-sim shrink`.
#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// A replay file to shrink (its options; the run options below are
    /// ignored then).
    #[arg(required_unless_present = "seed", conflicts_with = "seed")]
    pub file: Option<PathBuf>,
    /// Or the seed of a failing run, with the run options below.
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// The most runs to make; shrinking stops with the smallest failing
    /// run so far.
    #[arg(long, default_value_t = 200)]
    pub max_runs: u32,
    /// Where to write the shrunk replay file (default: next to FILE, or in
    /// the replay directory, named `…-shrunk.toml`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Shared options (for `--seed`).
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Parses what replay files write (`10s`, `500ms`, `250us`, `1ns`: see
/// [`toml_text::parse_duration`]), and on the command line also `2m` or a
/// bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let whole = |digits: &str| -> Option<u64> {
        let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        all_digits.then(|| digits.parse().ok()).flatten()
    };
    if let Some(secs) = whole(text) {
        return Ok(Duration::from_secs(secs));
    }
    if let Some(minutes) = text.strip_suffix('m').and_then(whole) {
        return Ok(Duration::from_secs(minutes.saturating_mul(60)));
    }
    toml_text::parse_duration(text)
}

/// Parses a seed: decimal, or hex with `0x`.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?}: {e}"))
}

/// Parses `START..END`.
pub fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?}: expected START..END"))?;
    let range = parse_seed(start)?..parse_seed(end)?;
    if range.is_empty() {
        return Err(format!("{text:?}: empty range"));
    }
    Ok(range)
}

/// Parses a fault list.
pub fn parse_faults(text: &str) -> Result<Faults, String> {
    Faults::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_seed("0x5eed"), Ok(0x5eed));
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seeds("1..200"), Ok(1..200));
        assert!(parse_seeds("5..5").is_err());
        assert_eq!(
            parse_faults("net,disk").map(|f| f.to_string()),
            Ok("net,disk".to_owned())
        );
        assert!(parse_faults("cosmic-rays").is_err());
    }
}
