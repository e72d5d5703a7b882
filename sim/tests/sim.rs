//! The simulator's own tests: seeds pass, runs are deterministic, planted
//! bugs are caught, every replay file reaches its expected verdict, and one
//! seed's summary is snapshotted so behaviour changes show up in review.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use sluice_sim::checker::Rule;
use sluice_sim::replay;
use sluice_sim::world::{self, Faults, RunOptions};

/// Short fault phases keep the suite fast; `explore` covers long runs.
fn options(seed: u64) -> RunOptions {
    RunOptions {
        duration: Duration::from_secs(4),
        ..RunOptions::new(seed)
    }
}

/// Seeds that pass with every fault kind on (10 s fault phase); `explore`
/// in scripts/test.sh covers 200 more, and the replays the known failures.
const PASSING_SEEDS: [u64; 3] = [1, 3, 6];

#[test]
fn seeds_pass_with_all_faults_on() {
    for seed in PASSING_SEEDS {
        let report = world::run(&RunOptions::new(seed)).unwrap();
        assert_eq!(report.options.faults, Faults::ALL);
        assert!(report.passed(), "{}", report.failure().unwrap_or_default());
        // The workload did something worth checking.
        assert!(report.check.stats.messages_accepted > 0, "seed {seed}");
        assert!(report.check.stats.messages_consumed > 0, "seed {seed}");
    }
}

#[test]
fn runs_are_deterministic() {
    for seed in [1, 0x5eed, 0xdead_beef] {
        let determinism = world::check_determinism(&options(seed)).unwrap();
        assert!(
            determinism.deterministic(),
            "seed {seed:#x}: {}",
            determinism.difference.unwrap_or_default()
        );
    }
}

/// How many seeds a planted bug may take to be caught (the bound).
const PLANT_SEEDS_MAX: u64 = 100;

/// Every planted bug is caught within `PLANT_SEEDS_MAX` seeds of the
/// default profile with every fault kind on, by the rule that guards what
/// it breaks (where one rule does), and the seed that catches it passes
/// without the plant: the checker fails because of the bug, not by itself.
#[test]
fn every_planted_bug_is_caught_and_its_seed_passes_without_it() {
    for (plant, rule) in [
        ("ack-before-fsync", None),
        ("skip-dir-fsync", None),
        ("lose-redelivery", None),
        ("double-deliver", None),
        ("dedup-ignored", Some(Rule::DuplicateId)),
        ("deliver-expired", Some(Rule::Expired)),
        ("dlq-drops", Some(Rule::DeadLetterLost)),
        ("txn-partial-commit", Some(Rule::TxnPartial)),
    ] {
        let caught = (1..=PLANT_SEEDS_MAX).find(|&seed| {
            let planted = RunOptions {
                plant: Some(plant.to_owned()),
                ..RunOptions::new(seed)
            };
            let check = world::run(&planted).unwrap().check;
            match rule {
                Some(rule) => check.stats.violations_by_rule.contains_key(&rule),
                None => !check.passed(),
            }
        });
        let seed =
            caught.unwrap_or_else(|| panic!("{plant} not caught in {PLANT_SEEDS_MAX} seeds"));
        let clean = world::run(&RunOptions::new(seed)).unwrap();
        assert!(
            clean.passed(),
            "seed {seed:#x} fails without {plant}: {}",
            clean.failure().unwrap_or_default()
        );
    }
}

#[test]
fn unknown_plant_is_refused() {
    let options = RunOptions {
        plant: Some("cosmic-ray".to_owned()),
        ..options(1)
    };
    assert!(world::run(&options).is_err());
}

#[test]
fn every_replay_file_reaches_its_expected_verdict() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../replays");
    let files = replay::files_in(&dir).unwrap();
    println!("{} replay file(s) in {}", files.len(), dir.display());
    for file in &files {
        let outcome = replay::replay(file).unwrap();
        println!(
            "{}: verdict {:?}, expected {:?}{}",
            file.display(),
            outcome.verdict,
            outcome.file.expected,
            if outcome.same_trace() {
                ""
            } else {
                " (trace hash changed)"
            }
        );
        assert!(
            outcome.as_expected(),
            "{}: expected {:?}, got {:?}\n{}",
            file.display(),
            outcome.file.expected,
            outcome.verdict,
            outcome.report.failure().unwrap_or_default()
        );
    }
}

#[test]
fn trace_summary_of_a_fixed_seed() {
    // A seed whose workload has a topic with a subscriber.
    let report = world::run(&options(0x5eed_0006)).unwrap();
    let stats = &report.check.stats;
    let mut summary = String::new();
    writeln!(
        summary,
        "verdict: {}",
        if report.passed() { "pass" } else { "fail" }
    )
    .unwrap();
    writeln!(summary, "workload: {:?}", report.params).unwrap();
    writeln!(summary, "events by kind:").unwrap();
    for (kind, count) in &stats.events_by_kind {
        writeln!(summary, "  {kind}: {count}").unwrap();
    }
    writeln!(
        summary,
        "messages: {} sent, {} accepted, {} consumed; {} redeliveries, {} duplicates",
        stats.messages_sent,
        stats.messages_accepted,
        stats.messages_consumed,
        stats.redeliveries,
        stats.duplicates
    )
    .unwrap();
    writeln!(
        summary,
        "broker state checked: {}",
        stats.checked.contains(&Rule::FinalState)
    )
    .unwrap();
    writeln!(summary, "final queue depths:").unwrap();
    for (queue, depth) in &stats.final_depths {
        writeln!(summary, "  {queue}: {depth}").unwrap();
    }
    insta::assert_snapshot!(summary);
}
