//! Counters shared while running, each side's results, and the final report.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Live counters, for the progress line and for consumers to know when the
/// producers are done.
#[derive(Debug, Default)]
pub struct Shared {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Sends the broker accepted (presettled: every send).
    pub confirmed: AtomicU64,
    /// Messages of this run received.
    pub received: AtomicU64,
    /// Producers finished sending (and awaiting outcomes no more).
    pub producers_done: AtomicUsize,
    /// A connection failed to set up: the others stop, rather than wait
    /// for producers that will never send.
    pub failed: AtomicBool,
}

impl Shared {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Which sequence numbers of one producer a consumer has seen.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Marks `seq`; false if it was marked already (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            return true;
        };
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u64::from(fresh);
        fresh
    }

    /// How many distinct seqs are marked.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Adds `other`'s marks; returns how many it had that were marked here
    /// already (received by two consumers: duplicates).
    pub fn union(&mut self, other: &SeqSet) -> u64 {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut overlap = 0;
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            overlap += u64::from((*mine & theirs).count_ones());
            self.len += u64::from((theirs & !*mine).count_ones());
            *mine |= theirs;
        }
        overlap
    }
}

/// What one producer did.
#[derive(Debug, Clone, Default)]
pub struct ProducerStats {
    /// Messages sent.
    pub sent: u64,
    /// Outcomes: accepted.
    pub accepted: u64,
    /// Outcomes: rejected.
    pub rejected: u64,
    /// Outcomes: released or modified.
    pub released: u64,
    /// Unsettled sends with no outcome when the producer gave up waiting.
    pub unconfirmed: u64,
    /// The first send.
    pub first_send: Option<Instant>,
    /// The last outcome (presettled: the last send).
    pub last_confirm: Option<Instant>,
    /// The last accepted outcome.
    pub last_accept: Option<Instant>,
    /// Gaps between accepted outcomes of at least `--stall-threshold`:
    /// the last accepted outcome before (or the first send), and the first
    /// after, if one came.
    pub stalls: Vec<(Instant, Option<Instant>)>,
}

/// What one consumer saw.
#[derive(Debug, Clone)]
pub struct ConsumerStats {
    /// Messages of this run received (duplicates included).
    pub received: u64,
    /// Seqs received again by this consumer.
    pub duplicates: u64,
    /// Messages of another run (leftovers in the queue).
    pub stale: u64,
    /// Messages without a readable probe.
    pub undecodable: u64,
    /// End-to-end latency, nanoseconds.
    pub latency: Histogram<u64>,
    /// Seqs seen, per producer.
    pub seen: Vec<SeqSet>,
    /// The first and last receive of this run's messages.
    pub first: Option<Instant>,
    /// See `first`.
    pub last: Option<Instant>,
}

impl ConsumerStats {
    /// Empty stats for a run with `producers` producers.
    pub fn new(producers: usize) -> Self {
        Self {
            received: 0,
            duplicates: 0,
            stale: 0,
            undecodable: 0,
            latency: new_histogram(),
            seen: vec![SeqSet::default(); producers],
            first: None,
            last: None,
        }
    }
}

/// 1 ns to 1 h at 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant bounds: low >= 1, high >= 2 * low, sigfig <= 5")
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// CPU use of a set of processes over the run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The processes measured.
    pub pids: Vec<u32>,
    /// CPU seconds over wall seconds, in percent (200 = two cores).
    pub percent: f64,
    /// CPU microseconds per message (per received message, or per sent one
    /// without consumers).
    pub us_per_msg: f64,
    /// The same for each process, in the order of `pids`, when there are
    /// several (the nodes of a cluster, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_pid: Vec<PidCpu>,
}

/// One process's share of a [`CpuReport`].
#[derive(Debug, Clone, Serialize)]
pub struct PidCpu {
    /// The process.
    pub pid: u32,
    /// CPU seconds over wall seconds, in percent.
    pub percent: f64,
    /// CPU microseconds per message.
    pub us_per_msg: f64,
}

/// A gap of at least `--stall-threshold` between two accepted outcomes of
/// one producer. Times are wall-clock milliseconds since the Unix epoch
/// (this process's monotonic clock, set against the wall clock once at the
/// start, to the millisecond), to compare with when a broker was killed.
#[derive(Debug, Clone, Serialize)]
pub struct Stall {
    /// The producer's number.
    pub producer: u32,
    /// The last accepted outcome before the gap (or the first send).
    pub from_unix_ms: f64,
    /// The first accepted outcome after it; `None` if none came before the
    /// producer gave up.
    pub to_unix_ms: Option<f64>,
    /// Its length, ms, if it ended.
    pub ms: Option<f64>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `--label`.
    pub label: String,
    /// The URL without its password.
    pub url: String,
    /// The consumers' URL without its password, if not `url`.
    pub consumer_url: Option<String>,
    /// The address (with several queues, their pattern).
    pub address: String,
    /// Queues the links are spread over (`--queues`).
    pub queues: usize,
    /// Every consumer gets every message (`--fanout`).
    pub fanout: bool,
    /// Producers, consumers, connections.
    pub producers: usize,
    /// See `producers`.
    pub consumers: usize,
    /// See `producers`.
    pub connections: usize,
    /// Body size, bytes.
    pub size: usize,
    /// header.durable.
    pub durable: bool,
    /// At most once.
    pub presettled: bool,
    /// Unsettled window per producer.
    pub window: u32,
    /// Consumer credit.
    pub prefetch: u32,
    /// Offered rate, msg/s, if fixed.
    pub rate: Option<f64>,
    /// Wall time from the first send to the last receive (or outcome).
    pub elapsed_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Accepted by the broker.
    pub accepted: u64,
    /// Rejected by the broker.
    pub rejected: u64,
    /// Released or modified by the broker.
    pub released: u64,
    /// No outcome before the producer gave up.
    pub unconfirmed: u64,
    /// Confirmed sends (accepted; presettled: sent) per second, from the
    /// first send to the last outcome.
    pub send_msg_s: f64,
    /// `send_msg_s` times the body size, MB/s (10^6 bytes).
    pub send_mb_s: f64,
    /// Messages of this run received.
    pub received: u64,
    /// Received per second, first to last receive.
    pub recv_msg_s: f64,
    /// `recv_msg_s` times the body size, MB/s.
    pub recv_mb_s: f64,
    /// Confirmed (accepted, or presettled sent) but never received; `None`
    /// without consumers.
    pub lost: Option<u64>,
    /// Received more than once.
    pub duplicates: u64,
    /// Received from an earlier run (left in the queue).
    pub stale: u64,
    /// Received without a readable probe.
    pub undecodable: u64,
    /// End-to-end latency.
    pub latency: Option<Latency>,
    /// The broker's CPU (`--broker-pid`).
    pub broker_cpu: Option<CpuReport>,
    /// This process's CPU.
    pub client_cpu: Option<CpuReport>,
    /// Gaps between accepted outcomes, per producer, in order of time.
    pub stalls: Vec<Stall>,
}

/// Merges every side's results into a report (CPU filled in by the caller).
pub struct Merge {
    /// The producers, in order of their numbers.
    pub producers: Vec<ProducerStats>,
    /// The consumers.
    pub consumers: Vec<ConsumerStats>,
    /// Each consumer was to get every message (`--fanout`).
    pub fanout: bool,
}

/// The run's totals, before formatting.
pub struct Totals {
    /// Sends.
    pub sent: u64,
    /// Accepted.
    pub accepted: u64,
    /// Rejected.
    pub rejected: u64,
    /// Released or modified.
    pub released: u64,
    /// Unconfirmed.
    pub unconfirmed: u64,
    /// Received.
    pub received: u64,
    /// Confirmed but not received (with consumers).
    pub lost: Option<u64>,
    /// Duplicates.
    pub duplicates: u64,
    /// Stale.
    pub stale: u64,
    /// Undecodable.
    pub undecodable: u64,
    /// Send rate window.
    pub send_span: Option<Duration>,
    /// Receive rate window.
    pub recv_span: Option<Duration>,
    /// First send to last receive or outcome.
    pub elapsed: Duration,
    /// Latency.
    pub latency: Option<Latency>,
}

impl Merge {
    /// Adds everything up. `presettled`: every send counts as confirmed.
    pub fn totals(self, presettled: bool) -> Totals {
        let mut t = Totals {
            sent: 0,
            accepted: 0,
            rejected: 0,
            released: 0,
            unconfirmed: 0,
            received: 0,
            lost: None,
            duplicates: 0,
            stale: 0,
            undecodable: 0,
            send_span: None,
            recv_span: None,
            elapsed: Duration::ZERO,
            latency: None,
        };
        let (mut first_send, mut last_confirm) = (None, None);
        for p in &self.producers {
            t.sent += p.sent;
            t.accepted += p.accepted;
            t.rejected += p.rejected;
            t.released += p.released;
            t.unconfirmed += p.unconfirmed;
            first_send = earliest(first_send, p.first_send);
            last_confirm = latest(last_confirm, p.last_confirm);
        }
        if let (Some(a), Some(b)) = (first_send, last_confirm) {
            t.send_span = Some(b.saturating_duration_since(a));
        }
        let (mut first_recv, mut last_recv) = (None, None);
        let mut seen = vec![SeqSet::default(); self.producers.len()];
        let mut histogram = new_histogram();
        for c in &self.consumers {
            t.received += c.received;
            t.duplicates += c.duplicates;
            t.stale += c.stale;
            t.undecodable += c.undecodable;
            first_recv = earliest(first_recv, c.first);
            last_recv = latest(last_recv, c.last);
            // Saturates rather than fails on the impossible overflow.
            let _ = histogram.add(&c.latency);
            // A topic's subscribers each get every message: one seen by
            // two of them is not a duplicate.
            if !self.fanout {
                for (all, mine) in seen.iter_mut().zip(&c.seen) {
                    t.duplicates += all.union(mine);
                }
            }
        }
        if let (Some(a), Some(b)) = (first_recv, last_recv) {
            t.recv_span = Some(b.saturating_duration_since(a));
        }
        if !self.consumers.is_empty() && !self.producers.is_empty() {
            let confirmed: Vec<u64> = self
                .producers
                .iter()
                .map(|p| if presettled { p.sent } else { p.accepted })
                .collect();
            t.lost = Some(if self.fanout {
                self.consumers
                    .iter()
                    .map(|c| missing(&confirmed, &c.seen))
                    .sum()
            } else {
                missing(&confirmed, &seen)
            });
        }
        if !histogram.is_empty() {
            let us = |ns: u64| ns as f64 / 1e3;
            t.latency = Some(Latency {
                count: histogram.len(),
                mean_us: histogram.mean() / 1e3,
                p50_us: us(histogram.value_at_quantile(0.5)),
                p90_us: us(histogram.value_at_quantile(0.9)),
                p99_us: us(histogram.value_at_quantile(0.99)),
                p999_us: us(histogram.value_at_quantile(0.999)),
                max_us: us(histogram.max()),
            });
        }
        let start = earliest(first_send, first_recv);
        let end = latest(last_confirm, last_recv);
        if let (Some(a), Some(b)) = (start, end) {
            t.elapsed = b.saturating_duration_since(a);
        }
        t
    }
}

/// Confirmed messages, per producer, that `seen` lacks.
fn missing(confirmed: &[u64], seen: &[SeqSet]) -> u64 {
    confirmed
        .iter()
        .zip(seen)
        .map(|(confirmed, seen)| confirmed.saturating_sub(seen.len()))
        .sum()
}

/// msg/s over a span; 0 when there is nothing to divide.
pub fn rate(count: u64, span: Option<Duration>) -> f64 {
    match span {
        Some(span) if span > Duration::ZERO && count > 1 => count as f64 / span.as_secs_f64(),
        _ => 0.0,
    }
}

impl Report {
    /// The human-readable form.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mode = if self.presettled {
            "at-most-once (presettled)".to_owned()
        } else {
            format!("at-least-once, window {}", self.window)
        };
        let rate = self.rate.map_or("as fast as possible".to_owned(), |r| {
            format!("{r} msg/s offered")
        });
        let mut consumers_at = self
            .consumer_url
            .as_ref()
            .map_or(String::new(), |url| format!(" (consumers: {url})"));
        if self.queues > 1 {
            consumers_at += &format!(" over {} queues", self.queues);
        }
        if self.fanout {
            consumers_at += " (fan-out: every consumer gets every message)";
        }
        let _ = writeln!(
            out,
            "{}{} {}{consumers_at}: {} producers, {} consumers, {} connections, {} B {}, {mode}, prefetch {}, {rate}",
            self.label,
            if self.label.is_empty() { "" } else { ":" },
            self.url,
            self.producers,
            self.consumers,
            self.connections,
            self.size,
            if self.durable {
                "durable"
            } else {
                "non-durable"
            },
            self.prefetch,
        );
        let _ = writeln!(
            out,
            "  send: {:>10.0} msg/s {:>8.2} MB/s   sent {} accepted {} rejected {} released {} unconfirmed {}",
            self.send_msg_s,
            self.send_mb_s,
            self.sent,
            self.accepted,
            self.rejected,
            self.released,
            self.unconfirmed
        );
        let lost = self.lost.map_or("-".to_owned(), |l| l.to_string());
        let _ = writeln!(
            out,
            "  recv: {:>10.0} msg/s {:>8.2} MB/s   received {} lost {lost} duplicates {} stale {} undecodable {}",
            self.recv_msg_s,
            self.recv_mb_s,
            self.received,
            self.duplicates,
            self.stale,
            self.undecodable
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "  latency µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (mean {:.0}, {} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.count
            );
        }
        for (what, cpu) in [("broker", &self.broker_cpu), ("client", &self.client_cpu)] {
            if let Some(cpu) = cpu {
                let _ = writeln!(
                    out,
                    "  {what} CPU: {:.0} % ({:.1} µs/msg) pids {:?}",
                    cpu.percent, cpu.us_per_msg, cpu.pids
                );
                for one in &cpu.per_pid {
                    let _ = writeln!(
                        out,
                        "    pid {}: {:.0} % ({:.1} µs/msg)",
                        one.pid, one.percent, one.us_per_msg
                    );
                }
            }
        }
        if let Some(longest) = self.stalls.iter().max_by(|a, b| {
            let length = |s: &Stall| s.ms.unwrap_or(f64::INFINITY);
            length(a).total_cmp(&length(b))
        }) {
            let length = longest
                .ms
                .map_or("no end".to_owned(), |ms| format!("{ms:.1} ms"));
            let _ = writeln!(
                out,
                "  outcome stalls: {}, longest {length} from unix ms {:.1} (producer {})",
                self.stalls.len(),
                longest.from_unix_ms,
                longest.producer
            );
        }
        let _ = writeln!(out, "  elapsed: {:.2} s", self.elapsed_s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_count_duplicates() {
        let mut a = SeqSet::default();
        assert!(a.insert(0));
        assert!(a.insert(100));
        assert!(!a.insert(100));
        let mut b = SeqSet::default();
        b.insert(100);
        b.insert(200);
        assert_eq!(a.union(&b), 1);
        assert_eq!(a.len(), 3);
    }

    /// One producer's 3 accepted messages, and consumers that saw `seqs`.
    fn merge(seqs: &[&[u64]], fanout: bool) -> Totals {
        let producer = ProducerStats {
            sent: 3,
            accepted: 3,
            ..ProducerStats::default()
        };
        let consumers = seqs
            .iter()
            .map(|seqs| {
                let mut c = ConsumerStats::new(1);
                for &seq in *seqs {
                    c.seen[0].insert(seq);
                    c.received += 1;
                }
                c
            })
            .collect();
        Merge {
            producers: vec![producer],
            consumers,
            fanout,
        }
        .totals(false)
    }

    #[test]
    fn queue_consumers_share_the_messages_and_subscribers_each_get_all() {
        // Two consumers of one queue: together they got everything, once.
        let t = merge(&[&[0, 2], &[1]], false);
        assert_eq!((t.lost, t.duplicates), (Some(0), 0));
        // Two subscribers of a topic that got the same: each lacks one.
        let t = merge(&[&[0, 2], &[0, 2]], true);
        assert_eq!((t.lost, t.duplicates), (Some(2), 0));
        // The same seen as one queue's consumers: one duplicate, one lost.
        let t = merge(&[&[0, 2], &[0, 2]], false);
        assert_eq!((t.lost, t.duplicates), (Some(1), 2));
    }
}
