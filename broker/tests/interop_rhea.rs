//! rhea, the Node.js AMQP 1.0 client, against the real server entry point:
//! each messaging scenario in `scripts/interop/rhea_*.js` (queue, topic,
//! request/reply over a dynamic queue and anonymous relay, browse, durable
//! subscriptions, local transactions, JMS temporary queues and topics,
//! unsubscribe by link name, selectors, and the configured queue types).
//!
//! Ignored by a plain `cargo test`: they need Node.js and rhea, which
//! `scripts/test.sh` installs with `npm ci` into `scripts/interop/node_modules`
//! (where the scripts find it) before running the ignored tests too. The
//! node binary is `SLUICE_NODE`, or `node` on the PATH.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::pki::{tls_client_certificate_passes, tls_client_passes};
use common::{Broker, assert_client_passed, interop_script, queue_types_toml, run_client};

/// Runs `scripts/interop/{script}` against a broker of its own, having
/// checked that it passed.
async fn run_scenario(script: &str) {
    run_against(Broker::start().await, script).await;
}

/// Runs `scripts/interop/{script}` against a broker of its own configured
/// with the queues of [`queue_types_toml`], having checked that it passed.
async fn run_scenario_with_queue_types(script: &str) {
    run_against(
        Broker::start_from_toml(&queue_types_toml("rhea")).await,
        script,
    )
    .await;
}

/// Runs `scripts/interop/{script}` against `broker`, checks that it passed,
/// and stops the broker.
async fn run_against(broker: Broker, script: &str) {
    let node = std::env::var("SLUICE_NODE").unwrap_or_else(|_| "node".to_owned());
    let script_path = interop_script(script).display().to_string();
    let output = run_client(&node, &[script_path, broker.url()]).await;
    assert_client_passed(&format!("rhea client {script}"), &output);
    broker.stop().await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_sends_and_receives_on_a_queue() {
    run_scenario("rhea_queue.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_topic_delivers_to_every_subscriber() {
    run_scenario("rhea_topic.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_request_reply_over_dynamic_queue_and_relay() {
    run_scenario("rhea_request_reply.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_browses_without_consuming() {
    run_scenario("rhea_browse.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_durable_subscription_outlives_detach_until_closed() {
    run_scenario("rhea_durable_subscription.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_transaction_commits_and_rolls_back() {
    run_scenario("rhea_transaction.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_temporary_nodes_and_unsubscribe_as_jms_asks() {
    run_scenario("rhea_jms_nodes.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_selectors_filter_queues_and_topics() {
    run_scenario("rhea_selector.js").await;
}

#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_queue_types_as_configured() {
    run_scenario_with_queue_types("rhea_queue_types.js").await;
}

/// rhea on Node.js's TLS, on the TLS listener: SASL PLAIN inside TLS and a
/// queue's round trip; then a client that trusts another CA, refused.
#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_sends_and_receives_over_tls_with_plain() {
    let node = std::env::var("SLUICE_NODE").unwrap_or_else(|_| "node".to_owned());
    tls_client_passes(&node, "rhea_tls.js").await;
}

/// rhea presents a client certificate on the TLS listener and logs in
/// with SASL EXTERNAL as the account it names.
#[tokio::test]
#[ignore = "needs node and rhea: run through scripts/test.sh"]
async fn rhea_logs_in_with_a_client_certificate() {
    let node = std::env::var("SLUICE_NODE").unwrap_or_else(|_| "node".to_owned());
    tls_client_certificate_passes(&node, "rhea_tls.js").await;
}
