//! Under turmoil: three nodes' cluster transports exchange payloads in every
//! direction; a partition cuts one node off, and once it heals the
//! transports reconnect (and count the new connections) and payloads flow
//! again; strangers without the cluster secret deliver nothing; and
//! strangers holding every handshake slot they can do not keep a restarted
//! peer out. Needs the `sim` feature
//! (`scripts/test.sh` passes `--all-features`).
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use sluice::io::{Io, TurmoilIo, seeded_rng};
use sluice::raft::transport::frame::{Decoder, FRAME_BYTES_MAX, Kind, put_frame};
use sluice::raft::transport::handshake::{ClusterKey, Dialer};
use sluice::raft::transport::{
    HANDSHAKE_TIMEOUT, PENDING_HANDSHAKES_MAX, PENDING_HANDSHAKES_PER_SOURCE_MAX, Transport,
    TransportConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fixed, so that a failure replays: print it in any failure report.
const SEED: u64 = 0x5eed_c105;
const PORT: u16 = 7000;
const NODES: [u64; 3] = [1, 2, 3];
const SECRET: &[u8] = b"the secret every node of the cluster shares";
const WRONG_SECRET: &[u8] = b"a guess at the secret of the cluster";
/// Each node sends every peer one payload this often.
const SEND_INTERVAL: Duration = Duration::from_millis(20);

/// What the nodes received, per (sender, receiver): each sender's payload
/// numbers. Anything that must not happen goes to `violations`.
#[derive(Default)]
struct Observed {
    received: BTreeMap<(u64, u64), BTreeSet<u64>>,
    /// Per (dialler, peer), the connections the dialler has made so far.
    dialled: BTreeMap<(u64, u64), u64>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Observed>>;

fn host(node: u64) -> String {
    format!("node{node}")
}

fn peers_of(node: u64) -> BTreeMap<u64, String> {
    NODES
        .into_iter()
        .filter(|&peer| peer != node)
        .map(|peer| (peer, format!("{}:{PORT}", host(peer))))
        .collect()
}

fn payload(from: u64, to: u64, n: u64) -> Bytes {
    format!("{from}->{to} #{n}").into()
}

/// Runs one node: sends each peer a numbered payload every
/// [`SEND_INTERVAL`] and records what arrives. The number is the simulated
/// wall clock's, so that a node restarted by `bounce` sends new numbers.
async fn run_node(node: u64, secret: &'static [u8], observed: Shared) -> turmoil::Result {
    let config = TransportConfig {
        node_id: node,
        listen: (Ipv4Addr::UNSPECIFIED, PORT).into(),
        peers: peers_of(node),
        secret: Arc::from(secret),
        seed: SEED,
    };
    let (transport, mut received) = Transport::start(TurmoilIo, config).await?;
    let mut tick = tokio::time::interval(SEND_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = TurmoilIo.unix_time_ms();
                for peer in peers_of(node).into_keys() {
                    // A full queue (peer cut off) drops the payload: fine.
                    let _ = transport.send(peer, payload(node, peer, n));
                    let dialled = transport.connections_to(peer);
                    observed.lock().unwrap().dialled.insert((node, peer), dialled);
                }
            }
            Some((from, payload)) = received.recv() => record(&observed, node, from, &payload),
        }
    }
}

/// Checks that a payload names its authenticated sender and this node.
fn record(observed: &Shared, node: u64, from: u64, payload: &[u8]) {
    let mut observed = observed.lock().unwrap();
    let text = String::from_utf8_lossy(payload);
    let n = text
        .strip_prefix(&format!("{from}->{node} #"))
        .and_then(|n| n.parse::<u64>().ok());
    match n {
        Some(n) => {
            if !observed.received.entry((from, node)).or_default().insert(n) {
                observed
                    .violations
                    .push(format!("node {node} got {text:?} twice"));
            }
        }
        None => observed
            .violations
            .push(format!("node {node} got {text:?} from node {from}")),
    }
}

fn counts(observed: &Shared) -> BTreeMap<(u64, u64), usize> {
    let observed = observed.lock().unwrap();
    let mut counts = BTreeMap::new();
    for from in NODES {
        for to in peers_of(from).into_keys() {
            let count = observed.received.get(&(from, to)).map_or(0, BTreeSet::len);
            counts.insert((from, to), count);
        }
    }
    counts
}

/// Steps the simulation until `done`, failing after `within` of simulated
/// time.
fn run_until(sim: &mut turmoil::Sim<'_>, within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = sim.elapsed() + within;
    while !done() {
        assert!(
            sim.elapsed() < deadline,
            "seed {SEED:#x}: {what}: not within {within:?}"
        );
        sim.step()
            .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
    }
}

fn run_for(sim: &mut turmoil::Sim<'_>, duration: Duration) {
    let until = sim.elapsed() + duration;
    while sim.elapsed() < until {
        sim.step()
            .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
    }
}

/// A simulation of at most `duration` with the three nodes running.
fn three_nodes(duration: Duration, observed: &Shared) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(duration)
        .build();
    for node in NODES {
        let observed = Arc::clone(observed);
        sim.host(host(node), move || {
            run_node(node, SECRET, Arc::clone(&observed))
        });
    }
    sim
}

#[test]
fn three_nodes_exchange_payloads_survive_a_partition_and_refuse_strangers() {
    let observed = Shared::default();
    let mut sim = three_nodes(Duration::from_secs(120), &observed);
    // A stranger with the wrong secret, claiming to be node 1: its payloads
    // would be recorded as node 1's with the wrong text.
    let stranger_observed = Arc::clone(&observed);
    sim.host("stranger", move || {
        run_stranger(Arc::clone(&stranger_observed))
    });
    let intruded = Arc::new(AtomicBool::new(false));
    let intruder_done = Arc::clone(&intruded);
    sim.client("intruder", async move {
        intrude().await?;
        intruder_done.store(true, Ordering::SeqCst);
        Ok(())
    });

    let all_directions = |counts: &BTreeMap<(u64, u64), usize>, floor: &BTreeMap<_, usize>| {
        counts.iter().all(|(pair, &count)| count > floor[pair])
    };
    let none = counts(&observed);
    run_until(
        &mut sim,
        Duration::from_secs(10),
        "every direction delivers",
        || all_directions(&counts(&observed), &none),
    );

    sim.partition(host(1), host(2));
    sim.partition(host(1), host(3));
    // Whatever was in flight lands; after that, nothing crosses the cut.
    run_for(&mut sim, Duration::from_secs(1));
    let cut = counts(&observed);
    run_for(&mut sim, Duration::from_secs(3));
    let later = counts(&observed);
    for (&(from, to), &count) in &later {
        if from == 1 || to == 1 {
            assert_eq!(
                count,
                cut[&(from, to)],
                "seed {SEED:#x}: {from}->{to} crossed the cut"
            );
        } else {
            assert!(
                count > cut[&(from, to)],
                "seed {SEED:#x}: {from}->{to} stalled"
            );
        }
    }

    sim.repair(host(1), host(2));
    sim.repair(host(1), host(3));
    let healed = counts(&observed);
    run_until(
        &mut sim,
        Duration::from_secs(10),
        "every direction delivers again after the partition heals",
        || all_directions(&counts(&observed), &healed),
    );
    // Node 1 dialled its peers again, and they it; 2 and 3 kept theirs.
    for (&(from, to), &dialled) in &observed.lock().unwrap().dialled {
        let expected = if from == 1 || to == 1 { 2 } else { 1 };
        assert_eq!(
            dialled, expected,
            "seed {SEED:#x}: connections {from}->{to}"
        );
    }

    run_until(
        &mut sim,
        Duration::from_secs(10),
        "the intruder is done",
        || intruded.load(Ordering::SeqCst),
    );
    let violations = &observed.lock().unwrap().violations;
    assert!(violations.is_empty(), "seed {SEED:#x}: {violations:#?}");
}

/// Strangers hold every handshake slot of node 1's cluster port that they
/// can (more hosts than the cap, each with as many connections as one
/// address may have), and node 2 restarts: node 1 must let it in at once,
/// not when the strangers' handshakes time out.
#[test]
fn a_restarted_peer_gets_in_while_strangers_hold_every_handshake_slot() {
    let observed = Shared::default();
    let mut sim = three_nodes(Duration::from_secs(60), &observed);
    let none = counts(&observed);
    run_until(&mut sim, Duration::from_secs(10), "2->1 delivers", || {
        counts(&observed)[&(2, 1)] > none[&(2, 1)]
    });
    let hosts = PENDING_HANDSHAKES_MAX.div_ceil(PENDING_HANDSHAKES_PER_SOURCE_MAX) + 2;
    for stranger in 0..hosts {
        sim.client(format!("flooder{stranger}"), flood(host(1)));
    }
    // Long enough for every stranger's connections to be up, well short of
    // the handshake timeout that would free their slots.
    run_for(&mut sim, Duration::from_millis(500));
    sim.bounce(host(2));
    let restarted = counts(&observed);
    run_until(
        &mut sim,
        HANDSHAKE_TIMEOUT / 2,
        "node 2, restarted, delivers to node 1 again",
        || counts(&observed)[&(2, 1)] > restarted[&(2, 1)],
    );
    let violations = &observed.lock().unwrap().violations;
    assert!(violations.is_empty(), "seed {SEED:#x}: {violations:#?}");
}

/// Keeps [`PENDING_HANDSHAKES_PER_SOURCE_MAX`] silent connections open to
/// `target`'s cluster port, opening another whenever one is closed.
async fn flood(target: String) -> turmoil::Result {
    let addr = format!("{target}:{PORT}");
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..PENDING_HANDSHAKES_PER_SOURCE_MAX {
        let addr = addr.clone();
        holders.spawn(async move {
            loop {
                if let Ok(mut socket) = TurmoilIo.connect(&addr).await {
                    let mut sink = Vec::new();
                    let _ = socket.read_to_end(&mut sink).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    while holders.join_next().await.is_some() {}
    Ok(())
}

/// A full transport with the wrong secret, claiming node 1's id, that keeps
/// sending to nodes 2 and 3. The real nodes never dial it, so it should
/// receive nothing either.
async fn run_stranger(observed: Shared) -> turmoil::Result {
    let config = TransportConfig {
        node_id: 1,
        listen: (Ipv4Addr::UNSPECIFIED, PORT).into(),
        peers: peers_of(1),
        secret: Arc::from(WRONG_SECRET),
        seed: SEED,
    };
    let (transport, mut received) = Transport::start(TurmoilIo, config).await?;
    let mut tick = tokio::time::interval(SEND_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for peer in peers_of(1).into_keys() {
                    let _ = transport.send(peer, Bytes::from_static(b"stranger"));
                }
            }
            Some((from, _)) = received.recv() => observed
                .lock()
                .unwrap()
                .violations
                .push(format!("the stranger got a payload from node {from}")),
        }
    }
}

/// A raw client without the secret: a Hello, then a forged Proof and Batch,
/// must get a Challenge and then the connection closed; a Batch without any
/// handshake must get the connection closed at once.
async fn intrude() -> turmoil::Result {
    // Let the nodes start listening (simulated time).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node2 = format!("{}:{PORT}", host(2));

    let mut socket = TurmoilIo.connect(&node2).await?;
    let mut rng = seeded_rng(SEED);
    let (_, hello) = Dialer::new(&ClusterKey::new(WRONG_SECRET), 1, 2, &mut rng);
    socket.write_all(&hello).await?;
    let mut forged = BytesMut::new();
    put_frame(Kind::Proof, &[0x5a; 32], &mut forged);
    put_frame(Kind::Batch, &forged_batch_body(), &mut forged);
    socket.write_all(&forged).await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    let mut answer = BytesMut::from(&answer[..]);
    let challenge = Decoder::new(FRAME_BYTES_MAX).decode(&mut answer)?;
    assert_eq!(challenge.map(|frame| frame.kind), Some(Kind::Challenge));
    assert!(answer.is_empty(), "more than a challenge: {answer:02x?}");

    let mut socket = TurmoilIo.connect(&node2).await?;
    let mut batch = BytesMut::new();
    put_frame(Kind::Batch, &forged_batch_body(), &mut batch);
    socket.write_all(&batch).await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    assert!(answer.is_empty(), "answered a batch: {answer:02x?}");
    Ok(())
}

/// `seq 0 | count 1 | len | "stranger" | tag`, with a tag made up.
fn forged_batch_body() -> Vec<u8> {
    let mut body = Vec::new();
    body.put_u64(0);
    body.put_u32(1);
    body.put_u32(8);
    body.put_slice(b"stranger");
    body.put_slice(&[0; 32]);
    body
}
