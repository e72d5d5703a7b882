//! Slowing down password guessing, per source address.
//!
//! Every attempt from an address books a turn behind the ones before it.
//! An expensive check (argon2) keeps the next one [`PASSWORD_CHECK_SPACING`]
//! away, so that a burst of connections from one address cannot queue
//! dozens of checks before the first has failed; a cheap one (SCRAM's)
//! keeps it nowhere. After a failure, turns are also a penalty apart that
//! doubles with each failure up to a cap: one source can have at most one
//! guess checked per penalty, however many connections it opens, and an
//! attempt whose turn is too far off is refused at once, without checking
//! anything. A turn booked before the source's latest failure is void when
//! it comes: the attempt books again, behind the penalty, so that a burst
//! booked before its first guess failed does not all get checked. A successful login clears the source's record. Sans-IO: the
//! caller passes `now`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The penalty after the first failure.
const PENALTY_BASE: Duration = Duration::from_millis(50);

/// The penalty never grows past this.
const PENALTY_MAX: Duration = Duration::from_secs(1);

/// An attempt that would wait longer than this for its turn is refused.
pub(super) const WAIT_MAX: Duration = Duration::from_secs(5);

/// The least time between two expensive checks (argon2, about 30 ms of a
/// core each) from one source, failures or not.
pub(super) const PASSWORD_CHECK_SPACING: Duration = Duration::from_millis(50);

/// A source is forgotten this long after its last attempt.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The most sources remembered: past it, the one whose last failure is
/// oldest is forgotten, so that many addresses cannot grow memory.
const SOURCES_MAX: usize = 4096;

/// What a source has done lately.
#[derive(Debug, Clone, Copy)]
struct Source {
    failures: u32,
    /// Its last attempt or failure.
    last_seen: Instant,
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
    /// At this instant, unless the source fails meanwhile: the caller
    /// waits, then checks if [`Throttle::failed_since`] says it has not.
    At {
        /// The turn.
        at: Instant,
        /// The source's failures when it was booked.
        failures: u32,
    },
    /// Its turn is too far off: refuse without checking.
    Refused,
}

impl Throttle {
    /// Books the turn of one login attempt from `source`, which arrived
    /// at `arrived` (before `now` if its first turn was void), and whose
    /// check keeps the next one `spacing` away. An attempt never waits
    /// more than [`WAIT_MAX`] in all.
    pub(super) fn book(
        &mut self,
        source: IpAddr,
        arrived: Instant,
        now: Instant,
        spacing: Duration,
    ) -> Turn {
        let record = self.record(source, now);
        let turn = record.next_turn.max(now);
        if turn - arrived > WAIT_MAX {
            return Turn::Refused;
        }
        record.last_seen = now;
        record.next_turn = turn + spacing.max(penalty(record.failures));
        if turn == now {
            Turn::Now
        } else {
            Turn::At {
                at: turn,
                failures: record.failures,
            }
        }
    }

    /// Whether `source` has failed since it had `failures` failures (a
    /// source forgotten, or cleared by a success, has not).
    pub(super) fn failed_since(&self, source: IpAddr, failures: u32) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|record| record.failures > failures)
    }

    /// Records a failed login from `source`.
    pub(super) fn failed(&mut self, source: IpAddr, now: Instant) {
        let record = self.record(source, now);
        record.failures = record.failures.saturating_add(1);
        record.last_seen = now;
        record.next_turn = record.next_turn.max(now + penalty(record.failures));
    }

    /// Records a successful login from `source`: its slate is clean. (A
    /// guesser gets no successes; a host whose clients log in correctly
    /// need not queue them.)
    pub(super) fn succeeded(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }

    /// `source`'s record, new if it had none or it is stale.
    fn record(&mut self, source: IpAddr, now: Instant) -> &mut Source {
        let fresh = Source {
            failures: 0,
            last_seen: now,
            next_turn: now,
        };
        if self
            .sources
            .get(&source)
            .is_some_and(|record| now >= record.last_seen + FORGET_AFTER)
        {
            self.sources.remove(&source);
        }
        if !self.sources.contains_key(&source) && self.sources.len() >= SOURCES_MAX {
            self.forget_oldest();
        }
        self.sources.entry(source).or_insert(fresh)
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .sources
            .iter()
            .min_by_key(|(_, record)| record.last_seen)
            .map(|(source, _)| *source);
        if let Some(source) = oldest {
            self.sources.remove(&source);
        }
    }
}

/// The wait between two checks after `failures` failures.
fn penalty(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
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

    const CHEAP: Duration = Duration::ZERO;

    #[test]
    fn a_clean_source_is_never_delayed_for_cheap_checks() {
        let mut throttle = Throttle::default();
        let now = start();
        for _ in 0..100 {
            assert_eq!(throttle.book(HERE, now, now, CHEAP), Turn::Now);
        }
    }

    /// A burst of expensive checks from one source queues, spaced, before
    /// any has failed; and the burst is refused once its turn is too far
    /// off.
    #[test]
    fn expensive_checks_from_one_source_are_spaced_even_before_a_failure() {
        let mut throttle = Throttle::default();
        let now = start();
        assert_eq!(
            throttle.book(HERE, now, now, PASSWORD_CHECK_SPACING),
            Turn::Now
        );
        assert_eq!(
            throttle.book(HERE, now, now, PASSWORD_CHECK_SPACING),
            Turn::At {
                at: now + PASSWORD_CHECK_SPACING,
                failures: 0
            }
        );
        let admitted = (0..1000)
            .filter(|_| throttle.book(HERE, now, now, PASSWORD_CHECK_SPACING) != Turn::Refused)
            .count();
        // Within WAIT_MAX, one check per spacing.
        let most = WAIT_MAX.as_millis() / PASSWORD_CHECK_SPACING.as_millis();
        assert!(admitted as u128 <= most, "{admitted}");
        assert_eq!(
            throttle.book(ELSEWHERE, now, now, PASSWORD_CHECK_SPACING),
            Turn::Now
        );
    }

    #[test]
    fn after_failures_attempts_queue_a_growing_penalty_apart() {
        let mut throttle = Throttle::default();
        let now = start();
        throttle.failed(HERE, now);
        assert_eq!(
            throttle.book(HERE, now, now, CHEAP),
            Turn::At {
                at: now + PENALTY_BASE,
                failures: 1
            }
        );
        assert_eq!(
            throttle.book(HERE, now, now, CHEAP),
            Turn::At {
                at: now + PENALTY_BASE * 2,
                failures: 1
            }
        );
        throttle.failed(HERE, now);
        throttle.failed(HERE, now);
        // Three failures: the next turns are four times the base apart.
        let Turn::At { at: third, .. } = throttle.book(HERE, now, now, CHEAP) else {
            panic!("delayed")
        };
        assert_eq!(
            throttle.book(HERE, now, now, CHEAP),
            Turn::At {
                at: third + PENALTY_BASE * 4,
                failures: 3
            }
        );
        // Another address is not held up by this one.
        assert_eq!(throttle.book(ELSEWHERE, now, now, CHEAP), Turn::Now);
    }

    /// A turn booked before a failure is void: `failed_since` says so,
    /// and the attempt books again behind the penalty.
    #[test]
    fn a_failure_voids_the_turns_booked_before_it() {
        let mut throttle = Throttle::default();
        let now = start();
        assert_eq!(
            throttle.book(HERE, now, now, PASSWORD_CHECK_SPACING),
            Turn::Now
        );
        let Turn::At { at, failures } = throttle.book(HERE, now, now, PASSWORD_CHECK_SPACING)
        else {
            panic!("a second check at once")
        };
        assert!(!throttle.failed_since(HERE, failures));
        throttle.failed(HERE, now);
        assert!(throttle.failed_since(HERE, failures));
        let Turn::At { at: again, .. } = throttle.book(HERE, now, at, PASSWORD_CHECK_SPACING)
        else {
            panic!("checked at once after a failure")
        };
        assert!(again > at, "{again:?} {at:?}");
        // Booked again and again, an attempt still waits no more than
        // WAIT_MAX from its arrival in all.
        throttle.failed(HERE, at);
        assert_eq!(
            throttle.book(
                HERE,
                now,
                now + WAIT_MAX + PENALTY_BASE,
                PASSWORD_CHECK_SPACING
            ),
            Turn::Refused
        );
        // A success clears the record: nothing to void.
        throttle.succeeded(HERE);
        assert!(!throttle.failed_since(HERE, 0));
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
            match throttle.book(HERE, now, now, CHEAP) {
                Turn::Refused => refused += 1,
                Turn::At { at: turn, .. } => assert!(turn - now <= WAIT_MAX),
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
        assert_eq!(throttle.book(HERE, now, now, CHEAP), Turn::Now);
        throttle.failed(HERE, now);
        assert_eq!(
            throttle.book(HERE, now + FORGET_AFTER, now + FORGET_AFTER, CHEAP),
            Turn::Now
        );
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
