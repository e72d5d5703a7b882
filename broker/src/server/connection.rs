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

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tracing::{debug, info};

use super::Shutdown;
use crate::amqp::engine::{Authenticator, Connection, ConnectionConfig, Event, LinkId};
use crate::amqp::types::Error;
use crate::amqp::types::condition::{CONNECTION_FORCED, NOT_IMPLEMENTED};
use crate::io::{self as seam, Io};

/// The most bytes taken from the socket per read. The engine buffers
/// partial frames itself, so this bounds per-connection memory, not frame
/// size.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Coalesces the engine's transmits into few socket writes.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

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

/// Serves one accepted socket until the connection ends; never fails, since
/// whatever ends a connection concerns only that connection.
pub(super) async fn serve<I: Io>(
    io: I,
    stream: I::Stream,
    config: ConnectionConfig,
    auth: Arc<dyn Authenticator>,
    shutdown: Shutdown,
) {
    info!("connection accepted");
    let grace = config.close_timeout + SHUTDOWN_GRACE_MARGIN;
    let mut driver = Driver {
        conn: Connection::server(config, auth, io.now()),
        stream: BufWriter::with_capacity(WRITE_BUFFER_BYTES, stream),
        io,
    };
    let ended = tokio::select! {
        ended = driver.run(shutdown.clone()) => ended,
        () = grace_expired(shutdown, grace) => Ok(Ending::GraceExpired),
    };
    match ended {
        Ok(ending) => info!(?ending, "connection ended"),
        Err(error) => info!(%error, "connection ended: socket error"),
    }
}

/// Resolves `grace` after shutdown starts.
async fn grace_expired(mut shutdown: Shutdown, grace: Duration) {
    shutdown.wait().await;
    tokio::time::sleep(grace).await;
}

/// A connection's engine and the socket it speaks through.
struct Driver<I: Io> {
    conn: Connection,
    stream: BufWriter<I::Stream>,
    io: I,
}

impl<I: Io> Driver<I> {
    /// The driver loop: drain the engine's output, then wait for input.
    async fn run(&mut self, mut shutdown: Shutdown) -> io::Result<Ending> {
        let mut read_buf = vec![0; READ_CHUNK_BYTES];
        let mut closing = false;
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

    /// Drains the engine in its documented order, transmits before events,
    /// until both are empty: answering an event (refusing a link) queues
    /// frames. The writes collect in the buffer and leave in one flush.
    async fn drain_outputs(&mut self) -> io::Result<()> {
        loop {
            while let Some(bytes) = self.conn.poll_transmit() {
                self.stream.write_all(&bytes).await?;
            }
            let Some(event) = self.conn.poll_event() else {
                break;
            };
            on_event(&mut self.conn, event);
        }
        self.stream.flush().await
    }
}

/// Sleeps until the engine's deadline, or forever when it has none.
async fn sleep_until_due(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => seam::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The broker's reaction to what the engine reports.
fn on_event(conn: &mut Connection, event: Event) {
    match event {
        Event::Authenticated { identity } => info!(identity, "client authenticated"),
        Event::Opened { remote } => {
            info!(container_id = remote.container_id, "AMQP connection open");
        }
        Event::SessionBegun { session, .. } => debug!(session = session.0, "session begun"),
        Event::LinkAttached {
            link,
            remote,
            initiated_by_peer,
        } => {
            debug!(link = ?link, name = remote.name, "link attached");
            if initiated_by_peer {
                refuse_link(conn, link);
            }
        }
        Event::LinkDetached { link, error, .. } => debug!(link = ?link, ?error, "link detached"),
        Event::SessionEnded { session, error } => {
            debug!(session = session.0, ?error, "session ended");
        }
        // No link is ever accepted, so these can only concern a link being
        // refused: there is nothing to do.
        Event::Credit { link, .. } => debug!(link = ?link, "ignoring credit"),
        Event::Delivery { delivery, .. } => debug!(delivery = ?delivery, "ignoring delivery"),
        Event::Disposition { delivery, .. } => debug!(delivery = ?delivery, "ignoring disposition"),
        Event::Closed { local, remote } => info!(?local, ?remote, "AMQP connection closed"),
    }
}

/// Answers a link the client attached. The broker serves no queues yet, so
/// every link is refused with `amqp:not-implemented`; the connection stays
/// open.
fn refuse_link(conn: &mut Connection, link: LinkId) {
    let error = Error::new(NOT_IMPLEMENTED, "links are not implemented yet");
    match conn.refuse_link(link, error) {
        Ok(()) => info!(link = ?link, "link refused: not implemented yet"),
        // The engine no longer holds the link (the client detached it, or
        // the connection is closing): the refusal is moot.
        Err(error) => debug!(link = ?link, %error, "link not refused"),
    }
}
