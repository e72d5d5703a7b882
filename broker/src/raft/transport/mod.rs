//! The node-to-node transport: authenticated, batched, reconnecting TCP
//! links between the nodes of a cluster, over the I/O seam, so that it runs
//! on tokio and under turmoil alike.
//!
//! [`frame`] splits the byte stream; [`handshake`] authenticates peers with
//! the cluster secret and protects every batch. This module is the async
//! driver around them. Payloads are opaque (serialized raft messages), and
//! delivery is best effort, which is what raft assumes of its network: a
//! payload may be dropped (full queue, lost connection), but one that
//! arrives is exactly what its authenticated sender sent, and the payloads
//! from one connection arrive in order.
//!
//! **Topology.** Every node dials every peer and sends only on the
//! connection it dialled; what it accepts, it only reads from. Two one-way
//! connections per pair need no rule for which of two simultaneous
//! connections wins, no hand-over of accepted sockets to the sending task,
//! and leave reconnecting to the dialer alone; the price, two sockets per
//! pair, is nothing at 3 or 5 nodes.
//!
//! **Liveness.** Each side of a connection sends a batch at least every
//! [`HEARTBEAT_INTERVAL`] (an empty one when idle: the accepting side sends
//! nothing else), and drops the connection when no frame arrived for
//! [`IDLE_TIMEOUT`]. That finds the dead connections TCP would not notice
//! for minutes: a peer that lost power, or a partition (turmoil stalls a
//! stream for good once a segment of it was dropped).

pub mod frame;
pub mod handshake;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout};
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

use self::frame::{Decoder, FRAME_BYTES_MAX, Frame, HANDSHAKE_FRAME_BYTES_MAX};
use self::handshake::{
    Acceptor, BATCH_PAYLOAD_BYTES_MAX, ClusterKey, Dialer, Opener, PAYLOAD_BYTES_MAX,
    PAYLOAD_OVERHEAD_BYTES, ProtocolError, Sealer, Session,
};
use crate::io::{Io, Listener, SeededRng};
use crate::log_budget::{LogBudget, LogLine};
use crate::server::admission::{Admission, Ticket};

/// The shortest cluster secret accepted: HMAC is only as strong as its key,
/// and an empty one would let anybody in.
pub const SECRET_BYTES_MIN: usize = 16;

/// Payloads queued per peer. When the queue is full, [`Transport::send`]
/// drops the payload rather than wait: raft resends what matters.
pub const QUEUE_MESSAGES_MAX: usize = 1024;

/// Received payloads waiting for the caller. When it lags, connections stop
/// reading, and TCP pushes back on the senders.
pub const INBOUND_MESSAGES_MAX: usize = 4096;

/// How long connecting and authenticating may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a side of a connection stays silent.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// A connection on which no whole frame arrived for this long is dead. Six
/// heartbeats: enough to ride out a delay, short enough to find a stalled
/// connection well within a raft election timeout after a partition heals.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The first delay before redialling a peer.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// The delay before redialling stops doubling.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Connections still authenticating at once. More are closed on accept, so
/// that strangers cannot tie up unbounded tasks and buffers.
pub const PENDING_HANDSHAKES_MAX: u32 = 64;

/// Of those, from one address: a single host cannot take every slot and
/// keep a restarted peer from getting one.
pub const PENDING_HANDSHAKES_PER_SOURCE_MAX: u32 = 8;

/// How long to wait before accepting again after `accept` failed (out of
/// file descriptors, typically): retrying at once would spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Free space ensured in a read buffer before each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What [`Transport::start`] needs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: u64,
    /// Where to accept peers' connections. Port 0 picks a free port:
    /// [`Transport::local_addr`] tells which.
    pub listen: SocketAddr,
    /// Every other node: id to `host:port`.
    pub peers: BTreeMap<u64, String>,
    /// The cluster secret, the same on every node, at least
    /// [`SECRET_BYTES_MIN`] bytes. It never crosses the wire.
    pub secret: Arc<[u8]>,
    /// Seeds the nonces and the backoff jitter.
    pub seed: u64,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The secret is too short to authenticate anybody.
    #[error("the cluster secret has {0} bytes; it needs at least {SECRET_BYTES_MIN}")]
    SecretTooShort(usize),
    /// The node is listed among its own peers.
    #[error("node {0} is listed as its own peer")]
    SelfPeer(u64),
    /// The listen address is taken, not local, or not permitted.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Why [`Transport::send`] dropped a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No such peer in the configuration.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    /// Larger than one frame can carry.
    #[error("a payload of {0} bytes exceeds the maximum {PAYLOAD_BYTES_MAX}")]
    TooLarge(usize),
    /// The peer's queue is full: it is down, unreachable or slow.
    #[error("the queue to node {0} is full")]
    QueueFull(u64),
    /// The peer's task has ended, which only a panic in it can do.
    #[error("the task for node {0} has stopped")]
    Stopped(u64),
}

/// A running transport. Dropping it stops every task it started and closes
/// every connection.
pub struct Transport {
    local_addr: SocketAddr,
    queues: BTreeMap<u64, mpsc::Sender<Bytes>>,
    dropped: AtomicU64,
    shared: Arc<Shared>,
    /// Never sent on: its drop is what stops the tasks.
    _stop: watch::Sender<()>,
}

/// What every task shares.
struct Shared {
    node_id: u64,
    key: ClusterKey,
    peers: BTreeSet<u64>,
    inbound: mpsc::Sender<(u64, Bytes)>,
    /// Per peer, the connections dialled and authenticated so far.
    dialled: BTreeMap<u64, AtomicU64>,
    /// Bounds the lines that failed handshakes write: a stranger who
    /// retries must not fill the log.
    refusals_log: Mutex<Option<LogBudget>>,
    /// Bounds the handshakes in progress, in all and per address; the
    /// peers' addresses (as dialled, and as seen authenticating) are bound
    /// only per address, so that strangers cannot keep a peer out.
    handshakes: Admission,
}

impl Shared {
    /// Whether a refused handshake, from a connection accepted at
    /// `accepted`, gets a log line.
    fn refusal_logged(&self, accepted: Instant) -> bool {
        let mut budget = self
            .refusals_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let line = budget
            .get_or_insert_with(|| LogBudget::new(accepted))
            .spend(accepted);
        match line {
            LogLine::Write { suppressed } => {
                if suppressed > 0 {
                    warn!(
                        suppressed,
                        "refused cluster connections not logged, to bound the log"
                    );
                }
                true
            }
            LogLine::Skip => false,
        }
    }
}

impl Transport {
    /// Binds the listener and starts one task that accepts peers and one
    /// that dials each peer. Returns the handle and the receiver of every
    /// payload peers send, with the sender's authenticated node id.
    pub async fn start<I: Io>(
        io: I,
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<(u64, Bytes)>), StartError> {
        if config.secret.len() < SECRET_BYTES_MIN {
            return Err(StartError::SecretTooShort(config.secret.len()));
        }
        if config.peers.contains_key(&config.node_id) {
            return Err(StartError::SelfPeer(config.node_id));
        }
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let listener = io.bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let mut rng = transport_rng(&io, config.seed, config.node_id);
        let (inbound, received) = mpsc::channel(INBOUND_MESSAGES_MAX);
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            key: ClusterKey::new(&config.secret),
            peers: config.peers.keys().copied().collect(),
            inbound,
            dialled: (config.peers.keys())
                .map(|&peer| (peer, AtomicU64::new(0)))
                .collect(),
            refusals_log: Mutex::new(None),
            handshakes: Admission::new(PENDING_HANDSHAKES_MAX, PENDING_HANDSHAKES_PER_SOURCE_MAX),
        });
        let (stop, stopped) = watch::channel(());

        let accepting = accept_loop(
            io.clone(),
            listener,
            Arc::clone(&shared),
            fork(&mut rng),
            stopped.clone(),
        );
        let span = info_span!("cluster_accept", node = config.node_id, %local_addr);
        spawn_until_stopped(&io, &stopped, accepting, span);

        let mut queues = BTreeMap::new();
        for (peer, addr) in config.peers {
            let (queue, queued) = mpsc::channel(QUEUE_MESSAGES_MAX);
            queues.insert(peer, queue);
            let span = info_span!("cluster_peer", node = config.node_id, peer, %addr);
            let dialling = dial_loop(
                io.clone(),
                Arc::clone(&shared),
                peer,
                addr,
                queued,
                fork(&mut rng),
            );
            spawn_until_stopped(&io, &stopped, dialling, span);
        }
        info!(node = config.node_id, %local_addr, "cluster transport listening");
        let transport = Self {
            local_addr,
            queues,
            dropped: AtomicU64::new(0),
            shared,
            _stop: stop,
        };
        Ok((transport, received))
    }

    /// The address peers connect to, with the real port if 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues `payload` for node `to` without waiting. A payload that cannot
    /// be queued is dropped, counted in [`Transport::dropped`], and the
    /// reason returned.
    pub fn send(&self, to: u64, payload: Bytes) -> Result<(), SendError> {
        let queued = self.enqueue(to, payload);
        if queued.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn enqueue(&self, to: u64, payload: Bytes) -> Result<(), SendError> {
        let queue = self.queues.get(&to).ok_or(SendError::UnknownPeer(to))?;
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(SendError::TooLarge(payload.len()));
        }
        queue.try_send(payload).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(to),
            mpsc::error::TrySendError::Closed(_) => SendError::Stopped(to),
        })
    }

    /// How many payloads [`Transport::send`] has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many connections to `peer` were dialled and authenticated so
    /// far (0 for a node that is not a peer). Whatever was sent on the
    /// connection before the last one may have been lost with it.
    pub fn connections_to(&self, peer: u64) -> u64 {
        (self.shared.dialled.get(&peer)).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// Why a connection ended or never started. Logged, never returned: the
/// transport carries on and dials again.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("no frame for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("the peer closed the connection")]
    Closed,
    #[error("the transport is stopping")]
    Stopped,
}

/// The transport's RNG: SPAKE2's secret scalars come from it, so it is
/// seeded from the environment's entropy ([`crate::io::secret_rng`]). Under
/// turmoil, where that is nothing, the node id and the start time still
/// make each node's and each run's stream its own, and a run replays from
/// its seed.
fn transport_rng<I: Io>(io: &I, seed: u64, node_id: u64) -> SeededRng {
    let mut purpose = b"cluster transport".to_vec();
    purpose.extend_from_slice(&node_id.to_be_bytes());
    purpose.extend_from_slice(&io.unix_time_ms().to_be_bytes());
    crate::io::secret_rng(io, seed, &purpose)
}

/// A new RNG for one task, drawn from `rng`, so that tasks need not share
/// one and draw from it in a scheduling-dependent order.
fn fork(rng: &mut SeededRng) -> SeededRng {
    let mut seed = [0; 32];
    rng.fill_bytes(&mut seed);
    SeededRng::from_seed(seed)
}

/// Spawns `task` in `span`, to run until it ends or the transport is
/// dropped, whichever comes first.
fn spawn_until_stopped<I: Io>(
    io: &I,
    stopped: &watch::Receiver<()>,
    task: impl Future<Output = ()> + Send + 'static,
    span: Span,
) {
    let mut stopped = stopped.clone();
    io.spawn(
        async move {
            tokio::select! {
                () = task => {}
                // Nothing is ever sent: this returns once the sender, which
                // the `Transport` holds, is dropped.
                _ = stopped.changed() => {}
            }
        }
        .instrument(span),
    );
}

/// Accepts peers' connections, each authenticated and then read in a task
/// of its own.
async fn accept_loop<I: Io>(
    io: I,
    listener: I::Listener,
    shared: Arc<Shared>,
    mut rng: SeededRng,
    stopped: watch::Receiver<()>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        // Refused (and logged, at a bounded rate) past the bounds on
        // handshakes in progress, in all and from the connection's address.
        let accepted_at = io.now();
        let Ok(permit) = shared.handshakes.admit(addr.ip(), accepted_at) else {
            continue;
        };
        let span = info_span!("cluster_inbound", %addr, peer = field::Empty);
        let serving = serve_inbound(
            stream,
            addr,
            accepted_at,
            Arc::clone(&shared),
            fork(&mut rng),
            permit,
        );
        spawn_until_stopped(&io, &stopped, serving, span);
    }
}

/// Authenticates an accepted connection, then forwards what it carries
/// until it fails.
async fn serve_inbound<S>(
    mut stream: S,
    addr: SocketAddr,
    accepted_at: Instant,
    shared: Arc<Shared>,
    mut rng: SeededRng,
    permit: Ticket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&mut stream, &shared, &mut rng),
    )
    .await
    .unwrap_or(Err(ConnectionError::HandshakeTimeout));
    drop(permit);
    let (session, buf) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            if shared.refusal_logged(accepted_at) {
                warn!(%addr, %error, "refused a cluster connection");
            }
            return;
        }
    };
    Span::current().record("peer", session.peer);
    info!("peer authenticated");
    shared.handshakes.prefer(addr.ip());
    let error = run_connection(stream, session, buf, None, &shared.inbound).await;
    warn!(%addr, %error, "inbound cluster connection closed");
}

async fn accept_handshake<S>(
    stream: &mut S,
    shared: &Shared,
    rng: &mut SeededRng,
) -> Result<(Session, BytesMut), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let decoder = Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let mut buf = BytesMut::new();
    let hello = read_frame(stream, &mut buf, decoder).await?;
    let is_peer = |node| shared.peers.contains(&node);
    let (acceptor, challenge) =
        Acceptor::handle_hello(&shared.key, shared.node_id, is_peer, rng, hello)?;
    stream.write_all(&challenge).await?;
    let proof = read_frame(stream, &mut buf, decoder).await?;
    let session = acceptor.handle_proof(proof)?;
    Ok((session, buf))
}

/// Keeps a connection to `peer` and sends it what is queued, dialling again
/// with exponential backoff and jitter whenever the connection fails.
async fn dial_loop<I: Io>(
    io: I,
    shared: Arc<Shared>,
    peer: u64,
    addr: String,
    mut queued: mpsc::Receiver<Bytes>,
    mut rng: SeededRng,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let dialled = timeout(HANDSHAKE_TIMEOUT, dial(&io, &shared, peer, &addr, &mut rng))
            .await
            .unwrap_or(Err(ConnectionError::HandshakeTimeout));
        match dialled {
            Ok((stream, session, buf)) => {
                info!("connected");
                if let Some(dialled) = shared.dialled.get(&peer) {
                    dialled.fetch_add(1, Ordering::Relaxed);
                }
                let connected_at = io.now();
                let error =
                    run_connection(stream, session, buf, Some(&mut queued), &shared.inbound).await;
                warn!(%addr, %error, "cluster connection lost");
                if matches!(error, ConnectionError::Stopped) {
                    return;
                }
                // Back off afresh after a connection that lasted, but keep
                // growing the delay for one that fails as soon as it is up.
                if io.now() - connected_at >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
            }
            // A peer that is down or cut off is routine while it restarts
            // or the network heals; one that answers and fails the handshake
            // is news.
            Err(
                error @ (ConnectionError::Io(_)
                | ConnectionError::HandshakeTimeout
                | ConnectionError::Closed),
            ) => debug!(%addr, %error, "dial failed"),
            Err(error) => warn!(%addr, %error, "dial failed"),
        }
        sleep(rng.gen_range(backoff / 2..=backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn dial<I: Io>(
    io: &I,
    shared: &Shared,
    peer: u64,
    addr: &str,
    rng: &mut SeededRng,
) -> Result<(I::Stream, Session, BytesMut), ConnectionError> {
    // Where the peer is, it dials from too (as a rule): its handshakes
    // there get a place even when strangers hold every other one.
    for resolved in io.resolve(addr).await? {
        shared.handshakes.prefer(resolved.ip());
    }
    let mut stream = io.connect(addr).await?;
    let (dialer, hello) = Dialer::new(&shared.key, shared.node_id, peer, rng);
    stream.write_all(&hello).await?;
    let mut buf = BytesMut::new();
    let decoder = Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let challenge = read_frame(&mut stream, &mut buf, decoder).await?;
    let (session, proof) = dialer.handle_challenge(challenge)?;
    stream.write_all(&proof).await?;
    Ok((stream, session, buf))
}

/// Runs an authenticated connection until either direction fails, and
/// returns why. `queued` is the dialling side's queue; the accepting side
/// sends only heartbeats.
async fn run_connection<S>(
    stream: S,
    session: Session,
    buf: BytesMut,
    queued: Option<&mut mpsc::Receiver<Bytes>>,
    inbound: &mpsc::Sender<(u64, Bytes)>,
) -> ConnectionError
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Session {
        peer,
        sealer,
        opener,
    } = session;
    // Reading and writing in separate halves, so that a write blocked on a
    // slow peer never stops us reading, nor the reverse.
    let (reader, writer) = tokio::io::split(stream);
    let result = tokio::select! {
        result = receive(reader, opener, buf, peer, inbound) => result,
        result = transmit(writer, sealer, queued) => result,
    };
    let Err(error) = result;
    error
}

/// Forwards every payload the peer sends, in order.
async fn receive<R: AsyncRead + Unpin>(
    mut reader: R,
    mut opener: Opener,
    mut buf: BytesMut,
    peer: u64,
    inbound: &mpsc::Sender<(u64, Bytes)>,
) -> Result<Infallible, ConnectionError> {
    let decoder = Decoder::new(FRAME_BYTES_MAX);
    loop {
        let frame = timeout(IDLE_TIMEOUT, read_frame(&mut reader, &mut buf, decoder))
            .await
            .map_err(|_| ConnectionError::Idle)??;
        for payload in opener.open(frame)? {
            inbound
                .send((peer, payload))
                .await
                .map_err(|_| ConnectionError::Stopped)?;
        }
    }
}

/// Sends everything queued, as many payloads per batch as fit, and an empty
/// batch whenever nothing was sent for a heartbeat interval.
async fn transmit<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut sealer: Sealer,
    mut queued: Option<&mut mpsc::Receiver<Bytes>>,
) -> Result<Infallible, ConnectionError> {
    let mut batch = Vec::new();
    // The payload that did not fit in the previous batch.
    let mut held: Option<Bytes> = None;
    let mut out = BytesMut::new();
    loop {
        let first = match (held.take(), queued.as_deref_mut()) {
            (Some(payload), _) => Some(payload),
            (None, Some(queue)) => match timeout(HEARTBEAT_INTERVAL, queue.recv()).await {
                Ok(Some(payload)) => Some(payload),
                Ok(None) => return Err(ConnectionError::Stopped),
                Err(_) => None,
            },
            (None, None) => {
                sleep(HEARTBEAT_INTERVAL).await;
                None
            }
        };
        if let Some(first) = first {
            let mut batch_bytes = PAYLOAD_OVERHEAD_BYTES + first.len();
            batch.push(first);
            if let Some(queue) = queued.as_deref_mut() {
                while let Ok(payload) = queue.try_recv() {
                    let payload_bytes = PAYLOAD_OVERHEAD_BYTES + payload.len();
                    if batch_bytes + payload_bytes > BATCH_PAYLOAD_BYTES_MAX {
                        held = Some(payload);
                        break;
                    }
                    batch_bytes += payload_bytes;
                    batch.push(payload);
                }
            }
        }
        sealer.seal(&batch, &mut out);
        batch.clear();
        writer.write_all(&out).await?;
        out.clear();
    }
}

/// Reads until `decoder` yields a whole frame.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: Decoder,
) -> Result<Frame, ConnectionError> {
    loop {
        if let Some(frame) = decoder.decode(buf).map_err(ProtocolError::from)? {
            return Ok(frame);
        }
        buf.reserve(READ_CHUNK_BYTES);
        if reader.read_buf(buf).await? == 0 {
            return Err(ConnectionError::Closed);
        }
    }
}

#[cfg(test)]
mod tests;
