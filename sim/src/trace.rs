//! The run's trace: every history event and every injected fault, in the
//! order the simulation produced them, each with its simulated time.
//!
//! Two runs of one seed must produce the same trace; [`Trace::hash`] is what
//! `--check-determinism` and replay files compare. The hash is FNV-1a, which
//! has no keys, so it is stable across processes, builds and platforms (std's
//! `DefaultHasher` is randomly keyed and documented as unstable).

use std::fmt;
use std::time::Duration;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Simulated time since the start of the run.
    pub time: Duration,
    /// What happened, rendered once when it was recorded.
    pub what: String,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>10.3}ms] {}",
            self.time.as_secs_f64() * 1e3,
            self.what
        )
    }
}

/// The ordered list of everything that happened in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    events: Vec<TraceEvent>,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event`, which happened at simulated time `time`.
    pub fn record(&mut self, time: Duration, event: impl fmt::Display) {
        self.events.push(TraceEvent {
            time,
            what: event.to_string(),
        });
    }

    /// Everything recorded, in order.
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }

    /// A hash of every event and its time, with a fixed hasher (FNV-1a), so
    /// that it can be written to a replay file and compared later.
    pub fn hash(&self) -> u64 {
        let mut hash = FNV_OFFSET;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        for event in &self.events {
            feed(&event.time.as_nanos().to_le_bytes());
            feed(event.what.as_bytes());
            // A separator, so that moving text from one event to the next
            // changes the hash.
            feed(&[0xff]);
        }
        hash
    }

    /// The index and the two versions of the first event where `self` and
    /// `other` differ (`None` on the side that ended first), or `None` if
    /// they are equal.
    pub fn first_difference<'a>(
        &'a self,
        other: &'a Trace,
    ) -> Option<(usize, Option<&'a TraceEvent>, Option<&'a TraceEvent>)> {
        let len = self.events.len().max(other.events.len());
        (0..len).find_map(|i| {
            let (a, b) = (self.events.get(i), other.events.get(i));
            (a != b).then_some((i, a, b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed_and_sensitive() {
        let mut a = Trace::new();
        a.record(Duration::from_millis(1), "send p0#1");
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.first_difference(&b), None);
        b.record(Duration::from_millis(2), "x");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.first_difference(&b).map(|d| d.0), Some(1));
        // FNV-1a of nothing is the offset basis: the hasher is not keyed.
        assert_eq!(Trace::new().hash(), FNV_OFFSET);
    }
}
