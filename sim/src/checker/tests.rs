//! The checker's unit tests: hand-written histories, one or two rules at
//! a time.

use std::time::Duration;

use super::rules::divergences;
use super::{CheckReport, EXPIRY_SLACK, Rule, check, require_all_checked};
use crate::history::{
    Answer, Attempt, ClientId, ConnId, History, MessageKind, MsgId, NodeReplicas, Op, Outcome,
    QueueState, TxnId,
};
use crate::nemesis::{Fault, FaultEvent};
use crate::workload::{DEAD_LETTER_QUEUE, SelectiveFilter, WorkloadParams, volatile_link_queue};

/// One queue producer to q0, one consumer each on q0 and q1, and, if
/// `subscribers` > 0, one topic producer with that many subscribers.
fn params(subscribers: u32) -> WorkloadParams {
    WorkloadParams {
        queues: vec!["q0".to_owned(), "q1".to_owned()],
        producers: 1,
        consumers: 2,
        messages_per_producer: 1,
        topic: "t0".to_owned(),
        topic_producers: u32::from(subscribers > 0),
        subscribers,
        dead_lettering: None,
        delivery_limit: 3,
        limit: None,
        browsers: 0,
        selective: false,
        queue_types: crate::queue_types::QueueTypes::default(),
        rcv_settle_second: false,
        requesters: 0,
        grouped: None,
        selective_filter: SelectiveFilter::JmsSelector,
        volatile_subscribers: 0,
        intruders: 1,
        refuse_transient: false,
    }
}

fn conn(client: ClientId) -> ConnId {
    ConnId { client, n: 1 }
}

/// Builds a history one event per millisecond.
#[derive(Default)]
struct Script(History);

impl Script {
    fn then(&mut self, op: Op) -> &mut Self {
        let time = Duration::from_millis(self.0.events().len() as u64);
        self.0.push(time, op);
        self
    }

    /// `producer` sends message 0 and sees it accepted.
    fn accepted(&mut self, producer: u32) -> MsgId {
        let conn = conn(ClientId::Producer(producer));
        let msg = MsgId { producer, seq: 0 };
        self.then(Op::Send {
            conn,
            msg,
            resend: false,
            kind: MessageKind::PLAIN,
        })
        .then(Op::ProducerOutcome {
            conn,
            msg,
            outcome: Outcome::Accepted,
        });
        msg
    }

    /// `client` receives `msg` from `queue`, accepts it and closes.
    fn consumed(&mut self, client: ClientId, queue: &str, msg: MsgId) -> &mut Self {
        self.consumed_on(conn(client), queue, msg)
    }

    /// `msg` is received from `queue` on `conn`, accepted, and `conn`
    /// closed.
    fn consumed_on(&mut self, conn: ConnId, queue: &str, msg: MsgId) -> &mut Self {
        self.then(Op::Connected {
            conn,
            address: queue.to_owned(),
            node: None,
        })
        .delivered(conn, queue, msg)
        .then(Op::Closed { conn })
    }

    /// `msg` is received from `queue` on `conn`, and accepted.
    fn delivered(&mut self, conn: ConnId, queue: &str, msg: MsgId) -> &mut Self {
        self.then(Op::Delivered {
            conn,
            queue: queue.to_owned(),
            msg,
            delivery_count: 0,
            first_acquirer: true,
        })
        .then(Op::Settled {
            conn,
            queue: queue.to_owned(),
            msg,
            outcome: Outcome::Accepted,
        })
    }

    fn broker_state(&mut self, queues: &[(&str, u64, u64)]) -> &mut Self {
        let queues = queues
            .iter()
            .map(|&(name, depth, unsettled)| QueueState {
                name: name.to_owned(),
                depth,
                unsettled,
                consumers: 0,
            })
            .collect();
        self.then(Op::BrokerState { queues })
    }
}

fn rules(report: &CheckReport) -> Vec<Rule> {
    report.violations.iter().map(|v| v.rule).collect()
}

#[test]
fn a_consumed_message_and_an_empty_broker_pass() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    script
        .consumed(ClientId::Consumer(0), "q0", msg)
        .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.stats.checked.contains(&Rule::FinalState));
}

/// No silent skips: a run that reached its end without the broker's
/// final report (or, in a cluster, the replicas') fails for that
/// alone; a run a panic cut short fails for the panic, not twice.
#[test]
fn a_rule_that_could_not_be_checked_fails_the_run() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    script.consumed(ClientId::Consumer(0), "q0", msg);
    let mut report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    require_all_checked(&mut report, 1, &script.0);
    assert_eq!(rules(&report), [Rule::NotChecked]);
    assert!(report.violations[0].detail.ends_with("5 final-state"));

    script.broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
    let mut report = check(&script.0, &params(0));
    require_all_checked(&mut report, 1, &script.0);
    assert!(report.passed(), "{:?}", report.violations);
    require_all_checked(&mut report, 3, &script.0);
    assert!(report.violations[0].detail.ends_with("6 replicas"));

    script.then(Op::Aborted { why: "boom".into() });
    let mut report = check(&script.0, &params(0));
    require_all_checked(&mut report, 3, &script.0);
    assert_eq!(rules(&report), [Rule::NodePanicked]);
}

#[test]
fn a_broker_that_still_holds_a_consumed_message_fails_rule_5() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    script
        .consumed(ClientId::Consumer(0), "q0", msg)
        .broker_state(&[("q0", 1, 0), ("q1", 0, 1)]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::FinalState, Rule::FinalState]);
}

#[test]
fn a_missing_queue_fails_rule_5() {
    let mut script = Script::default();
    script
        .then(Op::BrokerStart { node: None })
        .broker_state(&[("q0", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::FinalState]);
    assert!(report.violations[0].detail.contains("no queue q1"));
}

#[test]
fn a_message_consumed_on_a_lost_connection_may_still_be_held() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    let consumer = conn(ClientId::Consumer(0));
    script
        .then(Op::Delivered {
            conn: consumer,
            queue: "q0".to_owned(),
            msg,
            delivery_count: 0,
            first_acquirer: true,
        })
        .then(Op::Settled {
            conn: consumer,
            queue: "q0".to_owned(),
            msg,
            outcome: Outcome::Accepted,
        })
        .then(Op::ConnectionLost {
            conn: consumer,
            why: "reset".to_owned(),
        })
        .broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
}

#[test]
fn every_subscription_must_consume_every_topic_message() {
    let params = params(2);
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    // Producer 1 is the topic producer.
    let msg = script.accepted(1);
    script.consumed(ClientId::Subscriber(0), &params.subscription(0), msg);
    let report = check(&script.0, &params);
    assert_eq!(rules(&report), [Rule::Lost]);
    assert!(
        report.violations[0]
            .detail
            .contains(&params.subscription(1))
    );
}

#[test]
fn a_delivery_from_a_queue_the_message_was_not_sent_to_is_a_phantom() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    script.consumed(ClientId::Consumer(1), "q1", msg);
    let report = check(&script.0, &params(0));
    // Sent to q0, delivered from q1; and never consumed from q0.
    assert_eq!(rules(&report), [Rule::Lost, Rule::NeverSent]);
}

/// `producer` sends message 0 as `kind` `sends` times (the first
/// time, the outcome is lost with the connection) and sees the last
/// send accepted.
fn sent(script: &mut Script, producer: u32, kind: MessageKind, sends: u32) -> MsgId {
    let msg = MsgId { producer, seq: 0 };
    for n in 1..=sends {
        let conn = ConnId {
            client: ClientId::Producer(producer),
            n,
        };
        script.then(Op::Send {
            conn,
            msg,
            resend: n > 1,
            kind,
        });
        if n == sends {
            script.then(Op::ProducerOutcome {
                conn,
                msg,
                outcome: Outcome::Accepted,
            });
        }
    }
    msg
}

/// A consumer with its own connection (`n`) consumes `msg` from `queue`.
fn consumed_again(script: &mut Script, client: ClientId, n: u32, queue: &str, msg: MsgId) {
    script.consumed_on(ConnId { client, n }, queue, msg);
}

#[test]
fn a_second_copy_of_a_deduplicated_message_fails_rule_8() {
    let with_id = MessageKind {
        message_id: true,
        ..MessageKind::PLAIN
    };
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 0, with_id, 2);
    consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
    consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::DuplicateId]);
    // Without a message-id, two sends may make two copies.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 0, MessageKind::PLAIN, 2);
    consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
    consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // A transient message is not de-duplicated.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let transient = MessageKind {
        durable: false,
        ..with_id
    };
    let msg = sent(&mut script, 0, transient, 2);
    consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
    consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
    assert!(check(&script.0, &params(0)).passed());
}

#[test]
fn a_delivery_well_after_expiry_fails_rule_9_and_an_expired_message_may_vanish() {
    let ttl = MessageKind {
        ttl: Some(Duration::from_millis(2)),
        ..MessageKind::PLAIN
    };
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 0, ttl, 1);
    // Never consumed: it may have expired.
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.vanished_excused, 1);
    // Delivered within the slack: no violation.
    consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
    assert!(check(&script.0, &params(0)).passed());
    // Delivered a whole slack after its expiry.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 0, ttl, 1);
    while script.0.events().last().map(|e| e.time) < Some(EXPIRY_SLACK + Duration::from_millis(10))
    {
        script.then(Op::Fault(FaultEvent::HealedAll));
    }
    consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::Expired]);
}

/// In a queue with a length limit, whatever its overflow, a persistent
/// message displaces a transient one from a full queue: an accepted
/// transient message of q1 may vanish, a persistent one may not.
#[test]
fn a_transient_message_of_a_limited_queue_may_vanish() {
    use sluice::config::Overflow;
    let transient = MessageKind {
        durable: false,
        ..MessageKind::PLAIN
    };
    for (limit, kind, vanishes) in [
        (Some((5, Overflow::RejectPublish)), transient, true),
        (
            Some((5, Overflow::RejectPublish)),
            MessageKind::PLAIN,
            false,
        ),
        (None, transient, false),
    ] {
        // Producer 1 sends to q1.
        let params = WorkloadParams {
            producers: 2,
            limit,
            ..params(0)
        };
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        sent(&mut script, 1, kind, 1);
        let report = check(&script.0, &params);
        let expected: &[Rule] = if vanishes { &[] } else { &[Rule::Lost] };
        assert_eq!(rules(&report), expected, "{limit:?}, {kind:?}");
    }
}

#[test]
fn a_message_that_left_a_dead_lettering_queue_unconsumed_must_reach_the_dlq() {
    // Producer 0 sends to q0, which dead-letters; producer 1 to q1.
    let params = WorkloadParams {
        producers: 2,
        dead_lettering: Some("q0".to_owned()),
        ..params(0)
    };
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 0, MessageKind::PLAIN, 1);
    let conn = conn(ClientId::Consumer(0));
    script
        .then(Op::Connected {
            conn,
            address: "q0".to_owned(),
            node: None,
        })
        .then(Op::Delivered {
            conn,
            queue: "q0".to_owned(),
            msg,
            delivery_count: 0,
            first_acquirer: true,
        })
        .then(Op::Settled {
            conn,
            queue: "q0".to_owned(),
            msg,
            outcome: Outcome::Modified,
        });
    let report = check(&script.0, &params);
    assert_eq!(rules(&report), [Rule::DeadLetterLost]);
    consumed_again(
        &mut script,
        ClientId::DeadLetters(0),
        1,
        DEAD_LETTER_QUEUE,
        msg,
    );
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.dead_lettered, 1);
    // From the dlq of a queue that has none, it is a phantom.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = sent(&mut script, 1, MessageKind::PLAIN, 1);
    consumed_again(
        &mut script,
        ClientId::DeadLetters(0),
        1,
        DEAD_LETTER_QUEUE,
        msg,
    );
    let rules_broken = rules(&check(&script.0, &params));
    assert!(rules_broken.contains(&Rule::NeverSent), "{rules_broken:?}");
}

// ---- typed queues ------------------------------------------------------

/// `params(0)` with the last-value queue (producer 1, consumer 2).
fn with_last_value() -> WorkloadParams {
    WorkloadParams {
        queue_types: crate::queue_types::QueueTypes {
            last_value_keys: Some(2),
            priority: false,
        },
        ..params(0)
    }
}

/// `params(0)` with the priority queue (producer 1, consumer 2).
fn with_priority() -> WorkloadParams {
    WorkloadParams {
        queue_types: crate::queue_types::QueueTypes {
            last_value_keys: None,
            priority: true,
        },
        ..params(0)
    }
}

/// Producer 1 sends message `seq` as `kind` and sees it accepted.
fn typed_accepted(script: &mut Script, seq: u64, kind: MessageKind) -> MsgId {
    let conn = conn(ClientId::Producer(1));
    let msg = MsgId { producer: 1, seq };
    script
        .then(Op::Send {
            conn,
            msg,
            resend: false,
            kind,
        })
        .then(Op::ProducerOutcome {
            conn,
            msg,
            outcome: Outcome::Accepted,
        });
    msg
}

/// Consumer 2 receives `msg` from `queue` on its first connection at
/// `at` (a time after every event so far), and accepts it.
fn typed_consumed(script: &mut Script, queue: &str, msg: MsgId, at: Duration) {
    let conn = conn(ClientId::Consumer(2));
    script.0.push(
        at,
        Op::Delivered {
            conn,
            queue: queue.to_owned(),
            msg,
            delivery_count: 0,
            first_acquirer: true,
        },
    );
    script.0.push(
        at,
        Op::Settled {
            conn,
            queue: queue.to_owned(),
            msg,
            outcome: Outcome::Accepted,
        },
    );
}

fn keyed(key: u8) -> MessageKind {
    MessageKind {
        key: Some(key),
        ..MessageKind::PLAIN
    }
}

#[test]
fn a_superseded_value_delivered_late_fails_rule_16_and_may_vanish() {
    let params = with_last_value();
    let lvq = crate::queue_types::LAST_VALUE_QUEUE;
    let run = |delivered_at_ms: u64| {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        script.then(Op::Connected {
            conn: conn(ClientId::Consumer(2)),
            address: lvq.to_owned(),
            node: None,
        });
        let old = typed_accepted(&mut script, 0, keyed(0));
        let new = typed_accepted(&mut script, 1, keyed(0));
        let at = Duration::from_millis(delivered_at_ms);
        typed_consumed(&mut script, lvq, old, at);
        typed_consumed(&mut script, lvq, new, at);
        rules(&check(&script.0, &params))
    };
    // Within the slack: it may have been on its way already.
    assert_eq!(run(100), []);
    assert_eq!(run(2_000), [Rule::LastValueSuperseded]);
    // Never delivered: replaced, which rule 2 excuses.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    typed_accepted(&mut script, 0, keyed(0));
    let new = typed_accepted(&mut script, 1, keyed(0));
    typed_consumed(&mut script, lvq, new, Duration::from_millis(50));
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.superseded_excused, 1);
}

#[test]
fn a_key_whose_newest_value_is_never_consumed_fails_rule_17() {
    let params = with_last_value();
    let lvq = crate::queue_types::LAST_VALUE_QUEUE;
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let old = typed_accepted(&mut script, 0, keyed(1));
    // Consumed before its successor was sent: the successor is lost.
    typed_consumed(&mut script, lvq, old, Duration::from_millis(3));
    typed_accepted(&mut script, 1, keyed(1));
    // The other key's value is consumed: only key 1 is reported.
    let other = typed_accepted(&mut script, 2, keyed(0));
    typed_consumed(&mut script, lvq, other, Duration::from_millis(50));
    let report = check(&script.0, &params);
    let mut broken = rules(&report);
    broken.sort();
    assert_eq!(broken, [Rule::Lost, Rule::LastValueLost]);
    let lost = report
        .violations
        .iter()
        .find(|v| v.rule == Rule::LastValueLost);
    assert!(
        lost.is_some_and(|v| v.detail.contains("key 1")),
        "{report:?}"
    );
}

#[test]
fn a_lower_priority_past_a_waiting_higher_one_fails_rule_18() {
    let params = with_priority();
    let pq = crate::queue_types::PRIORITY_QUEUE;
    let prio = |priority| MessageKind {
        priority: Some(priority),
        ..MessageKind::PLAIN
    };
    let run = |high_first: bool| {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        script.then(Op::Connected {
            conn: conn(ClientId::Consumer(2)),
            address: pq.to_owned(),
            node: None,
        });
        let low = typed_accepted(&mut script, 0, prio(1));
        let lower = typed_accepted(&mut script, 1, prio(0));
        let high = typed_accepted(&mut script, 2, prio(9));
        let order = if high_first {
            [high, low, lower]
        } else {
            [low, lower, high]
        };
        for (n, msg) in (10..).zip(order) {
            typed_consumed(&mut script, pq, msg, Duration::from_millis(n));
        }
        rules(&check(&script.0, &params))
    };
    assert_eq!(run(true), []);
    // The first delivery on a link is not judged (its credit's time is
    // unknown); the second is, and the high one waited.
    assert_eq!(run(false), [Rule::PriorityOrder]);
}

/// Rule 19: a consume the broker settled in mode second holds across a
/// lost connection and a restart, which excuse an unconfirmed one.
#[test]
fn a_consume_the_broker_settled_in_mode_second_must_hold() {
    let redelivered = |confirmed: bool| {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        let first = conn(ClientId::Consumer(0));
        let queue = "q0".to_owned();
        script
            .then(Op::Connected {
                conn: first,
                address: queue.clone(),
                node: None,
            })
            .then(Op::Delivered {
                conn: first,
                queue: queue.clone(),
                msg,
                delivery_count: 0,
                first_acquirer: true,
            })
            .then(Op::Settled {
                conn: first,
                queue: queue.clone(),
                msg,
                outcome: Outcome::Accepted,
            });
        if confirmed {
            script.then(Op::SettleConfirmed {
                conn: first,
                queue: queue.clone(),
                msg,
                outcome: Outcome::Accepted,
            });
        }
        script
            .then(Op::ConnectionLost {
                conn: first,
                why: "reset".to_owned(),
            })
            .then(Op::BrokerStart { node: None });
        consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
        check(&script.0, &params(0))
    };
    let report = redelivered(false);
    assert!(report.passed(), "{:?}", report.violations);
    let report = redelivered(true);
    assert_eq!(rules(&report), [Rule::SettleSecond]);
    assert_eq!(report.stats.settles_confirmed, 1);
    // A broker that answers `first` to `second` breaks it too.
    let mut script = Script::default();
    script
        .then(Op::BrokerStart { node: None })
        .then(Op::SettleModeRefused {
            conn: conn(ClientId::Consumer(0)),
        });
    assert_eq!(rules(&check(&script.0, &params(0))), [Rule::SettleSecond]);
}

/// Rule 20: an accepted request is answered, on its own reply queue,
/// unless that queue was deleted first; the relay refuses what has
/// nowhere to go.
#[test]
fn every_accepted_request_is_answered_on_its_own_queue() {
    use crate::request_reply::{NOWHERE, REQUESTS};
    let requester = conn(ClientId::Requester(0));
    let responder = conn(ClientId::Responder(0));
    let msg = MsgId {
        producer: 0,
        seq: 0,
    };
    // A request to `to`, accepted, with reply queue "dynamic.1".
    let requested = |to: &str| {
        let mut script = Script::default();
        script
            .then(Op::BrokerStart { node: None })
            .then(Op::TempQueue {
                conn: requester,
                address: "dynamic.1".to_owned(),
            })
            .then(Op::Request {
                conn: requester,
                msg,
                to: to.to_owned(),
                reply_to: "dynamic.1".to_owned(),
            })
            .then(Op::RequestOutcome {
                conn: requester,
                msg,
                outcome: Outcome::Accepted,
            });
        script
    };
    let replied = |script: &mut Script, delivered_on: &str| {
        script
            .then(Op::RequestDelivered {
                conn: responder,
                msg,
                reply_to: "dynamic.1".to_owned(),
            })
            .then(Op::Reply {
                conn: responder,
                msg,
                to: "dynamic.1".to_owned(),
            })
            .then(Op::ReplyDelivered {
                conn: requester,
                msg,
                to: "dynamic.1".to_owned(),
                queue: delivered_on.to_owned(),
            });
    };
    let checked = |script: &Script| check(&script.0, &params(0));
    let mut script = requested(REQUESTS);
    assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
    replied(&mut script, "dynamic.1");
    let report = checked(&script);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.requests_answered, 1);
    // Delivered from another queue than the one it was routed to.
    let mut script = requested(REQUESTS);
    replied(&mut script, "dynamic.2");
    assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
    // Unanswered, its queue deleted: excused.
    let mut script = requested(REQUESTS);
    script.then(Op::TempQueueDeleted {
        conn: requester,
        address: "dynamic.1".to_owned(),
    });
    let report = checked(&script);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.requests_excused, 1);
    // Accepted for an address that does not exist.
    let mut script = requested(NOWHERE);
    script.then(Op::Closed { conn: requester });
    assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
}

// ---- the grouped queue -------------------------------------------------

/// `params(0)` with the grouped queue (producer 1, consumers 2 and 3).
fn with_groups() -> WorkloadParams {
    WorkloadParams {
        grouped: Some(crate::queue_types::Grouped {
            groups: 3,
            consumers: 2,
        }),
        ..params(0)
    }
}

/// A history of the grouped queue: consumers 2 (A) and 3 (B) connect;
/// producer 1 sends m0 and m1 of group 0 and m2 of group 1, all accepted;
/// A receives m0 and holds it; B receives m2 (another group: no matter);
/// `before` happens; B receives m1, of A's group; `then` happens, and B
/// accepts m1 and m2. If A did not consume m0, B receives it again and
/// accepts it.
fn held_by_a(before: &[Op], then: &[Op]) -> History {
    let gq = crate::queue_types::GROUPED_QUEUE;
    let (a, b) = (conn(ClientId::Consumer(2)), conn(ClientId::Consumer(3)));
    let of = |group| MessageKind {
        group: Some(group),
        ..MessageKind::PLAIN
    };
    let delivered = |conn, msg, delivery_count| Op::Delivered {
        conn,
        queue: gq.to_owned(),
        msg,
        delivery_count,
        first_acquirer: delivery_count == 0,
    };
    let accepted = |conn, msg| Op::Settled {
        conn,
        queue: gq.to_owned(),
        msg,
        outcome: Outcome::Accepted,
    };
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    for consumer in [a, b] {
        script.then(Op::Connected {
            conn: consumer,
            address: gq.to_owned(),
            node: None,
        });
    }
    let m0 = typed_accepted(&mut script, 0, of(0));
    let m1 = typed_accepted(&mut script, 1, of(0));
    let m2 = typed_accepted(&mut script, 2, of(1));
    script.then(delivered(a, m0, 0)).then(delivered(b, m2, 0));
    for op in before {
        script.then(op.clone());
    }
    script.then(delivered(b, m1, 0));
    for op in then {
        script.then(op.clone());
    }
    script.then(accepted(b, m1)).then(accepted(b, m2));
    let consumed_by_a = [before, then].concat().contains(&accepted(a, m0));
    if !consumed_by_a {
        script.then(delivered(b, m0, 1)).then(accepted(b, m0));
    }
    script.0
}

/// Rule 21: a group's message delivered to B while A holds one of the
/// group fails, unless A's settle was recorded first, A's link was ending
/// (A recorded nothing more before it closed), or A's connection was
/// later lost (the broker let go of what it held when it noticed, which A
/// cannot know).
#[test]
fn a_group_is_held_by_one_consumer_at_a_time() {
    let gq = crate::queue_types::GROUPED_QUEUE;
    let a = conn(ClientId::Consumer(2));
    let m0 = MsgId {
        producer: 1,
        seq: 0,
    };
    let settled = Op::Settled {
        conn: a,
        queue: gq.to_owned(),
        msg: m0,
        outcome: Outcome::Accepted,
    };
    let checked = |before: &[Op], then: &[Op]| check(&held_by_a(before, then), &with_groups());
    // A settles m0 only after B received m1: B got A's group.
    let report = checked(&[], std::slice::from_ref(&settled));
    assert_eq!(rules(&report), [Rule::GroupHeld], "{:?}", report.violations);
    assert_eq!(report.stats.groups_judged, 3);
    // A settled m0 first: the group was free to move.
    let report = checked(std::slice::from_ref(&settled), &[]);
    assert!(report.passed(), "{:?}", report.violations);
    // A closes right after B received m1: its link was ending then.
    let report = checked(&[], &[Op::Closed { conn: a }]);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.groups_judged, 4);
    // A settles, then its connection is lost: A cannot know when the
    // broker let go of m0.
    let lost = Op::ConnectionLost {
        conn: a,
        why: "idle timeout".to_owned(),
    };
    let report = checked(&[], &[settled, lost]);
    assert!(report.passed(), "{:?}", report.violations);
}

// ---- transactions ------------------------------------------------------

/// Producer 0 declares its transaction 0, sends messages 0..`count` in
/// it and discharges it (committing if `commit`), then gets `answer`
/// (`None`: the connection is lost first). Returns the messages.
fn transaction(
    script: &mut Script,
    count: u64,
    commit: bool,
    answer: Option<Outcome>,
) -> Vec<MsgId> {
    let conn = conn(ClientId::Producer(0));
    let txn = TxnId { producer: 0, n: 0 };
    script.then(Op::TxnDeclared { conn, txn });
    let kind = MessageKind {
        txn: Some(0),
        ..MessageKind::PLAIN
    };
    let msgs: Vec<MsgId> = (0..count).map(|seq| MsgId { producer: 0, seq }).collect();
    for &msg in &msgs {
        script.then(Op::Send {
            conn,
            msg,
            resend: false,
            kind,
        });
        // Provisional: no acceptance.
        script.then(Op::ProducerOutcome {
            conn,
            msg,
            outcome: Outcome::Accepted,
        });
    }
    script.then(Op::Discharge { conn, txn, commit });
    match answer {
        Some(outcome) => script.then(Op::Discharged { conn, txn, outcome }),
        None => script.then(Op::ConnectionLost {
            conn,
            why: "reset".to_owned(),
        }),
    };
    msgs
}

/// Consumer 0 consumes each of `msgs` from q0, each on its own
/// connection.
fn consume_all(script: &mut Script, msgs: &[MsgId]) {
    for (n, &msg) in (1..).zip(msgs) {
        consumed_again(script, ClientId::Consumer(0), n, "q0", msg);
    }
}

#[test]
fn every_message_of_a_committed_transaction_must_be_consumed() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msgs = transaction(&mut script, 3, true, Some(Outcome::Accepted));
    consume_all(&mut script, &msgs[..2]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::TxnLost]);
    assert!(report.violations[0].detail.contains("p0#2"));
    assert_eq!(report.stats.messages_accepted, 3);
    consume_all(&mut script, &msgs[2..]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // Provisional outcomes alone promise nothing.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    transaction(&mut script, 3, true, Some(Outcome::Rejected));
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.messages_accepted, 0);
}

#[test]
fn a_message_of_a_transaction_that_did_not_commit_must_never_be_delivered() {
    let cases = [
        (false, Some(Outcome::Accepted), "rolled back"),
        (false, None, "rolled back"),
        (true, Some(Outcome::Rejected), "commit was refused"),
    ];
    for (commit, answer, why) in cases {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msgs = transaction(&mut script, 2, commit, answer);
        consume_all(&mut script, &msgs[..1]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::TxnAbortedDelivered], "{why}");
        assert!(report.violations[0].detail.contains(why), "{why}");
    }
    // Never discharged: its connection's end rolled it back.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let conn = conn(ClientId::Producer(0));
    let txn = TxnId { producer: 0, n: 0 };
    let msg = MsgId {
        producer: 0,
        seq: 0,
    };
    let kind = MessageKind {
        txn: Some(0),
        ..MessageKind::PLAIN
    };
    script.then(Op::TxnDeclared { conn, txn }).then(Op::Send {
        conn,
        msg,
        resend: false,
        kind,
    });
    consume_all(&mut script, &[msg]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::TxnAbortedDelivered]);
    assert!(report.violations[0].detail.contains("never discharged"));
}

#[test]
fn a_commit_with_no_answer_applies_all_or_nothing() {
    // Nothing delivered: it did not commit, which is allowed.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msgs = transaction(&mut script, 3, true, None);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // Everything consumed: it committed.
    consume_all(&mut script, &msgs);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // Part of it: a violation per message missing.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msgs = transaction(&mut script, 3, true, None);
    consume_all(&mut script, &msgs[..1]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::TxnPartial, Rule::TxnPartial]);
    assert!(report.violations[0].detail.contains("p0#0 was delivered"));
    // Part of it, but only as the clients closed: the commit applied late,
    // and nobody waited for the rest (3 nodes, seed 0x253).
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msgs = transaction(&mut script, 3, true, None);
    script.then(Op::LivenessEnded);
    consume_all(&mut script, &msgs[..1]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
}

#[test]
fn a_broker_holding_a_rolled_back_message_fails_rule_5() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    transaction(&mut script, 1, false, Some(Outcome::Accepted));
    script.broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::FinalState]);
    // Of a commit with no answer, it may hold the messages.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    transaction(&mut script, 1, true, None);
    script.broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
}

// ---- the cluster -------------------------------------------------------

fn replicas(node: u64, groups: &[(u32, u64, u32)]) -> NodeReplicas {
    let groups = groups
        .iter()
        .map(|&(group, applied, digest)| sluice::node::ReplicaStatus {
            group,
            leader: Some(1),
            applied,
            digest,
            rejoining: false,
        })
        .collect();
    NodeReplicas {
        node,
        groups: Some(groups),
    }
}

#[test]
fn replicas_must_apply_alike_and_agree() {
    let agree = [
        replicas(1, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
        replicas(2, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
    ];
    assert!(divergences(&agree).is_empty());
    let differ = [
        replicas(1, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
        replicas(2, &[(1, 10, 0xab), (2, 7, 0xbb)]),
    ];
    let found = divergences(&differ);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("group 1:"), "{found:?}");
    assert!(found[0].contains("node1 digest 0x000000aa"), "{found:?}");
    assert!(found[0].contains("node2 digest 0x000000ab"), "{found:?}");
    let behind = [
        replicas(1, &[(1, 10, 0xaa)]),
        replicas(2, &[(1, 9, 0xaa)]),
        NodeReplicas {
            node: 3,
            groups: None,
        },
    ];
    let found = divergences(&behind);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("node3 did not report")));
    assert!(found.iter().any(|f| f.contains("node2 applied 9")));
    let mut stuck = [replicas(1, &[(1, 10, 0xaa)]), replicas(2, &[(1, 10, 0xaa)])];
    if let Some(groups) = &mut stuck[1].groups {
        groups[0].rejoining = true;
    }
    let found = divergences(&stuck);
    assert_eq!(
        found,
        ["group 1: node2 is still rejoining after damage to its log"]
    );
}

#[test]
fn diverged_replicas_fail_rule_6() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    script.then(Op::Replicas {
        nodes: vec![replicas(1, &[(1, 3, 1)]), replicas(2, &[(1, 3, 2)])],
    });
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::ReplicaConvergence]);
    assert!(report.stats.checked.contains(&Rule::ReplicaConvergence));
}

/// `client` on cluster node `node` receives `msg` from q0 with
/// `count`, then accepts it.
fn consumed_on(script: &mut Script, client: ClientId, node: u64, msg: MsgId, count: u32) {
    let conn = conn(client);
    script
        .then(Op::Connected {
            conn,
            address: "q0".to_owned(),
            node: Some(node),
        })
        .then(Op::Delivered {
            conn,
            queue: "q0".to_owned(),
            msg,
            delivery_count: count,
            first_acquirer: false,
        })
        .then(Op::Settled {
            conn,
            queue: "q0".to_owned(),
            msg,
            outcome: Outcome::Accepted,
        });
}

#[test]
fn a_stale_delivery_from_a_lagging_node_is_no_violation() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    let msg = script.accepted(0);
    consumed_on(&mut script, ClientId::Consumer(0), 1, msg, 1);
    // An earlier acquisition (count 0), handed over late.
    consumed_on(&mut script, ClientId::Consumer(1), 2, msg, 0);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // The same count again is a redelivery of a consumed message.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    let msg = script.accepted(0);
    consumed_on(&mut script, ClientId::Consumer(0), 1, msg, 1);
    consumed_on(&mut script, ClientId::Consumer(1), 2, msg, 1);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::ConsumedRedelivered]);
}

#[test]
fn a_consume_on_a_node_cut_off_from_the_others_is_not_firm() {
    let isolate = |host: &str| Fault::Isolate {
        host: host.to_owned(),
        others: vec!["node1".to_owned()],
        leader_of: None,
    };
    let injected = |fault| {
        let lasts = Duration::from_secs(1);
        Op::Fault(FaultEvent::Injected { fault, lasts })
    };
    let ended = |fault| Op::Fault(FaultEvent::Ended(fault));
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    let msg = script.accepted(0);
    script.then(injected(isolate("node2")));
    consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
    script.then(ended(isolate("node2")));
    consumed_on(&mut script, ClientId::Consumer(1), 1, msg, 1);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    // Cut off node 3 instead: the consume on node 2 is firm.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    let msg = script.accepted(0);
    script.then(injected(isolate("node3")));
    consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
    script.then(ended(isolate("node3")));
    consumed_on(&mut script, ClientId::Consumer(1), 1, msg, 1);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::ConsumedRedelivered]);
}

/// Rule 9 in a cluster: a crash of any node (a group's leader) may
/// stall the commit that dispatches a message, whose clock was read
/// before the crash.
#[test]
fn a_late_delivery_behind_a_crashed_node_is_excused() {
    let ttl = MessageKind {
        ttl: Some(Duration::from_millis(2)),
        ..MessageKind::PLAIN
    };
    let late = |crash: bool| {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        let msg = sent(&mut script, 0, ttl, 1);
        let fault = Fault::Crash {
            host: "node3".to_owned(),
        };
        if crash {
            let lasts = Duration::from_millis(100);
            script.then(Op::Fault(FaultEvent::Injected {
                fault: fault.clone(),
                lasts,
            }));
        }
        while script.0.events().last().map(|e| e.time)
            < Some(EXPIRY_SLACK + Duration::from_millis(10))
        {
            script.then(Op::LeaderObserved {
                group: 1,
                leader: Some(1),
            });
        }
        if crash {
            script.then(Op::Fault(FaultEvent::Ended(fault)));
        }
        consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
        rules(&check(&script.0, &params(0)))
    };
    assert_eq!(late(false), [Rule::Expired]);
    assert_eq!(late(true), []);
}

/// Rule 9: a delivery sent while the consumer's link was slowed keeps the
/// latency it was sent with, so it may arrive up to the fault's largest
/// latency after the fault ended (found on seed 0x67d, with 2 ms ticks: a
/// message sent before its expiry arrived 1 s late, 1 s after the fault
/// ended, 0.8 s after its expiry).
#[test]
fn a_delivery_slowed_by_a_latency_fault_may_arrive_after_it_ended() {
    let ttl = MessageKind {
        ttl: Some(Duration::from_millis(2)),
        ..MessageKind::PLAIN
    };
    let late = |max: Duration| {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let fault = Fault::Latency {
            client: "consumer0".to_owned(),
            broker: "broker".to_owned(),
            max,
        };
        let lasts = Duration::from_millis(1);
        script.then(Op::Fault(FaultEvent::Injected {
            fault: fault.clone(),
            lasts,
        }));
        script.then(Op::Fault(FaultEvent::Ended(fault)));
        let msg = sent(&mut script, 0, ttl, 1);
        while script.0.events().last().map(|e| e.time)
            < Some(EXPIRY_SLACK + Duration::from_millis(10))
        {
            script.then(Op::Fault(FaultEvent::HealedAll));
        }
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        rules(&check(&script.0, &params(0)))
    };
    assert_eq!(late(Duration::from_millis(1)), [Rule::Expired]);
    assert_eq!(late(EXPIRY_SLACK * 2), []);
}

#[test]
fn a_panic_fails_rule_7_and_skips_the_end_of_run_rules() {
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: Some(1) });
    script.accepted(0);
    script.then(Op::Aborted {
        why: "to_commit 9 is out of range".to_owned(),
    });
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::NodePanicked]);
}

#[test]
fn the_selective_consumer_gets_only_what_its_filter_selects() {
    for filter in [
        SelectiveFilter::JmsSelector,
        SelectiveFilter::ApplicationProperties,
    ] {
        let params = WorkloadParams {
            consumers: 3,
            selective: true,
            selective_filter: filter,
            ..params(0)
        };
        let odd = MsgId {
            producer: 0,
            seq: 1,
        };
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let even = script.accepted(0);
        script.consumed(ClientId::Consumer(2), "q0", even);
        assert!(check(&script.0, &params).passed(), "{filter:?}");
        let producer = conn(ClientId::Producer(0));
        script
            .then(Op::Send {
                conn: producer,
                msg: odd,
                resend: false,
                kind: MessageKind::PLAIN,
            })
            .then(Op::ProducerOutcome {
                conn: producer,
                msg: odd,
                outcome: Outcome::Accepted,
            });
        consumed_again(&mut script, ClientId::Consumer(2), 2, "q0", odd);
        let report = check(&script.0, &params);
        assert_eq!(rules(&report), [Rule::Unselected], "{filter:?}");
        assert!(
            report.violations[0].detail.contains(filter.describe()),
            "{}",
            report.violations[0].detail
        );
    }
}

/// One volatile subscriber (subscriber 0) and the topic producer
/// (producer 1).
fn with_volatile() -> WorkloadParams {
    WorkloadParams {
        volatile_subscribers: 1,
        ..params(1)
    }
}

/// The history's name of the subscription of volatile subscriber 0's
/// `link`th link on its connection `n`.
fn volatile_queue(params: &WorkloadParams, n: u32, link: u32) -> String {
    let conn = ConnId {
        client: ClientId::Subscriber(0),
        n,
    };
    volatile_link_queue(&params.volatile_subscription(0), conn, link)
}

/// Volatile subscriber 0's connection `n` attaches its first link.
fn volatile_attached(script: &mut Script, params: &WorkloadParams, n: u32) -> ConnId {
    let conn = ConnId {
        client: ClientId::Subscriber(0),
        n,
    };
    script.then(Op::Connected {
        conn,
        address: volatile_queue(params, n, 1),
        node: None,
    });
    conn
}

#[test]
fn a_volatile_subscription_that_lived_to_the_end_gets_what_was_published_meanwhile() {
    let params = with_volatile();
    let queue = volatile_queue(&params, 1, 1);
    // Delivered: a pass.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let sub = volatile_attached(&mut script, &params, 1);
    let msg = script.accepted(1);
    script.delivered(sub, &queue, msg);
    script.then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.stats.checked.contains(&Rule::Volatile));
    assert_eq!(report.stats.volatile_delivered, 1);

    // Never delivered, on a link that lived to the end: a violation.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let sub = volatile_attached(&mut script, &params, 1);
    script.accepted(1);
    script.then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert_eq!(rules(&report), [Rule::Volatile]);
    assert!(report.violations[0].detail.contains(&queue));

    // Sent before the attach was answered: not owed, even though accepted
    // after it.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let producer = conn(ClientId::Producer(1));
    let msg = MsgId {
        producer: 1,
        seq: 0,
    };
    script.then(Op::Send {
        conn: producer,
        msg,
        resend: false,
        kind: MessageKind::PLAIN,
    });
    let sub = volatile_attached(&mut script, &params, 1);
    script
        .then(Op::ProducerOutcome {
            conn: producer,
            msg,
            outcome: Outcome::Accepted,
        })
        .then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.volatile_excused, 0);
}

#[test]
fn a_volatile_subscription_that_died_first_is_excused() {
    let params = with_volatile();
    // Its connection lost, then another one to the end.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let first = volatile_attached(&mut script, &params, 1);
    script.accepted(1);
    script.then(Op::ConnectionLost {
        conn: first,
        why: "reset".to_owned(),
    });
    let second = volatile_attached(&mut script, &params, 2);
    script.then(Op::Closed { conn: second });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.volatile_excused, 1);

    // Relinked: the first link's subscription went with it, and the
    // second link was attached after the message was sent.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let sub = volatile_attached(&mut script, &params, 1);
    script.accepted(1);
    script
        .then(Op::Relinked { conn: sub })
        .then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.volatile_excused, 1);

    // With a TTL, it may have expired first.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let sub = volatile_attached(&mut script, &params, 1);
    let ttl = MessageKind {
        ttl: Some(Duration::from_millis(5)),
        ..MessageKind::PLAIN
    };
    sent(&mut script, 1, ttl, 1);
    script.then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
    assert_eq!(report.stats.volatile_excused, 1);
}

#[test]
fn a_volatile_subscription_never_gets_what_was_answered_before_it_was_asked_for() {
    let params = with_volatile();
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(1);
    // A failed attempt first: the next attach is sent after it.
    script.then(Op::ConnectionLost {
        conn: ConnId {
            client: ClientId::Subscriber(0),
            n: 1,
        },
        why: "connect: refused".to_owned(),
    });
    let sub = volatile_attached(&mut script, &params, 2);
    script.delivered(sub, &volatile_queue(&params, 2, 1), msg);
    script.then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert_eq!(rules(&report), [Rule::Volatile]);

    // Answered only after the subscriber's last act before its attach: it
    // may have been enqueued after the subscription was made.
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let producer = conn(ClientId::Producer(1));
    let msg = MsgId {
        producer: 1,
        seq: 0,
    };
    script.then(Op::Send {
        conn: producer,
        msg,
        resend: false,
        kind: MessageKind::PLAIN,
    });
    script.then(Op::ConnectionLost {
        conn: ConnId {
            client: ClientId::Subscriber(0),
            n: 1,
        },
        why: "connect: refused".to_owned(),
    });
    script.then(Op::ProducerOutcome {
        conn: producer,
        msg,
        outcome: Outcome::Accepted,
    });
    let sub = volatile_attached(&mut script, &params, 2);
    script.delivered(sub, &volatile_queue(&params, 2, 1), msg);
    script.then(Op::Closed { conn: sub });
    let report = check(&script.0, &params);
    assert!(report.passed(), "{:?}", report.violations);
}

/// Rule 4 across connections: a message whose connection was lost before
/// its outcome came may be overtaken by what the producer sent next on
/// another connection (5 nodes, seed 0xc58: a presettled message applied
/// after later ones); on one connection, order holds.
#[test]
fn a_message_in_doubt_may_be_overtaken_by_the_next_connections() {
    let producer = ClientId::Producer(0);
    let (first, second) = (
        ConnId {
            client: producer,
            n: 1,
        },
        ConnId {
            client: producer,
            n: 2,
        },
    );
    let send = |script: &mut Script, conn: ConnId, seq: u64| {
        let msg = MsgId { producer: 0, seq };
        script.then(Op::Send {
            conn,
            msg,
            resend: false,
            kind: MessageKind::PLAIN,
        });
        msg
    };
    let consumer = conn(ClientId::Consumer(0));
    for (later_conn, fails) in [(second, false), (first, true)] {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let in_doubt = send(&mut script, first, 0);
        if later_conn == second {
            script.then(Op::ConnectionLost {
                conn: first,
                why: "gone".to_owned(),
            });
        }
        let later = send(&mut script, later_conn, 1);
        script.then(Op::ProducerOutcome {
            conn: later_conn,
            msg: later,
            outcome: Outcome::Accepted,
        });
        script
            .delivered(consumer, "q0", later)
            .delivered(consumer, "q0", in_doubt);
        let report = check(&script.0, &params(0));
        let expected: &[Rule] = if fails { &[Rule::Fifo] } else { &[] };
        assert_eq!(rules(&report), expected, "{:?}", report.violations);
    }
}

/// Rule 4 after a consumer's connection was lost: the broker may still
/// hand that connection messages until it finds it dead, and then return
/// what it never sent (delivery-count 0) after later ones (1 node,
/// lossy-net, seed 0x1007). What was sent after the consumer's new link
/// attached keeps its order.
#[test]
fn a_message_sent_before_the_consumers_new_link_may_come_back_after_later_ones() {
    let producer = conn(ClientId::Producer(0));
    let consumer = ClientId::Consumer(0);
    let (old, new) = (
        ConnId {
            client: consumer,
            n: 1,
        },
        ConnId {
            client: consumer,
            n: 2,
        },
    );
    let send = |script: &mut Script, seq: u64| {
        let msg = MsgId { producer: 0, seq };
        script
            .then(Op::Send {
                conn: producer,
                msg,
                resend: false,
                kind: MessageKind::PLAIN,
            })
            .then(Op::ProducerOutcome {
                conn: producer,
                msg,
                outcome: Outcome::Accepted,
            });
        msg
    };
    let connected = |script: &mut Script, conn: ConnId| {
        script.then(Op::Connected {
            conn,
            address: "q0".to_owned(),
            node: None,
        });
    };
    for (first_sent_after_link, fails) in [(false, false), (true, true)] {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        connected(&mut script, old);
        let mut first = None;
        if !first_sent_after_link {
            first = Some(send(&mut script, 0));
        }
        script.then(Op::ConnectionLost {
            conn: old,
            why: "idle timeout expired".to_owned(),
        });
        connected(&mut script, new);
        let first = first.unwrap_or_else(|| send(&mut script, 0));
        let later = send(&mut script, 1);
        script
            .delivered(new, "q0", later)
            .delivered(new, "q0", first);
        let report = check(&script.0, &params(0));
        let expected: &[Rule] = if fails { &[Rule::Fifo] } else { &[] };
        assert_eq!(rules(&report), expected, "{:?}", report.violations);
    }
}

/// Rule 23: an intruder's attempt refused or failed (under a fault) is no
/// violation, and counted; one served is, whatever the faults.
#[test]
fn an_intruder_refused_or_failed_passes_and_one_served_fails() {
    let intrusion = |answer| Op::Intrusion {
        conn: conn(ClientId::Intruder(0)),
        node: None,
        attempt: Attempt::Receive("q0".to_owned()),
        answer,
    };
    let mut script = Script::default();
    script.then(Op::BrokerStart { node: None });
    let msg = script.accepted(0);
    script
        .then(intrusion(Answer::Refused(
            "amqp:unauthorized-access".to_owned(),
        )))
        .then(intrusion(Answer::Failed(
            "connection closed: None".to_owned(),
        )))
        .consumed(ClientId::Consumer(0), "q0", msg)
        .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.stats.checked.contains(&Rule::Intruder));
    assert_eq!(
        (
            report.stats.intrusions_refused,
            report.stats.intrusions_failed
        ),
        (1, 1)
    );
    script.then(intrusion(Answer::Served("a receiving link".to_owned())));
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::Intruder]);
}

/// Rule 24: a message every send of which was rejected is never
/// delivered; a send whose outcome never came may have been taken.
#[test]
fn a_delivered_message_whose_every_send_was_rejected_fails_rule_24() {
    let producer = conn(ClientId::Producer(0));
    let msg = MsgId {
        producer: 0,
        seq: 0,
    };
    let send = |resend| Op::Send {
        conn: producer,
        msg,
        resend,
        kind: MessageKind::PLAIN,
    };
    let rejected = || Op::ProducerOutcome {
        conn: producer,
        msg,
        outcome: Outcome::Rejected,
    };
    let mut script = Script::default();
    script
        .then(Op::BrokerStart { node: None })
        .then(send(false))
        .then(rejected())
        .consumed(ClientId::Consumer(0), "q0", msg)
        .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert_eq!(rules(&report), [Rule::Refused]);

    let mut script = Script::default();
    script
        .then(Op::BrokerStart { node: None })
        .then(send(false))
        .then(send(true))
        .then(rejected())
        .consumed(ClientId::Consumer(0), "q0", msg)
        .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
    let report = check(&script.0, &params(0));
    assert!(report.passed(), "{:?}", report.violations);
}
