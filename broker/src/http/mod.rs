//! The HTTP listener (`--http`, `[http] listen`): Prometheus metrics,
//! health and readiness probes, the management API and its web console,
//! all on one port. `docs/management.md` describes every endpoint.
//!
//! It accepts through the I/O seam like the AMQP listener, so it runs under
//! turmoil too, and serves each connection with hyper's HTTP/1.1 server.
//! A client cannot hold it with slow or endless headers: the headers must
//! arrive within [`HEADER_READ_TIMEOUT`] and fit in [`HEADER_BYTES_MAX`],
//! a connection lives at most [`CONNECTION_LIFETIME`], an answer takes at
//! most [`REQUEST_TIMEOUT`], and at most [`CONNECTIONS_MAX`] connections
//! are served at once (more are closed as they are accepted).
//!
//! `/metrics`, `/health` and `/ready` answer without credentials: scrapers
//! and orchestrators' probes seldom carry any, and they reveal counters,
//! not messages. `/api/…` asks for HTTP Basic credentials of a `[[users]]`
//! account when there are accounts (none: open, like the AMQP port), and
//! shows only the queues the user may monitor. Basic sends the password in
//! clear text: the listener belongs on a private interface. `/console/` is
//! a web page over the API, whose files need no credentials.

mod api;
mod console;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo as HyperIo, TokioTimer};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Config;
use crate::io::{Io, Listener};
use crate::metrics::Metrics;
use crate::node::NodeHandle;
use crate::permissions::Permissions;
use crate::server::Shutdown;
use crate::server::auth::Authentication;

pub use routes::ROUTES;

/// How long a client may take to send a request's headers, from the
/// moment the connection is idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of headers a request may have.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;

/// How long one connection is served; then it is closed once its current
/// request is answered. Scrapers reconnect; a client that never leaves
/// does not keep a slot.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long an answer may take (the node is asked for its counters).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once.
pub const CONNECTIONS_MAX: usize = 64;

/// How long a connection still being answered at shutdown is given.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every request is answered from.
pub struct Api<I> {
    io: I,
    node: NodeHandle,
    metrics: Metrics,
    /// Checks the Basic credentials, as SASL checks PLAIN's: the same
    /// accounts, threads, throttle and log.
    auth: Arc<Authentication>,
    permissions: Permissions,
    /// This node and its peers: every node holds a replica of every group.
    members: Vec<u64>,
}

impl<I: Io> Api<I> {
    /// The API of the broker configured by `config`, over `node`.
    pub fn new(
        io: I,
        config: &Config,
        node: NodeHandle,
        metrics: Metrics,
        auth: Arc<Authentication>,
    ) -> Self {
        let mut members: Vec<u64> = std::iter::once(config.cluster.node_id)
            .chain(config.cluster.peers.iter().map(|peer| peer.id))
            .collect();
        members.sort_unstable();
        members.dedup();
        Self {
            io,
            node,
            metrics,
            auth,
            permissions: Permissions::from_config(config),
            members,
        }
    }
}

/// A response with a whole body.
pub type Answer = Response<Full<Bytes>>;

/// Serves HTTP on `listener` until `shutdown` fires, then lets the
/// connections being answered finish (within a grace period) and returns
/// once every one has ended.
pub async fn serve<I: Io>(listener: I::Listener, api: Api<I>, mut shutdown: Shutdown) {
    let io = api.io.clone();
    let api = Arc::new(api);
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let (alive, mut ended) = mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "HTTP accept failed");
                    // As the AMQP listener: out of descriptors, retrying at
                    // once would spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "HTTP connection refused: {CONNECTIONS_MAX} already served");
            continue;
        };
        let api = Arc::clone(&api);
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        let span = info_span!("http", %peer);
        io.spawn(
            async move {
                serve_connection(stream, peer, api, shutdown).await;
                drop(slot);
                drop(alive);
            }
            .instrument(span),
        );
    }
    drop(listener);
    drop(alive);
    ended.recv().await;
}

/// Serves one connection for at most [`CONNECTION_LIFETIME`], or until
/// shutdown.
async fn serve_connection<I: Io>(
    stream: I::Stream,
    peer: SocketAddr,
    api: Arc<Api<I>>,
    mut shutdown: Shutdown,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let api = Arc::clone(&api);
        async move { Ok::<_, Infallible>(api.answer_within_timeout(request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEADER_BYTES_MAX)
        .serve_connection(HyperIo::new(stream), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        () = shutdown.wait() => None,
        () = tokio::time::sleep(CONNECTION_LIFETIME) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection).await {
                Ok(ended) => ended,
                Err(_) => return debug!(%peer, "HTTP connection dropped after the grace period"),
            }
        }
    };
    if let Err(error) = ended {
        debug!(%peer, %error, "HTTP connection ended");
    }
}

impl<I: Io> Api<I> {
    async fn answer_within_timeout(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.answer(request, peer)).await {
            Ok(answer) => answer,
            Err(_) => api::error(
                hyper::StatusCode::SERVICE_UNAVAILABLE,
                "the broker did not answer in time",
            ),
        }
    }
}
