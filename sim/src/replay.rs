//! Replay files (`replays/*.toml`, format in replays/README.md): a failing
//! run's options, the verdict it must have now, and its trace hash.
//!
//! These are the simulator's only real files, read and written outside any
//! simulation, so the file functions here opt out of the determinism lints
//! one by one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimError;
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
}

impl ReplayFile {
    /// The file recording `report`, with `expected` as the verdict.
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
        // A replay file is input to the CLI, not simulated state.
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReplayIo {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SimError::ReplayFormat {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Writes the file into `dir`, returning its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, SimError> {
        let path = dir.join(self.file_name());
        let text = toml::to_string(self).map_err(|e| SimError::ReplayFormat {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Output of the CLI, written after the simulation ended.
        #[allow(clippy::disallowed_methods)]
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| SimError::ReplayIo {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
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
        format_hash(self.report.trace.hash()) == self.file.trace_hash
    }
}

/// Runs the file at `path` again.
///
/// # Errors
///
/// An unreadable or invalid file, or a run that cannot be done.
pub fn replay(path: &Path) -> Result<ReplayOutcome, SimError> {
    let file = ReplayFile::read(path)?;
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
