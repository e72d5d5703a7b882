//! Qpid Proton (Python), the client many capital-markets back ends run, opens
//! and closes a connection against the real server entry point.
//!
//! Ignored by a plain `cargo test`: it needs python-qpid-proton, which
//! `scripts/test.sh` installs into a virtualenv and names in `SLUICE_PYTHON`
//! before running the ignored tests too.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

mod common;

use common::{Broker, WAIT};
use tokio::time::timeout;

/// Runs one of the committed client scripts against the broker at `url`.
// The client is a separate process on the real network: blocking on it is
// what this test is about, and no simulator is involved.
#[allow(clippy::disallowed_methods)]
async fn run_script(script: &str, url: String) -> std::process::Output {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/interop")
        .join(script);
    let run =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(url).output());
    timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .expect("python starts")
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_opens_and_closes_with_sasl_anonymous() {
    let broker = Broker::start().await;

    let output = run_script("proton_handshake.py", broker.url()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "proton client failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("opened: remote container 'sluice'"),
        "{stdout}"
    );
    assert!(stdout.contains("closed"), "{stdout}");

    broker.stop().await;
}
