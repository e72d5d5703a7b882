//! Qpid Proton (Python), the client many capital-markets back ends run,
//! against the real server entry point: the handshake, then each messaging
//! scenario in `scripts/interop/proton_*.py` (queue, topic, request/reply
//! over a dynamic queue and anonymous relay, browse, selectors, transactions,
//! JMS's temporary nodes and unsubscribe, and the configured queue types).
//!
//! Ignored by a plain `cargo test`: they need python-qpid-proton, which
//! `scripts/test.sh` installs into a virtualenv and names in `SLUICE_PYTHON`
//! before running the ignored tests too.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::pki::{tls_client_certificate_passes, tls_client_passes};
use common::{Broker, assert_client_passed, interop_script, queue_types_toml, run_client};

/// Runs `scripts/interop/{script}` against a broker of its own and returns
/// what it printed, having checked that it passed.
async fn run_scenario(script: &str) -> String {
    run_against(script, Broker::start().await).await
}

async fn run_against(script: &str, broker: Broker) -> String {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script_path = interop_script(script).display().to_string();
    let output = run_client(&python, &[script_path, broker.url()]).await;
    let stdout = assert_client_passed(&format!("proton client {script}"), &output);
    broker.stop().await;
    stdout
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_opens_and_closes_with_sasl_anonymous() {
    let stdout = run_scenario("proton_handshake.py").await;
    assert!(
        stdout.contains("opened: remote container 'sluice'"),
        "{stdout}"
    );
    assert!(stdout.contains("property product: 'sluice'"), "{stdout}");
    let version = format!("property version: '{}'", env!("CARGO_PKG_VERSION"));
    assert!(stdout.contains(&version), "{stdout}");
    assert!(stdout.contains("property platform: '"), "{stdout}");
    // Half the 60 s the broker enforces (AMQP 1.0 §2.4.5).
    assert!(stdout.contains("remote idle time-out: 30.0"), "{stdout}");
    assert!(stdout.contains("closed"), "{stdout}");
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_sends_and_receives_on_a_queue() {
    run_scenario("proton_queue.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_topic_delivers_to_every_subscriber() {
    run_scenario("proton_topic.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_request_reply_over_dynamic_queue_and_relay() {
    run_scenario("proton_request_reply.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_browses_without_consuming() {
    run_scenario("proton_browse.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_durable_subscription_outlives_detach_until_closed() {
    run_scenario("proton_durable_subscription.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_event_driven_receiver_credit_sent_with_attach() {
    run_scenario("proton_prefetch.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_selectors_filter_queues_and_topics() {
    run_scenario("proton_selector.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_transaction_commits_and_rolls_back() {
    run_scenario("proton_transaction.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_temporary_nodes_and_unsubscribe_as_jms_asks() {
    run_scenario("proton_jms_nodes.py").await;
}

#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_queue_types_as_configured() {
    let broker = Broker::start_from_toml(&queue_types_toml("proton")).await;
    run_against("proton_queue_types.py", broker).await;
}

/// Proton's OpenSSL client on the TLS listener: SASL PLAIN inside TLS and
/// a queue's round trip; then a client that trusts another CA, refused.
#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_sends_and_receives_over_tls_with_plain() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    tls_client_passes(&python, "proton_tls.py").await;
}

/// Proton's OpenSSL client presents a client certificate on the TLS listener and logs in
/// with SASL EXTERNAL as the account it names.
#[tokio::test]
#[ignore = "needs python-qpid-proton: run through scripts/test.sh"]
async fn proton_python_logs_in_with_a_client_certificate() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    tls_client_certificate_passes(&python, "proton_tls.py").await;
}
