//! The checker: reads a run's [`History`] and decides whether the broker
//! kept its promises (the rules are also in docs/simulation.md).
//!
//! Every rule is about a message M in a queue Q: a queue producer's queue,
//! or, for a topic producer, each subscriber's subscription queue (every
//! subscription exists before a topic producer starts, so each must get
//! every topic message). M is *consumed* from Q when a consumer of Q
//! settles it `accepted` or `rejected`. In a cluster, "the broker" of a
//! connection is the node it connected to, and a restart is that node's.
//!
//! Layout:
//! - `facts`: what several rules read. A first pass gathers the
//!   `Timeline` (facts whose later occurrence matters to earlier events:
//!   fault windows, lost and closed connections, send counts,
//!   transactions); then, in history order, `Facts` takes in each event
//!   (sends, acceptances, consumes, deliveries and broker starts so far,
//!   and whether the event is a phantom) before any rule sees it.
//! - `rules`: one struct per rule, in a file of its own, whose doc says
//!   what it checks and what excuses it (a few rules that decide between
//!   them on the same message share one: 2, 10 and 13; 3 and 8). Each
//!   observes the events with the facts, keeps only its own state, decides
//!   what is left at the end, and records whether it could be checked.
//!   Adding a rule is a file there, its line in `rules::all`, and its
//!   [`Rule`].
//! - [`check`] drives them; `report` holds what it returns.
//!
//! The rules: 1 no phantom messages; 2 no loss; 3 no redelivery of a
//! consumed message; 4 per-producer FIFO; 5 the broker's own state agrees;
//! 6 replica convergence (a cluster); 7 no node panics; 8 no duplicate of
//! a de-duplicated message; 9 no delivery of an expired message; 10
//! dead-lettered messages reach the dead-letter queue; 11 no scheduled
//! message before its time; 12 a selector selects; 13 a committed
//! transaction is whole; 14 nothing of a transaction that did not commit
//! is delivered; 15 all or nothing (see [`crate::transactions`] for what a
//! transaction is in the history); 16 no superseded last value delivered;
//! 17 each key's newest last value consumed; 18 higher priorities first;
//! 19 a consume the broker settled holds (rcv-settle-mode `second`); 20
//! every accepted request is answered, by its own reply queue (temporary
//! queues, their deletion, the anonymous relay: see
//! [`crate::request_reply`]); 21 a group is held by one consumer at a
//! time (the grouped queue); 22 a volatile subscription gets what was
//! published while its link lived, and nothing from before (see
//! [`crate::volatile`]). The last-value queue's model (what is sure
//! of the order its messages were enqueued in) is `last_value`: rules 2,
//! 5, 16 and 17 read it.

use std::time::Duration;

use crate::history::{History, MessageKind};
use crate::workload::WorkloadParams;

mod facts;
mod last_value;
mod report;
mod rules;
#[cfg(test)]
mod tests;

pub use last_value::LastValueDrain;
pub use report::{CheckReport, Rule, Stats, Violation};
pub use rules::{DETACH_SLACK, EXPIRY_SLACK, SCHEDULE_SLACK, STALE_LINK_MAX, SUPERSEDED_SLACK};

/// At most this many violations are kept in a report.
const VIOLATIONS_KEPT: usize = 100;

/// A cut between cluster nodes excuses settles made up to this long after
/// it ended. A node stays out of reach after the network heals until its
/// transport notices and reconnects: a connection dialled during the cut
/// waits for its handshake to time out (5 s), then backs off (up to 2 s);
/// meanwhile a leader may detach its consumers (after 3 s of silence), and
/// the node learns of it only once it is back.
pub const CUT_OFF_SLACK: Duration = Duration::from_secs(8);

/// Whether an accepted message of `kind`, accepted at `accepted_at`, may
/// never be consumed without a broken promise: it had a TTL (it may have
/// expired), or it was transient and a broker (re)started after it was
/// accepted (`starts`, every broker start of the run).
pub fn may_vanish(kind: MessageKind, accepted_at: Duration, starts: &[Duration]) -> bool {
    kind.ttl.is_some() || (!kind.durable && starts.iter().any(|start| *start > accepted_at))
}

/// Checks `history` against every rule: the shared facts take in each
/// event, then every rule observes it; at the end each rule finishes.
pub fn check(history: &History, params: &WorkloadParams) -> CheckReport {
    let events = history.events();
    let mut facts = facts::Facts::new(events, params);
    let mut rules = rules::all(params);
    let mut report = CheckReport::default();
    for (index, event) in events.iter().enumerate() {
        facts.observe(index, event);
        for rule in &mut rules {
            rule.observe(index, event, &facts, &mut report);
        }
    }
    for rule in rules {
        rule.finish(&facts, &mut report);
    }
    facts.count(&mut report.stats);
    // Stable: one event's violations stay in the rules' order.
    report.violations.sort_by_key(|v| v.index);
    let total = report.violations.len() as u64;
    for violation in &report.violations {
        *report
            .stats
            .violations_by_rule
            .entry(violation.rule)
            .or_default() += 1;
    }
    // The first violations explain the failure; a runaway bug can produce
    // hundreds of thousands more.
    report.violations.truncate(VIOLATIONS_KEPT);
    report.stats.violations_total = total;
    report
}

/// No silent skips: a run of `nodes` nodes that breaks no rule fails if a
/// rule that applies to it could not be checked (the broker did not report
/// its state at the end, the nodes their replicas). A run that broke a
/// rule is failing already, and what it broke (a panic, a delivery storm)
/// is why the end was not reached.
pub fn require_all_checked(report: &mut CheckReport, nodes: u32, history: &History) {
    let unchecked: Vec<&str> = Rule::ALL
        .into_iter()
        .filter(|rule| rule.applies_to(nodes) && !report.stats.checked.contains(rule))
        .map(Rule::name)
        .collect();
    if !report.passed() || unchecked.is_empty() {
        return;
    }
    let events = history.events();
    report.violations.push(Violation {
        rule: Rule::NotChecked,
        index: events.len().saturating_sub(1),
        time: events.last().map_or(Duration::ZERO, |event| event.time),
        detail: format!("not checked: {}", unchecked.join(", ")),
    });
    report.stats.violations_total += 1;
    *report
        .stats
        .violations_by_rule
        .entry(Rule::NotChecked)
        .or_default() += 1;
}
