//! One producer: a sending link that keeps at most `window` sends
//! unsettled, optionally paced to a fixed rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::amqp::engine::{Connection, EngineError, LinkId};
use sluice::amqp::types::DeliveryState;

use crate::probe::{Probe, Template};
use crate::stats::{ProducerStats, Shared};

/// Sends per call to [`Producer::pump`], so that a fast producer still lets
/// its connection read.
const BURST: usize = 256;

/// The most stalls one producer records; a run with more has bigger
/// problems than the list would show.
const STALLS_MAX: usize = 10_000;

/// How a producer is told to behave.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// Its number, 0-based.
    pub id: u32,
    /// The run's id, in every probe.
    pub run_id: u32,
    /// Stop after this many sends.
    pub count: Option<u64>,
    /// Stop sending at this instant.
    pub deadline: Option<Instant>,
    /// Time between sends, for a fixed rate.
    pub interval: Option<Duration>,
    /// At most once.
    pub presettled: bool,
    /// Most unsettled sends.
    pub window: u32,
    /// How long to wait for outstanding outcomes once sending is over.
    pub drain_timeout: Duration,
    /// Gaps between accepted outcomes at least this long are recorded.
    pub stall_threshold: Duration,
}

/// A producer's state.
pub struct Producer {
    plan: ProducerPlan,
    /// Its link.
    pub link: LinkId,
    template: Template,
    base: Instant,
    next_due: Option<Instant>,
    unsettled: u32,
    stopped_at: Option<Instant>,
    done: bool,
    /// What it did.
    pub stats: ProducerStats,
}

impl Producer {
    /// A producer on `link`; `base` is the run's clock origin, `start` when
    /// paced sending begins.
    pub fn new(
        plan: ProducerPlan,
        link: LinkId,
        template: Template,
        base: Instant,
        start: Instant,
    ) -> Self {
        let next_due = plan.interval.map(|interval| {
            // Stagger producers over one interval so that a fixed rate is
            // not offered in bursts of one message per producer.
            start + interval.mul_f64(f64::from(plan.id % 64) / 64.0)
        });
        Self {
            plan,
            link,
            template,
            base,
            next_due,
            unsettled: 0,
            stopped_at: None,
            done: false,
            stats: ProducerStats::default(),
        }
    }

    /// Its number.
    pub fn id(&self) -> u32 {
        self.plan.id
    }

    /// True once it has sent everything and heard every outcome (or given up).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn out_of_messages(&self, now: Instant) -> bool {
        self.plan
            .count
            .is_some_and(|count| self.stats.sent >= count)
            || self.plan.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Sends what the window, credit and pacing allow. Returns when it next
    /// wants to run (pacing or deadline), if it knows.
    pub fn pump(
        &mut self,
        conn: &mut Connection,
        now_fn: &impl Fn() -> Instant,
        shared: &Arc<Shared>,
    ) -> Result<Option<Instant>, EngineError> {
        if self.done {
            return Ok(None);
        }
        let mut now = now_fn();
        let mut sent = 0;
        while sent < BURST && !self.out_of_messages(now) {
            if conn.credit(self.link) == 0 {
                break;
            }
            if !self.plan.presettled && self.unsettled >= self.plan.window {
                break;
            }
            if let Some(due) = self.next_due {
                if now < due {
                    break;
                }
            }
            let seq = self.stats.sent;
            let probe = Probe {
                run_id: self.plan.run_id,
                producer: self.plan.id,
                seq,
                sent_ns: u64::try_from(now.saturating_duration_since(self.base).as_nanos())
                    .unwrap_or(u64::MAX),
            };
            let message = self.template.message(&probe);
            let tag = Bytes::copy_from_slice(&seq.to_be_bytes());
            conn.send(self.link, tag, message, self.plan.presettled)?;
            self.stats.sent += 1;
            self.stats.first_send.get_or_insert(now);
            Shared::add(&shared.sent, 1);
            if self.plan.presettled {
                self.stats.last_confirm = Some(now);
                Shared::add(&shared.confirmed, 1);
            } else {
                self.unsettled += 1;
            }
            if let (Some(due), Some(interval)) = (self.next_due.as_mut(), self.plan.interval) {
                *due += interval;
            }
            sent += 1;
            now = now_fn();
        }
        if self.out_of_messages(now) {
            let stopped = *self.stopped_at.get_or_insert(now);
            if self.unsettled == 0 {
                self.finish(shared);
            } else if now >= stopped + self.plan.drain_timeout {
                self.stats.unconfirmed = u64::from(self.unsettled);
                // Sends that never got an answer: a gap with no end.
                if let Some(from) = self.stats.last_accept.or(self.stats.first_send) {
                    self.record_stall(from, None);
                }
                self.finish(shared);
            } else {
                return Ok(Some(stopped + self.plan.drain_timeout));
            }
            return Ok(None);
        }
        let mut wake = self.plan.deadline;
        if let Some(due) = self.next_due {
            wake = Some(wake.map_or(due, |d| d.min(due)));
        }
        Ok(wake)
    }

    fn record_stall(&mut self, from: Instant, to: Option<Instant>) {
        if self.stats.stalls.len() < STALLS_MAX {
            self.stats.stalls.push((from, to));
        }
    }

    fn finish(&mut self, shared: &Arc<Shared>) {
        if !self.done {
            self.done = true;
            shared
                .producers_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The broker settled (or updated) one of our deliveries.
    pub fn on_outcome(
        &mut self,
        state: Option<&DeliveryState>,
        settled: bool,
        now: Instant,
        shared: &Arc<Shared>,
    ) {
        if !settled || self.plan.presettled {
            return;
        }
        self.unsettled = self.unsettled.saturating_sub(1);
        self.stats.last_confirm = Some(now);
        match state {
            Some(DeliveryState::Accepted(_)) => {
                self.stats.accepted += 1;
                Shared::add(&shared.confirmed, 1);
                if let Some(last) = self.stats.last_accept
                    && now.saturating_duration_since(last) >= self.plan.stall_threshold
                {
                    self.record_stall(last, Some(now));
                }
                self.stats.last_accept = Some(now);
            }
            Some(DeliveryState::Rejected(_)) => self.stats.rejected += 1,
            // Released, modified, or settled without an outcome.
            _ => self.stats.released += 1,
        }
    }
}
