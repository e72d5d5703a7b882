//! What the integration tests share: a broker on a loopback port, a
//! 3-node cluster of them ([`cluster`]), and clients of the HTTP listener
//! ([`http`]).

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod http;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use bytes::Bytes;
use sluice::amqp::types::{Header, Message, Section};
use sluice::config::{Config, User, UserLimits};
use sluice::io::{Io, TokioIo};
use sluice::node::NodeHandle;
use sluice::sasl::scram::ScramCredential;
use sluice::server::auth::Argon2Hash;
use sluice::server::{self, ShutdownTrigger, shutdown_channel};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bounds every wait on the real network; never slept out.
pub const WAIT: Duration = Duration::from_secs(30);

/// A broker running `server::run` on `TokioIo` (or the seam given to
/// `start_on`), on a free loopback port.
pub struct Broker {
    pub addr: SocketAddr,
    /// The TLS listener's address, if the configuration has one.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTP listener's address, if the configuration has one.
    pub http_addr: Option<SocketAddr>,
    /// The broker's node, for asking it about its queues and replicas. The
    /// node stops only once every handle is gone: drop clones before `stop`.
    pub node: NodeHandle,
    trigger: ShutdownTrigger,
    server: JoinHandle<Result<(), server::ServerError>>,
    /// The data directory `start` made for this broker alone; removed when
    /// the broker is dropped.
    data_dir: Option<TempDir>,
}

/// A configuration for a test broker: a free loopback port, defaults
/// otherwise. `data_dir` still needs setting (see `Broker::start`).
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        ..Config::default()
    }
}

impl Broker {
    /// A broker on a free loopback port with a fresh data directory of its
    /// own, so tests never share state or write into the work tree.
    pub async fn start() -> Self {
        Self::start_configured(test_config()).await
    }

    /// Like [`Broker::start`], configured by `toml` (queue settings and
    /// the like; the address and data directory are the test's).
    pub async fn start_from_toml(toml: &str) -> Self {
        let config = Config {
            listen: test_config().listen,
            ..Config::from_toml(toml).expect("a valid test configuration")
        };
        Self::start_configured(config).await
    }

    /// `config` on a fresh data directory of the broker's own.
    pub async fn start_configured(config: Config) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("a temporary data directory");
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            ..config
        };
        let mut broker = Self::start_with(config).await;
        broker.data_dir = Some(data_dir);
        broker
    }

    /// A broker with exactly `config`: the caller chooses the listen address
    /// and owns the data directory.
    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, TokioIo).await
    }

    /// A broker with exactly `config`, on `io`.
    pub async fn start_on<I: Io>(config: Config, io: I) -> Self {
        let (trigger, shutdown) = shutdown_channel();
        let (ready, bound) = oneshot::channel();
        let server = io.spawn(server::run(
            config,
            io.clone(),
            shutdown,
            move |listening| {
                let _ = ready.send(listening);
            },
        ));
        let listening = timeout(WAIT, bound)
            .await
            .expect("the broker binds in time")
            .expect("the broker reports its address");
        Self {
            addr: listening.addr,
            tls_addr: listening.tls_addr,
            http_addr: listening.http_addr,
            node: listening.node,
            trigger,
            server,
            data_dir: None,
        }
    }

    /// The data directory `start` made, if this broker has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(TempDir::path)
    }

    pub fn url(&self) -> String {
        format!("amqp://{}", self.addr)
    }

    /// Shuts the broker down and checks that it stopped cleanly.
    pub async fn stop(self) {
        let Self {
            trigger,
            server,
            node,
            data_dir,
            ..
        } = self;
        // The node ends once every handle to it is gone, this one included.
        drop(node);
        trigger.trigger();
        timeout(WAIT, server)
            .await
            .expect("the broker stops in time")
            .expect("the server task does not panic")
            .expect("the server ends without error");
        drop(data_dir);
    }
}

/// An account with both credentials: an argon2 hash with cheap parameters
/// (m = 8 KiB, t = 1), so that the broker's checks stay fast in an
/// unoptimized build, and a SCRAM-SHA-256 credential.
pub fn user(name: &str, password: &str) -> User {
    let salt = SaltString::encode_b64(name.repeat(8).as_bytes()).unwrap();
    let params = Params::new(8, 1, 1, None).unwrap();
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap();
    User {
        name: name.to_owned(),
        password_hash: Some(Argon2Hash::parse(&hash.to_string()).unwrap()),
        scram_sha256: Some(ScramCredential::derive(
            password.as_bytes(),
            name.as_bytes(),
            4096,
        )),
        limits: UserLimits::default(),
    }
}
/// `[[queue]]` entries for the interop tests' queue-type scenarios, each
/// client's under its own prefix: `{prefix}-priority`, `{prefix}-last-value`
/// (keyed on the application property `instrument`), `{prefix}-groups` and
/// `{prefix}-single-active`.
pub fn queue_types_toml(prefix: &str) -> String {
    format!(
        r#"
        [[queue]]
        name = "{prefix}-priority"
        type = "priority"

        [[queue]]
        name = "{prefix}-last-value"
        type = "last-value"
        last_value_key = "instrument"

        [[queue]]
        name = "{prefix}-groups"
        message_groups = true

        [[queue]]
        name = "{prefix}-single-active"
        single_active_consumer = true
        "#
    )
}

/// Bounds a whole client script run; each script bounds its own waits below
/// this, so a timeout here means the client hung.
pub const CLIENT_WAIT: Duration = Duration::from_secs(60);

/// A committed client script under `scripts/interop/`.
pub fn interop_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/interop")
        .join(name)
}

/// Runs `program` with `args` (a client script and its arguments), bounded by
/// `CLIENT_WAIT`; a client still running then is killed, and its output so
/// far is the panic message.
// The client is a separate process on the real network: blocking on it is
// what these tests are about, and no simulator is involved.
#[allow(clippy::disallowed_methods)]
pub async fn run_client(program: &str, args: &[String]) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} starts: {error}"));
    let pid = child.id();
    let mut run = tokio::task::spawn_blocking(move || child.wait_with_output());
    match timeout(CLIENT_WAIT, &mut run).await {
        Ok(output) => output
            .expect("the client task does not panic")
            .expect("the client's output is read"),
        Err(_) => {
            // Kill only the client this call started, by its id.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let output = timeout(WAIT, run).await;
            let (stdout, stderr) = match output {
                Ok(Ok(Ok(output))) => (
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                ),
                _ => (String::new(), String::new()),
            };
            panic!(
                "{program} {args:?} still running after {CLIENT_WAIT:?}: killed\n\
                 stdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
    }
}

/// Asserts that a client script exited 0, showing everything it printed
/// (one `ok:` or `FAIL:` line per check) when it did not.
pub fn assert_client_passed(client: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{client} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("FAIL"),
        "{client} exited 0 but reported a failure:\n{stdout}"
    );
    stdout
}

/// A durable message whose body is `i`, big-endian: what the crash tests
/// send, so that what arrives names what was sent.
pub fn numbered_message(i: u32) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from(i.to_be_bytes().to_vec())),
        ],
    }
    .encode()
}

/// The number in a [`numbered_message`].
pub fn number_of(message: Bytes) -> u32 {
    let message = Message::decode(message).expect("a message");
    let body = message
        .sections
        .iter()
        .find_map(|s| match s {
            Section::Data(data) => Some(data.clone()),
            _ => None,
        })
        .expect("a data section");
    u32::from_be_bytes(body[..4].try_into().expect("4 bytes"))
}

/// A client connected to `address` under turmoil, trying again every 50 ms
/// of simulated time while the broker there is down or still recovering.
#[cfg(feature = "sim")]
pub async fn connect_when_up(
    address: &str,
    container_id: &str,
) -> sluice::client::Client<sluice::io::TurmoilIo> {
    use sluice::amqp::engine::{ClientSasl, ConnectionConfig};
    loop {
        let attempt = sluice::client::Client::connect(
            sluice::io::TurmoilIo,
            address,
            ConnectionConfig::new(container_id),
            ClientSasl::Anonymous,
        )
        .await;
        match attempt {
            Ok(client) => return client,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
