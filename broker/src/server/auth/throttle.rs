//! Slowing down password guessing, per source address.
//!
//! A source with no recent failed login is never delayed. After a failure,
//! each further attempt from that address waits its turn behind the ones
//! before it, a penalty apart that doubles with each failure up to a cap:
//! one source can have at most one guess checked per penalty, however many
//! connections it opens, and an attempt whose turn is too far off is
//! refused at once, without checking anything. A successful login clears
//! the source's record. Sans-IO: the caller passes `now`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The penalty after the first failure.
const PENALTY_BASE: Duration = Duration::from_millis(50);

/// The penalty never grows past this.
const PENALTY_MAX: Duration = Duration::from_secs(1);

/// An attempt that would wait longer than this for its turn is refused.
const WAIT_MAX: Duration = Duration::from_secs(5);

/// A source's failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The most sources remembered: past it, the one whose last failure is
/// oldest is forgotten, so that many addresses cannot grow memory.
const SOURCES_MAX: usize = 4096;

/// What a source has done lately.
#[derive(Debug, Clone, Copy)]
struct Source {
    failures: u32,
    last_failure: Instant,
    /// When the next attempt may be checked.
    next_turn: Instant,
}

/// The failed-login record of every source.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    sources: BTreeMap<IpAddr, Source>,
}

/// Whether an attempt may be checked, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// Now.
    Now,
    /// At this instant: the caller waits, then checks.
    At(Instant),
    /// Its turn is too far off: refuse without checking.
    Refused,
}

impl Throttle {
    /// Books the turn of one login attempt from `source`.
    pub(super) fn book(&mut self, source: IpAddr, now: Instant) -> Turn {
        let Some(record) = self.sources.get_mut(&source) else {
            return Turn::Now;
        };
        if now >= record.last_failure + FORGET_AFTER {
            self.sources.remove(&source);
            return Turn::Now;
        }
        let turn = record.next_turn.max(now);
        if turn - now > WAIT_MAX {
            return Turn::Refused;
        }
        record.next_turn = turn + penalty(record.failures);
        if turn == now {
            Turn::Now
        } else {
            Turn::At(turn)
        }
    }

    /// Records a failed login from `source`.
    pub(super) fn failed(&mut self, source: IpAddr, now: Instant) {
        if !self.sources.contains_key(&source) && self.sources.len() >= SOURCES_MAX {
            self.forget_oldest();
        }
        let record = self.sources.entry(source).or_insert(Source {
            failures: 0,
            last_failure: now,
            next_turn: now,
        });
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        record.next_turn = record.next_turn.max(now + penalty(record.failures));
    }

    /// Records a successful login from `source`: its slate is clean.
    pub(super) fn succeeded(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .sources
            .iter()
            .min_by_key(|(_, record)| record.last_failure)
            .map(|(source, _)| *source);
        if let Some(source) = oldest {
            self.sources.remove(&source);
        }
    }
}

/// The wait between two checks after `failures` failures.
fn penalty(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    PENALTY_BASE.saturating_mul(1 << doublings).min(PENALTY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    /// The base of the tests' clock: the code under test takes time only
    /// as an argument.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now() // determinism-ok: test clock base only
    }

    #[test]
    fn a_clean_source_is_never_delayed() {
        let mut throttle = Throttle::default();
        let now = start();
        for _ in 0..100 {
            assert_eq!(throttle.book(HERE, now), Turn::Now);
        }
    }

    #[test]
    fn after_failures_attempts_queue_a_growing_penalty_apart() {
        let mut throttle = Throttle::default();
        let now = start();
        throttle.failed(HERE, now);
        assert_eq!(throttle.book(HERE, now), Turn::At(now + PENALTY_BASE));
        assert_eq!(throttle.book(HERE, now), Turn::At(now + PENALTY_BASE * 2));
        throttle.failed(HERE, now);
        throttle.failed(HERE, now);
        // Three failures: the next turns are four times the base apart.
        let Turn::At(third) = throttle.book(HERE, now) else {
            panic!("delayed")
        };
        assert_eq!(throttle.book(HERE, now), Turn::At(third + PENALTY_BASE * 4));
        // Another address is not held up by this one.
        assert_eq!(throttle.book(ELSEWHERE, now), Turn::Now);
    }

    #[test]
    fn a_flood_is_refused_once_its_turn_is_too_far_off() {
        let mut throttle = Throttle::default();
        let now = start();
        for _ in 0..20 {
            throttle.failed(HERE, now);
        }
        let mut refused = 0;
        for _ in 0..1000 {
            match throttle.book(HERE, now) {
                Turn::Refused => refused += 1,
                Turn::At(turn) => assert!(turn - now <= WAIT_MAX),
                Turn::Now => panic!("a guessing source is checked at once"),
            }
        }
        // At most one check per PENALTY_MAX within WAIT_MAX.
        assert!(refused >= 1000 - 6, "{refused}");
    }

    #[test]
    fn success_and_time_clear_a_source() {
        let mut throttle = Throttle::default();
        let now = start();
        throttle.failed(HERE, now);
        throttle.succeeded(HERE);
        assert_eq!(throttle.book(HERE, now), Turn::Now);
        throttle.failed(HERE, now);
        assert_eq!(throttle.book(HERE, now + FORGET_AFTER), Turn::Now);
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest_source() {
        let mut throttle = Throttle::default();
        let now = start();
        for i in 0..=SOURCES_MAX as u32 {
            let source = IpAddr::V4(std::net::Ipv4Addr::from(i));
            throttle.failed(source, now + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(throttle.sources.len(), SOURCES_MAX);
        let first = IpAddr::V4(std::net::Ipv4Addr::from(0));
        assert!(!throttle.sources.contains_key(&first));
    }
}
