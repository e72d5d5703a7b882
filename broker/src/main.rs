//! `sluice`, the broker binary: reads flags and the configuration file, sets
//! up logging, and runs [`sluice::server::run`] on tokio until SIGINT
//! (Ctrl-C) or SIGTERM. `sluice passwd` instead hashes a password for a
//! `[[users]]` entry, and `sluice ctl` asks a broker's management API.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, ensure};
use clap::{Args, Parser, Subcommand};
use sluice::config::{Config, LogConfig, LogFormat, Peer};
use sluice::io::{Io, TokioIo};
use sluice::server::{self, auth};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Sluice, a replicated AMQP 1.0 message broker.
///
/// Without a subcommand, runs the broker. Flags override the configuration
/// file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hash a password for a `[[users]]` entry and print the hash.
    ///
    /// Reads the password from the terminal twice, without echo, or, when
    /// standard input is not a terminal, as one line from standard input.
    Passwd(PasswdArgs),
    /// Ask a broker's management API: queues, connections, the cluster.
    ///
    /// Exit codes: 0 done, 1 the broker failed or refused the request as
    /// malformed, 2 usage, 3 cannot reach the broker, 4 refused (401, 403),
    /// 5 not found (404).
    Ctl(sluice::ctl::CtlArgs),
}

#[derive(Debug, Args)]
struct PasswdArgs {
    /// Print a SCRAM-SHA-256 credential (for `scram_sha256`) instead of an
    /// argon2id hash (for `password_hash`, SASL PLAIN)
    #[arg(long)]
    scram: bool,
}

/// The flags of the broker itself.
#[derive(Debug, Args)]
struct RunArgs {
    /// Address for AMQP clients [default: 127.0.0.1:5672]; port 0 picks a
    /// free port
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address for AMQP clients over TLS (`amqps`), with the certificate
    /// and key of the configuration file's `[tls]` [default: none]
    #[arg(long, value_name = "ADDR")]
    listen_tls: Option<SocketAddr>,

    /// Address for the HTTP listener: Prometheus metrics, health probes
    /// and the management API [default: none]
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,

    /// Directory for the broker's state [default: ./sluice-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// TOML configuration file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log line format on stderr [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Log filter: a level such as `info`, or directives such as
    /// `info,sluice::server=debug` [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Truncate the log at the first corrupt record and report what was
    /// lost
    #[arg(long)]
    repair: bool,

    /// This node's id in a cluster [default: 1]
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,

    /// Address other cluster nodes connect to [default: 127.0.0.1:5700]
    #[arg(long, value_name = "ADDR")]
    cluster_listen: Option<SocketAddr>,

    /// Another node of the cluster, as ID=HOST:PORT (repeat for each);
    /// replaces the configuration file's peers. The cluster secret is read
    /// from the file only (`cluster.secret`), never from the command line,
    /// where other users could see it
    #[arg(long = "peer", value_name = "ID=HOST:PORT")]
    peers: Vec<Peer>,
}

impl RunArgs {
    /// Lays the flags that were given over `config`.
    fn apply(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(listen) = self.listen_tls {
            config.tls.listen = Some(listen);
        }
        if let Some(listen) = self.http {
            config.http.listen = Some(listen);
        }
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(level) = self.log_level {
            config.log.level = level;
        }
        config.repair = self.repair;
        if let Some(node_id) = self.node_id {
            config.cluster.node_id = node_id;
        }
        if let Some(listen) = self.cluster_listen {
            config.cluster.listen = listen;
        }
        if !self.peers.is_empty() {
            config.cluster.peers = self.peers;
        }
    }
}

/// Raises the open-file limit as far as the process may, and lowers
/// `limits.max_connections` to fit under it.
fn fit_connections_to_descriptors(config: &mut Config) -> anyhow::Result<()> {
    let limit = match sluice::io::descriptors::raise_limit() {
        Ok(limit) => limit,
        Err(error) => {
            warn!(%error, "cannot raise the open-file limit; limits.max_connections is not fitted under it");
            return Ok(());
        }
    };
    if let Some(configured) = server::fit_to_descriptors(config, limit)? {
        warn!(
            configured,
            lowered_to = config.limits.max_connections,
            open_file_limit = limit,
            "limits.max_connections lowered to fit the open-file limit (raise it with ulimit -n)"
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Passwd(args)) => passwd(&args).map(|()| ExitCode::SUCCESS),
        Some(Command::Ctl(args)) => Ok(sluice::ctl::main(args)),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?
            .block_on(run_broker(cli.run))
            .map(|()| ExitCode::SUCCESS),
    }
}

async fn run_broker(args: RunArgs) -> anyhow::Result<()> {
    let io = TokioIo;
    let mut config = load_config(&io, args).await?;
    init_logging(&config.log)?;
    fit_connections_to_descriptors(&mut config)?;

    // Installed before the server starts, so that a signal sent as soon as
    // the ready line appears is caught rather than killing the process.
    let mut stop_signal = signals::install().context("cannot install signal handlers")?;
    let (trigger, shutdown) = server::shutdown_channel();
    let (ready, listening) = tokio::sync::oneshot::channel();
    let server = server::run(config, io, shutdown, move |listening| {
        let _ = ready.send(listening.cert_reload);
    });
    tokio::pin!(server);
    tokio::pin!(listening);
    let mut cert_reload = None;
    loop {
        tokio::select! {
            result = &mut server => return result.context("the broker stopped"),
            Ok(reload) = &mut listening, if cert_reload.is_none() => {
                cert_reload = Some(reload);
            }
            signal = signals::recv(&mut stop_signal) => match signal {
                signals::Received::Stop(signal) => {
                    info!(signal, "shutdown requested");
                    trigger.trigger();
                    break;
                }
                signals::Received::Reload => match cert_reload.as_ref().and_then(Option::as_ref) {
                    Some(reload) => {
                        info!("SIGHUP: reading the TLS certificate and key again");
                        reload.now();
                    }
                    None => info!("SIGHUP: no TLS certificate to reload"),
                },
            },
        }
    }
    server
        .await
        .context("the broker failed while shutting down")
}

/// The configuration: defaults, then the file named by `--config`, then
/// the other flags.
async fn load_config(io: &TokioIo, args: RunArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => read_config_file(io, path)
            .await
            .with_context(|| format!("cannot load configuration file {}", path.display()))?,
        None => Config::default(),
    };
    args.apply(&mut config);
    config.validate()?;
    Ok(config)
}

async fn read_config_file(io: &TokioIo, path: &Path) -> anyhow::Result<Config> {
    let text = String::from_utf8(io.read_file(path).await?).context("not UTF-8")?;
    Ok(Config::from_toml(&text)?)
}

/// `sluice passwd`: prints the argon2id hash, or with `--scram` the
/// SCRAM-SHA-256 credential, of a password read from the terminal or
/// standard input.
fn passwd(args: &PasswdArgs) -> anyhow::Result<()> {
    let password = read_new_password()?;
    ensure!(!password.is_empty(), "the password is empty");
    if args.scram {
        println!(
            "{}",
            auth::scram_credential(password.as_bytes(), &mut os_rng())
        );
        return Ok(());
    }
    let hash = auth::hash_password(password.as_bytes(), &mut os_rng())
        .context("cannot hash the password")?;
    println!("{hash}");
    Ok(())
}

/// The password, typed twice at a terminal or piped in as one line.
fn read_new_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        return Ok(password.strip_suffix('\r').unwrap_or(password).to_owned());
    }
    let password = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let again =
        rpassword::prompt_password("Repeat password: ").context("cannot read the password")?;
    ensure!(password == again, "the passwords do not match");
    Ok(password)
}

/// The operating system's entropy, for password salts: a salt must be
/// unpredictable, so the broker's seeded generator will not do. (The
/// broker itself draws it only through the seam, `Io::entropy`.)
#[allow(clippy::disallowed_types)]
fn os_rng() -> rand::rngs::OsRng {
    rand::rngs::OsRng
}

/// Sends `tracing` output to stderr in the configured format.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.level)
        .with_context(|| format!("invalid log level {:?}", log.level))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => subscriber
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => subscriber.json().try_init(),
    };
    installed.map_err(|error| anyhow!(error).context("cannot install the logger"))
}

/// The signals the broker acts on: SIGINT (Ctrl-C) and SIGTERM stop it;
/// SIGHUP reloads its TLS certificate.
#[cfg(unix)]
mod signals {
    use tokio::signal::unix::{Signal, SignalKind, signal};

    /// Handlers for the three signals, listening from the moment they exist.
    pub struct StopSignal {
        interrupt: Signal,
        terminate: Signal,
        hangup: Signal,
    }

    /// What a signal asks for.
    pub enum Received {
        /// Stop, named by the signal.
        Stop(&'static str),
        /// Read the TLS certificate again.
        Reload,
    }

    pub fn install() -> std::io::Result<StopSignal> {
        Ok(StopSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(signals: &mut StopSignal) -> Received {
        tokio::select! {
            _ = signals.interrupt.recv() => Received::Stop("SIGINT"),
            _ = signals.terminate.recv() => Received::Stop("SIGTERM"),
            _ = signals.hangup.recv() => Received::Reload,
        }
    }
}

/// The signal that stops the broker where there are no Unix signals: Ctrl-C.
#[cfg(not(unix))]
mod signals {
    /// Nothing to install ahead: `ctrl_c` listens once polled.
    pub struct StopSignal;

    /// What a signal asks for: here, only to stop.
    pub enum Received {
        /// Stop, named by the signal.
        Stop(&'static str),
        /// Never sent here: there is no SIGHUP.
        Reload,
    }

    pub fn install() -> std::io::Result<StopSignal> {
        Ok(StopSignal)
    }

    /// Waits for Ctrl-C. If listening fails, never returns: the broker then
    /// runs until killed, as it would without a handler.
    pub async fn recv(_signals: &mut StopSignal) -> Received {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        Received::Stop("Ctrl-C")
    }
}
