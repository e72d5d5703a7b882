//! One client connection: the async driver around the sans-IO engine, in the
//! manner of quinn's connection driver.
//!
//! The engine never touches the socket or the clock. The driver feeds it
//! bytes and `now`, hands its events to [`on_event`], writes what it wants
//! sent, and sleeps until the socket is readable, the engine's timer is due,
//! or the broker shuts down.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::info;

use super::Shutdown;
use super::admission::Ticket;
use super::auth::{Authentication, Exchange, Transport};
use super::bridge::Bridge;
use crate::amqp::engine::{Connection, ConnectionConfig, Event};
use crate::amqp::types::Error;
use crate::amqp::types::condition::{CONNECTION_FORCED, INTERNAL_ERROR};
use crate::io::{self as seam, Io, SeededRng};
use crate::node::{ConnId, NodeHandle, NodeStopped, Request, ToConnection};

/// The most bytes taken from the socket per read. The engine buffers
/// partial frames itself, so this bounds per-connection memory, not frame
/// size.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What a connection reads with at first: enough for the handshake and
/// heartbeats, so that an idle connection does not keep
/// [`READ_CHUNK_BYTES`] for nothing (10,000 idle connections held 160 MB of
/// read buffers). A read that fills it grows it, up to that.
const READ_FIRST_BYTES: usize = 1024;

/// Coalesces the engine's transmits into writes of about this much; a
/// transmit this large is written as it is.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The most node messages handled per wake-up before the frames they made
/// are written, so that a busy node cannot hold back a connection's writes
/// and reads for long.
const NODE_MESSAGES_PER_WAKE: usize = 256;

/// How long past the engine's own close timeout a connection may linger
/// once shutdown starts. The engine gives up on a client that does not
/// answer `close`; this bounds what the engine cannot see, a write blocked
/// on a client that stopped reading.
const SHUTDOWN_GRACE_MARGIN: Duration = Duration::from_secs(1);

/// How a connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The AMQP connection closed in both directions.
    Finished,
    /// The client closed the socket without closing the connection.
    PeerDisconnected,
    /// Shutdown's grace period ran out first.
    GraceExpired,
}

/// What serving one accepted socket takes, besides the socket.
pub(super) struct Serve<I> {
    pub(super) io: I,
    pub(super) config: ConnectionConfig,
    pub(super) auth: Arc<Authentication>,
    /// How the client reached us: TLS or not, and from where.
    pub(super) transport: Transport,
    /// When the socket was accepted: the handshake deadline counts from
    /// here, TLS included.
    pub(super) accepted: Instant,
    /// Makes SCRAM's nonces: unguessable ([`crate::io::secret_rng`]).
    pub(super) sasl_rng: SeededRng,
    /// Its place under the connection caps, held until it ends.
    pub(super) ticket: Ticket,
    pub(super) node: NodeHandle,
    pub(super) conn_id: ConnId,
    pub(super) shutdown: Shutdown,
}

impl<I: Io> Serve<I> {
    /// When the client must have finished its handshake, TLS included.
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        self.config
            .handshake_timeout
            .map(|timeout| self.accepted + timeout)
    }

    /// Serves `stream` (the socket, or TLS over it) until the connection
    /// ends; never fails, since whatever ends a connection concerns only
    /// that connection.
    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let Self {
            io,
            config,
            auth,
            transport,
            accepted,
            sasl_rng,
            ticket,
            node,
            conn_id,
            shutdown,
        } = self;
        info!("connection accepted");
        let (inbox_sender, inbox) = mpsc::unbounded_channel();
        let registered = node.send(Request::Register {
            conn: conn_id,
            inbox: inbox_sender,
        });
        if registered.is_err() {
            info!("connection dropped: the broker node has stopped");
            return;
        }
        let grace = config.close_timeout + SHUTDOWN_GRACE_MARGIN;
        let sasl = auth.offer(&transport);
        let mut driver = Driver {
            conn: Connection::server(config, sasl, accepted),
            sasl: Exchange::new(auth, io.clone(), transport, sasl_rng),
            ticket,
            stream,
            out: Vec::new(),
            bridge: Bridge::new(conn_id, node),
            inbox,
            io,
        };
        let ended = tokio::select! {
            ended = driver.run(shutdown.clone()) => ended,
            () = grace_expired(shutdown, grace) => Ok(Ending::GraceExpired),
        };
        // However the connection ended, its links end with it: unsettled
        // deliveries go back to their queues.
        let _ = driver.bridge.disconnect();
        match ended {
            Ok(ending) => info!(?ending, "connection ended"),
            Err(error) => info!(%error, "connection ended: socket error"),
        }
    }
}

/// Resolves `grace` after shutdown starts.
async fn grace_expired(mut shutdown: Shutdown, grace: Duration) {
    shutdown.wait().await;
    tokio::time::sleep(grace).await;
}

/// A connection's engine, the socket it speaks through, and its links to
/// the broker node.
struct Driver<I: Io, S> {
    conn: Connection,
    sasl: Exchange<I>,
    ticket: Ticket,
    stream: S,
    /// Transmits waiting to be written together. It grows only as bursts
    /// need, so an idle connection keeps the few hundred bytes of its
    /// handshake, not a whole buffer (see [`WRITE_BUFFER_BYTES`]).
    out: Vec<u8>,
    bridge: Bridge,
    inbox: mpsc::UnboundedReceiver<ToConnection>,
    io: I,
}

impl<I: Io, S: AsyncRead + AsyncWrite + Unpin> Driver<I, S> {
    /// The driver loop: drain the engine's output, then wait for input from
    /// the socket, the node, the engine's timer, or shutdown.
    async fn run(&mut self, mut shutdown: Shutdown) -> io::Result<Ending> {
        let mut read_buf = vec![0; READ_FIRST_BYTES];
        let mut closing = false;
        // Once the node has stopped, its channel is closed and `recv` is
        // ready at once, forever: polling it again would spin (and, under
        // turmoil, freeze simulated time) while the close handshake waits.
        let mut node_gone = false;
        loop {
            self.drain_outputs().await?;
            if self.conn.is_finished() {
                self.stream.shutdown().await?;
                return Ok(Ending::Finished);
            }
            let timeout = self.conn.poll_timeout();
            tokio::select! {
                read = self.stream.read(&mut read_buf) => {
                    let read_bytes = read?;
                    if read_bytes == 0 {
                        return Ok(Ending::PeerDisconnected);
                    }
                    self.conn.handle_bytes(self.io.now(), &read_buf[..read_bytes]);
                    if read_bytes == read_buf.len() && read_buf.len() < READ_CHUNK_BYTES {
                        read_buf.resize(READ_CHUNK_BYTES, 0);
                    }
                }
                message = self.inbox.recv(), if !node_gone => {
                    let handled = match message {
                        Some(message) => self.on_node(message),
                        None => {
                            node_gone = true;
                            Err(NodeStopped)
                        }
                    };
                    self.close_if_node_stopped(handled);
                }
                () = sleep_until_due(timeout) => self.conn.handle_timeout(self.io.now()),
                () = shutdown.wait(), if !closing => {
                    closing = true;
                    let error = Error::new(CONNECTION_FORCED, "the broker is shutting down");
                    self.conn.close(self.io.now(), Some(error));
                }
            }
        }
    }

    /// Handles a message from the node, then those queued behind it, up to
    /// [`NODE_MESSAGES_PER_WAKE`]: the frames they make leave in one write,
    /// instead of one write (and one wake-up of the client) per message.
    fn on_node(&mut self, first: ToConnection) -> Result<(), NodeStopped> {
        self.bridge.on_node(&mut self.conn, self.io.now(), first)?;
        for _ in 1..NODE_MESSAGES_PER_WAKE {
            // Empty, or the node has stopped: `recv` reports that next.
            let Ok(message) = self.inbox.try_recv() else {
                break;
            };
            self.bridge
                .on_node(&mut self.conn, self.io.now(), message)?;
        }
        Ok(())
    }

    /// Drains the engine in its documented order, transmits before events,
    /// until both are empty: answering an event queues frames. The writes
    /// collect in the buffer and leave in one flush.
    async fn drain_outputs(&mut self) -> io::Result<()> {
        loop {
            while let Some(bytes) = self.conn.poll_transmit() {
                self.write(&bytes).await?;
            }
            let Some(event) = self.conn.poll_event() else {
                break;
            };
            match event {
                // Nothing else happens on the connection until SASL is
                // done, so it may wait here for a slow check.
                Event::SaslInit {
                    mechanism,
                    initial_response,
                    ..
                } => {
                    let verdict = self.sasl.init(mechanism.as_str(), &initial_response).await;
                    // It can only fail if the engine ended meanwhile, and
                    // then it says so with its own events.
                    let _ = self.conn.answer_sasl(verdict);
                }
                Event::SaslResponse { response } => {
                    let verdict = self.sasl.response(&response);
                    let _ = self.conn.answer_sasl(verdict);
                }
                event => {
                    if matches!(event, Event::Authenticated { .. }) {
                        self.ticket.authenticated();
                    }
                    let handled = self.bridge.on_event(&mut self.conn, self.io.now(), event);
                    self.close_if_node_stopped(handled);
                }
            }
        }
        self.write_out().await?;
        self.stream.flush().await
    }

    /// Queues `bytes` for the socket, writing out what waits first if they
    /// would not fit, and writing them at once if they are that large.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.out.len() + bytes.len() > WRITE_BUFFER_BYTES {
            self.write_out().await?;
        }
        if bytes.len() >= WRITE_BUFFER_BYTES {
            return self.stream.write_all(bytes).await;
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what waits to the socket.
    async fn write_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Without the node, the connection can do nothing more: close it.
    fn close_if_node_stopped(&mut self, handled: Result<(), NodeStopped>) {
        if handled.is_err() {
            let error = Error::new(INTERNAL_ERROR, "the broker node has stopped");
            self.conn.close(self.io.now(), Some(error));
        }
    }
}

/// Sleeps until the engine's deadline, or forever when it has none.
pub(super) async fn sleep_until_due(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => seam::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
