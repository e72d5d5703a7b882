//! A 3-node cluster of in-process brokers on loopback: three `server::run`
//! on the tokio seam, node ids 1 to 3, one shared secret, and each node's
//! peers told its cluster address before any node starts.
//!
//! The cluster ports are bound on port 0 by the test before the nodes
//! start, and handed to each node through its seam ([`ReservedIo`]): the
//! port is the test's from before the first start until the cluster is
//! dropped, so there is no window, not even between a node's stop and its
//! restart, in which another process could take it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::{ClusterConfig, Config, Peer};
use sluice::io::{Io, OpenMode, TokioIo};
use sluice::node::ReplicaStatus;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{Broker, WAIT};

/// The nodes' ids.
pub const NODES: [u64; 3] = [1, 2, 3];

/// Shared by the nodes: at least 16 bytes.
const SECRET: &str = "the semantics tests' cluster secret";

/// How often [`Cluster::wait_for_leaders`] asks the nodes again. The node
/// announces leadership on no channel a test can wait on, so this polls;
/// the wait as a whole is bounded by [`WAIT`].
const LEADER_POLL: Duration = Duration::from_millis(10);

/// The tokio seam, except that binding the address of `reserved` hands out
/// a copy of that listener (bound on port 0 before any node started)
/// instead of binding anew. Every other bind, and everything else, is
/// [`TokioIo`]'s.
#[derive(Debug, Clone)]
pub struct ReservedIo {
    // The test's copy: it keeps the port while no node holds one.
    #[allow(clippy::disallowed_types)] // The real socket is the point.
    reserved: Arc<std::net::TcpListener>,
}

impl ReservedIo {
    /// Reserves a free loopback port.
    // Binding the real socket ahead of the node is what reserves the port.
    #[allow(clippy::disallowed_types)]
    fn reserve() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        // Shared by every copy: tokio needs it non-blocking.
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        Self {
            reserved: Arc::new(listener),
        }
    }

    /// The reserved address.
    fn addr(&self) -> SocketAddr {
        self.reserved.local_addr().expect("a bound listener")
    }
}

// A seam implementation: the real sockets and files, as `TokioIo` has them.
#[allow(clippy::disallowed_types)]
impl Io for ReservedIo {
    type Stream = <TokioIo as Io>::Stream;
    type Listener = tokio::net::TcpListener;
    type File = <TokioIo as Io>::File;

    async fn bind(&self, addr: SocketAddr) -> std::io::Result<Self::Listener> {
        if addr != self.addr() {
            return TokioIo.bind(addr).await;
        }
        tokio::net::TcpListener::from_std(self.reserved.try_clone()?)
    }

    async fn connect(&self, addr: &str) -> std::io::Result<Self::Stream> {
        TokioIo.connect(addr).await
    }

    async fn resolve(&self, addr: &str) -> std::io::Result<Vec<SocketAddr>> {
        TokioIo.resolve(addr).await
    }

    fn now(&self) -> Instant {
        TokioIo.now()
    }

    fn unix_time_ms(&self) -> u64 {
        TokioIo.unix_time_ms()
    }

    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        TokioIo.spawn(task)
    }

    async fn run_blocking<F, R>(&self, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        TokioIo.run_blocking(work).await
    }

    fn entropy(&self) -> [u8; 32] {
        TokioIo.entropy()
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Self::File> {
        TokioIo.open(path, mode).await
    }

    async fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        TokioIo.create_dir_all(path).await
    }

    async fn read_dir(&self, path: &Path) -> std::io::Result<Vec<PathBuf>> {
        TokioIo.read_dir(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        TokioIo.rename(from, to).await
    }

    async fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        TokioIo.remove_file(path).await
    }

    async fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        TokioIo.sync_dir(path).await
    }

    async fn available_bytes(&self, path: &Path) -> std::io::Result<Option<u64>> {
        TokioIo.available_bytes(path).await
    }

    fn page_store(&self, dir: &Path) -> Box<dyn sluice::queue::PageStore> {
        TokioIo.page_store(dir)
    }
}

/// One node: what it is started with, and the broker while it runs.
struct Node {
    config: Config,
    io: ReservedIo,
    broker: Option<Broker>,
    data_dir: TempDir,
}

impl Node {
    async fn start(&mut self) {
        let broker = Broker::start_on(self.config.clone(), self.io.clone()).await;
        self.broker = Some(broker);
    }

    async fn stop(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.stop().await;
        }
    }
}

/// Three brokers forming a cluster.
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts nodes 1 to 3, each with `base` but for its own AMQP port (a
    /// free one), data directory and cluster membership, and waits until
    /// every group has a leader.
    pub async fn start(base: &Config) -> Self {
        let ports: Vec<ReservedIo> = NODES.iter().map(|_| ReservedIo::reserve()).collect();
        let peer = |id: u64| Peer {
            id,
            address: ports[index(id)].addr().to_string(),
        };
        let mut nodes = Vec::new();
        for id in NODES {
            let data_dir = tempfile::Builder::new()
                .prefix(&format!("sluice-node{id}-"))
                .tempdir()
                .expect("a temporary data directory");
            let io = ports[index(id)].clone();
            let config = Config {
                listen: "127.0.0.1:0".parse().expect("a socket address"),
                data_dir: data_dir.path().to_owned(),
                cluster: ClusterConfig {
                    node_id: id,
                    listen: io.addr(),
                    peers: NODES
                        .iter()
                        .filter(|&&p| p != id)
                        .map(|&p| peer(p))
                        .collect(),
                    secret: SECRET.into(),
                    ..ClusterConfig::default()
                },
                ..base.clone()
            };
            nodes.push(Node {
                config,
                io,
                broker: None,
                data_dir,
            });
        }
        let mut cluster = Self { nodes };
        cluster.start_all().await;
        cluster
    }

    /// Node `id`'s broker. Panics if it is stopped.
    pub fn node(&self, id: u64) -> &Broker {
        self.nodes[index(id)]
            .broker
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is stopped"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> &Path {
        self.nodes[index(id)].data_dir.path()
    }

    /// Stops every node, one after the other, checking that each stopped
    /// cleanly. Node 3, which consumers use, stops first and node 1 last: a
    /// stopping node hands on what it proposed (a consumer's last settles)
    /// while a majority of the cluster still runs, as in a rolling stop.
    pub async fn stop_all(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.stop().await;
        }
    }

    /// Stops every node and checks that each stopped cleanly.
    pub async fn stop(mut self) {
        self.stop_all().await;
    }

    /// Starts every stopped node, and waits for leaders.
    pub async fn start_all(&mut self) {
        for node in &mut self.nodes {
            if node.broker.is_none() {
                node.start().await;
            }
        }
        self.wait_for_leaders().await;
    }

    /// Waits until every node knows a leader for every group, and all
    /// nodes name the same one.
    pub async fn wait_for_leaders(&self) {
        // The last complete round of answers, for the failure report.
        let mut last = Vec::new();
        let elected = async {
            loop {
                let mut statuses = Vec::new();
                for id in NODES {
                    let status = self.node(id).node.replica_status().await;
                    statuses.push(status.expect("a running node"));
                }
                if agreed_leaders(&statuses) {
                    return;
                }
                last = statuses;
                tokio::time::sleep(LEADER_POLL).await;
            }
        };
        let elected = timeout(WAIT, elected).await;
        assert!(
            elected.is_ok(),
            "no agreed leader for every group in {WAIT:?}: {last:#?}"
        );
    }
}

/// Whether every group has a leader, the same on every node.
fn agreed_leaders(statuses: &[Vec<ReplicaStatus>]) -> bool {
    let Some(first) = statuses.first() else {
        return false;
    };
    !first.is_empty()
        && first.iter().all(|group| group.leader.is_some())
        && statuses.iter().all(|status| {
            status.len() == first.len()
                && status.iter().zip(first).all(|(a, b)| a.leader == b.leader)
        })
}

fn index(id: u64) -> usize {
    NODES
        .iter()
        .position(|&node| node == id)
        .unwrap_or_else(|| panic!("no node {id}"))
}
