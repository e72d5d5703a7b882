//! Sluice's deterministic simulator: runs the broker under turmoil with a
//! workload and a fault schedule drawn from one seed, checks the history,
//! and turns failures into replay files. See docs/simulation.md.

pub mod at_rest;
pub mod checker;
pub mod cli;
pub mod client_net;
pub mod cluster;
pub mod history;
pub mod html;
pub mod intruder;
pub mod nemesis;
pub mod queue_types;
pub mod raft;
pub mod replay;
pub mod request_reply;
pub mod schedule;
pub mod shape;
pub mod shrink;
pub mod timeline;
pub mod toml_text;
pub mod trace;
pub mod transactions;
pub mod volatile;
pub mod workload;
pub mod world;

pub use world::{Faults, RunOptions, RunReport, run};

/// Why the simulator could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No profile has this name.
    #[error("unknown profile {0:?} (known: default, slow-net, lossy-net, bad-disk)")]
    UnknownProfile(String),
    /// The world cannot have this many broker nodes.
    #[error("--nodes {0}: a world has 1 node (a single broker) to 7 (a cluster)")]
    BadNodes(u32),
    /// No fault kind has this name.
    #[error("unknown fault kind {0:?} (known: net, crash, disk)")]
    UnknownFault(String),
    /// The planted bug cannot be enabled in this build.
    #[error(
        "planted bug {0:?} is not available in this build (needs the broker's planted-bugs feature)"
    )]
    PlantUnavailable(String),
    /// No planted bug has this name.
    #[error("{0}")]
    UnknownPlant(String),
    /// turmoil stopped the simulation (a client failed, or time ran out).
    #[error("seed {0:#x}: the simulation failed: {1}")]
    Turmoil(u64, String),
    /// A pinned workload cannot finish.
    #[error("workload: {0}")]
    BadWorkload(String),
    /// An explicit schedule names a host the world does not have.
    #[error("the schedule names host {0:?}, which this world does not have")]
    UnknownHost(String),
    /// Asked to shrink a run that passes.
    #[error("the run passes: nothing to shrink")]
    NothingToShrink,
    /// The schedule recorded from a failing run, run explicitly, does not
    /// fail with the same rule.
    #[error("the recorded schedule, run explicitly, does not fail with rule {0} as the run did")]
    NotReproduced(&'static str),
    /// A replay file could not be read or written.
    #[error("replay file {path}: {source}")]
    ReplayIo {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The timeline page could not be written.
    #[error("timeline page {path}: {source}")]
    HtmlIo {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A replay file is not valid.
    #[error("replay file {path}: {message}")]
    ReplayFormat {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}
