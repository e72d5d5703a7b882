//! The broker's metrics, in Prometheus' text exposition (OpenMetrics), for
//! `GET /metrics` on the HTTP listener.
//!
//! Two kinds of figure. What the node core knows — queues, groups — is
//! asked of it at each scrape ([`crate::node::NodeHandle::report`]) and
//! turned into a fresh registry: the core keeps plain counters in its own
//! state and never touches a shared metric, so it stays sans-IO and the
//! simulator's runs stay what they were. What happens outside the core —
//! connections, logins, fsyncs — is counted where it happens, in the
//! shared [`Metrics`].
//!
//! Names follow Prometheus' conventions: `sluice_` first, the unit last
//! (`_bytes`, `_seconds`), `_total` on counters (added by the encoder).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::node::{Blocked, NodeReport};
use crate::raft::group::Progress;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which listener a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// Plain AMQP.
    Amqp,
    /// AMQP over TLS.
    Amqps,
}

impl Port {
    /// Its name in metrics and the management API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Amqps => "amqps",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BlockedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    group: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FollowerLabels {
    group: u32,
    follower: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SnapshotLabels {
    group: u32,
    event: &'static str,
}

/// What happened to a group's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEvent {
    /// This node's member compacted its log at a snapshot of the queues.
    Taken,
    /// It sent one to a member too far behind for the log to catch up.
    Sent,
    /// It installed one from the leader.
    Installed,
}

impl SnapshotEvent {
    fn label(self) -> &'static str {
        match self {
            Self::Taken => "taken",
            Self::Sent => "sent",
            Self::Installed => "installed",
        }
    }
}

/// What is counted outside the node core. A cheap handle: clones share
/// the counters, and are equal.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Shared>);

impl PartialEq for Metrics {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Metrics {}

#[derive(Debug)]
struct Shared {
    /// The open AMQP connections, by id, for the management API.
    open: Mutex<BTreeMap<u64, ConnectionInfo>>,
    connections_opened: Family<ListenerLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    auth_failures: Counter,
    fsync_seconds: Histogram,
    fsync_records: Histogram,
    group_snapshots: Family<SnapshotLabels, Counter>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            connections_opened: Family::default(),
            connections_open: Family::default(),
            auth_failures: Counter::default(),
            // 50 µs to about 3.3 s: a fast SSD's fsync to a stalled disk.
            fsync_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 17)),
            // 1 to 65,536 records per fsync: group commit's batch sizes.
            fsync_records: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            group_snapshots: Family::default(),
        }
    }
}

/// An open AMQP connection, as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The broker's id for it (its log lines' `connection` span).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener it came to.
    pub port: Port,
    /// When it was accepted, Unix milliseconds.
    pub opened_unix_ms: u64,
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Metrics,
    id: u64,
    port: Port,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let labels = ListenerLabels {
            listener: self.port.label(),
        };
        self.metrics.0.connections_open.get_or_create(&labels).dec();
        self.metrics.open_connections_map().remove(&self.id);
    }
}

impl Metrics {
    /// A client connected: it counts as open until the returned guard is
    /// dropped.
    pub fn connection_opened(&self, info: ConnectionInfo) -> OpenConnection {
        let labels = ListenerLabels {
            listener: info.port.label(),
        };
        self.0.connections_opened.get_or_create(&labels).inc();
        self.0.connections_open.get_or_create(&labels).inc();
        let guard = OpenConnection {
            metrics: self.clone(),
            id: info.id,
            port: info.port,
        };
        self.open_connections_map().insert(info.id, info);
        guard
    }

    /// The open connections, by id.
    pub fn open_connections(&self) -> Vec<ConnectionInfo> {
        self.open_connections_map().values().cloned().collect()
    }

    /// The map of open connections. A panic while it was held (there is
    /// none to be had: inserts and removes) would leave it as it was.
    fn open_connections_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ConnectionInfo>> {
        self.0
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A login was refused: a wrong password, an unknown user, a mechanism
    /// not offered. For the SASL code and the management API's Basic
    /// authentication alike.
    pub fn auth_failed(&self) {
        self.0.auth_failures.inc();
    }

    /// Failed logins so far.
    pub fn auth_failures(&self) -> u64 {
        self.0.auth_failures.get()
    }

    /// The log made `records` records durable with one fsync that took
    /// `took`.
    pub fn fsynced(&self, took: Duration, records: u64) {
        self.0.fsync_seconds.observe(took.as_secs_f64());
        // Exact below 2^53 records, far beyond any batch.
        #[allow(clippy::cast_precision_loss)]
        self.0.fsync_records.observe(records as f64);
    }

    /// A snapshot of `group` was taken, sent or installed.
    pub fn group_snapshot(&self, group: u32, event: SnapshotEvent) {
        let labels = SnapshotLabels {
            group,
            event: event.label(),
        };
        self.0.group_snapshots.get_or_create(&labels).inc();
    }

    /// The exposition of every metric: the shared counters, `report`'s
    /// queues and groups, with ages measured at `now_unix_ms`, and the Raft
    /// groups' `progress` (none on a single node).
    pub fn encode(&self, report: &NodeReport, progress: &[Progress], now_unix_ms: u64) -> String {
        let mut registry = Registry::with_prefix("sluice");
        self.register_shared(&mut registry);
        register_queues(&mut registry, report, now_unix_ms);
        register_groups(&mut registry, report);
        register_flow(&mut registry, report);
        register_progress(&mut registry, progress);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    fn register_shared(&self, registry: &mut Registry) {
        let shared = &*self.0;
        registry.register(
            "connections_opened",
            "AMQP connections accepted since the broker started, by listener",
            shared.connections_opened.clone(),
        );
        registry.register(
            "connections",
            "AMQP connections open now, by listener",
            shared.connections_open.clone(),
        );
        registry.register(
            "auth_failures",
            "Logins refused (AMQP SASL and the management API's Basic authentication)",
            shared.auth_failures.clone(),
        );
        registry.register_with_unit(
            "log_fsync_duration",
            "Time each batch of the broker's log took to write and fsync",
            Unit::Seconds,
            shared.fsync_seconds.clone(),
        );
        registry.register(
            "log_fsync_batch_records",
            "Records made durable by each fsync of the broker's log (group commit)",
            shared.fsync_records.clone(),
        );
        registry.register(
            "group_snapshots",
            "Snapshots of a Raft group's state this node took (compacting its log), \
             sent to a member far behind, or installed from the leader",
            shared.group_snapshots.clone(),
        );
    }
}

/// A count as a gauge's value, saturating: no queue comes near 2^63.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A gauge family with one value per label set.
fn gauges<L, T>(
    items: &[T],
    labels: impl Fn(&T) -> L,
    value: impl Fn(&T) -> i64,
) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    for item in items {
        family.get_or_create(&labels(item)).set(value(item));
    }
    family
}

/// A counter family with one value per label set.
fn counters<L, T>(
    items: &[T],
    labels: impl Fn(&T) -> L,
    value: impl Fn(&T) -> u64,
) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for item in items {
        family.get_or_create(&labels(item)).inc_by(value(item));
    }
    family
}

fn register_queues(registry: &mut Registry, report: &NodeReport, now_unix_ms: u64) {
    let queues = &report.queues;
    let labels = |q: &crate::node::GroupQueue| QueueLabels {
        queue: q.report.name.clone(),
    };
    let queue = registry.sub_registry_with_prefix("queue");
    queue.register(
        "messages",
        "Messages ready for delivery",
        gauges(queues, labels, |q| gauge_value(q.report.info.depth)),
    );
    queue.register(
        "messages_unsettled",
        "Messages delivered and not yet settled",
        gauges(queues, labels, |q| gauge_value(q.report.info.unsettled)),
    );
    queue.register_with_unit(
        "messages",
        "Body bytes held, ready and unsettled",
        Unit::Bytes,
        gauges(queues, labels, |q| gauge_value(q.report.info.bytes)),
    );
    queue.register(
        "consumers",
        "Consumers attached, browsers included",
        gauges(queues, labels, |q| gauge_value(q.report.info.consumers)),
    );
    let stat = |name: &str, help: &str, value: fn(&crate::queue::QueueStats) -> u64| {
        (
            name.to_owned(),
            help.to_owned(),
            counters(queues, labels, |q| value(&q.report.stats)),
        )
    };
    for (name, help, family) in [
        stat(
            "published_messages",
            "Messages published into the queue",
            |s| s.published,
        ),
        stat(
            "delivered_messages",
            "Messages acquired by consumers",
            |s| s.delivered,
        ),
        stat(
            "redelivered_messages",
            "Messages acquired again after an earlier acquisition",
            |s| s.redelivered,
        ),
        stat("acked_messages", "Messages settled accepted", |s| s.acked),
        stat(
            "dead_lettered_messages",
            "Messages dead-lettered or dropped for any reason but expiry",
            |s| s.dead_lettered,
        ),
        stat(
            "expired_messages",
            "Messages whose time to live ran out",
            |s| s.expired,
        ),
    ] {
        queue.register(name, help, family);
    }
    let aged: Vec<_> = queues
        .iter()
        .filter_map(|q| Some((q, q.report.oldest_arrival_ms?)))
        .collect();
    let age = Family::<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (q, arrival_ms) in aged {
        // Milliseconds to seconds: exact for any age a queue can have.
        #[allow(clippy::cast_precision_loss)]
        let seconds = now_unix_ms.saturating_sub(arrival_ms) as f64 / 1_000.0;
        age.get_or_create(&labels(q)).set(seconds);
    }
    queue.register_with_unit(
        "oldest_message_age",
        "Age of the queue's oldest message, to the second (absent if unknown)",
        Unit::Seconds,
        age,
    );
}

fn register_groups(registry: &mut Registry, report: &NodeReport) {
    let groups = &report.groups;
    let labels = |g: &crate::node::ReplicaStatus| GroupLabels { group: g.group };
    let raft = registry.sub_registry_with_prefix("group");
    raft.register(
        "leader",
        "The group's leader as this node knows it (its node id; 0 while none is known)",
        gauges(groups, labels, |g| gauge_value(g.leader.unwrap_or(0))),
    );
    raft.register(
        "applied_index",
        "The index of the group's last entry this node applied",
        gauges(groups, labels, |g| gauge_value(g.applied)),
    );
    raft.register(
        "rejoining",
        "1 while this node's member rejoins after damage to its log",
        gauges(groups, labels, |g| i64::from(g.rejoining)),
    );
    let snapshots = Counter::<u64>::default();
    snapshots.inc_by(report.snapshots);
    registry.register(
        "snapshots",
        "Snapshots of the queues' state this node asked its groups to take",
        snapshots,
    );
    let node = Gauge::<i64>::default();
    node.set(gauge_value(report.node_id));
    registry.register("node_id", "This node's id", node);
}

fn register_flow(registry: &mut Registry, report: &NodeReport) {
    let reasons = [Blocked::Memory, Blocked::Disk];
    let blocked = gauges(
        &reasons,
        |reason| BlockedLabels {
            reason: reason.label(),
        },
        |reason| i64::from(report.blocked == Some(*reason)),
    );
    registry.register(
        "producers_blocked",
        "1 while producers get no credit for this reason: memory (queued messages hold \
         limits.memory_high_watermark_bytes) or disk (the data directory has less than \
         limits.disk_free_min_bytes free)",
        blocked,
    );
    let held = Gauge::<i64>::default();
    held.set(gauge_value(report.memory_held_bytes));
    registry.register_with_unit(
        "memory_held",
        "Bytes of the messages queues hold in memory (not paged), counted against the \
         memory watermark",
        Unit::Bytes,
        held,
    );
    let in_flight = Gauge::<i64>::default();
    in_flight.set(gauge_value(report.in_flight_bytes));
    registry.register_with_unit(
        "producer_in_flight",
        "Bytes producers may have in flight: received and not yet answered, or expected \
         from the credit they hold",
        Unit::Bytes,
        in_flight,
    );
    if let Some(free_bytes) = report.disk_free_bytes {
        let free = Gauge::<i64>::default();
        free.set(gauge_value(free_bytes));
        registry.register_with_unit(
            "disk_free",
            "Free space of the data directory's file system, as last read",
            Unit::Bytes,
            free,
        );
    }
}

fn register_progress(registry: &mut Registry, progress: &[Progress]) {
    let labels = |p: &Progress| GroupLabels { group: p.group };
    let raft = registry.sub_registry_with_prefix("group");
    raft.register(
        "term",
        "The Raft term of this node's member of the group",
        gauges(progress, labels, |p| gauge_value(p.term)),
    );
    raft.register(
        "commit_index",
        "The index of the group's last entry this node knows committed",
        gauges(progress, labels, |p| gauge_value(p.commit_index)),
    );
    raft.register(
        "last_index",
        "The index of the last entry in this node's log of the group",
        gauges(progress, labels, |p| gauge_value(p.last_index)),
    );
    // Only a leader tracks its followers, so only the leader's node has
    // these series: sum over nodes, or read the leader's.
    let lag = Family::<FollowerLabels, Gauge>::default();
    for p in progress {
        for (&follower, &matched) in &p.matched {
            let labels = FollowerLabels {
                group: p.group,
                follower,
            };
            lag.get_or_create(&labels)
                .set(gauge_value(p.last_index.saturating_sub(matched)));
        }
    }
    raft.register(
        "follower_lag_entries",
        "While this node leads the group: entries in its log not yet known to be in the follower's",
        lag,
    );
}
