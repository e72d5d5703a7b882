//! The rules, one file each (or one per few rules that decide between them
//! on the same message; their docs say why). Each is a [`Check`]: it
//! observes the history event by event after the shared [`Facts`] took the
//! event in, keeps only the state no other rule reads, and decides what is
//! left at the end.
//!
//! Adding a rule: a file here with its struct (its doc says what it checks
//! and what excuses it), its `mod` line and its line in [`all`], and its
//! [`Rule`] variant.

use crate::history::Event;
use crate::workload::WorkloadParams;

use super::facts::Facts;
use super::{CheckReport, Rule, Violation};

mod early;
mod expired;
mod fifo;
mod final_state;
mod groups;
mod intruder;
mod last_value;
mod lost;
mod never_sent;
mod panicked;
mod priority;
mod redelivered;
mod refused;
mod replicas;
mod request_reply;
mod settle_second;
mod txn_aborted;
mod txn_partial;
mod unselected;
mod volatile;

pub use early::SCHEDULE_SLACK;
pub use expired::EXPIRY_SLACK;
pub use last_value::SUPERSEDED_SLACK;
pub use priority::{DETACH_SLACK, STALE_LINK_MAX};
#[cfg(test)]
pub(super) use replicas::divergences;

/// One rule (or a few that decide together), fed the history in order.
pub(super) trait Check<'h> {
    /// Takes in the history's event `index`, which `facts` already took
    /// in; pushes onto `report` the violations it shows.
    fn observe(
        &mut self,
        _index: usize,
        _event: &'h Event,
        _facts: &Facts<'h>,
        _report: &mut CheckReport,
    ) {
    }

    /// Once the history is over: pushes what is left to find, and records
    /// in `report.stats.checked` the rules it could check.
    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport);
}

/// Every rule, in the order in which the violations one event shows are
/// listed.
pub(super) fn all<'h>(params: &WorkloadParams) -> Vec<Box<dyn Check<'h> + 'h>> {
    vec![
        Box::new(never_sent::NeverSent),
        Box::new(unselected::Unselected),
        Box::new(txn_aborted::TxnAbortedDelivered),
        Box::new(refused::Refused::default()),
        Box::new(redelivered::Redelivered),
        Box::new(expired::Expired),
        Box::new(early::Early),
        Box::new(fifo::Fifo::new(params)),
        Box::new(last_value::LastValue::default()),
        Box::new(priority::Priority::new(params)),
        Box::new(panicked::Panicked),
        Box::new(lost::Lost),
        Box::new(txn_partial::TxnPartial::default()),
        Box::new(final_state::FinalState::default()),
        Box::new(replicas::Replicas::default()),
        Box::new(settle_second::SettleSecond::default()),
        Box::new(request_reply::RequestReply::default()),
        Box::new(groups::GroupHeld::default()),
        Box::new(volatile::Volatile::new(params)),
        Box::new(intruder::Intruder),
    ]
}

/// A violation of `rule` at the history's event `index`, `detail` saying
/// what is wrong with it.
fn violation(rule: Rule, index: usize, event: &Event, detail: impl std::fmt::Display) -> Violation {
    Violation {
        rule,
        index,
        time: event.time,
        detail: format!("{event}: {detail}"),
    }
}
