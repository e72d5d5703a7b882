//! Under turmoil, with turmoil's file system: the broker host crashes in the
//! middle of a stream of durable messages (losing every write it had not
//! fsynced), restarts on the same disk, and every message whose `accepted`
//! the producer saw is delivered afterwards. Unconfirmed messages may be
//! lost; confirmed ones never.
//!
//! And on a small simulated disk: a producer fills it, a consumer takes
//! every message, and the broker must accept messages again by itself,
//! without forgetting across a restart what was consumed.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use sluice::amqp::engine::Event;
use sluice::amqp::types::{Accepted, DeliveryState, Header, Message, Section, Source};
use sluice::client::{Client, ClientError};
use sluice::config::Config;
use sluice::io::TurmoilIo;
use sluice::io::faulty::FaultyIo;
use sluice::server::{self, shutdown_channel};

use common::{connect_when_up, number_of, numbered_message};

const SEED: u64 = 0x5eed_c4a5;
const BROKER: &str = "broker";
const MESSAGES: u32 = 400;
/// Unconfirmed sends at a time.
const WINDOW: usize = 64;
/// The crash comes once this many messages were confirmed.
const CRASH_AFTER_ACCEPTED: usize = 120;

/// How long an fsync takes before it makes anything durable.
const SYNC_LATENCY: Duration = Duration::from_millis(200);

type Ids = Arc<Mutex<BTreeSet<u32>>>;

async fn connect() -> Client<TurmoilIo> {
    connect_when_up(&format!("{BROKER}:5672"), "turmoil-client").await
}

/// Sends every message with up to `WINDOW` unconfirmed, recording each one
/// the broker accepts, until done or until the connection dies.
async fn produce(accepted: Ids) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect().await;
    let session = client.begin().await?;
    let link = client
        .attach_sender(session, "producer", Some("orders"))
        .await?;
    let mut in_flight = BTreeMap::new();
    let mut next = 0;
    while next < MESSAGES || !in_flight.is_empty() {
        if next < MESSAGES && in_flight.len() < WINDOW && client.connection().credit(link) > 0 {
            let tag = Bytes::from(next.to_be_bytes().to_vec());
            let Ok(delivery) = client.send(link, tag, numbered_message(next), false).await else {
                return Ok(());
            };
            in_flight.insert(delivery, next);
            next += 1;
            continue;
        }
        // A crashed host answers nothing: a silent broker counts as gone.
        let event = tokio::time::timeout(Duration::from_secs(5), client.next_event()).await;
        match event.unwrap_or(Err(ClientError::Closed(None))) {
            Ok(Event::Disposition {
                delivery,
                state: Some(DeliveryState::Accepted(_)),
                ..
            }) => {
                if let Some(id) = in_flight.remove(&delivery) {
                    accepted.lock().unwrap().insert(id);
                }
            }
            Ok(_) => {}
            // The broker crashed: what was not confirmed may be lost.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// After the restart, receives until every accepted message has arrived
/// (or nothing more arrives).
async fn consume(
    accepted: Ids,
    received: Ids,
    restarted: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    while !restarted.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = connect().await;
    let session = client.begin().await?;
    let source = Source {
        address: Some("orders".into()),
        ..Source::default()
    };
    let link = client
        .attach_receiver(session, "consumer", source, 100)
        .await?;
    let all_arrived = |received: &Ids| {
        accepted
            .lock()
            .unwrap()
            .is_subset(&received.lock().unwrap())
    };
    while !all_arrived(&received) {
        // Lost messages never come: a quiet broker ends the wait, and the
        // test then names what is missing.
        let Ok(event) = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await
        else {
            break;
        };
        if let Event::Delivery {
            delivery, message, ..
        } = event?
        {
            received.lock().unwrap().insert(number_of(message));
            client
                .settle(delivery, DeliveryState::Accepted(Accepted))
                .await?;
            if client.connection().credit(link) < 50 {
                client.connection().flow(link, 100, false)?;
            }
        }
    }
    client.close().await?;
    Ok(())
}

/// What one run saw: the ids the producer saw accepted, and the ids the
/// consumer received after the restart.
struct Outcome {
    accepted: BTreeSet<u32>,
    received: BTreeSet<u32>,
}

impl Outcome {
    fn lost(&self) -> Vec<u32> {
        self.accepted.difference(&self.received).copied().collect()
    }
}

/// Runs the producer against a broker configured by `configure`, crashes
/// and restarts the broker once `CRASH_AFTER_ACCEPTED` messages are
/// confirmed, and drains the queue afterwards. Fsyncs take `SYNC_LATENCY`
/// before they make anything durable (turmoil's own fsync is durable at
/// once), so a crash can land between a write and its fsync.
fn crash_run(configure: fn(&mut Config)) -> Outcome {
    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(Duration::from_secs(120))
        .build();
    sim.host(BROKER, move || async move {
        let (_never_triggered, shutdown) = shutdown_channel();
        let mut config = Config {
            listen: (Ipv4Addr::UNSPECIFIED, 5672).into(),
            data_dir: "/data".into(),
            ..Config::default()
        };
        configure(&mut config);
        let io = FaultyIo::with_sync_latency(TurmoilIo, SYNC_LATENCY);
        server::run(config, io, shutdown, |_| {}).await?;
        Ok(())
    });
    let accepted: Ids = Arc::default();
    let received: Ids = Arc::default();
    let restarted = Arc::new(AtomicBool::new(false));
    sim.client("producer", produce(accepted.clone()));
    sim.client(
        "consumer",
        consume(accepted.clone(), received.clone(), restarted.clone()),
    );

    let mut crashed = false;
    loop {
        if !crashed && accepted.lock().unwrap().len() >= CRASH_AFTER_ACCEPTED {
            sim.crash(BROKER);
            sim.bounce(BROKER);
            restarted.store(true, Ordering::SeqCst);
            crashed = true;
        }
        let done = sim
            .step()
            .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
        if done {
            break;
        }
    }

    assert!(
        crashed,
        "the broker never crashed: too few messages accepted"
    );
    let accepted = accepted.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    assert!(accepted.len() >= CRASH_AFTER_ACCEPTED);
    Outcome { accepted, received }
}

#[test]
fn every_accepted_message_survives_a_crash() {
    let outcome = crash_run(|_| {});
    let lost = outcome.lost();
    assert!(
        lost.is_empty(),
        "seed {SEED:#x}: accepted but lost: {lost:?}"
    );
}

/// The planted bug `ack-before-fsync` answers `accepted` before the log is
/// durable: the same run loses confirmed messages, which is what the
/// simulator's checker must catch.
#[cfg(feature = "planted-bugs")]
#[test]
fn ack_before_fsync_loses_accepted_messages() {
    let outcome = crash_run(|config| {
        config.plants = sluice::planted::Plants::new(Some(sluice::planted::Plant::AckBeforeFsync));
    });
    assert!(
        !outcome.lost().is_empty(),
        "seed {SEED:#x}: the planted bug lost nothing ({} accepted, {} received)",
        outcome.accepted.len(),
        outcome.received.len()
    );
}

/// The full-disk run's disk: the default reserve (16 MiB) plus 16 MiB for
/// messages, so that a snapshot taken once most are consumed leaves room
/// to make the reserve again.
const SMALL_DISK_BYTES: u64 = 32 << 20;
/// The message size.
const BODY_BYTES: usize = 4096;
/// A bound on the filling phase, should the disk never fill.
const FILL_MESSAGES_MAX: u32 = 20_000;
/// Publishes after the drain are numbered from here.
const AFTER_DRAIN: u32 = 1 << 30;
/// How many times the publish after the drain is tried, 100 ms apart.
const AFTER_DRAIN_TRIES: u32 = 100;

/// What the full-disk client saw.
#[derive(Debug, Default)]
struct FullDisk {
    accepted: BTreeSet<u32>,
    refused: usize,
    drained: BTreeSet<u32>,
    /// The message published after the drain, once accepted, and how many
    /// tries that took.
    accepted_after_drain: Option<(u32, u32)>,
    /// What the broker delivered after the restart.
    after_restart: BTreeSet<u32>,
}

type Seen = Arc<Mutex<FullDisk>>;

/// A durable message of `BODY_BYTES` whose body starts with `i`.
fn big_message(i: u32) -> Bytes {
    let mut body = vec![0x5a; BODY_BYTES];
    body[..4].copy_from_slice(&i.to_be_bytes());
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from(body)),
        ],
    }
    .encode()
}

/// Publishes until the broker refuses for want of disk, and records what
/// it accepted.
async fn fill(client: &mut Client<TurmoilIo>, seen: &Seen) -> Result<(), ClientError> {
    let session = client.begin().await?;
    let link = client
        .attach_sender(session, "producer", Some("orders"))
        .await?;
    let mut in_flight = BTreeMap::new();
    let mut next = 0;
    loop {
        let full = seen.lock().unwrap().refused > 0;
        if !full
            && next < FILL_MESSAGES_MAX
            && in_flight.len() < WINDOW
            && client.connection().credit(link) > 0
        {
            let tag = Bytes::from(next.to_be_bytes().to_vec());
            let delivery = client.send(link, tag, big_message(next), false).await?;
            in_flight.insert(delivery, next);
            next += 1;
            continue;
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        if let Event::Disposition {
            delivery, state, ..
        } = client.next_event().await?
        {
            let Some(id) = in_flight.remove(&delivery) else {
                continue;
            };
            let mut seen = seen.lock().unwrap();
            match state {
                Some(DeliveryState::Accepted(_)) => {
                    seen.accepted.insert(id);
                }
                _ => seen.refused += 1,
            }
        }
    }
}

/// Receives and accepts messages until none has come for a while.
async fn drain(client: &mut Client<TurmoilIo>, name: &str) -> Result<BTreeSet<u32>, ClientError> {
    let session = client.begin().await?;
    let source = Source {
        address: Some("orders".into()),
        ..Source::default()
    };
    let link = client.attach_receiver(session, name, source, 100).await?;
    let mut received = BTreeSet::new();
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        if let Event::Delivery {
            delivery, message, ..
        } = event?
        {
            received.insert(number_of(message));
            client
                .settle(delivery, DeliveryState::Accepted(Accepted))
                .await?;
            if client.connection().credit(link) < 50 {
                client.connection().flow(link, 100, false)?;
            }
        }
    }
    Ok(received)
}

/// Publishes one message after the drain, trying again while the broker
/// refuses it; returns its number and the tries it took.
async fn publish_after_drain(
    client: &mut Client<TurmoilIo>,
) -> Result<Option<(u32, u32)>, ClientError> {
    let session = client.begin().await?;
    let link = client
        .attach_sender(session, "late-producer", Some("orders"))
        .await?;
    for attempt in 0..AFTER_DRAIN_TRIES {
        let id = AFTER_DRAIN + attempt;
        let tag = Bytes::from(id.to_be_bytes().to_vec());
        let sent = client.send(link, tag, big_message(id), false).await?;
        loop {
            if let Event::Disposition {
                delivery, state, ..
            } = client.next_event().await?
            {
                if delivery != sent {
                    continue;
                }
                if matches!(state, Some(DeliveryState::Accepted(_))) {
                    return Ok(Some((id, attempt + 1)));
                }
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// The full-disk client: fill, drain, publish again, then (once the test
/// has restarted the broker) see what the broker still holds.
async fn fill_drain_publish(
    seen: Seen,
    ready_to_restart: Arc<AtomicBool>,
    restarted: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect().await;
    fill(&mut client, &seen).await?;
    client.close().await?;
    let mut client = connect().await;
    let drained = drain(&mut client, "consumer").await?;
    seen.lock().unwrap().drained = drained;
    client.close().await?;
    let mut client = connect().await;
    let after = publish_after_drain(&mut client).await?;
    seen.lock().unwrap().accepted_after_drain = after;
    client.close().await?;

    ready_to_restart.store(true, Ordering::SeqCst);
    while !restarted.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = connect().await;
    let again = drain(&mut client, "consumer-after-restart").await?;
    seen.lock().unwrap().after_restart = again;
    client.close().await?;
    Ok(())
}

/// Issue 12, item 6: a disk filled by producers must be freed by consuming.
/// Before the fix, settles could not be logged and no snapshot could be
/// written on the full disk, so no segment was ever deleted and every
/// publish after the drain was refused.
#[test]
fn a_full_disk_is_freed_by_consuming() {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(Duration::from_secs(600));
    builder.fs().capacity(SMALL_DISK_BYTES);
    let mut sim = builder.build();
    sim.host(BROKER, || async {
        let (_never_triggered, shutdown) = shutdown_channel();
        let config = Config {
            listen: (Ipv4Addr::UNSPECIFIED, 5672).into(),
            data_dir: "/data".into(),
            ..Config::default()
        };
        server::run(config, TurmoilIo, shutdown, |_| {}).await?;
        Ok(())
    });
    let seen: Seen = Arc::default();
    let ready_to_restart = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    sim.client(
        "client",
        fill_drain_publish(seen.clone(), ready_to_restart.clone(), restarted.clone()),
    );
    loop {
        if ready_to_restart.load(Ordering::SeqCst) && !restarted.load(Ordering::SeqCst) {
            sim.crash(BROKER);
            sim.bounce(BROKER);
            restarted.store(true, Ordering::SeqCst);
        }
        if sim
            .step()
            .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"))
        {
            break;
        }
    }

    let seen = seen.lock().unwrap();
    assert!(
        seen.refused > 0 && seen.accepted.len() > 1000,
        "the disk never filled: {} accepted, {} refused",
        seen.accepted.len(),
        seen.refused
    );
    assert_eq!(
        seen.drained, seen.accepted,
        "the drain must return every accepted message"
    );
    let Some((late, tries)) = seen.accepted_after_drain else {
        panic!(
            "every publish after the drain of {} messages was refused: the disk stayed full",
            seen.drained.len()
        );
    };
    let expected = BTreeSet::from([late]);
    assert_eq!(
        seen.after_restart, expected,
        "after the restart only the late message ({tries} tries) may be delivered: consumed ones stay consumed"
    );
}
