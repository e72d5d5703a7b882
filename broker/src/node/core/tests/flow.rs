//! Producer credit under the broker-wide limits: the bytes producers may
//! have in flight, the memory watermark and the disk's free space.

use super::*;
use crate::amqp::engine::SessionId;
use crate::amqp::types::{Header, Message, Section};
use crate::queue::Seq;

/// The producer sends delivery `id`, `bytes` long, in transaction `txn`.
fn publish_sized(id: u32, bytes: usize, txn: Option<Bytes>) -> Request {
    Request::Publish {
        conn: testing::CONN,
        delivery: DeliveryId {
            link: testing::PRODUCER,
            id,
        },
        message: Message::data(Bytes::from(vec![7; bytes])).encode(),
        settled: false,
        txn,
    }
}

/// The credit each grant in `said` gave.
fn grants(said: &[String]) -> Vec<u32> {
    said.iter()
        .filter_map(|line| line.strip_prefix("credit ")?.parse().ok())
        .collect()
}

/// A publish answered at once (here, in a transaction the connection never
/// declared) frees its place in the window like any other: counted after
/// its answer, it took a place for good, and a window of one was lost.
#[test]
fn a_publish_answered_at_once_frees_its_place_in_the_window() {
    let mut config = Config::default();
    config.limits.producer_credit = 1;
    let mut harness = Harness::with_config(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.commit();
    assert_eq!(grants(&harness.said()), [1]);
    for id in 0..3 {
        harness.request(publish_sized(id, 10, Some(testing::txn_id(9))));
        let said = harness.said();
        assert!(said[0].starts_with(&format!("rejected {id}")), "{said:?}");
        assert_eq!(grants(&said), [1], "{said:?}");
    }
}

/// Credit counts bytes: with 100 KB messages and a 4 MB watermark, a
/// producer's first window counts as one largest message (so it is 15
/// credits, not 256, which would bring 25 MB), and once its size is known
/// no grant lets what is queued and in flight pass the watermark; once
/// what is queued holds it, the producer is blocked.
#[test]
fn credit_is_granted_for_the_bytes_it_can_bring() {
    const WATERMARK: u64 = 4_000_000;
    const MESSAGE: usize = 100_000;
    for step in STEPS {
        let mut config = Config::default();
        config.limits.memory_high_watermark_bytes = WATERMARK;
        let mut harness = Harness::with_config(step, config);
        harness.request(testing::attach_producer("q"));
        harness.commit();
        let mut credit = grants(&harness.said())[0];
        assert_eq!(credit, 15, "{step:?}: 4 MB in 256 KiB each");
        let mut sent = 0;
        let mut grants_after_the_first = 0;
        // A producer that sends all its credit allows, round after round.
        for round in 0.. {
            assert!(round < 100, "{step:?}: never blocked");
            for _ in 0..credit {
                harness.request(publish_sized(sent, MESSAGE, None));
                sent += 1;
            }
            harness.commit();
            credit = grants(&harness.said()).last().copied().unwrap_or(0);
            if credit == 0 {
                break;
            }
            grants_after_the_first += 1;
            let queued = harness.core.memory_held();
            let in_flight = harness.core.clients.in_flight_bytes();
            assert!(
                queued + in_flight <= WATERMARK,
                "{step:?}: credit {credit} with {queued} queued, {in_flight} in flight"
            );
        }
        assert!(grants_after_the_first > 0, "{step:?}");
        assert_eq!(
            harness.core.report().blocked,
            Some(Blocked::Memory),
            "{step:?}"
        );
    }
}

/// Under a watermark smaller than what a first window counts per message
/// (256 KiB), a producer still gets one credit, and another each time its
/// message is answered: estimates alone never park it for good.
#[test]
fn a_producer_may_always_have_one_message_in_flight() {
    let mut config = Config::default();
    config.limits.memory_high_watermark_bytes = 16 << 10;
    let mut harness = Harness::with_config(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.commit();
    assert_eq!(grants(&harness.said()), [1]);
    harness.request(publish_sized(0, 100, None));
    harness.commit();
    // Its size known (100 bytes), more fit.
    let said = harness.said();
    assert!(said.contains(&"accepted 0".to_owned()), "{said:?}");
    assert!(grants(&said).iter().any(|&credit| credit > 1), "{said:?}");
}

/// Below `limits.disk_free_min_bytes` free, producers get no more credit
/// (what they hold stays theirs, and nothing is refused) until the space
/// rises again; the report says why.
#[test]
fn a_disk_short_of_free_space_blocks_producers_until_it_rises() {
    let mut config = Config::default();
    config.limits.producer_credit = 2;
    config.limits.disk_free_min_bytes = 1000;
    let mut harness = Harness::with_config(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.commit();
    assert_eq!(grants(&harness.said()), [2]);

    harness.request(Request::DiskFree {
        free_bytes: Some(999),
    });
    assert_eq!(harness.core.report().blocked, Some(Blocked::Disk));
    for id in 0..2 {
        harness.request(publish_sized(id, 10, None));
    }
    harness.commit();
    assert_eq!(harness.said(), ["accepted 0", "accepted 1"]);

    harness.request(Request::DiskFree {
        free_bytes: Some(1000),
    });
    assert_eq!(harness.said(), ["credit 2"]);
    assert_eq!(harness.core.report().blocked, None);
    assert_eq!(harness.core.report().disk_free_bytes, Some(1000));
}

/// While producers are blocked for want of disk space, consuming what the
/// log holds has the log snapshotted, since only a snapshot gives its
/// space back (after the usual 100,000 records, producers would wait for
/// good); holding it all, it is not.
#[test]
fn while_the_disk_is_short_consuming_has_the_log_snapshotted() {
    let mut config = Config::default();
    config.limits.disk_free_min_bytes = 1000;
    let mut harness = Harness::with_config(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.request(testing::attach_consumer("q"));
    harness.commit();
    for id in 0..20 {
        harness.request(publish_sized(id, 100_000, None));
    }
    harness.commit();
    harness.request(Request::DiskFree {
        free_bytes: Some(999),
    });
    harness.commit();
    harness.take_proposals();
    assert!(harness.snapshots_asked.is_empty(), "nothing to free yet");

    harness.said();
    harness.request(testing::credit(100));
    harness.commit();
    let seqs: Vec<Seq> = harness
        .said()
        .iter()
        .filter_map(|line| {
            let (index, place) = line.strip_prefix("deliver q ")?.split_once('.')?;
            Some((index.parse::<u64>().ok()? << 24) | place.parse::<u64>().ok()?)
        })
        .collect();
    assert_eq!(seqs.len(), 20);
    for seq in seqs {
        harness.request(Request::Settle {
            consumer: ORIGIN.first_consumer(),
            queue: "q".into(),
            seq,
            outcome: Outcome::Accepted,
            txn: None,
            answer: None,
        });
    }
    assert_eq!(harness.uncommitted(), 0, "the settles linger for company");
    harness.wait(SETTLE_LINGER);
    harness.commit();
    harness.take_proposals();
    assert_eq!(harness.snapshots_asked.len(), 1);
}

/// A topic's message counts once against the memory watermark, however
/// many subscriptions hold it: with 50 idle subscriptions, 2 MB of
/// publishes under a 4 MB watermark leave the producer its credit
/// (counted once per subscription they made 100 MB, and every producer on
/// the broker was blocked).
#[test]
fn a_topic_message_counts_once_however_many_subscriptions_hold_it() {
    const SUBSCRIPTIONS: u32 = 50;
    const MESSAGE: usize = 100_000;
    for step in STEPS {
        let mut config = Config::default();
        config.limits.memory_high_watermark_bytes = 4_000_000;
        let mut harness = Harness::with_config(step, config);
        for n in 0..SUBSCRIPTIONS {
            let link = LinkId {
                session: SessionId(0),
                handle: 10 + n,
            };
            let name = format!("sub-{n}");
            harness.request(testing::subscribe(link, "prices", &name, true));
        }
        harness.request(Request::AttachProducer {
            options: None,
            conn: testing::CONN,
            link: testing::PRODUCER,
            node: ProducerNode::Topic("prices".into()),
        });
        harness.commit();
        for id in 0..20 {
            harness.request(publish_sized(id, MESSAGE, None));
            harness.commit();
        }
        let said = harness.said();
        assert_eq!(
            said.iter().filter(|l| l.starts_with("accepted")).count(),
            20
        );
        let depths: Vec<u64> = harness
            .core
            .queue_info()
            .iter()
            .map(|(_, q)| q.depth)
            .collect();
        assert_eq!(depths, [20; SUBSCRIPTIONS as usize], "{step:?}");
        // The bodies once, and an index entry per copy; not 100 MB.
        let copies = 20 * u64::from(SUBSCRIPTIONS);
        let bound = 2_010_000 + copies * crate::queue::MESSAGE_INDEX_BYTES;
        let held = harness.core.memory_held();
        assert!(held < bound, "{step:?}: {held} bytes held");
        assert_eq!(harness.core.report().blocked, None, "{step:?}");
        assert!(
            grants(&said).last().is_some_and(|&credit| credit > 0),
            "{step:?}"
        );
    }
}

/// With `limits.page_transient_messages` off, a queue that pages refuses
/// non-durable messages with `amqp:resource-limit-exceeded` (before they
/// are logged, so that no replay takes them) and still takes durable
/// ones; before it pages, it takes both.
#[test]
fn a_paging_queue_refuses_transient_messages_when_so_configured() {
    const MESSAGE: usize = 1_000;
    let mut config = Config::default();
    // The group pages past 10,000 bytes in memory, the queue past 1,250.
    config.limits.memory_high_watermark_bytes = 80_000;
    config.limits.page_transient_messages = false;
    let mut harness = Harness::paging(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.commit();
    harness.said();
    let mut outcomes = Vec::new();
    for id in 0..20 {
        harness.request(publish_sized(id, MESSAGE, None));
        harness.commit();
        outcomes.extend(
            harness
                .said()
                .into_iter()
                .filter(|l| !l.starts_with("credit")),
        );
    }
    let accepted = outcomes
        .iter()
        .take_while(|l| l.starts_with("accepted"))
        .count();
    assert!((1..20).contains(&accepted), "{outcomes:#?}");
    for line in &outcomes[accepted..] {
        assert!(
            line.starts_with("rejected") && line.contains("limits.page_transient_messages"),
            "{line}"
        );
    }
    assert_eq!(harness.core.queue_info()[0].1.depth, accepted as u64);

    let durable = Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from(vec![7; MESSAGE])),
        ],
    };
    harness.request(Request::Publish {
        conn: testing::CONN,
        delivery: DeliveryId {
            link: testing::PRODUCER,
            id: 20,
        },
        message: durable.encode(),
        settled: false,
        txn: None,
    });
    harness.commit();
    let said = harness.said();
    assert!(
        said.iter().any(|l| l.starts_with("accepted 20")),
        "{said:?}"
    );
    assert_eq!(harness.core.queue_info()[0].1.depth, accepted as u64 + 1);
}
