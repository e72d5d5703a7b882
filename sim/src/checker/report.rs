//! What the checker reports: the rules, their violations, and counts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Which rule a violation breaks, or a run checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Rule 1.
    NeverSent,
    /// Rule 2.
    Lost,
    /// Rule 3.
    ConsumedRedelivered,
    /// Rule 4.
    Fifo,
    /// Rule 5.
    FinalState,
    /// Rule 6.
    ReplicaConvergence,
    /// Rule 7.
    NodePanicked,
    /// Rule 8.
    DuplicateId,
    /// Rule 9.
    Expired,
    /// Rule 10.
    DeadLetterLost,
    /// Rule 11.
    Early,
    /// Rule 12.
    Unselected,
    /// Rule 13.
    TxnLost,
    /// Rule 14.
    TxnAbortedDelivered,
    /// Rule 15.
    TxnPartial,
    /// Rule 19.
    LastValueSuperseded,
    /// Rule 20.
    LastValueLost,
    /// Rule 18.
    PriorityOrder,
    /// Rule 19.
    SettleSecond,
    /// Rule 20.
    RequestReply,
    /// Rule 21.
    GroupHeld,
    /// Rule 22.
    Volatile,
    /// Rule 23.
    Intruder,
    /// Rule 24.
    Refused,
    /// No silent skips: a rule that applies to the run could not be
    /// checked, and nothing else the run broke explains why.
    NotChecked,
}

impl Rule {
    /// Every rule, in their numbering's order.
    pub const ALL: [Rule; 24] = [
        Rule::NeverSent,
        Rule::Lost,
        Rule::ConsumedRedelivered,
        Rule::Fifo,
        Rule::FinalState,
        Rule::ReplicaConvergence,
        Rule::NodePanicked,
        Rule::DuplicateId,
        Rule::Expired,
        Rule::DeadLetterLost,
        Rule::Early,
        Rule::Unselected,
        Rule::TxnLost,
        Rule::TxnAbortedDelivered,
        Rule::TxnPartial,
        Rule::LastValueSuperseded,
        Rule::LastValueLost,
        Rule::PriorityOrder,
        Rule::SettleSecond,
        Rule::RequestReply,
        Rule::GroupHeld,
        Rule::Volatile,
        Rule::Intruder,
        Rule::Refused,
    ];

    /// Whether the rule applies to a run of `nodes` nodes: replicas
    /// converge only in a cluster.
    pub fn applies_to(self, nodes: u32) -> bool {
        self != Rule::ReplicaConvergence || nodes > 1
    }

    /// Its short name, for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NeverSent => "1 never-sent",
            Rule::Lost => "2 lost",
            Rule::ConsumedRedelivered => "3 consumed-redelivered",
            Rule::Fifo => "4 fifo",
            Rule::FinalState => "5 final-state",
            Rule::ReplicaConvergence => "6 replicas",
            Rule::NodePanicked => "7 panic",
            Rule::DuplicateId => "8 duplicate-id",
            Rule::Expired => "9 expired",
            Rule::DeadLetterLost => "10 dead-letter-lost",
            Rule::Early => "11 early",
            Rule::Unselected => "12 unselected",
            Rule::TxnLost => "13 txn-lost",
            Rule::TxnAbortedDelivered => "14 txn-aborted-delivered",
            Rule::TxnPartial => "15 txn-partial",
            Rule::LastValueSuperseded => "16 lvq-superseded",
            Rule::LastValueLost => "17 lvq-newest-lost",
            Rule::PriorityOrder => "18 priority",
            Rule::SettleSecond => "19 settle-second",
            Rule::RequestReply => "20 request-reply",
            Rule::GroupHeld => "21 group-held",
            Rule::Volatile => "22 volatile",
            Rule::Intruder => "23 intruder",
            Rule::Refused => "24 refused",
            Rule::NotChecked => "not-checked",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NeverSent => "delivered but never sent",
            Rule::Lost => "accepted but never consumed",
            Rule::ConsumedRedelivered => "consumed message delivered again",
            Rule::Fifo => "per-producer FIFO broken",
            Rule::FinalState => "broker state disagrees with the history",
            Rule::ReplicaConvergence => "replicas did not converge",
            Rule::NodePanicked => "a broker node panicked",
            Rule::DuplicateId => "a de-duplicated message-id enqueued twice",
            Rule::Expired => "an expired message delivered",
            Rule::DeadLetterLost => "dead-lettered but missing from the dead-letter queue",
            Rule::Early => "a scheduled message delivered before its time",
            Rule::Unselected => "a message delivered that its consumer's selector does not select",
            Rule::TxnLost => "a committed transaction's message never consumed",
            Rule::TxnAbortedDelivered => "a message of a transaction that did not commit delivered",
            Rule::TxnPartial => "part of a transaction applied",
            Rule::LastValueSuperseded => "a superseded last value delivered",
            Rule::LastValueLost => "the newest last value of a key lost",
            Rule::PriorityOrder => "a lower priority delivered before a waiting higher one",
            Rule::SettleSecond => {
                "a consume the broker settled (rcv-settle-mode second) did not hold"
            }
            Rule::RequestReply => "a request or its reply went astray",
            Rule::GroupHeld => "a group's message delivered while another consumer held the group",
            Rule::Volatile => {
                "a volatile subscription missed what was published while its link lived, or got what came before"
            }
            Rule::Intruder => "an intruder was served what its user may not have",
            Rule::Refused => "a message whose every send was rejected delivered",
            Rule::NotChecked => "a rule could not be checked",
        })
    }
}

/// One broken rule, at the history event that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The index of the event in the history.
    pub index: usize,
    /// The event's simulated time.
    pub time: Duration,
    /// The event and what is wrong with it.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:.3}s (history event {}): {}",
            self.rule,
            self.time.as_secs_f64(),
            self.index,
            self.detail
        )
    }
}

/// Counts over the history, for summaries and the snapshot test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events by kind.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Faults the nemesis injected while messages flowed: from the first
    /// send to the last settle. A seed with none tested its faults against
    /// an idle broker, or had none.
    pub faults_in_traffic: u64,
    /// Distinct messages sent.
    pub messages_sent: u64,
    /// Distinct messages a producer saw accepted.
    pub messages_accepted: u64,
    /// Distinct messages consumed, counted once per queue (a topic message
    /// once per subscription).
    pub messages_consumed: u64,
    /// Distinct messages consumed from the dead-letter queue.
    pub dead_lettered: u64,
    /// Accepted messages never consumed that the history excuses: they
    /// had a TTL, or were transient and a broker restarted after.
    pub vanished_excused: u64,
    /// Accepted messages of the last-value queue never consumed that a
    /// message of their key may have replaced (rules 2 and 5 excuse them).
    pub superseded_excused: u64,
    /// Deliveries from the last-value queue judged by rule 16.
    pub last_value_judged: u64,
    /// Deliveries after a successor's acceptance that faults excused
    /// (rule 16).
    pub last_value_late_excused: u64,
    /// Deliveries from the priority queue judged by rule 18.
    pub priority_judged: u64,
    /// Deliveries from the grouped queue judged by rule 21.
    pub groups_judged: u64,
    /// Deliveries of a message from a queue beyond its first (all allowed
    /// ones).
    pub redeliveries: u64,
    /// Consumes of a message from a queue beyond its first (allowed
    /// duplicates).
    pub duplicates: u64,
    /// Consumes the broker settled under rcv-settle-mode `second`.
    pub settles_confirmed: u64,
    /// Deliveries after a consume the broker settled under rcv-settle-mode
    /// `second` that rule 19 let pass: a dead incarnation's or stale.
    pub second_excused: u64,
    /// Requests the broker accepted that a reply answered.
    pub requests_answered: u64,
    /// Requests the broker accepted that no reply answered, excused: their
    /// reply queue was deleted, or died with its connection, first.
    pub requests_excused: u64,
    /// Messages delivered on volatile subscriptions that lived to the end
    /// of the run (rule 22 judged what they were owed).
    pub volatile_delivered: u64,
    /// Messages owed to a volatile subscription and never delivered on it,
    /// excused: its link ended before the end of the run, or the message
    /// may vanish.
    pub volatile_excused: u64,
    /// The intruder's attempts the broker refused (rule 23).
    pub intrusions_refused: u64,
    /// The intruder's attempts that failed or went unanswered, under
    /// faults (rule 23).
    pub intrusions_failed: u64,
    /// Per queue: messages accepted by the broker and never consumed.
    pub final_depths: BTreeMap<String, u64>,
    /// The rules the run was checked against. Rules 1, 3, 4, 7, 8, 9, 11,
    /// 12, 14, 16, 18, 19, 21 and 23 always are; rules 2, 10, 13, 15, 17 and 22
    /// once the run had its liveness phase (not cut short by a panic); rule 5 once the broker reported
    /// its state at the end; rule 6 once the cluster's nodes reported their
    /// replicas.
    pub checked: BTreeSet<Rule>,
    /// Violations found, including those not kept in the report.
    pub violations_total: u64,
    /// Violations found, by rule, including those not kept in the report.
    pub violations_by_rule: BTreeMap<Rule, u64>,
}

/// What the checker concluded.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Counts.
    pub stats: Stats,
    /// Every violation, earliest first.
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// True if no rule was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The rules broken, each with its count, after a colon
    /// (`: 3 × accepted but never consumed, …`); empty if none.
    pub fn rules_broken(&self) -> String {
        let listed: Vec<String> = self
            .stats
            .violations_by_rule
            .iter()
            .map(|(rule, count)| format!("{count} × {rule}"))
            .collect();
        if listed.is_empty() {
            String::new()
        } else {
            format!(": {}", listed.join(", "))
        }
    }
}
