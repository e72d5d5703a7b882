//! The `sluice` binary as an operator runs it: flags over the configuration
//! file, the ready line, configuration errors, and a clean exit on SIGTERM.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Bounds every wait for the broker's output. A bound, not a sleep: waits
/// end as soon as the line arrives.
const OUTPUT_WAIT: Duration = Duration::from_secs(30);

const READY: &str = "sluice ready: amqp=";

/// A running broker process whose stderr is read line by line.
struct Broker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Broker {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
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
        Self { child, lines }
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
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(kill.success(), "kill -TERM {pid} failed");
        self.exit()
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
    let announced = line.split(READY).nth(1).unwrap();
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
