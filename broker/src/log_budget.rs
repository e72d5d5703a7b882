//! Bounding how many lines a flood of one kind of event writes to the log:
//! a few per second, then a count of the rest. Failed logins and refused
//! connections come in floods when someone attacks the broker, and the log
//! must stay readable (and the disk not fill) while they do.

use std::time::{Duration, Instant};

/// The most lines per [`LOG_WINDOW`]; the rest are counted, and the count
/// logged when the next window opens.
const LOG_LINES_PER_WINDOW: u32 = 10;

const LOG_WINDOW: Duration = Duration::from_secs(1);

/// Decides which events of one kind get a log line.
#[derive(Debug)]
pub struct LogBudget {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
}

/// What to log for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// A line for this event, after saying how many before it went
    /// unlogged (0: none).
    Write {
        /// Events not logged since the last line.
        suppressed: u64,
    },
    /// Nothing: the window's lines are spent.
    Skip,
}

impl LogBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            lines: 0,
            suppressed: 0,
        }
    }

    /// Whether this event, at `now`, gets a line.
    pub fn spend(&mut self, now: Instant) -> LogLine {
        if now >= self.window_start + LOG_WINDOW {
            self.window_start = now;
            self.lines = 0;
        }
        if self.lines >= LOG_LINES_PER_WINDOW {
            self.suppressed += 1;
            return LogLine::Skip;
        }
        self.lines += 1;
        LogLine::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base of the tests' clock: the code under test takes time only
    /// as an argument.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now() // determinism-ok: test clock base only
    }

    #[test]
    fn the_log_budget_writes_a_few_lines_a_window_and_counts_the_rest() {
        let now = start();
        let mut budget = LogBudget::new(now);
        for _ in 0..LOG_LINES_PER_WINDOW {
            assert_eq!(budget.spend(now), LogLine::Write { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(budget.spend(now), LogLine::Skip);
        }
        assert_eq!(
            budget.spend(now + LOG_WINDOW),
            LogLine::Write { suppressed: 5 }
        );
        assert_eq!(
            budget.spend(now + LOG_WINDOW),
            LogLine::Write { suppressed: 0 }
        );
    }
}
