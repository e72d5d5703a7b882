//! How a node is configured: the broker's configuration, and what the node
//! cores derive from it (a queue's state-machine configuration, the log's
//! options).

use std::fmt;
use std::sync::Arc;

use crate::config::{self, Config, QueueKind};
use crate::log::LogOptions;
use crate::metrics::Metrics;
use crate::queue::{MemoryPages, Overflow, PageStore, Paging, QueueConfig};

/// A queue keeps up to this much in memory before its arrivals are paged
/// out, whatever its group holds, so that a queue its consumers keep up
/// with never pages; it is also what a page-in reads at a time (see
/// `queue::paging`).
const QUEUE_MEMORY_BYTES: u64 = 256 << 10;

/// How the node is configured.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The broker's configuration: data dir, storage, queue policies, limits.
    pub config: Config,
    /// Where the node's log counts its fsyncs.
    pub metrics: Metrics,
    /// Where each group pages its deep queues.
    pub pages: PageStores,
}

/// Opens a group's page store: on disk, made by the node's driver over its
/// I/O seam, or in memory, where a group never pages.
#[derive(Clone, Default)]
pub struct PageStores {
    on_disk: Option<Arc<OpenStore>>,
}

/// Makes group `group`'s page store.
type OpenStore = dyn Fn(u32) -> Box<dyn PageStore> + Send + Sync;

impl PageStores {
    /// Stores that `open` makes, group by group.
    pub fn on_disk(open: impl Fn(u32) -> Box<dyn PageStore> + Send + Sync + 'static) -> Self {
        Self {
            on_disk: Some(Arc::new(open)),
        }
    }

    /// Group `group`'s store.
    pub(in crate::node) fn open(&self, group: u32) -> Box<dyn PageStore> {
        match &self.on_disk {
            Some(open) => open(group),
            None => Box::new(MemoryPages::default()),
        }
    }
}

impl fmt::Debug for PageStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.on_disk.is_some() {
            "on disk"
        } else {
            "in memory"
        };
        f.write_str(kind)
    }
}

impl NodeSettings {
    /// Settings for a broker configured by `config`, counting into
    /// metrics of its own, never paging.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            metrics: Metrics::default(),
            pages: PageStores::default(),
        }
    }

    /// When each of `groups` groups pages its queues out: once their
    /// messages in memory take half the memory watermark between them,
    /// keeping the other half for what is on its way in and out; a queue
    /// then once it holds an eighth of its group's share, or
    /// [`QUEUE_MEMORY_BYTES`]. Never without a store on disk or a
    /// watermark.
    pub(in crate::node) fn paging(&self, groups: u32) -> Paging {
        match (
            &self.pages.on_disk,
            self.config.limits.memory_high_watermark(),
        ) {
            (Some(_), Some(watermark)) => {
                let group_bytes = watermark / 2 / u64::from(groups.max(1));
                Paging {
                    group_bytes,
                    queue_bytes: (group_bytes / 8).clamp(1, QUEUE_MEMORY_BYTES),
                }
            }
            _ => Paging::OFF,
        }
    }

    pub(in crate::node) fn log_options(&self) -> LogOptions {
        LogOptions {
            repair: self.config.repair,
            segment_bytes_max: self.config.storage.segment_bytes_max,
            // Each record stands alone: a later one may succeed.
            stop_at_no_space: false,
            reserve_bytes: self.config.storage.disk_reserve_bytes,
            plants: self.config.plants,
            metrics: self.metrics.clone(),
        }
    }

    /// The state machine's configuration of a queue created as `name`.
    pub(in crate::node) fn queue_config(&self, name: &str) -> QueueConfig {
        let settings = self.config.queue_settings(name);
        QueueConfig {
            durable: settings.durable,
            max_length: settings.max_length,
            max_bytes: settings.max_bytes,
            overflow: match settings.overflow {
                config::Overflow::RejectPublish => Overflow::RejectPublish,
                config::Overflow::DropHead => Overflow::DropHead,
            },
            dead_letter_queue: settings.dead_letter_queue,
            delivery_limit: settings.delivery_limit,
            default_ttl_ms: settings
                .default_ttl
                .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            dedup_window_ms: settings
                .dedup
                .map(|window| u64::try_from(window.duration.as_millis()).unwrap_or(u64::MAX)),
            dedup_window_ids: settings.dedup.map(|window| window.ids),
            auto_delete: false,
            priority_levels: match settings.kind {
                QueueKind::Priority(levels) => Some(levels),
                _ => None,
            },
            last_value_key: match settings.kind {
                QueueKind::LastValue(key) => Some(key),
                _ => None,
            },
            message_groups: settings.message_groups,
            single_active_consumer: settings.single_active_consumer,
            filter: None,
        }
    }

    pub(in crate::node) fn auto_create(&self, name: &str) -> bool {
        self.config.queue_settings(name).auto_create
    }

    /// Whether `persist = "always"` applies to the queue: its `[[queue]]`
    /// entry's `persist`, else the `[queues]` default. Read directly rather
    /// than through [`Config::queue_settings`], which resolves (and clones)
    /// every setting, because every non-durable publish asks.
    pub(in crate::node) fn persist_always(&self, name: &str) -> bool {
        let persist = self
            .config
            .queue_overrides
            .iter()
            .find(|entry| entry.name == name)
            .and_then(|entry| entry.persist)
            .unwrap_or(self.config.queues.persist);
        persist == config::Persist::Always
    }
}
