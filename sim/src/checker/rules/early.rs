//! Rule 11.

use std::time::Duration;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::Event;

use super::{Check, violation};

/// How much sooner than its first send plus its delay a scheduled message
/// may arrive (rule 11): none, but for the rounding of simulated time to
/// the broker's milliseconds. The broker takes it after it was sent, by
/// its own clock, and schedules it from then; with true clocks that is no
/// earlier than the send.
pub const SCHEDULE_SLACK: Duration = Duration::from_millis(2);

/// Rule 11, **no scheduled message before its time**: a message sent with
/// `x-opt-delivery-delay` d at t (its first send) is delivered no sooner
/// than t + d − [`SCHEDULE_SLACK`], unless some broker's group clock was
/// off the true time meanwhile (a clock that stands still or runs ahead
/// schedules early).
pub(super) struct Early;

impl<'h> Check<'h> for Early {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        let Some(delivery) = &facts.delivery else {
            return;
        };
        let msg = delivery.msg;
        let sent = facts.first_sent.get(&msg).copied().unwrap_or_default();
        if let Some(delay) = facts.timeline.kind(msg).delay
            && delivery.time + SCHEDULE_SLACK < sent + delay
            && !facts.timeline.clock_off_between(sent, delivery.time)
        {
            let detail = format!(
                "{msg} was first sent at {:.3}s with a delay of {}ms",
                sent.as_secs_f64(),
                delay.as_millis()
            );
            report
                .violations
                .push(violation(Rule::Early, index, event, detail));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Early);
    }
}
