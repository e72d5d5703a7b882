//! The web console in a real headless browser: `scripts/interop/console_check.js`
//! drives Debian's `/usr/bin/chromium` (or the one whose path
//! `SLUICE_CHROMIUM` gives) with playwright-core. It is refused with a wrong password, logs in, finds the
//! queue a client filled showing its depth, takes a screenshot, and purges
//! the queue through the page's confirmation (Cancel first, then Confirm).
//! This test checks the script's verdict, the screenshot, and through the
//! API that the queue is really empty.
//!
//! Ignored by a plain `cargo test`: it needs chromium, and Node.js with
//! playwright-core, which `scripts/test.sh` installs (apt-get, `npm ci`)
//! before running the ignored tests too. Without them it prints why it did
//! nothing and passes, unless `CI=true`, where it fails: CI must not pass
//! by skipping.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::http::{broker_with, connect_scram, publish, request};
use common::{assert_client_passed, interop_script, run_client, test_config, user};
use sluice::config::{Config, Permission};

const QUEUE: &str = "console.orders";
const DEPTH: u64 = 7;

/// Why the browser check cannot run here, if it cannot.
// Asks the machine, outside any simulation.
#[allow(clippy::disallowed_methods)]
fn missing(node: &str, chromium: &str) -> Option<String> {
    let runs = |command: &mut Command| command.output().is_ok_and(|out| out.status.success());
    if !runs(Command::new(chromium).arg("--version")) {
        return Some(format!(
            "{chromium} --version did not run: install chromium (scripts/test.sh does) \
             or give its path in SLUICE_CHROMIUM"
        ));
    }
    let mut loads = Command::new(node);
    loads
        .args(["-e", "require('playwright-core')"])
        .current_dir(interop_script(""));
    if !runs(&mut loads) {
        return Some(format!(
            "{node} cannot load playwright-core from scripts/interop: \
             run scripts/test.sh (npm ci) or name node in SLUICE_NODE"
        ));
    }
    None
}

#[tokio::test]
#[ignore = "needs chromium, node and playwright-core: run through scripts/test.sh"]
async fn the_console_shows_a_queue_with_its_depth_and_purges_it_once_confirmed() {
    let node = std::env::var("SLUICE_NODE").unwrap_or_else(|_| "node".to_owned());
    let chromium =
        std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if let Some(why) = missing(&node, &chromium) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("SKIPPED the console's browser test: {why}");
        return;
    }

    let config = Config {
        users: vec![user("alice", "secret")],
        permissions: vec![Permission {
            user: "alice".to_owned(),
            pattern: "**".to_owned(),
            send: true,
            manage: true,
            monitor: true,
            ..Permission::default()
        }],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let (mut client, session) = connect_scram(&broker, "alice", "secret").await;
    let sender = client
        .attach_sender(session, "orders", Some(QUEUE))
        .await
        .unwrap();
    for i in 0..DEPTH {
        publish(&mut client, sender, &format!("order {i}")).await;
    }

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    // Test output, outside any simulation: a screenshot left by an earlier
    // run must not pass for this one's.
    #[allow(clippy::disallowed_methods)]
    let _ = std::fs::remove_file(&shot);
    let args = [
        interop_script("console_check.js").display().to_string(),
        format!("http://{http}"),
        "alice".to_owned(),
        "secret".to_owned(),
        QUEUE.to_owned(),
        DEPTH.to_string(),
        shot.display().to_string(),
    ];
    let output = run_client(&node, &args).await;
    assert_client_passed("console_check.js", &output);

    #[allow(clippy::disallowed_methods)]
    let png = std::fs::read(&shot).expect("the browser wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank page of that size compresses to a few kilobytes; the tables
    // and their text take tens.
    assert!(
        png.len() > 20_000,
        "{}: {} bytes",
        shot.display(),
        png.len()
    );

    let path = format!("/api/queues/{QUEUE}");
    let queue = request(http, "GET", &path, Some(("alice", "secret"))).await;
    assert_eq!(queue.status, 200, "{queue:?}");
    assert_eq!(queue.json()["messages"], 0, "{queue:?}");
    // Purged messages count as dropped unconsumed.
    assert_eq!(queue.json()["dead_lettered"], DEPTH, "{queue:?}");
    client.close().await.unwrap();
    broker.stop().await;
}
