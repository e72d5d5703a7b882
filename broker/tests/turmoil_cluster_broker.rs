//! A 3-node cluster under turmoil, served to AMQP clients: a producer on
//! node 2 sends to a queue, a consumer on node 3 takes from it, and node 1
//! crashes and restarts in the middle — at once, or after the others have
//! compacted their logs past what it has, so that it catches up from a
//! snapshot, or with its Raft log damaged, so that it rejoins. Every
//! message is accepted (the producer's node re-proposes what the crash
//! lost), every accepted message is received, and at the end every node's
//! replica of every group has the same state.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use sluice::amqp::engine::Event;
use sluice::amqp::types::{Accepted, DeliveryState, Source};
use sluice::client::Client;
use sluice::config::{ClusterConfig, Config, Peer};
use sluice::io::{Io, TurmoilIo};
use sluice::node::NodeHandle;
use sluice::server::{self, shutdown_channel};

use common::{connect_when_up, number_of, numbered_message};

const SEED: u64 = 0x5eed_c105;
const NODES: [u64; 3] = [1, 2, 3];
const AMQP_PORT: u16 = 5672;
const CLUSTER_PORT: u16 = 5700;
const MESSAGES: u32 = 300;
const WINDOW: usize = 32;
/// Node 1 crashes once this many messages were accepted.
const CRASH_AFTER_ACCEPTED: usize = 100;
/// In the long outage, node 1 comes back once this many were accepted.
const RESTART_AFTER_ACCEPTED: usize = 250;
/// Bounds each wait for the broker: a bound, not a sleep.
const EVENT_WAIT: Duration = Duration::from_secs(30);

type Ids = Arc<Mutex<BTreeSet<u32>>>;
/// Each node's handle, as its latest start announced it.
type Handles = Arc<Mutex<BTreeMap<u64, NodeHandle>>>;

fn host(node: u64) -> String {
    format!("node{node}")
}

fn config(node: u64, snapshot_every: u64) -> Config {
    let mut config = Config {
        listen: (Ipv4Addr::UNSPECIFIED, AMQP_PORT).into(),
        data_dir: "/data".into(),
        seed: SEED,
        cluster: ClusterConfig {
            node_id: node,
            listen: (Ipv4Addr::UNSPECIFIED, CLUSTER_PORT).into(),
            peers: NODES
                .iter()
                .filter(|&&peer| peer != node)
                .map(|&peer| Peer {
                    id: peer,
                    address: format!("{}:{CLUSTER_PORT}", host(peer)),
                })
                .collect(),
            secret: "a cluster secret for tests".into(),
            groups: 0,
        },
        ..Config::default()
    };
    config.storage.snapshot_every_records = snapshot_every;
    config
}

async fn connect(node: u64) -> Client<TurmoilIo> {
    let address = format!("{}:{AMQP_PORT}", host(node));
    connect_when_up(&address, &format!("client-of-{node}")).await
}

async fn produce(accepted: Ids) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect(2).await;
    let session = client.begin().await?;
    let link = client
        .attach_sender(session, "producer", Some("orders"))
        .await?;
    let mut in_flight = BTreeMap::new();
    let mut next = 0;
    while next < MESSAGES || !in_flight.is_empty() {
        if next < MESSAGES && in_flight.len() < WINDOW && client.connection().credit(link) > 0 {
            let tag = Bytes::from(next.to_be_bytes().to_vec());
            let delivery = client
                .send(link, tag, numbered_message(next), false)
                .await?;
            in_flight.insert(delivery, next);
            next += 1;
            continue;
        }
        let event = tokio::time::timeout(EVENT_WAIT, client.next_event()).await??;
        if let Event::Disposition {
            delivery, state, ..
        } = event
        {
            assert!(
                matches!(state, Some(DeliveryState::Accepted(_))),
                "{state:?}"
            );
            if let Some(id) = in_flight.remove(&delivery) {
                accepted.lock().unwrap().insert(id);
            }
        }
    }
    client.close().await?;
    Ok(())
}

async fn consume(received: Arc<Mutex<Vec<u32>>>) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect(3).await;
    let session = client.begin().await?;
    let source = Source {
        address: Some("orders".into()),
        ..Source::default()
    };
    let link = client
        .attach_receiver(session, "consumer", source, 50)
        .await?;
    let distinct = |received: &Arc<Mutex<Vec<u32>>>| {
        received
            .lock()
            .unwrap()
            .iter()
            .collect::<BTreeSet<_>>()
            .len()
    };
    while distinct(&received) < MESSAGES as usize {
        let event = tokio::time::timeout(EVENT_WAIT, client.next_event()).await??;
        if let Event::Delivery {
            delivery, message, ..
        } = event
        {
            received.lock().unwrap().push(number_of(message));
            client
                .settle(delivery, DeliveryState::Accepted(Accepted))
                .await?;
            if client.connection().credit(link) < 25 {
                client.connection().flow(link, 50, false)?;
            }
        }
    }
    client.close().await?;
    Ok(())
}

/// Flips a bit inside the first record of this host's Raft log: damage
/// that no torn write explains, so the node must cut its log back there.
async fn damage_raft_log() -> std::io::Result<()> {
    let raft = Path::new("/data/raft");
    let segments = TurmoilIo.read_dir(raft).await?;
    let first = segments
        .iter()
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .expect("a Raft log segment");
    let mut contents = TurmoilIo.read_file(first).await?;
    // After the 24-byte segment header and the first record's 8-byte frame
    // header: in its payload, which its checksum covers.
    contents[40] ^= 0x10;
    sluice::io::replace_file(&TurmoilIo, first, &contents).await
}

/// Waits for node 1's restart, then checks that it rejoins: the damaged
/// log made it give up its votes until it caught up.
async fn rejoins(handles: Handles) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let node = handles.lock().unwrap().get(&1).cloned();
        if let Some(node) = node {
            let groups = node.replica_status().await?;
            assert!(
                groups.iter().any(|group| group.rejoining),
                "node 1 started on a damaged log without rejoining: {groups:#?}"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until every node has applied every group as far as the others,
/// and none is still rejoining, then returns each group's digests, which
/// must all be equal.
async fn converged(handles: Handles) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let nodes: Vec<NodeHandle> = handles.lock().unwrap().values().cloned().collect();
        let mut statuses = Vec::new();
        for node in &nodes {
            statuses.push(node.replica_status().await?);
        }
        let applied: BTreeSet<Vec<u64>> = statuses
            .iter()
            .map(|groups| groups.iter().map(|group| group.applied).collect())
            .collect();
        let rejoining = statuses.iter().flatten().any(|group| group.rejoining);
        if nodes.len() == NODES.len() && applied.len() == 1 && !rejoining {
            let digests: BTreeSet<Vec<u32>> = statuses
                .iter()
                .map(|groups| groups.iter().map(|group| group.digest).collect())
                .collect();
            assert_eq!(digests.len(), 1, "replicas diverged: {statuses:#?}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the producer and the consumer against the cluster, crashes node 1
/// after `CRASH_AFTER_ACCEPTED` accepted messages and restarts it once
/// `restart_after` were (with its Raft log damaged, if `damage`); checks
/// that nothing accepted is lost and that the replicas converge.
fn crash_run(snapshot_every: u64, restart_after: usize, damage: bool) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(Duration::from_secs(120))
        .build();
    let handles: Handles = Arc::default();
    let damage_at_start = Arc::new(AtomicBool::new(false));
    for node in NODES {
        let handles = handles.clone();
        let damage_at_start = damage_at_start.clone();
        sim.host(host(node), move || {
            let handles = handles.clone();
            let damage = damage_at_start.swap(false, Ordering::SeqCst);
            async move {
                if damage {
                    damage_raft_log().await?;
                }
                let (_never_triggered, shutdown) = shutdown_channel();
                let ready = move |listening: server::Listening| {
                    handles.lock().unwrap().insert(node, listening.node);
                };
                server::run(config(node, snapshot_every), TurmoilIo, shutdown, ready).await?;
                Ok(())
            }
        });
    }
    let accepted: Ids = Arc::default();
    let received: Arc<Mutex<Vec<u32>>> = Arc::default();
    sim.client("producer", produce(accepted.clone()));
    sim.client("consumer", consume(received.clone()));

    let (mut crashed, mut restarted) = (false, false);
    let mut checking = false;
    while !sim
        .step()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"))
    {
        let count = accepted.lock().unwrap().len();
        if !crashed && count >= CRASH_AFTER_ACCEPTED {
            sim.crash(host(1));
            handles.lock().unwrap().remove(&1);
            crashed = true;
        }
        if crashed && !restarted && count >= restart_after {
            damage_at_start.store(damage, Ordering::SeqCst);
            sim.bounce(host(1));
            if damage {
                sim.client("rejoin-check", rejoins(handles.clone()));
            }
            restarted = true;
        }
        if restarted && !checking && count == MESSAGES as usize {
            sim.client("convergence", converged(handles.clone()));
            checking = true;
        }
    }
    assert!(checking, "the run never reached its end");
    let accepted = accepted.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    assert_eq!(accepted.len(), MESSAGES as usize, "every message accepted");
    let distinct: BTreeSet<u32> = received.iter().copied().collect();
    let lost: Vec<u32> = accepted.difference(&distinct).copied().collect();
    assert!(
        lost.is_empty(),
        "seed {SEED:#x}: accepted but lost: {lost:?}"
    );
}

#[test]
fn a_cluster_serves_clients_through_a_node_crash() {
    crash_run(100_000, CRASH_AFTER_ACCEPTED, false);
}

#[test]
fn a_node_back_from_a_long_outage_catches_up_from_a_snapshot() {
    crash_run(5, RESTART_AFTER_ACCEPTED, false);
}

#[test]
fn a_node_whose_log_is_damaged_rejoins_and_catches_up() {
    crash_run(100_000, CRASH_AFTER_ACCEPTED, true);
}
