//! The `sluice` binary as an operator runs it: flags over the configuration
//! file, the ready line (with the TLS and HTTP listeners' addresses), configuration
//! errors, a clean exit on SIGTERM, and `sluice passwd` hashes that the
//! broker then accepts.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use common::pki::Pki;

use fe2o3_amqp::Connection;
use fe2o3_amqp::sasl_profile::{SaslProfile, SaslScramSha256};
use sluice::io::{Io, TokioIo};
use sluice::server::auth::Argon2Hash;
use tempfile::TempDir;

/// Bounds every wait for the broker's output. A bound, not a sleep: waits
/// end as soon as the line arrives.
const OUTPUT_WAIT: Duration = Duration::from_secs(30);

const READY: &str = "sluice ready: amqp=";
const READY_TLS: &str = " amqps=";
const READY_HTTP: &str = " http=";

/// A running broker process whose stderr is read line by line.
struct Broker {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The broker's own data directory, so that tests never write into the
    /// work tree; removed when the broker is dropped.
    _data_dir: TempDir,
}

impl Broker {
    /// Starts `sluice` with `args`, in a fresh data directory.
    fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_sluice")), args)
    }

    /// As [`Broker::start`], with at most `limit` open files (soft and hard
    /// limits both, so that the broker cannot raise it).
    fn start_with_open_file_limit(limit: u64, args: &[&str]) -> Self {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_sluice"),
        ]);
        Self::spawn(shell, args)
    }

    /// Runs `command` (which runs `sluice`) with `args`, in a fresh data
    /// directory.
    fn spawn(mut command: Command, args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        // A plain thread forwarding the child's stderr: blocking reads of a
        // real pipe, outside any simulation.
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            _data_dir: data_dir,
        }
    }

    /// Waits for the first line containing `needle`.
    fn line_containing(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(OUTPUT_WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!("no line containing {needle:?} on stderr: {error}"),
            }
        }
    }

    /// Waits for the ready line and returns the address it announces.
    fn ready_addr(&self) -> SocketAddr {
        announced_addr(&self.line_containing(READY))
    }

    /// Sends SIGTERM, then waits for stderr to close and the process to exit.
    /// Returns the exit status and the lines logged meanwhile.
    fn terminate(self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        self.exit()
    }

    /// Sends the signal `name` (as `kill -NAME` spells it).
    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(kill.success(), "kill -{name} {pid} failed");
    }

    /// Waits for stderr to close and the process to exit.
    fn exit(mut self) -> (ExitStatus, Vec<String>) {
        let mut logged = Vec::new();
        loop {
            match self.lines.recv_timeout(OUTPUT_WAIT) {
                Ok(line) => logged.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("still running; logged {logged:#?}"),
            }
        }
        (self.child.wait().unwrap(), logged)
    }
}

impl Drop for Broker {
    /// A failed test must not leave a broker running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a ready line, text or JSON.
fn announced_addr(line: &str) -> SocketAddr {
    addr_after(line, READY)
}

/// The address that follows `label` in `line`.
fn addr_after(line: &str, label: &str) -> SocketAddr {
    let announced = line.split(label).nth(1).unwrap();
    let addr = announced
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .unwrap();
    addr.parse()
        .unwrap_or_else(|error| panic!("{addr:?} in {line:?}: {error}"))
}

fn config_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

#[test]
fn announces_its_port_and_exits_cleanly_on_sigterm() {
    let broker = Broker::start(&["--listen", "127.0.0.1:0", "--log-format", "text"]);
    let addr = broker.ready_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
    assert!(
        logged.iter().any(|line| line.contains("sluice stopped")),
        "{logged:#?}"
    );
}

#[test]
fn flags_override_the_configuration_file() {
    let file = config_file(
        r#"
        listen = "127.0.0.1:1"
        [log]
        format = "json"
        level = "warn"
        "#,
    );
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "info",
    ]);

    // JSON from the file, the level and address from the flags.
    let line = broker.line_containing(READY);
    assert!(
        line.starts_with('{') && line.contains(r#""level":"INFO""#),
        "{line}"
    );
    let addr = announced_addr(&line);
    assert_ne!(addr.port(), 1);
    assert_ne!(addr.port(), 0);

    let (status, _) = broker.terminate();
    assert!(status.success());
}

#[test]
fn unknown_configuration_field_stops_start_up_with_its_name() {
    let file = config_file("lisen = \"127.0.0.1:0\"\n");
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&["--config", path]);

    let (status, logged) = broker.exit();
    assert!(!status.success());
    let report = logged.join("\n");
    assert!(report.contains(path), "{report}");
    assert!(report.contains("unknown field `lisen`"), "{report}");
    assert!(!report.contains(READY), "{report}");
}

#[test]
fn cluster_peers_without_a_secret_stop_start_up_clearly() {
    let peers = [
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "2",
        "--peer",
        "1=127.0.0.1:1",
    ];
    let (status, logged) = Broker::start(&peers).exit();
    assert!(!status.success());
    let report = logged.join("\n");
    assert!(report.contains("cluster.secret"), "{report}");
    assert!(!report.contains(READY), "{report}");
}

#[test]
fn the_tls_listener_is_announced_and_speaks_tls_then_amqp() {
    let pki = Pki::new();
    let file = config_file(&format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.cert_file, pki.key_file
    ));
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--listen-tls",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    let line = broker.line_containing(READY);
    let (plain, tls) = (announced_addr(&line), addr_after(&line, READY_TLS));
    assert_ne!(plain, tls, "{line}");
    // Every listener, in the order `amqp= amqps= http=`.
    let http = addr_after(&line, READY_HTTP);
    assert!(line.find(READY_TLS) < line.find(READY_HTTP), "{line}");
    assert_ne!(http, tls, "{line}");

    let header = sasl_header_over_tls(tls, &pki);
    assert_eq!(
        &header, b"AMQP\x03\x01\x00\x00",
        "the SASL header, inside TLS"
    );

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}

/// SIGHUP reads the certificate and key again: a renewed certificate is
/// served from then on; a broken one is refused, and the old one served on.
#[test]
fn sighup_reloads_the_tls_certificate() {
    let pki = Pki::new();
    let file = config_file(&format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval_ms = 0\n",
        pki.cert_file, pki.key_file
    ));
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--listen-tls",
        "127.0.0.1:0",
    ]);
    let tls = addr_after(&broker.line_containing(READY), READY_TLS);
    let first = served_certificate(tls, &pki);

    let renewed = pki.renew_broker_certificate();
    assert_ne!(renewed, first);
    broker.signal("HUP");
    broker.line_containing("TLS certificate reloaded");
    assert_eq!(served_certificate(tls, &pki), renewed);

    let key = read_file(&pki.key_file);
    write_file(&pki.key_file, b"not a key");
    broker.signal("HUP");
    broker.line_containing("TLS certificate not reloaded");
    assert_eq!(served_certificate(tls, &pki), renewed);
    write_file(&pki.key_file, &key);

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}

/// The certificate the TLS listener at `addr` presents, to a client that
/// trusts `pki`'s CA.
#[allow(clippy::disallowed_types)]
fn served_certificate(addr: SocketAddr, pki: &Pki) -> rustls::pki_types::CertificateDer<'static> {
    let name = "localhost".try_into().unwrap();
    let session = rustls::ClientConnection::new(Arc::new(pki.client_config()), name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(OUTPUT_WAIT)).unwrap();
    let mut stream = rustls::StreamOwned::new(session, socket);
    // A round trip completes the handshake: the SASL header comes back.
    stream.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    let mut header = [0; 8];
    stream.read_exact(&mut header).unwrap();
    stream.conn.peer_certificates().unwrap()[0].clone()
}

/// Replaces a test fixture on the real disk.
#[allow(clippy::disallowed_methods)]
fn write_file(path: &std::path::Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
}

/// The value of `field=…` in a log line.
fn logged_field(line: &str, field: &str) -> String {
    let start = line
        .find(&format!("{field}="))
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"))
        + field.len()
        + 1;
    line[start..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

/// With an open-file limit far below `limits.max_connections`, the broker
/// lowers the cap to fit and refuses the excess at accept: `accept` never
/// fails for want of descriptors, and once the crowd leaves, a client is
/// served again. Plain sockets: the crowd needs no more than to connect.
#[test]
#[allow(clippy::disallowed_types)]
fn max_connections_is_held_below_the_open_file_limit() {
    const OPEN_FILES: u64 = 700;
    // No address cap in the way: every connection comes from this test.
    let config = config_file("[limits]\nmax_handshakes_per_source = 100000\n");
    let config_path = config.path().to_str().unwrap();
    let broker = Broker::start_with_open_file_limit(
        OPEN_FILES,
        &["--listen", "127.0.0.1:0", "--config", config_path],
    );
    let lowered = broker.line_containing("limits.max_connections lowered");
    let cap: u64 = logged_field(&lowered, "lowered_to").parse().unwrap();
    assert!(cap > 0 && cap < OPEN_FILES, "{lowered}");
    let addr = broker.ready_addr();

    let crowd: Vec<std::net::TcpStream> = (0..cap + 50)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let refused = broker.line_containing("connection refused at accept");
    assert_eq!(logged_field(&refused, "refused"), "Full", "{refused}");
    drop(crowd);
    // The broker notices the crowd's sockets closing in its own time: until
    // then a newcomer may still be refused, so try again, within a bound.
    let served = (0..200).any(|_| {
        let served = amqp_header_answered(addr);
        if !served {
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    });
    assert!(served, "no client served once the crowd left");

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status:?}: {logged:#?}");
    let starved = logged
        .iter()
        .find(|line| line.contains("Too many open files"));
    assert!(starved.is_none(), "{starved:?}");
}

/// Whether the broker at `addr` answers a SASL protocol header with its own.
#[allow(clippy::disallowed_types)]
fn amqp_header_answered(addr: SocketAddr) -> bool {
    const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let mut answer = [0; 8];
    stream.set_read_timeout(Some(OUTPUT_WAIT)).unwrap();
    stream.write_all(&SASL_HEADER).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && answer == SASL_HEADER
}

/// Reads a test fixture from the real disk.
#[allow(clippy::disallowed_methods)]
fn read_file(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn the_http_listener_from_the_file_is_announced_and_serves_health() {
    let file = config_file("[http]\nlisten = \"127.0.0.1:0\"\n");
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&["--config", path, "--listen", "127.0.0.1:0"]);
    let line = broker.line_containing(READY);
    assert!(!line.contains(READY_TLS), "{line}");
    let http = addr_after(&line, READY_HTTP);
    let answer = http_get(http, "/health");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            r#""status": "up"
}"#
        ),
        "{answer}"
    );

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}

/// The whole answer to `GET path`, over a blocking socket to the real
/// process.
#[allow(clippy::disallowed_types)]
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(OUTPUT_WAIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Sends SASL's protocol header to the TLS listener at `addr`, inside TLS,
/// trusting `pki`'s CA, and returns the broker's answering header: a
/// blocking rustls client on a real socket to the real process.
#[allow(clippy::disallowed_types)]
fn sasl_header_over_tls(addr: SocketAddr, pki: &Pki) -> [u8; 8] {
    let config = pki.client_config();
    let name = "localhost".try_into().unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(OUTPUT_WAIT)).unwrap();
    let mut stream = rustls::StreamOwned::new(session, socket);
    stream.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    let mut header = [0; 8];
    stream.read_exact(&mut header).unwrap();
    header
}

#[test]
fn a_tls_listener_without_a_certificate_stops_start_up_clearly() {
    let args = ["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"];
    let (status, logged) = Broker::start(&args).exit();
    assert!(!status.success());
    let report = logged.join("\n");
    assert!(report.contains("tls.cert_file"), "{report}");
    assert!(!report.contains(READY), "{report}");
}

/// Runs `sluice passwd` with `input` on its standard input (a pipe, not a
/// terminal, so it reads one line without prompting).
fn passwd(input: &str) -> Output {
    passwd_with(&[], input)
}

/// `sluice passwd` with `flags`, given `input` on standard input.
fn passwd_with(flags: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("passwd")
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The one line `sluice passwd` printed.
fn printed_hash(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let (line, rest) = stdout.split_once('\n').unwrap();
    assert_eq!(rest, "", "one line only: {stdout:?}");
    line.to_owned()
}

#[test]
fn passwd_prints_an_argon2id_hash_that_verifies() {
    let hash = printed_hash(&passwd("correct horse battery staple\n"));
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let parsed = Argon2Hash::parse(&hash).unwrap();
    assert!(parsed.verify(b"correct horse battery staple"));
    assert!(!parsed.verify(b"correct horse battery staple\n"));

    // A fresh salt each time, and a Windows line ending is not part of the
    // password.
    let again = printed_hash(&passwd("correct horse battery staple\r\n"));
    assert_ne!(again, hash);
    assert!(
        Argon2Hash::parse(&again)
            .unwrap()
            .verify(b"correct horse battery staple")
    );
}

#[test]
fn passwd_refuses_an_empty_password() {
    for input in ["", "\n"] {
        let output = passwd(input);
        assert!(!output.status.success(), "{input:?}: {output:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("the password is empty"), "{stderr}");
    }
}

/// fe2o3 logging in to `url` with PLAIN.
async fn open_plain(
    url: &str,
    username: &str,
    password: &str,
) -> Result<fe2o3_amqp::connection::ConnectionHandle<()>, fe2o3_amqp::connection::OpenError> {
    Connection::builder()
        .container_id("cli-test")
        .sasl_profile(SaslProfile::Plain {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .open(url)
        .await
}

#[test]
fn passwd_scram_prints_a_scram_sha256_credential() {
    let credential = printed_hash(&passwd_with(&["--scram"], "pencil\n"));
    let parsed: sluice::sasl::scram::ScramCredential = credential.parse().unwrap();
    assert_eq!(parsed.to_string(), credential);
    assert!(
        credential.starts_with("SCRAM-SHA-256$4096:"),
        "{credential}"
    );
    // A fresh salt every time.
    assert_ne!(
        printed_hash(&passwd_with(&["--scram"], "pencil\n")),
        credential
    );
}

#[test]
fn a_user_made_with_passwd_logs_in_and_anonymous_is_refused() {
    let hash = printed_hash(&passwd("wonderland\n"));
    let scram = printed_hash(&passwd_with(&["--scram"], "wonderland\n"));
    let file = config_file(&format!(
        "[auth]\nallow_plain_without_tls = true\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nscram_sha256 = \"{scram}\"\n"
    ));
    let broker = Broker::start(&[
        "--config",
        file.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = format!("amqp://{}", broker.ready_addr());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection =
            tokio::time::timeout(OUTPUT_WAIT, open_plain(&url, "alice", "wonderland"))
                .await
                .unwrap()
                .expect("the password given to `sluice passwd` logs in");
        connection.close().await.unwrap();
        assert!(open_plain(&url, "alice", "looking-glass").await.is_err());
        let mut connection = Connection::builder()
            .container_id("cli-test")
            .sasl_profile(SaslProfile::from(SaslScramSha256::new(
                "alice",
                "wonderland",
            )))
            .open(url.as_str())
            .await
            .expect("the password given to `sluice passwd --scram` logs in");
        connection.close().await.unwrap();
        let anonymous = Connection::builder()
            .container_id("cli-test")
            .sasl_profile(SaslProfile::Anonymous)
            .open(url.as_str())
            .await;
        assert!(anonymous.is_err());
    });

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}

#[test]
fn a_malformed_password_hash_stops_start_up_naming_the_user() {
    let file = config_file("[[users]]\nname = \"alice\"\npassword_hash = \"hunter2\"\n");
    let broker = Broker::start(&["--config", file.path().to_str().unwrap()]);

    let (status, logged) = broker.exit();
    assert!(!status.success());
    let report = logged.join("\n");
    assert!(report.contains("user `alice`"), "{report}");
    assert!(!report.contains(READY), "{report}");
}

#[test]
fn repair_is_accepted_as_a_flag() {
    let broker = Broker::start(&["--listen", "127.0.0.1:0", "--repair"]);
    broker.ready_addr();
    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}

/// The flags as `--help` documents them: a change to the command line shows
/// up in review.
#[test]
fn help_lists_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    insta::assert_snapshot!(String::from_utf8(output.stdout).unwrap());
}

/// Neither a password nor a message body reaches the log, at the most
/// verbose level, when a login fails, a message is sent, delivered and
/// refused by its consumer, or a SASL frame arrives out of turn.
#[test]
fn logs_never_carry_passwords_or_message_bodies() {
    use fe2o3_amqp::link::delivery::Delivery;
    use fe2o3_amqp::types::definitions::{AmqpError, Error};
    use fe2o3_amqp::{Receiver, Sender};

    const PASSWORD: &str = "CANARY-PASSWORD-8c1f";
    const WRONG_PASSWORD: &str = "CANARY-WRONG-PASSWORD-8c1f";
    const BODY: &str = "CANARY-BODY-8c1f";
    let hash = printed_hash(&passwd(&format!("{PASSWORD}\n")));
    let file = config_file(&format!(
        "[log]\nlevel = \"trace\"\n\
         [auth]\nallow_plain_without_tls = true\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"
    ));
    let broker = Broker::start(&[
        "--config",
        file.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = broker.ready_addr();
    let url = format!("amqp://{addr}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let refused =
            tokio::time::timeout(OUTPUT_WAIT, open_plain(&url, "alice", WRONG_PASSWORD)).await;
        assert!(refused.expect("the refusal comes in time").is_err());
        let mut connection = tokio::time::timeout(OUTPUT_WAIT, open_plain(&url, "alice", PASSWORD))
            .await
            .unwrap()
            .unwrap();
        let mut session = fe2o3_amqp::Session::begin(&mut connection).await.unwrap();
        let mut sender = Sender::attach(&mut session, "canary", "canary")
            .await
            .unwrap();
        tokio::time::timeout(OUTPUT_WAIT, sender.send(BODY))
            .await
            .expect("the send is answered in time")
            .unwrap();
        // A consumer refuses it: the broker drops it (no dead-letter queue).
        let mut receiver = Receiver::attach(&mut session, "refuser", "canary")
            .await
            .unwrap();
        let delivery: Delivery<String> = tokio::time::timeout(OUTPUT_WAIT, receiver.recv())
            .await
            .expect("the message is delivered in time")
            .unwrap();
        assert_eq!(delivery.body(), BODY);
        receiver
            .reject(
                &delivery,
                Some(Error::new(AmqpError::NotAllowed, None, None)),
            )
            .await
            .unwrap();
        let _ = receiver.close().await;
        let _ = sender.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;

        // A SASL response nobody asked for, carrying the password.
        let mut raw = TokioIo.connect(&addr.to_string()).await.unwrap();
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(b"AMQP\x03\x01\x00\x00");
        sluice::amqp::frame::put_sasl_frame(
            &mut out,
            &sluice::amqp::types::SaslFrame::Response(sluice::amqp::types::SaslResponse {
                response: bytes::Bytes::from(format!("\0alice\0{PASSWORD}")),
            }),
        );
        tokio::io::AsyncWriteExt::write_all(&mut raw, &out)
            .await
            .unwrap();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(
            OUTPUT_WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest),
        )
        .await;
        assert!(ended.is_ok(), "the broker ends the connection");
    });

    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
    assert!(
        logged.iter().any(|line| line.contains("login refused")),
        "the failed login is logged: {logged:#?}"
    );
    assert!(
        logged
            .iter()
            .any(|line| line.contains("unexpected SASL frame")),
        "the stray SASL frame is logged: {logged:#?}"
    );
    for line in &logged {
        assert!(!line.contains("CANARY"), "{line}");
    }
}

/// Writes `~/.config/sluice/ctl.toml` under `home`: a real file, for the
/// child process to find, outside any simulation.
#[allow(clippy::disallowed_methods)]
fn write_default_ctl_file(home: &std::path::Path, contents: &str) {
    let dir = home.join(".config/sluice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ctl.toml"), contents).unwrap();
}

/// `sluice ctl ARGS` with only `env` of the `SLUICE_*` variables, and a
/// `HOME` without a `ctl.toml`: its exit code, stdout and stderr.
fn ctl(args: &[&str], env: &[(&str, &str)], home: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("ctl")
        .args(args)
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_USER")
        .env_remove("SLUICE_PASSWORD")
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    let code = output.status.code().unwrap();
    (code, text(output.stdout), text(output.stderr))
}

/// `sluice ctl` against a real broker: tables (snapshots), `--json` as the
/// API sends it, a purge, each documented exit code, and where the URL and
/// credentials come from: flags over the environment over the file.
#[test]
fn ctl_asks_the_management_api_and_exits_as_documented() {
    const PASSWORD: &str = "ctl-password";
    let hash = printed_hash(&passwd(&format!("{PASSWORD}\n")));
    let file = config_file(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\nallow_plain_without_tls = true\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"
    ));
    let path = file.path().to_str().unwrap();
    let broker = Broker::start(&["--config", path, "--listen", "127.0.0.1:0"]);
    let line = broker.line_containing(READY);
    let (amqp, http) = (announced_addr(&line), addr_after(&line, READY_HTTP));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("amqp://{amqp}");
        let mut connection = open_plain(&url, "alice", PASSWORD).await.unwrap();
        let mut session = fe2o3_amqp::Session::begin(&mut connection).await.unwrap();
        for queue in ["orders", "orders.eu"] {
            let mut sender = fe2o3_amqp::Sender::attach(&mut session, queue, queue)
                .await
                .unwrap();
            for body in ["a", "b"] {
                tokio::time::timeout(OUTPUT_WAIT, sender.send(body))
                    .await
                    .unwrap()
                    .unwrap();
            }
            sender.close().await.unwrap();
        }
        session.end().await.unwrap();
        connection.close().await.unwrap();
    });

    let home = tempfile::tempdir().unwrap();
    let password_file = config_file(&format!("{PASSWORD}\n"));
    let url = format!("http://{http}");
    let login = [
        "--url",
        url.as_str(),
        "--user",
        "alice",
        "--password-file",
        password_file.path().to_str().unwrap(),
    ];
    fn joined<'a>(first: &[&'a str], then: &[&'a str]) -> Vec<&'a str> {
        [first, then].concat()
    }
    let with = |args: &[&'static str]| joined(&login, args);
    let (code, queues, stderr) = ctl(&with(&["queues"]), &[], home.path());
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("ctl_queues", queues);
    let (code, status, _) = ctl(&with(&["cluster", "status"]), &[], home.path());
    assert_eq!(code, 0);
    // The group's applied index is volatile: its column is normalised.
    let normalised: Vec<String> = status
        .lines()
        .enumerate()
        .map(|(number, line)| match number {
            2 => {
                let columns: Vec<&str> = line.split_whitespace().collect();
                format!(
                    "{:>5}  {:>6}  {:>7}  {:<9}  {:>4}  {:>6}  {}",
                    columns[0], columns[1], "N", columns[3], columns[4], columns[5], columns[6]
                )
            }
            _ => line.to_owned(),
        })
        .collect();
    insta::assert_snapshot!("ctl_cluster_status", normalised.join("\n"));
    let (code, json, _) = ctl(&with(&["queues", "--json"]), &[], home.path());
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["name"], "orders.eu");
    assert_eq!(json[1]["messages"], 2);

    let (code, purged, _) = ctl(&with(&["purge", "orders.eu"]), &[], home.path());
    assert_eq!(
        (code, purged.as_str()),
        (0, "purged 2 ready messages from orders.eu\n")
    );
    let (_, shown, _) = ctl(&with(&["queue", "show", "orders.eu"]), &[], home.path());
    let messages = shown.lines().find(|line| line.starts_with("messages "));
    assert_eq!(
        messages.and_then(|line| line.split_whitespace().nth(1)),
        Some("0"),
        "{shown}"
    );
    let (code, health, _) = ctl(&with(&["health"]), &[], home.path());
    assert_eq!((code, health.as_str()), (0, "up\n"));

    // The exit codes.
    let exit = |args: &[&str], env: &[(&str, &str)]| ctl(args, env, home.path()).0;
    assert_eq!(exit(&with(&["queue", "show", "nothing"]), &[]), 5);
    assert_eq!(exit(&with(&["close", "999"]), &[]), 5);
    assert_eq!(exit(&with(&["delete", "orders"]), &[]), 2, "--yes needed");
    assert_eq!(exit(&with(&["frobnicate"]), &[]), 2);
    assert_eq!(exit(&with(&["move", "orders", "--to", "orders"]), &[]), 1);
    let wrong = [
        "--url",
        url.as_str(),
        "--user",
        "alice",
        "--password",
        "nope",
        "queues",
    ];
    assert_eq!(exit(&wrong, &[]), 4);
    assert_eq!(
        exit(&["--url", url.as_str(), "queues"], &[]),
        4,
        "no credentials"
    );
    assert_eq!(exit(&["--url", "http://127.0.0.1:1", "health"], &[]), 3);
    assert_eq!(exit(&["--url", "https://127.0.0.1:1", "health"], &[]), 2);

    // Flags over the environment over the file.
    let unreachable = "http://127.0.0.1:1";
    let env = [
        ("SLUICE_URL", url.as_str()),
        ("SLUICE_USER", "alice"),
        ("SLUICE_PASSWORD", PASSWORD),
    ];
    assert_eq!(exit(&["queues"], &env), 0, "all from the environment");
    assert_eq!(
        exit(&["--url", unreachable, "queues"], &env),
        3,
        "the flag wins"
    );
    let ctl_file = config_file(&format!(
        "url = \"{unreachable}\"\nuser = \"alice\"\npassword = \"nope\"\n"
    ));
    let from_file = ["--ctl-config", ctl_file.path().to_str().unwrap(), "queues"];
    assert_eq!(exit(&from_file, &[]), 3, "the file's URL");
    assert_eq!(exit(&from_file, &env), 0, "the environment over the file");
    assert_eq!(
        exit(&from_file, &[("SLUICE_URL", url.as_str())]),
        4,
        "the file's password"
    );
    let default_file = format!("url = \"{url}\"\nuser = \"alice\"\npassword = \"{PASSWORD}\"\n");
    write_default_ctl_file(home.path(), &default_file);
    assert_eq!(exit(&["queues"], &[]), 0, "~/.config/sluice/ctl.toml");

    let (code, deleted, _) = ctl(&with(&["delete", "orders", "--yes"]), &[], home.path());
    assert_eq!((code, deleted.as_str()), (0, "deleted queue orders\n"));
    let (status, logged) = broker.terminate();
    assert!(status.success(), "{status}; logged {logged:#?}");
}
