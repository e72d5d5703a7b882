//! Under turmoil: three nodes host two Raft groups (replicas, one
//! write-ahead log per node on its simulated disk, authenticated transport);
//! each group elects a leader and commits the same entries in the same order
//! on every node; a crash loses only what was not durable, and the
//! restarted node recovers its log and catches up. Needs the `sim` feature (`scripts/test.sh` passes
//! `--all-features`).
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use sluice::io::TurmoilIo;
use sluice::raft::group::{self, Committed, GroupsConfig};
use sluice::raft::replica::Timing;
use sluice::raft::transport::TransportConfig;

/// Fixed, so that a failure replays.
const SEED: u64 = 0x5eed_6a0b;
const PORT: u16 = 7100;
const NODES: [u64; 3] = [1, 2, 3];
const SECRET: &[u8] = b"the secret every node of the cluster shares";
/// Each node proposes one entry this often; a follower's go to the leader.
const PROPOSE_INTERVAL: Duration = Duration::from_millis(30);

/// The groups every node hosts.
const GROUPS: [u32; 2] = [1, 2];

/// Per (node, group): the data of the non-empty entries the node applied
/// since it last started.
type Applied = Rc<RefCell<BTreeMap<(u64, u32), Vec<Bytes>>>>;

fn host(node: u64) -> String {
    format!("node{node}")
}

async fn run_node(node: u64, applied: Applied) -> turmoil::Result {
    for group in GROUPS {
        applied.borrow_mut().insert((node, group), Vec::new());
    }
    let peers = NODES
        .into_iter()
        .filter(|&peer| peer != node)
        .map(|peer| (peer, format!("{}:{PORT}", host(peer))))
        .collect();
    let transport = TransportConfig {
        node_id: node,
        listen: (Ipv4Addr::UNSPECIFIED, PORT).into(),
        peers,
        secret: Arc::from(SECRET),
        seed: SEED,
    };
    let config = GroupsConfig {
        groups: GROUPS.to_vec(),
        node_id: node,
        voters: NODES.to_vec(),
        timing: Timing::default(),
        tick: Duration::from_millis(20),
        seed: SEED,
        votes: PathBuf::from("/votes"),
        plants: sluice::planted::Plants::NONE,
        metrics: sluice::metrics::Metrics::default(),
    };
    let (handle, mut committed, task) =
        group::start(TurmoilIo, Path::new("/raft"), config, transport).await?;
    let mut proposals = tokio::time::interval(PROPOSE_INTERVAL);
    let mut next = 0u32;
    loop {
        tokio::select! {
            _ = proposals.tick() => {
                next += 1;
                let group = GROUPS[next as usize % GROUPS.len()];
                handle.propose(group, Bytes::from(format!("{node}:{next}")));
            }
            committed = committed.recv() => {
                let Some((group, committed)) = committed else {
                    task.await??;
                    return Err("the groups stopped".into());
                };
                // Nothing is compacted here, so only entries come.
                if let Committed::Entry(entry) = committed
                    && !entry.data.is_empty()
                {
                    applied.borrow_mut().get_mut(&(node, group)).unwrap().push(entry.data);
                }
            }
        }
    }
}

/// In each group, every node applied the same sequence, of at least `min`
/// entries.
fn converged(applied: &Applied, min: usize) -> bool {
    let applied = applied.borrow();
    GROUPS.iter().all(|&group| {
        let Some(first) = applied.get(&(1, group)) else {
            return false;
        };
        first.len() >= min
            && NODES
                .iter()
                .all(|&node| applied.get(&(node, group)) == Some(first))
    })
}

/// How many entries `node` applied in group 1 since it last started.
fn applied_by(applied: &Applied, node: u64) -> usize {
    applied.borrow()[&(node, GROUPS[0])].len()
}

/// A simulation running the three nodes, and what they apply.
fn cluster() -> (turmoil::Sim<'static>, Applied) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(Duration::from_secs(120))
        .build();
    let applied = Applied::default();
    for node in NODES {
        let applied = Rc::clone(&applied);
        sim.host(host(node), move || run_node(node, Rc::clone(&applied)));
    }
    (sim, applied)
}

/// Steps until `done` (checked every simulated 100 ms), within `max`
/// simulated time.
fn run_until(sim: &mut turmoil::Sim<'_>, max: Duration, done: impl Fn() -> bool) {
    let deadline = sim.elapsed() + max;
    while sim.elapsed() < deadline {
        for _ in 0..100 {
            sim.step().unwrap();
        }
        if done() {
            return;
        }
    }
    panic!("not done within {max:?} of simulated time");
}

#[test]
fn a_group_commits_the_same_entries_everywhere() {
    let (mut sim, applied) = cluster();
    run_until(&mut sim, Duration::from_secs(20), || {
        converged(&applied, 20)
    });
    // Followers' proposals are forwarded to the leader: every node's commit.
    let applied = applied.borrow();
    for group in GROUPS {
        for node in NODES {
            let prefix = format!("{node}:");
            assert!(
                applied[&(1, group)]
                    .iter()
                    .any(|data| data.starts_with(prefix.as_bytes())),
                "group {group}: nothing proposed by node {node} committed"
            );
        }
    }
}

#[test]
fn a_crashed_node_recovers_its_log_and_catches_up() {
    let (mut sim, applied) = cluster();
    run_until(&mut sim, Duration::from_secs(20), || {
        converged(&applied, 10)
    });
    let before = applied_by(&applied, 2);

    // Node 2 loses what was not durable, and its process.
    sim.crash(host(2));
    run_until(&mut sim, Duration::from_secs(20), || {
        applied_by(&applied, 1) >= before + 10
    });
    sim.bounce(host(2));
    // Restarted, it applies its recovered log from the start, then what it
    // missed, and ends up where the others are.
    run_until(&mut sim, Duration::from_secs(30), || {
        converged(&applied, before + 10)
    });
}
