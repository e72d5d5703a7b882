//! The Raft world (`sluice_sim::raft`): seeds pass with crashes, power loss
//! and partitions, and the planted `vote-without-persist` is caught.

use std::time::Duration;

use sluice_sim::raft::{self, RaftOptions};

fn options(seed: u64, plant: Option<&str>) -> RaftOptions {
    RaftOptions {
        seed,
        duration: Duration::from_secs(10),
        plant: plant.map(str::to_owned),
    }
}

#[test]
fn seeds_pass_under_crashes_and_partitions() {
    for seed in 1..=10 {
        let report = raft::run(&options(seed, None)).unwrap();
        assert!(
            report.passed(),
            "seed {seed}: {}\n{:#?}",
            report.violation.unwrap_or_default(),
            report.trace.events()
        );
        assert!(
            report.entries_committed > 50,
            "seed {seed}: the group made progress"
        );
    }
}

/// How many seeds a planted bug may take to be caught (the bound).
const PLANT_SEEDS_MAX: u64 = 100;

#[test]
fn votes_sent_before_they_are_durable_are_caught_and_the_seed_passes_without() {
    let caught = (1..=PLANT_SEEDS_MAX)
        .find(|&seed| {
            !raft::run(&options(seed, Some("vote-without-persist")))
                .unwrap()
                .passed()
        })
        .expect("vote-without-persist caught");
    assert!(
        raft::run(&options(caught, None)).unwrap().passed(),
        "seed {caught}"
    );
}

#[test]
fn a_raft_seed_replays_bit_for_bit() {
    for seed in [1, 2, 3] {
        let first = raft::run(&options(seed, None)).unwrap();
        let second = raft::run(&options(seed, None)).unwrap();
        assert_eq!(first.trace.hash(), second.trace.hash(), "seed {seed}");
        assert_eq!(
            first.entries_committed, second.entries_committed,
            "seed {seed}"
        );
        assert_eq!(first.simulated, second.simulated, "seed {seed}");
    }
}
