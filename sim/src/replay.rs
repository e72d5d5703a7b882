//! Replay files (`replays/*.toml`, format in replays/README.md): a failing
//! run's options, its explicit fault schedule and workload, the verdict it
//! must have now, and the trace hash it is pinned to.
//!
//! A replay whose trace hash differs is stale: it no longer runs the
//! recorded run, so it may no longer test the bug it was written for, and
//! it fails until it is looked at and re-pinned ([`repin`]).
//!
//! These are the simulator's only real files, read and written outside any
//! simulation, so the file functions here opt out of the determinism lints
//! one by one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::schedule::Schedule;
use crate::shape::WorkloadShape;
use crate::world::{self, Faults, RunOptions, RunReport};

/// The verdict a replay must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The checker finds nothing (the bug is fixed).
    Pass,
    /// The checker finds a violation (the bug is open).
    Fail,
}

impl Verdict {
    /// The verdict of a run.
    pub fn of(report: &RunReport) -> Verdict {
        if report.passed() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }
}

/// One replay file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFile {
    /// The seed.
    pub seed: u64,
    /// The profile's name.
    pub profile: String,
    /// The fault kinds enabled.
    pub faults: Vec<String>,
    /// Simulated length of the fault phase, in milliseconds.
    pub duration_ms: u64,
    /// The planted bug, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<String>,
    /// Broker nodes (1, the single-node world, when absent).
    #[serde(default = "one_node", skip_serializing_if = "is_one_node")]
    pub nodes: u32,
    /// The commit the failure was found at.
    pub commit: String,
    /// The verdict the replay must reach now.
    pub expected: Verdict,
    /// `fnv1a:` and the trace hash at `commit`, in hex.
    pub trace_hash: String,
    /// What went wrong.
    pub description: String,
    /// Client counts pinned over the drawn workload's (`[workload]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadShape>,
    /// The explicit fault schedule (`[schedule]`); without it the faults
    /// are drawn from the seed, as the nemesis draws them now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

impl ReplayFile {
    /// The file recording `report`, with `expected` as the verdict: its
    /// schedule and workload explicit, whatever drew them.
    pub fn from_report(report: &RunReport, expected: Verdict, commit: String) -> Self {
        let options = &report.options;
        let description = match report.check.violations.first() {
            Some(first) => first.to_string(),
            None => "passed".to_owned(),
        };
        Self {
            seed: options.seed,
            profile: options.profile.clone(),
            faults: options
                .faults
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            duration_ms: u64::try_from(options.duration.as_millis()).unwrap_or(u64::MAX),
            plant: options.plant.clone(),
            nodes: options.nodes,
            commit,
            expected,
            trace_hash: format_hash(report.trace.hash()),
            description,
            workload: Some(WorkloadShape::of(&report.params)),
            schedule: Some(report.schedule.clone()),
        }
    }

    /// The run options it records.
    pub fn options(&self, path: &Path) -> Result<RunOptions, SimError> {
        let faults = Faults::parse(&self.faults.join(",")).map_err(|e| SimError::ReplayFormat {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(RunOptions {
            seed: self.seed,
            profile: self.profile.clone(),
            duration: Duration::from_millis(self.duration_ms),
            faults,
            plant: self.plant.clone(),
            nodes: self.nodes,
            schedule: self.schedule.clone(),
            workload: self.workload,
        })
    }

    /// A file name: what failed, the cluster's size if any, and the seed.
    pub fn file_name(&self) -> String {
        let what =
            self.plant
                .as_deref()
                .unwrap_or(if self.nodes > 1 { "cluster" } else { "broker" });
        if self.nodes > 1 {
            format!("{what}-{}nodes-{:#x}.toml", self.nodes, self.seed)
        } else {
            format!("{what}-{:#x}.toml", self.seed)
        }
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, SimError> {
        let text = read_text(path)?;
        toml::from_str(&text).map_err(|e| SimError::ReplayFormat {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Writes the file into `dir`, returning its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, SimError> {
        let path = dir.join(self.file_name());
        self.write_to(&path, FOUND_HEADER)?;
        Ok(path)
    }

    /// Writes the file at `path`, after `header` (`#` comment lines).
    pub fn write_to(&self, path: &Path, header: &str) -> Result<(), SimError> {
        let body = toml::to_string(self).map_err(|e| SimError::ReplayFormat {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        write_text(path, &format!("{header}{body}"))
    }
}

/// The leading comment of a file `run` or `explore` writes, for whoever
/// commits it to replace.
const FOUND_HEADER: &str = "# Found by sluice-sim. Before committing: name the file after the bug,\n\
                            # and say here which bug it guards and how it was found.\n";

/// Writes `text` at `path`, creating its directory.
fn write_text(path: &Path, text: &str) -> Result<(), SimError> {
    let io_error = |source| SimError::ReplayIo {
        path: path.to_owned(),
        source,
    };
    // Output of the CLI, written after the simulation ended.
    #[allow(clippy::disallowed_methods)]
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    #[allow(clippy::disallowed_methods)]
    std::fs::write(path, text).map_err(io_error)
}

/// The leading `#` comment lines of the file at `path` (what bug it
/// guards), each with its newline.
pub fn leading_comment(path: &Path) -> Result<String, SimError> {
    let text = read_text(path)?;
    Ok(text
        .split_inclusive('\n')
        .take_while(|line| line.starts_with('#'))
        .collect())
}

/// The text of the file at `path`.
fn read_text(path: &Path) -> Result<String, SimError> {
    // A replay file is input to the CLI, not simulated state.
    #[allow(clippy::disallowed_methods)]
    std::fs::read_to_string(path).map_err(|source| SimError::ReplayIo {
        path: path.to_owned(),
        source,
    })
}

fn one_node() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_one_node(nodes: &u32) -> bool {
    *nodes == 1
}

/// How a hash is written in replay files.
pub fn format_hash(hash: u64) -> String {
    format!("fnv1a:{hash:016x}")
}

/// The result of replaying a file.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// The file.
    pub file: ReplayFile,
    /// The run.
    pub report: RunReport,
    /// The verdict reached.
    pub verdict: Verdict,
}

impl ReplayOutcome {
    /// True if the verdict is the expected one.
    pub fn as_expected(&self) -> bool {
        self.verdict == self.file.expected
    }

    /// True if the trace hash equals the recorded one (the run still
    /// reproduces the original bit for bit).
    pub fn same_trace(&self) -> bool {
        self.trace_hash() == self.file.trace_hash
    }

    /// The run's trace hash, as files write it.
    pub fn trace_hash(&self) -> String {
        format_hash(self.report.trace.hash())
    }

    /// True if the replay holds: the expected verdict, on the recorded run.
    pub fn holds(&self) -> bool {
        self.as_expected() && self.same_trace()
    }

    /// Why the replay does not hold, and what to do about it; `None` if it
    /// holds.
    pub fn problem(&self, path: &Path) -> Option<String> {
        if !self.as_expected() {
            return Some(format!(
                "{}: verdict {:?}, expected {:?}{}",
                path.display(),
                self.verdict,
                self.file.expected,
                self.report
                    .failure()
                    .map_or_else(String::new, |failure| format!("\n{failure}"))
            ));
        }
        if !self.same_trace() {
            return Some(format!(
                "{}: STALE: the run is no longer the recorded one: trace hash {}, \
                 recorded {} at commit {}. The verdict is still {:?}, but the \
                 run may no longer reach the bug the file guards. If the change \
                 is deliberate (broker, workload or simulator), check that the \
                 run still shows what the file's comment describes, then re-pin \
                 it: sluice-sim replay --repin {}",
                path.display(),
                self.trace_hash(),
                self.file.trace_hash,
                self.file.commit,
                self.verdict,
                path.display()
            ));
        }
        None
    }
}

/// What [`repin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repin {
    /// The run was already the recorded one (and its schedule explicit, if
    /// asked).
    Unchanged,
    /// `trace_hash` and `commit` rewritten; the old hash.
    Repinned {
        /// The hash it had.
        was: String,
        /// The hash it has now.
        now: String,
    },
    /// The verdict is not the expected one: nothing written.
    VerdictDiffers(Verdict),
}

/// Runs the file at `path` and, if it reaches its expected verdict, pins it
/// to this run: rewrites its `trace_hash` (and `commit`, to `commit`) and
/// nothing else, comments included. With `explicit`, a file whose faults
/// are drawn from the seed also gets the run's workload and schedule,
/// appended as `[workload]` and `[schedule]`: the same run, no longer
/// depending on the nemesis's draws.
///
/// # Errors
///
/// As [`replay`], or a file that cannot be rewritten.
pub fn repin(
    path: &Path,
    commit: &str,
    explicit: bool,
) -> Result<(Repin, ReplayOutcome), SimError> {
    let outcome = replay(path)?;
    if !outcome.as_expected() {
        return Ok((Repin::VerdictDiffers(outcome.verdict), outcome));
    }
    let add_schedule = explicit && outcome.file.schedule.is_none();
    if outcome.same_trace() && !add_schedule {
        return Ok((Repin::Unchanged, outcome));
    }
    let format_error = |message: String| SimError::ReplayFormat {
        path: path.to_owned(),
        message,
    };
    let was = outcome.file.trace_hash.clone();
    let mut text = read_text(path)?;
    let outcome = if add_schedule {
        text.push_str(&explicit_tables(&outcome.report).map_err(format_error)?);
        // Pinned to what the file runs from now on: the explicit run.
        let file: ReplayFile = toml::from_str(&text).map_err(|e| format_error(e.to_string()))?;
        let explicit = run_file(file, path)?;
        if !explicit.as_expected() {
            return Ok((Repin::VerdictDiffers(explicit.verdict), explicit));
        }
        explicit
    } else {
        outcome
    };
    let now = outcome.trace_hash();
    let pinned = repinned_text(&text, &now, commit).map_err(format_error)?;
    write_text(path, &pinned)?;
    Ok((Repin::Repinned { was, now }, outcome))
}

/// The `[workload]` and `[schedule]` tables of `report`'s run, after a
/// blank line.
fn explicit_tables(report: &RunReport) -> Result<String, String> {
    #[derive(Serialize)]
    struct Explicit<'a> {
        workload: WorkloadShape,
        schedule: &'a Schedule,
    }
    let tables = Explicit {
        workload: WorkloadShape::of(&report.params),
        schedule: &report.schedule,
    };
    toml::to_string(&tables)
        .map(|text| format!("\n{text}"))
        .map_err(|e| e.to_string())
}

/// `text` with its top-level `trace_hash` and `commit` values replaced,
/// every other line as it was.
fn repinned_text(text: &str, hash: &str, commit: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let (mut hash_done, mut commit_done, mut top_level) = (false, false, true);
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        top_level &= !trimmed.starts_with('[');
        let key = trimmed.split('=').next().map(str::trim);
        match key {
            Some("trace_hash") if top_level => {
                out.push_str(&format!("trace_hash = \"{hash}\"\n"));
                hash_done = true;
            }
            Some("commit") if top_level => {
                out.push_str(&format!("commit = \"{commit}\"\n"));
                commit_done = true;
            }
            _ => out.push_str(line),
        }
    }
    if hash_done && commit_done {
        Ok(out)
    } else {
        Err("no top-level `trace_hash` or `commit` line to rewrite".to_owned())
    }
}

/// Runs the file at `path` again.
///
/// # Errors
///
/// An unreadable or invalid file, or a run that cannot be done.
pub fn replay(path: &Path) -> Result<ReplayOutcome, SimError> {
    run_file(ReplayFile::read(path)?, path)
}

/// Runs `file`, read from `path`.
fn run_file(file: ReplayFile, path: &Path) -> Result<ReplayOutcome, SimError> {
    let options = file.options(path)?;
    let report = world::run(&options)?;
    let verdict = Verdict::of(&report);
    Ok(ReplayOutcome {
        file,
        report,
        verdict,
    })
}

/// The `*.toml` files in `dir`, sorted; none if `dir` does not exist.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, SimError> {
    // Lists the real replays directory, outside any simulation.
    #[allow(clippy::disallowed_methods)]
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SimError::ReplayIo {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| SimError::ReplayIo {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The current commit (`git rev-parse HEAD`), or `"unknown"`.
pub fn current_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Guards a bug.\n# commit = \"not this one\"\nseed = 4\ncommit = \"old\"\n\
                        trace_hash = \"fnv1a:0000000000000000\"\n\n[workload]\nproducers = 1\n\n\
                        [schedule.disk]\ncommit = \"a table's key, not the file's\"\n";

    #[test]
    fn repinning_rewrites_the_two_top_level_lines_and_nothing_else() {
        let pinned = repinned_text(FILE, "fnv1a:00000000000000ff", "new").expect("both lines");
        let expected = FILE
            .replace("commit = \"old\"", "commit = \"new\"")
            .replace("fnv1a:0000000000000000", "fnv1a:00000000000000ff");
        assert_eq!(pinned, expected);
        let no_hash = FILE.replace("trace_hash", "# trace_hash");
        assert!(repinned_text(&no_hash, "h", "c").is_err());
    }
}
