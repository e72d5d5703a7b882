//! The single node's core without I/O, in the manner of the engine's
//! `Pair`: a fake log whose batches become durable when the test says so,
//! virtual time, and the exact messages the core sends to its one
//! connection, with the pipeline's counters checked after every input.

use super::*;
use crate::config::Config;
use crate::node::testing;

/// A log that keeps what it is handed, in memory.
#[derive(Debug, Default)]
struct FakeLog {
    /// Every record submitted, in ticket order.
    records: Vec<Bytes>,
}

impl FakeLog {
    fn append(&mut self, write: impl FnOnce(&mut BytesMut)) -> Ticket {
        let mut record = BytesMut::new();
        write(&mut record);
        self.records.push(record.freeze());
        Ticket(self.records.len() as u64)
    }
}

impl Appender for FakeLog {
    fn submit(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError> {
        Ok(self.append(write))
    }

    fn submit_reserved(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError> {
        Ok(self.append(write))
    }

    fn snapshot_room(&self) -> Option<u64> {
        None
    }
}

/// One core over a log that fsyncs when told.
struct Harness {
    core: Core<FakeLog>,
    now: Now,
    /// Records made durable so far.
    synced: u64,
    next_delivery: u32,
}

impl Harness {
    fn new() -> Self {
        let now = testing::start_time();
        let settings = NodeSettings::new(Config::default());
        let core = Core::new(settings, FakeLog::default(), Queues::new(), now);
        Self {
            core,
            now,
            synced: 0,
            next_delivery: 0,
        }
    }

    fn request(&mut self, request: Request) {
        self.core
            .handle_requests(self.now, [request])
            .expect("the log does not fail");
        self.core.check_invariants();
    }

    fn publish(&mut self, body: &'static str) {
        let id = self.next_delivery;
        self.next_delivery += 1;
        self.request(testing::publish(id, body));
    }

    /// Records submitted and not yet durable.
    fn unsynced(&mut self) -> u64 {
        self.core.log().records.len() as u64 - self.synced
    }

    /// One fsync: every record submitted so far becomes durable, as one
    /// batch.
    fn fsync(&mut self) {
        let records = self.unsynced();
        if records == 0 {
            return;
        }
        let completion = Completion {
            first: Ticket(self.synced + 1),
            records,
            outcome: Ok(Lsn(self.synced + 1)),
        };
        self.synced += records;
        self.core
            .handle_completion(completion)
            .expect("the log does not fail");
        self.core.check_invariants();
    }

    /// Lets `elapsed` pass, and the core's timer fire if it is due.
    fn wait(&mut self, elapsed: Duration) {
        self.now = testing::later(self.now, elapsed);
        if self
            .core
            .poll_timeout()
            .is_some_and(|due| due <= self.now.instant)
        {
            self.core
                .handle_timeout(self.now)
                .expect("the log does not fail");
            self.core.check_invariants();
        }
    }

    /// What the core told the connection since last asked, in order.
    fn said(&mut self) -> Vec<String> {
        testing::said(|| self.core.poll_to_connection())
    }
}

#[test]
fn a_durable_publish_is_accepted_once_its_record_is_fsynced() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    assert_eq!(
        harness.said(),
        [
            "producer attached".to_owned(),
            format!("credit {}", testing::window())
        ]
    );
    harness.publish("a");
    assert_eq!(harness.said(), Vec::<String>::new(), "not before the fsync");
    assert_eq!(
        harness.unsynced(),
        2,
        "the queue's declaration and the message"
    );
    harness.fsync();
    assert_eq!(harness.said(), ["accepted 0"]);
}

/// A consumer's credit is never logged and cannot change what the
/// publishes ahead of it deliver, so it does not wait for their fsync.
#[test]
fn a_consumers_credit_overtakes_publishes_waiting_for_their_fsync() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    harness.publish("a");
    harness.fsync();
    harness.request(testing::attach_consumer("q"));
    harness.publish("b");
    harness.said();
    harness.request(testing::credit(10));
    assert_eq!(
        harness.said(),
        ["deliver q 0.1"],
        "\"a\" goes out while \"b\" waits for its fsync"
    );
    harness.fsync();
    // Applying the enqueue delivers it; then the producer hears.
    assert_eq!(harness.said(), ["deliver q 0.2", "accepted 1"]);
}

/// An accepting settle's record waits for company (the next publish) for
/// at most the linger, rather than taking an fsync of its own.
#[test]
fn an_accepting_settle_waits_for_company_at_most_the_linger() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    harness.request(testing::attach_consumer("q"));
    harness.request(testing::credit(10));
    harness.publish("a");
    harness.fsync();
    assert_eq!(
        harness.said(),
        [
            "producer attached".to_owned(),
            format!("credit {}", testing::window()),
            "consumer attached to q".to_owned(),
            "deliver q 0.1".to_owned(),
            "accepted 0".to_owned(),
        ]
    );
    harness.request(Request::Settle {
        consumer: 1,
        queue: "q".into(),
        seq: 1,
        outcome: Outcome::Accepted,
    });
    assert_eq!(harness.unsynced(), 0, "the settle's record waits");
    harness.wait(SETTLE_LINGER / 2);
    assert_eq!(harness.unsynced(), 0, "still within the linger");
    harness.wait(SETTLE_LINGER);
    assert_eq!(
        harness.unsynced(),
        1,
        "written on its own at the linger's end"
    );
    harness.fsync();
    let info = harness.core.queue_info();
    assert_eq!(info[0].1.depth, 0, "settled and gone");
}

/// As in a cluster, a consumer hears that it is attached once its attach
/// is applied: behind the declaration of its queue, which waits for its
/// fsync, so a consumer is never told of a queue a crash could forget.
#[test]
fn a_consumer_is_answered_once_its_queues_declaration_is_durable() {
    let mut harness = Harness::new();
    harness.request(testing::attach_consumer("q"));
    assert_eq!(harness.said(), Vec::<String>::new(), "not before the fsync");
    harness.fsync();
    assert_eq!(harness.said(), ["consumer attached to q"]);
}
