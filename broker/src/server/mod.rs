//! The broker's network front: accepts AMQP clients and drives one sans-IO
//! [`Connection`](crate::amqp::engine::Connection) per socket.
//!
//! [`run`] is the single entry point, shared by the binary (on
//! [`TokioIo`](crate::io::TokioIo)) and by turmoil host factories (on
//! `TurmoilIo`). It keeps all its state in its own future, with nothing
//! global, so that turmoil can crash and restart a host by dropping that
//! future and calling the factory again.

pub(crate) mod admission;
pub mod auth;
mod bridge;
mod connection;
mod shutdown;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, info_span, warn};

use crate::amqp::codec::{Symbol, Value};
use crate::amqp::engine::{ConnectionConfig, UnfinishedBytes};
use crate::amqp::types::Fields;
use crate::config::Config;
use crate::http;
use crate::io::{Io, Listener, secret_rng};
use crate::metrics::{ConnectionInfo, Metrics};
use crate::node::{self, NodeError, NodeHandle, NodeSettings};

use admission::Admission;
pub use admission::{TooFewDescriptors, fit_to_descriptors};
use auth::{Authentication, Transport};
use connection::Serve;
pub use shutdown::{Shutdown, ShutdownTrigger, shutdown_channel};
pub use tls::{CertReload, TlsError};

/// How long to wait before accepting again after `accept` failed, typically
/// because the process ran out of file descriptors: retrying at once would
/// spin while nothing can change.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address is taken, not local, or not permitted.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// What the operating system (or simulator) said.
        #[source]
        source: std::io::Error,
    },
    /// The listener was bound but its address cannot be read.
    #[error("cannot read the bound listen address")]
    LocalAddr(#[source] std::io::Error),
    /// The TLS listener's certificate or key cannot be loaded.
    #[error("cannot set up TLS")]
    Tls(#[from] TlsError),
    /// The broker node could not recover its state, or failed (a failed
    /// fsync): the broker must stop.
    #[error("the broker node failed")]
    Node(#[from] NodeError),
    /// The broker node's task panicked.
    #[error("the broker node panicked")]
    NodePanicked,
}

/// What [`run`] hands its `ready` callback once it listens.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The bound address: the real port when the configured one is 0.
    pub addr: SocketAddr,
    /// The TLS listener's bound address, if there is one.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTP listener's bound address, if there is one.
    pub http_addr: Option<SocketAddr>,
    /// The broker's metrics, for the login code and tests.
    pub metrics: Metrics,
    /// Reads the TLS certificate and key again (SIGHUP), if the broker
    /// serves TLS.
    pub cert_reload: Option<CertReload>,
    /// The broker node, for asking it about its queues
    /// ([`NodeHandle::queue_info`]).
    pub node: NodeHandle,
}

/// Runs the broker until `shutdown` fires and every connection has ended.
///
/// Once listening, it logs `sluice ready: amqp=ADDR` with the bound address
/// (the real port when the configured one is 0), followed by `amqps=ADDR`
/// for the TLS listener and `http=ADDR` for the HTTP listener if there
/// are, and passes a [`Listening`] to
/// `ready`. On shutdown it stops accepting and closes each connection with
/// `amqp:connection:forced`, giving clients a bounded grace period to answer.
///
/// # Errors
///
/// Before serving, when the log cannot be recovered ([`ServerError::Node`]),
/// the TLS certificate cannot be loaded ([`ServerError::Tls`]), or a listen
/// address cannot be bound ([`ServerError::Bind`]) or read back
/// ([`ServerError::LocalAddr`]). Once listening, a failure ends one
/// connection, never the server — except a failure of the log, after which
/// nothing acknowledged could be trusted: then the server stops with
/// [`ServerError::Node`].
pub async fn run<I: Io>(
    config: Config,
    io: I,
    shutdown: Shutdown,
    ready: impl FnOnce(Listening) + Send,
) -> Result<(), ServerError> {
    let metrics = Metrics::default();
    let settings = NodeSettings {
        metrics: metrics.clone(),
        ..NodeSettings::new(config.clone())
    };
    let (node, mut node_task) = if config.cluster.is_clustered() {
        let (node, task) = node::start_clustered(io.clone(), settings).await?;
        (node, io.spawn(task))
    } else {
        let (node, task) = node::start(io.clone(), settings).await?;
        (node, io.spawn(task))
    };
    // Where the free space cannot be told (turmoil's disk), nothing is
    // spawned.
    let watch_disk = config.limits.disk_free_min_bytes > 0
        && matches!(io.available_bytes(&config.data_dir).await, Ok(Some(_)));
    if watch_disk {
        let watching = node::watch_disk_free(io.clone(), config.data_dir.clone(), node.clone());
        let mut stop = shutdown.clone();
        io.spawn(
            async move {
                tokio::select! {
                    () = watching => {}
                    () = stop.wait() => {}
                }
            }
            .instrument(info_span!("disk_free")),
        );
    }
    let listeners = Listeners::bind(&io, &config).await?;
    let addr = listeners
        .amqp
        .local_addr()
        .map_err(ServerError::LocalAddr)?;
    let tls_addr = match &listeners.amqps {
        Some((listener, _)) => Some(listener.local_addr().map_err(ServerError::LocalAddr)?),
        None => None,
    };
    let http_listener = match config.http.listen {
        Some(addr) => Some(bind(&io, addr).await?),
        None => None,
    };
    let http_addr = match &http_listener {
        Some(listener) => Some(listener.local_addr().map_err(ServerError::LocalAddr)?),
        None => None,
    };
    let mut line = format!("sluice ready: amqp={addr}");
    if let Some(tls_addr) = tls_addr {
        line.push_str(&format!(" amqps={tls_addr}"));
    }
    if let Some(http_addr) = http_addr {
        line.push_str(&format!(" http={http_addr}"));
    }
    info!("{line}");
    let cert_reload = listeners.certs.as_ref().map(|certs| {
        let reload = CertReload::default();
        let interval = (config.tls.reload_interval_ms > 0)
            .then(|| Duration::from_millis(config.tls.reload_interval_ms.into()));
        let reloading = tls::reload_loop(io.clone(), Arc::clone(certs), interval, reload.clone());
        let mut stop = shutdown.clone();
        io.spawn(
            async move {
                tokio::select! {
                    () = reloading => {}
                    () = stop.wait() => {}
                }
            }
            .instrument(info_span!("tls_reload")),
        );
        reload
    });
    ready(Listening {
        addr,
        tls_addr,
        http_addr,
        metrics: metrics.clone(),
        cert_reload,
        node: node.clone(),
    });
    let auth = Arc::new(Authentication::new(
        &io,
        &config,
        verify_threads(),
        metrics.clone(),
    ));
    if !auth.offers_without_tls() {
        warn!(
            "clients without TLS can log in with no mechanism: PLAIN needs TLS \
             (or auth.allow_plain_without_tls) and no account has a SCRAM credential"
        );
    }
    let http_server = http_listener.map(|listener| {
        let api = http::Api::new(
            io.clone(),
            &config,
            node.clone(),
            metrics.clone(),
            Arc::clone(&auth),
        );
        io.spawn(http::serve(listener, api, shutdown.clone()).instrument(info_span!("http")))
    });

    let settings = ConnectionSettings {
        engine: connection_config(&config),
        auth,
        admission: Admission::new(
            config.limits.max_connections,
            config.limits.max_handshakes_per_source,
        ),
        seed: config.seed,
        node,
        metrics,
    };
    let tasks = ConnectionTasks::new();
    let node_failed =
        accept_until_shutdown(&io, &listeners, &settings, &tasks, shutdown, &mut node_task).await;
    // Closed at once, so that new clients are refused rather than left
    // waiting in the backlog while the open connections wind down.
    drop(listeners);
    info!("shutting down: no longer accepting connections");
    tasks.all_ended().await;
    // Its requests hold the node's handle too. It stops on the same
    // shutdown, or at once if the node failed and the shutdown never came.
    if let Some(http_server) = http_server {
        if node_failed.is_some() {
            http_server.abort();
        }
        let _ = http_server.await;
    }
    // The last handle goes: the node finishes what it was logging, then ends.
    drop(settings);
    let result = match node_failed {
        Some(result) => result,
        None => node_task
            .await
            .map_err(|_| ServerError::NodePanicked)?
            .map_err(ServerError::from),
    };
    match &result {
        Ok(()) => info!("sluice stopped"),
        Err(error) => error!(%error, "sluice stopped after a failure"),
    }
    result
}

/// The listeners: AMQP's, and the TLS one (`amqps`) with its acceptor if
/// configured.
struct Listeners<L> {
    amqp: L,
    amqps: Option<(L, TlsAcceptor)>,
    /// The TLS listener's certificate, to reload.
    certs: Option<Arc<tls::CertStore>>,
}

impl<L: Listener> Listeners<L> {
    async fn bind<I: Io<Listener = L>>(io: &I, config: &Config) -> Result<Self, ServerError> {
        let (amqps, certs) = match config.tls.listen {
            Some(addr) => {
                // The certificate first: a broker that cannot serve TLS
                // should not take either port.
                let (acceptor, certs) = tls::acceptor(io, &config.tls).await?;
                (Some((bind(io, addr).await?, acceptor)), Some(certs))
            }
            None => (None, None),
        };
        Ok(Self {
            amqp: bind(io, config.listen).await?,
            amqps,
            certs,
        })
    }

    /// The next client on either listener, with the port it came to.
    /// Cancel-safe, as each `accept` is.
    async fn accept(&self) -> std::io::Result<(L::Stream, SocketAddr, tls::Port)> {
        let Some((tls_listener, _)) = &self.amqps else {
            let (stream, peer) = self.amqp.accept().await?;
            return Ok((stream, peer, tls::Port::Amqp));
        };
        // Biased, so that the simulator's runs do not depend on tokio's
        // own random choice between two ready listeners.
        tokio::select! {
            biased;
            accepted = self.amqp.accept() => {
                accepted.map(|(stream, peer)| (stream, peer, tls::Port::Amqp))
            }
            accepted = tls_listener.accept() => {
                accepted.map(|(stream, peer)| (stream, peer, tls::Port::Amqps))
            }
        }
    }

    /// The TLS acceptor, if the broker serves TLS.
    fn acceptor(&self) -> Option<&TlsAcceptor> {
        self.amqps.as_ref().map(|(_, acceptor)| acceptor)
    }
}

async fn bind<I: Io>(io: &I, addr: SocketAddr) -> Result<I::Listener, ServerError> {
    io.bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// What every connection is created with.
struct ConnectionSettings {
    engine: ConnectionConfig,
    auth: Arc<Authentication>,
    admission: Admission,
    /// The configured seed, mixed into each connection's secrets.
    seed: u64,
    node: NodeHandle,
    metrics: Metrics,
}

/// Threads for argon2 checks: half the machine, so that logins never take
/// every core from the connections already served.
fn verify_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

/// Accepts connections, one task each, until shutdown or until the node
/// stops, whose result it then returns.
async fn accept_until_shutdown<I: Io>(
    io: &I,
    listeners: &Listeners<I::Listener>,
    settings: &ConnectionSettings,
    tasks: &ConnectionTasks,
    shutdown: Shutdown,
    node_task: &mut JoinHandle<Result<(), NodeError>>,
) -> Option<Result<(), ServerError>> {
    let mut stop = shutdown.clone();
    let mut connection_id: u64 = 0;
    loop {
        let (stream, peer, port) = tokio::select! {
            () = stop.wait() => return None,
            ended = &mut *node_task => {
                return Some(match ended {
                    Ok(result) => result.map_err(ServerError::from),
                    Err(_) => Err(ServerError::NodePanicked),
                });
            }
            accepted = listeners.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let accepted = io.now();
        // Refused here, the socket is closed as it is dropped: the
        // client's connect succeeded, its first read sees the end.
        let Ok(ticket) = settings.admission.admit(peer.ip(), accepted) else {
            continue;
        };
        connection_id += 1;
        let span = info_span!("connection", id = connection_id, %peer, ?port);
        let mut serve = Serve {
            io: io.clone(),
            config: settings.engine.clone(),
            auth: Arc::clone(&settings.auth),
            transport: Transport {
                tls: false,
                peer: peer.ip(),
                certificate: None,
            },
            accepted,
            sasl_rng: secret_rng(io, settings.seed, &connection_id.to_be_bytes()),
            ticket,
            node: settings.node.clone(),
            conn_id: connection_id,
            shutdown: shutdown.clone(),
        };
        let acceptor = listeners.acceptor().cloned();
        let alive = tasks.alive();
        let open = settings.metrics.connection_opened(ConnectionInfo {
            id: connection_id,
            peer,
            port: match port {
                tls::Port::Amqp => crate::metrics::Port::Amqp,
                tls::Port::Amqps => crate::metrics::Port::Amqps,
            },
            opened_unix_ms: io.unix_time_ms(),
        });
        io.spawn(
            async move {
                match acceptor {
                    // A broker without TLS hands the socket to AMQP untouched.
                    None => serve.run(stream).await,
                    Some(acceptor) => {
                        let shutdown = serve.shutdown.clone();
                        let deadline = serve.handshake_deadline();
                        match tls::open(acceptor, stream, port, deadline, shutdown).await {
                            Some(tls::Opened::Tls(stream)) => {
                                serve.transport.tls = true;
                                serve.transport.certificate = tls::client_identity(stream.as_ref());
                                serve.run(stream).await
                            }
                            Some(tls::Opened::Plain(stream)) => serve.run(stream).await,
                            None => {}
                        }
                    }
                }
                drop(open);
                drop(alive);
            }
            .instrument(span),
        );
    }
}

/// Counts connection tasks without keeping their handles: each task holds a
/// sender and drops it when it ends, and the receiver sees the channel close
/// once all of them (and the server's own) are gone. Nothing is ever sent.
struct ConnectionTasks {
    alive: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

impl ConnectionTasks {
    fn new() -> Self {
        let (alive, ended) = mpsc::channel(1);
        Self { alive, ended }
    }

    /// A token for one task to hold until it ends.
    fn alive(&self) -> mpsc::Sender<()> {
        self.alive.clone()
    }

    /// Waits until every token handed out has been dropped.
    async fn all_ended(self) {
        let Self { alive, mut ended } = self;
        drop(alive);
        ended.recv().await;
    }
}

/// The engine settings for the configured AMQP limits, with one pool of
/// unfinished message bytes for every connection. An idle timeout of 0
/// means none, as in AMQP's `open`.
fn connection_config(config: &Config) -> ConnectionConfig {
    let amqp = &config.amqp;
    // PLANTED BUG (`handshake-deadline-ignored`): no deadline at all.
    let handshake_timeout = (amqp.handshake_timeout_ms > 0
        && !config.plants.handshake_deadline_ignored())
    .then(|| Duration::from_millis(amqp.handshake_timeout_ms.into()));
    let mut engine = ConnectionConfig {
        max_frame_size: amqp.max_frame_size,
        channel_max: amqp.channel_max,
        idle_timeout: (amqp.idle_timeout_ms > 0)
            .then(|| Duration::from_millis(amqp.idle_timeout_ms.into())),
        // Senders with no target address route by each message's `to`;
        // subscriptions may be shared (Qpid JMS will not share one
        // otherwise).
        offered_capabilities: vec![
            Symbol::from_static("ANONYMOUS-RELAY"),
            Symbol::from_static("SHARED-SUBS"),
        ],
        properties: connection_properties(),
        rcv_settle_second: amqp.rcv_settle_mode_second,
        handshake_timeout,
        ..ConnectionConfig::new(amqp.container_id.clone())
    };
    engine.unfinished = config
        .limits
        .unfinished_message_bytes(engine.max_message_size)
        .map(UnfinishedBytes::new);
    engine
}

/// What the broker's `open` says of it, under the keys Qpid's and
/// RabbitMQ's brokers use: clients and test harnesses log them, and some
/// tell brokers apart by them.
fn connection_properties() -> Fields {
    let entry = |key: &'static str, value: String| (Symbol::from_static(key), Value::String(value));
    vec![
        entry("product", "sluice".into()),
        entry("version", env!("CARGO_PKG_VERSION").into()),
        entry(
            "platform",
            format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    use tokio::time::timeout;

    use super::*;
    use crate::io::TokioIo;

    /// Bounds every wait on the real network below; it is never slept out.
    const WAIT: Duration = Duration::from_secs(10);

    /// A broker on `listen` whose state goes to `data_dir`, a temporary
    /// directory: never the default `./sluice-data` in the source tree.
    fn listen_on(listen: SocketAddr, data_dir: &tempfile::TempDir) -> Config {
        Config {
            listen,
            data_dir: data_dir.path().to_owned(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn reports_the_bound_port_and_stops_accepting_on_shutdown() {
        let (trigger, shutdown) = shutdown_channel();
        let (ready, bound) = oneshot::channel();
        let data_dir = tempfile::tempdir().unwrap();
        let config = listen_on("127.0.0.1:0".parse().unwrap(), &data_dir);
        let server = TokioIo.spawn(run(config, TokioIo, shutdown, move |listening| {
            ready.send(listening.addr).unwrap();
        }));

        let addr = timeout(WAIT, bound).await.unwrap().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);

        trigger.trigger();
        timeout(WAIT, server).await.unwrap().unwrap().unwrap();
        let refused = timeout(WAIT, TokioIo.connect(&addr.to_string()))
            .await
            .unwrap();
        assert_eq!(
            refused.map(drop).map_err(|error| error.kind()),
            Err(std::io::ErrorKind::ConnectionRefused)
        );
    }

    #[tokio::test]
    async fn address_in_use_is_a_bind_error() {
        let taken = TokioIo.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let (_trigger, shutdown) = shutdown_channel();
        let data_dir = tempfile::tempdir().unwrap();
        let config = listen_on(addr, &data_dir);
        let result = timeout(WAIT, run(config, TokioIo, shutdown, |_| {})).await;
        let error = result.unwrap().unwrap_err();
        assert!(matches!(&error, ServerError::Bind { addr: failed, .. } if *failed == addr));
        assert_eq!(error.to_string(), format!("cannot listen on {addr}"));
    }

    #[test]
    fn engine_gets_the_configured_limits() {
        let engine = connection_config(&Config::default());
        assert_eq!(engine.container_id, "sluice");
        assert_eq!(engine.max_frame_size, 262_144);
        assert_eq!(engine.channel_max, 255);
        assert_eq!(engine.idle_timeout, Some(Duration::from_secs(60)));
        let pool = engine.unfinished.expect("the watermark is on by default");
        assert_eq!(
            pool.limit_bytes(),
            256 << 20,
            "a quarter of the 1 GiB watermark"
        );
    }

    #[test]
    fn the_unfinished_pool_holds_at_least_one_largest_message() {
        let mut config = Config::default();
        config.limits.memory_high_watermark_bytes = 100 << 20;
        let engine = connection_config(&config);
        let pool = engine.unfinished.expect("the watermark is on");
        assert_eq!(pool.limit_bytes(), engine.max_message_size);
        config.limits.memory_high_watermark_bytes = 0;
        assert!(connection_config(&config).unfinished.is_none());
    }

    #[test]
    fn zero_idle_timeout_means_none() {
        let mut config = Config::default();
        config.amqp.idle_timeout_ms = 0;
        assert_eq!(connection_config(&config).idle_timeout, None);
    }
}
