//! One consumer: a receiving link that keeps `prefetch` credit out,
//! accepts each message, and measures it.

use std::time::Instant;

use bytes::Bytes;
use sluice::amqp::engine::{Connection, DeliveryId, EngineError, LinkId};
use sluice::amqp::types::{Accepted, DeliveryState};

use crate::probe::Probe;
use crate::stats::ConsumerStats;

/// A consumer's state.
pub struct Consumer {
    /// Its link.
    pub link: LinkId,
    run_id: u32,
    base: Instant,
    prefetch: u32,
    since_flow: u32,
    /// What it saw.
    pub stats: ConsumerStats,
}

impl Consumer {
    /// A consumer on `link`, which was granted `prefetch` credit.
    pub fn new(link: LinkId, run_id: u32, base: Instant, prefetch: u32, producers: usize) -> Self {
        Self {
            link,
            run_id,
            base,
            prefetch,
            since_flow: 0,
            stats: ConsumerStats::new(producers),
        }
    }

    /// Handles one delivery: settle it (accepted) unless the sender did,
    /// top up credit at half the prefetch, and record the probe. Returns
    /// true if it was a message of this run.
    pub fn on_delivery(
        &mut self,
        conn: &mut Connection,
        delivery: DeliveryId,
        message: Bytes,
        settled: bool,
        now: Instant,
    ) -> Result<bool, EngineError> {
        if !settled {
            conn.disposition(delivery, Some(DeliveryState::Accepted(Accepted)), true)?;
        }
        self.since_flow += 1;
        if self.since_flow >= self.prefetch.div_ceil(2) {
            conn.flow(self.link, self.prefetch, false)?;
            self.since_flow = 0;
        }
        let Some(probe) = Probe::from_message(message) else {
            self.stats.undecodable += 1;
            return Ok(false);
        };
        if probe.run_id != self.run_id {
            self.stats.stale += 1;
            return Ok(false);
        }
        self.stats.received += 1;
        self.stats.first.get_or_insert(now);
        self.stats.last = Some(now);
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let latency = now_ns.saturating_sub(probe.sent_ns).max(1);
        self.stats.latency.saturating_record(latency);
        let fresh = usize::try_from(probe.producer)
            .ok()
            .and_then(|p| self.stats.seen.get_mut(p))
            .is_none_or(|seen| seen.insert(probe.seq));
        if !fresh {
            self.stats.duplicates += 1;
        }
        Ok(true)
    }
}
