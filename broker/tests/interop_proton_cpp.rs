//! Qpid Proton's C++ binding (Debian's libqpid-proton-cpp12-dev) against
//! the real server entry point: each scenario of
//! `scripts/interop/proton_cpp.cpp` (a queue at least and at most once,
//! selectors, a JMS temporary queue, and the configured queue types).
//!
//! Ignored by a plain `cargo test`: they need the client, which
//! `scripts/test.sh` builds (installing the library if need be) and names
//! in `SLUICE_PROTON_CPP` before running the ignored tests too.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Broker, assert_client_passed, queue_types_toml, run_client};

/// Runs the C++ client's `scenario` against a broker of its own, configured
/// with the queues of [`queue_types_toml`], and returns what it printed, having
/// checked that it passed.
async fn run_scenario(scenario: &str) -> String {
    let broker = Broker::start_from_toml(&queue_types_toml("cpp")).await;
    let client = std::env::var("SLUICE_PROTON_CPP")
        .expect("SLUICE_PROTON_CPP names the client scripts/test.sh builds");
    let output = run_client(&client, &[broker.url(), scenario.to_owned()]).await;
    let stdout = assert_client_passed(&format!("proton C++ {scenario}"), &output);
    broker.stop().await;
    stdout
}

#[tokio::test]
#[ignore = "needs the Proton C++ client: run through scripts/test.sh"]
async fn proton_cpp_sends_and_receives_at_least_and_at_most_once() {
    run_scenario("queue").await;
}

#[tokio::test]
#[ignore = "needs the Proton C++ client: run through scripts/test.sh"]
async fn proton_cpp_selectors_select_and_a_bad_one_refuses_only_its_link() {
    run_scenario("selector").await;
}

#[tokio::test]
#[ignore = "needs the Proton C++ client: run through scripts/test.sh"]
async fn proton_cpp_temporary_queue_from_a_dynamic_target() {
    run_scenario("temporary").await;
}

#[tokio::test]
#[ignore = "needs the Proton C++ client: run through scripts/test.sh"]
async fn proton_cpp_queue_types_as_configured() {
    run_scenario("queue-types").await;
}
