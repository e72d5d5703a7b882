//! Shrinking: from a failing run to the smallest explicit fault schedule
//! and workload that still fail the same way.
//!
//! "The same way" means the run's first violation breaks the same
//! [`Rule`] as the original's. The original run's schedule is recorded
//! ([`RunReport::schedule`]) and run explicitly from then on, so that the
//! result does not depend on how the nemesis draws. Then, in rounds until
//! nothing more goes or the run budget is spent:
//!
//! 1. faults are dropped, delta-debugging style ([`ddmin`]), in chunks
//!    halving down to one;
//! 2. each remaining fault's duration is halved while the run still fails;
//! 3. clients are dropped (topic producers and subscribers, producers,
//!    consumers down to one per queue) along with the faults that name
//!    them, and the messages per producer halved;
//! 4. the fault phase is cut to end shortly after the last fault.
//!
//! Shrinking only drops and shortens faults, so a schedule recorded within
//! the nemesis's bounds stays within them.

use std::time::Duration;

use crate::SimError;
use crate::checker::Rule;
use crate::nemesis::Fault;
use crate::schedule::{Schedule, Scheduled};
use crate::shape::{self, WorkloadShape};
use crate::world::{self, RunOptions, RunReport};

/// A fault is not shortened below this.
const LASTS_MIN: Duration = Duration::from_millis(10);
/// Messages per producer are not halved below this.
const MESSAGES_MIN: u64 = 5;
/// The fault phase keeps this long after the last fault ends, for the
/// broker to act on what the fault left (a restart, a late fsync).
const PHASE_TAIL: Duration = Duration::from_millis(500);

/// Where shrinking stands after one more run.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Runs so far.
    pub runs: u32,
    /// What the run tried.
    pub step: &'static str,
    /// Whether it still failed the same way (and was kept).
    pub kept: bool,
    /// Faults in the smallest failing schedule so far.
    pub faults: usize,
    /// Clients in the smallest failing workload so far.
    pub clients: usize,
}

/// The result of shrinking.
#[derive(Debug)]
pub struct Shrunk {
    /// The rule the original run broke first, and every shrunk run too.
    pub rule: Rule,
    /// The original run, its schedule recorded.
    pub original: RunReport,
    /// The smallest failing run found.
    pub smallest: RunReport,
    /// Runs made, the original's included.
    pub runs: u32,
    /// True if the run budget ran out before nothing more could go.
    pub budget_spent: bool,
}

/// Shrinks the failing run of `options`, within `max_runs` runs, telling
/// `progress` about each.
///
/// # Errors
///
/// A run that cannot be made ([`world::run`]), a run that passes
/// ([`SimError::NothingToShrink`]), or a recorded schedule that does not
/// fail the same way when run explicitly ([`SimError::NotReproduced`]).
pub fn shrink(
    options: &RunOptions,
    max_runs: u32,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Shrunk, SimError> {
    let original = world::run(options)?;
    let rule = first_rule(&original).ok_or(SimError::NothingToShrink)?;
    let clients = shape::client_names(&original.params).len();
    progress(&Progress {
        runs: 1,
        step: "the original run",
        kept: true,
        faults: original.schedule.faults.len(),
        clients,
    });
    let explicit = RunOptions {
        schedule: Some(original.schedule.clone()),
        workload: Some(WorkloadShape::of(&original.params)),
        ..options.clone()
    };
    let mut shrinker = Shrinker {
        rule,
        runs: 1,
        max_runs,
        progress,
        best: world::run(&explicit)?,
        options: explicit,
    };
    shrinker.runs += 1;
    let reproduced = first_rule(&shrinker.best) == Some(rule);
    (shrinker.progress)(&Progress {
        runs: shrinker.runs,
        step: "its schedule, explicit",
        kept: reproduced,
        faults: original.schedule.faults.len(),
        clients,
    });
    if !reproduced {
        return Err(SimError::NotReproduced(rule.name()));
    }
    shrinker.rounds();
    let budget_spent = shrinker.budget_spent();
    let (runs, smallest) = (shrinker.runs, shrinker.best);
    Ok(Shrunk {
        rule,
        original,
        smallest,
        runs,
        budget_spent,
    })
}

/// The rule of a run's first violation, if it failed.
pub fn first_rule(report: &RunReport) -> Option<Rule> {
    report.check.violations.first().map(|v| v.rule)
}

/// The smallest failing options so far, and what trying costs.
struct Shrinker<'a> {
    rule: Rule,
    runs: u32,
    max_runs: u32,
    progress: &'a mut dyn FnMut(&Progress),
    /// The smallest failing options so far, and their run.
    options: RunOptions,
    best: RunReport,
}

impl Shrinker<'_> {
    /// Shrinks in rounds until a round changes nothing.
    fn rounds(&mut self) {
        loop {
            let before = self.size();
            self.drop_faults();
            self.shorten_faults();
            self.drop_clients();
            self.shorten_phase();
            if self.size() == before || self.budget_spent() {
                return;
            }
        }
    }

    /// What a round makes smaller.
    fn size(&self) -> (usize, usize, Duration, u64, Duration) {
        let faults = self.schedule().faults.len();
        let lasts = self.schedule().faults.iter().map(|s| s.lasts).sum();
        let params = &self.best.params;
        let clients = shape::client_names(params).len();
        (
            faults,
            clients,
            lasts,
            params.messages_per_producer,
            self.options.duration,
        )
    }

    fn budget_spent(&self) -> bool {
        self.runs >= self.max_runs
    }

    fn schedule(&self) -> &Schedule {
        // Set before the first round, never unset.
        self.options
            .schedule
            .as_ref()
            .unwrap_or(&self.best.schedule)
    }

    fn shape(&self) -> WorkloadShape {
        WorkloadShape::of(&self.best.params)
    }

    /// Runs `candidate`; keeps it if it fails the same way.
    fn try_options(&mut self, step: &'static str, candidate: RunOptions) -> bool {
        if self.budget_spent() {
            return false;
        }
        self.runs += 1;
        // A run that cannot be made fails nothing the same way.
        let kept = match world::run(&candidate) {
            Ok(report) if first_rule(&report) == Some(self.rule) => {
                self.options = candidate;
                self.best = report;
                true
            }
            Ok(_) | Err(_) => false,
        };
        let progress = Progress {
            runs: self.runs,
            step,
            kept,
            faults: self.schedule().faults.len(),
            clients: shape::client_names(&self.best.params).len(),
        };
        (self.progress)(&progress);
        kept
    }

    fn try_faults(&mut self, step: &'static str, faults: Vec<Scheduled>) -> bool {
        let schedule = Schedule {
            faults,
            ..self.schedule().clone()
        };
        let candidate = RunOptions {
            schedule: Some(schedule),
            ..self.options.clone()
        };
        self.try_options(step, candidate)
    }

    fn drop_faults(&mut self) {
        let faults = self.schedule().faults.clone();
        ddmin(faults, |subset| {
            self.try_faults("drop faults", subset.to_vec())
        });
    }

    /// Halves each fault's duration while the run still fails. A kill has
    /// none, and a rolling restart's is the span of its kills.
    fn shorten_faults(&mut self) {
        for index in 0..self.schedule().faults.len() {
            loop {
                let faults = self.schedule().faults.clone();
                let Some(fault) = faults.get(index) else {
                    break;
                };
                let halved = Duration::from_millis(millis(fault.lasts) / 2);
                let fixed = matches!(
                    fault.fault,
                    Fault::Kill { .. } | Fault::RollingRestart { .. }
                );
                if fixed || halved < LASTS_MIN {
                    break;
                }
                let mut shorter = faults;
                shorter[index].lasts = halved;
                if !self.try_faults("shorten a fault", shorter) {
                    break;
                }
            }
        }
    }

    /// Drops clients one at a time, kind by kind, and halves the messages.
    fn drop_clients(&mut self) {
        type Count = fn(&mut WorkloadShape) -> &mut Option<u32>;
        let counts: [(&'static str, Count); 4] = [
            ("drop a topic producer", |s| &mut s.topic_producers),
            ("drop a subscriber", |s| &mut s.subscribers),
            ("drop a producer", |s| &mut s.producers),
            ("drop a consumer", |s| &mut s.consumers),
        ];
        for (step, count) in counts {
            loop {
                let mut shape = self.shape();
                let Some(n) = count(&mut shape).filter(|n| *n > 0) else {
                    break;
                };
                *count(&mut shape) = Some(n - 1);
                if !self.try_shape(step, shape) {
                    break;
                }
            }
        }
        loop {
            let mut shape = self.shape();
            let halved = shape.messages_per_producer.unwrap_or_default() / 2;
            if halved < MESSAGES_MIN {
                break;
            }
            shape.messages_per_producer = Some(halved);
            if !self.try_shape("halve the messages", shape) {
                break;
            }
        }
    }

    /// Tries the workload `shape`, if it can finish, without the faults
    /// that name clients it no longer has.
    fn try_shape(&mut self, step: &'static str, shape: WorkloadShape) -> bool {
        let candidate = RunOptions {
            workload: Some(shape),
            ..self.options.clone()
        };
        let Ok(params) = candidate.workload_params() else {
            return false;
        };
        let hosts = world::hosts(&candidate, &params);
        let schedule = self.schedule().only_hosts(|host| hosts.contains(host));
        let candidate = RunOptions {
            schedule: Some(schedule),
            ..candidate
        };
        self.try_options(step, candidate)
    }

    /// Ends the fault phase [`PHASE_TAIL`] after the last fault ends.
    fn shorten_phase(&mut self) {
        let end = self.schedule().last_end() + PHASE_TAIL;
        let tenths = millis(end).div_ceil(100) * 100;
        let shorter = Duration::from_millis(tenths);
        if shorter < self.options.duration {
            let candidate = RunOptions {
                duration: shorter,
                ..self.options.clone()
            };
            self.try_options("shorten the fault phase", candidate);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Delta debugging: a small subset of `items` that still `fails`, found
/// by dropping chunks of them, halving the chunk size down to single items
/// (ddmin's subset-removal steps, without its complement tests, which cost
/// a run each and rarely pay here). The result is 1-minimal as far as the
/// last pass saw: no single item of it could be dropped then. The empty set
/// is tried first, since a planted bug needs no fault at all; `fails` is
/// never asked about the whole set, known to fail.
pub fn ddmin<T: Clone>(items: Vec<T>, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    if items.is_empty() || fails(&[]) {
        return Vec::new();
    }
    let mut items = items;
    let mut size = items.len() / 2;
    while size >= 1 {
        let mut start = 0;
        while start < items.len() {
            let end = (start + size).min(items.len());
            let rest = [&items[..start], &items[end..]].concat();
            if fails(&rest) {
                // What follows moved up to `start`: try it next.
                items = rest;
            } else {
                start = end;
            }
        }
        size /= 2;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_the_items_a_failure_needs() {
        let needed = [3, 7, 12];
        let mut asked = 0;
        let found = ddmin((0..16).collect(), |subset: &[u32]| {
            asked += 1;
            needed.iter().all(|n| subset.contains(n))
        });
        assert_eq!(found, needed);
        assert!(asked <= 32, "{asked} tries");
    }

    #[test]
    fn ddmin_drops_everything_when_nothing_is_needed() {
        let found = ddmin(vec![1, 2, 3], |_: &[u32]| true);
        assert!(found.is_empty());
        let one = ddmin(vec![1, 2, 3], |subset: &[u32]| subset.contains(&2));
        assert_eq!(one, [2]);
    }
}
