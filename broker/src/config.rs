//! Broker configuration: a TOML file whose every field has a default.
//!
//! Parsing is pure (text in, [`Config`] out): the binary reads the file
//! through the I/O seam and lays its command-line flags over the result.
//! Unknown fields are errors, so that a typo fails at start-up instead of
//! silently leaving a default in place.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::permissions::Pattern;
use crate::raft::transport::SECRET_BYTES_MIN;
use crate::sasl::scram::ScramCredential;
use crate::server::auth::{ANONYMOUS_IDENTITY, Argon2Hash};

/// The seed used when the configuration names none. Fixed, so that two
/// brokers started alike behave alike.
pub const DEFAULT_SEED: u64 = 0;

/// The smallest log segment worth a file: below it, every batch would start
/// a new segment.
const STORAGE_SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// The smallest max-frame-size AMQP 1.0 allows (`MIN-MAX-FRAME-SIZE`, 2.7.1).
const MAX_FRAME_SIZE_MIN: u32 = 512;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML, names an unknown field, has a value of
    /// the wrong type, or holds a password hash that cannot be used. The
    /// message gives the line and column.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value is well-formed but unusable.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The offending field, as a dotted TOML path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the broker reads at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where AMQP clients connect. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the broker keeps its state.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// Seeds the broker's one random number generator
    /// ([`crate::io::seeded_rng`]).
    pub seed: u64,
    /// AMQP connection limits and identity.
    pub amqp: AmqpConfig,
    /// Accounts allowed to log in (SASL SCRAM-SHA-256 or PLAIN). Empty
    /// means an open broker: SASL ANONYMOUS, and clients that skip SASL,
    /// are admitted.
    pub users: Vec<User>,
    /// Which SASL mechanisms the accounts may use, beyond the defaults.
    pub auth: AuthConfig,
    /// The settings every queue starts from.
    pub queues: QueuesConfig,
    /// Per-queue overrides of [`Config::queues`] (`[[queue]]` in TOML).
    /// [`Config::queue_settings`] merges them.
    #[serde(rename = "queue")]
    pub queue_overrides: Vec<QueueOverride>,
    /// Flow-control limits.
    pub limits: LimitsConfig,
    /// The durable log on disk.
    pub storage: StorageConfig,
    /// Membership of a replicated cluster; with no peers, a single node.
    pub cluster: ClusterConfig,
    /// The TLS listener for `amqps` clients; none by default.
    pub tls: TlsConfig,
    /// What each user may do on which addresses (`[[permissions]]`). None
    /// at all: every user may do everything (see [`crate::permissions`]).
    pub permissions: Vec<Permission>,
    /// The HTTP listener for metrics and the management API; none by
    /// default.
    pub http: HttpConfig,
    /// Set by `--repair`, never by the file, so that a repair is always a
    /// deliberate one-off: truncate the log at the first corrupt record and
    /// report what was lost.
    #[serde(skip)]
    pub repair: bool,
    /// Deliberate bugs for the simulator's checker to catch (feature
    /// `planted-bugs`); never read from the file.
    #[serde(skip)]
    pub plants: crate::planted::Plants,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5672)),
            data_dir: PathBuf::from("./sluice-data"),
            log: LogConfig::default(),
            seed: DEFAULT_SEED,
            amqp: AmqpConfig::default(),
            users: Vec::new(),
            auth: AuthConfig::default(),
            queues: QueuesConfig::default(),
            queue_overrides: Vec::new(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            tls: TlsConfig::default(),
            permissions: Vec::new(),
            http: HttpConfig::default(),
            repair: false,
            plants: crate::planted::Plants::NONE,
        }
    }
}

/// Where log lines go and how much is written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format on stderr.
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or per-module directives
    /// (`info,sluice::server=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// The shape of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What the broker offers in its AMQP `open`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// The largest frame the broker accepts, in bytes (at least 512).
    pub max_frame_size: u32,
    /// The highest channel number a client may use.
    pub channel_max: u16,
    /// Closes a connection silent for this long; 0 disables the timeout.
    pub idle_timeout_ms: u32,
    /// The broker's container id, sent to every client.
    pub container_id: String,
    /// Whether a producer that asks for rcv-settle-mode `second` gets it
    /// (the broker's outcome then comes unsettled, and waits for the
    /// producer's settle). Off, the broker answers `first` and settles its
    /// outcomes: clients that ask for `second` and then wait for the broker
    /// to settle (uAMQP, the Azure SDK's Python stack) would time out.
    pub rcv_settle_mode_second: bool,
    /// How long a client has, from the moment it connects, to finish its
    /// protocol header, TLS, SASL and `open`; a trickle of bytes does not
    /// extend it. 0 disables it (then only the idle timeout applies).
    pub handshake_timeout_ms: u32,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 262_144,
            channel_max: 255,
            idle_timeout_ms: 60_000,
            container_id: "sluice".to_owned(),
            rcv_settle_mode_second: false,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// The TLS listener (`[tls]`): where `amqps` clients connect, and the
/// certificate the broker proves itself with. Without `listen`, none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where TLS clients connect (`--listen-tls`); port 0 picks a free
    /// port. AMQP's TLS port is 5671.
    pub listen: Option<SocketAddr>,
    /// The broker's certificate chain, PEM, its own certificate first.
    pub cert_file: Option<PathBuf>,
    /// The private key of that certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
    /// CA certificates, PEM, that vouch for clients' certificates: a client
    /// that presents one they verify may log in with SASL EXTERNAL as the
    /// user its subject's common name names. Without it, no client
    /// certificates are asked for.
    pub client_ca_file: Option<PathBuf>,
    /// How often the certificate and key files are read again, so that a
    /// renewed certificate takes effect without a restart (SIGHUP reads
    /// them at once); 0 reads them only on SIGHUP.
    pub reload_interval_ms: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            cert_file: None,
            key_file: None,
            min_version: TlsVersion::default(),
            client_ca_file: None,
            reload_interval_ms: 30_000,
        }
    }
}

/// The HTTP listener (`[http]`): Prometheus metrics (`/metrics`), health
/// and readiness probes, and the management API. Without `listen`, none.
/// It speaks plain HTTP: put it on a private interface (see
/// `docs/management.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where HTTP clients connect (`--http`); port 0 picks a free port.
    pub listen: Option<SocketAddr>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446) only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// An account: a name and at least one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name, compared exactly.
    pub name: String,
    /// The argon2 hash of the password, for SASL PLAIN; checked usable
    /// when loaded.
    pub password_hash: Option<Argon2Hash>,
    /// The SCRAM-SHA-256 credential (stored key and server key), for SASL
    /// SCRAM-SHA-256.
    pub scram_sha256: Option<ScramCredential>,
    /// How much of the broker the user may hold at once.
    pub limits: UserLimits,
}

/// The most a user may hold at once, on one node, summed over all its
/// connections there; `None` is no limit. The excess is refused with
/// `amqp:resource-limit-exceeded` on the narrowest scope: the connection,
/// the session or the link that would go over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Open connections.
    pub max_connections: Option<u32>,
    /// Sessions, over all its connections.
    pub max_sessions: Option<u32>,
    /// Links to queues and topics, over all its connections.
    pub max_links: Option<u32>,
}

/// A `[[users]]` entry as written, before its credentials are parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: Option<String>,
    scram_sha256: Option<String>,
    max_connections: Option<u32>,
    max_sessions: Option<u32>,
    max_links: Option<u32>,
}

/// A `[[permissions]]` entry: what `user` may do on the addresses that
/// `pattern` matches. Entries add up; whatever no entry grants is denied
/// once any entry exists (see [`crate::permissions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permission {
    /// The user (a `[[users]]` name).
    pub user: String,
    /// A glob over addresses (see [`crate::permissions::Pattern`]).
    pub pattern: String,
    /// May attach senders to matching addresses, and relay messages to
    /// them through the anonymous relay.
    pub send: bool,
    /// May consume from matching queues and subscribe to matching topics.
    pub receive: bool,
    /// May browse matching queues (`receive` grants it too).
    pub browse: bool,
    /// May create matching queues (an attach to one that does not exist,
    /// a temporary node), and delete or purge them.
    pub manage: bool,
    /// May view matching queues through the management API.
    pub monitor: bool,
}

impl<'de> Deserialize<'de> for User {
    /// Parses the credentials here rather than in [`Config::validate`], so
    /// that an error names the user and carries the entry's line.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let entry = UserEntry::deserialize(deserializer)?;
        let name = entry.name;
        let password_hash = entry
            .password_hash
            .map(|phc| Argon2Hash::parse(&phc))
            .transpose()
            .map_err(|error| {
                D::Error::custom(format!(
                    "user `{name}`: `password_hash` is not a usable argon2 PHC string \
                     (make one with `sluice passwd`): {error}"
                ))
            })?;
        let scram_sha256 = entry
            .scram_sha256
            .map(|stored| stored.parse::<ScramCredential>())
            .transpose()
            .map_err(|error| D::Error::custom(format!("user `{name}`: `scram_sha256`: {error}")))?;
        Ok(Self {
            name,
            password_hash,
            scram_sha256,
            limits: UserLimits {
                max_connections: entry.max_connections,
                max_sessions: entry.max_sessions,
                max_links: entry.max_links,
            },
        })
    }
}

/// Which SASL mechanisms the accounts may use (`[auth]`). SCRAM-SHA-256 is
/// offered whenever an account has a SCRAM credential; EXTERNAL whenever a
/// client presents a certificate `tls.client_ca_file` vouches for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Offer PLAIN on connections without TLS too. Off by default: PLAIN
    /// sends the password itself, readable by anyone on the path.
    pub allow_plain_without_tls: bool,
    /// Admit SASL ANONYMOUS (as the user `anonymous`) even though accounts
    /// exist. A broker without accounts admits it anyway.
    pub anonymous: bool,
}

/// Which messages a durable queue writes to disk before accepting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persist {
    /// Only messages whose header says `durable = true`.
    #[default]
    Durable,
    /// Every message, whatever its header says.
    Always,
}

/// What a full queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuses the new message: the producer's transfer is rejected.
    #[default]
    RejectPublish,
    /// Accepts it and removes the oldest message to make room.
    DropHead,
}

/// How a queue orders and keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueType {
    /// First in, first out.
    #[default]
    Standard,
    /// One message per value of an application property
    /// (`last_value_key`): a new one replaces the one waiting.
    LastValue,
    /// Higher AMQP header priority first (`priority_levels` levels), first
    /// in first out within a level.
    Priority,
}

/// The defaults every queue starts from (`[queues]`). Zero and the empty
/// string mean "no limit" and "none", as written in the file; resolved
/// values come from [`Config::queue_settings`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuesConfig {
    /// Create an anycast queue the first time a link attaches to an unknown
    /// address; when false such an attach fails with `amqp:not-found`.
    pub auto_create: bool,
    /// Whether auto-created queues are durable.
    pub durable: bool,
    /// Which messages are written to disk before being accepted.
    pub persist: Persist,
    /// The most messages a queue holds; 0 is unlimited.
    pub max_length: u64,
    /// The most message bytes a queue holds; 0 is unlimited.
    pub max_bytes: u64,
    /// What a full queue does with one more message.
    pub overflow: Overflow,
    /// Deliveries of one message before it is dead-lettered; 0 is unlimited.
    pub delivery_limit: u32,
    /// Where dead-lettered messages go; empty drops them.
    pub dead_letter_queue: String,
    /// Expiry for messages that carry no TTL of their own; 0 is none.
    pub default_ttl_ms: u64,
    /// How long a queue remembers a message's `message-id`: a message
    /// published again with the same id within it (a producer resending
    /// after losing its connection) is accepted but not enqueued twice. 0
    /// turns de-duplication off.
    pub dedup_window_ms: u64,
    /// The most ids a queue remembers; the oldest are forgotten first.
    pub dedup_window_ids: u64,
    /// How the queue orders and keeps messages.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// The application property a last-value queue keys on.
    pub last_value_key: String,
    /// How many priority levels a priority queue has (1 to 255): header
    /// priorities from this up count as the highest.
    pub priority_levels: u8,
    /// Messages with the same `group-id` go to one consumer at a time.
    pub message_groups: bool,
    /// One consumer receives; the others wait their turn, in attach order.
    pub single_active_consumer: bool,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            durable: true,
            persist: Persist::Durable,
            max_length: 0,
            max_bytes: 0,
            overflow: Overflow::RejectPublish,
            delivery_limit: 20,
            dead_letter_queue: String::new(),
            default_ttl_ms: 0,
            dedup_window_ms: 600_000,
            dedup_window_ids: 1_000_000,
            queue_type: QueueType::Standard,
            last_value_key: String::new(),
            priority_levels: PRIORITY_LEVELS_DEFAULT,
            message_groups: false,
            single_active_consumer: false,
        }
    }
}

/// Priority levels of a priority queue unless configured: the ten AMQP
/// (and JMS) priorities, 0 to 9.
pub const PRIORITY_LEVELS_DEFAULT: u8 = 10;

/// A `[[queue]]` entry: [`QueuesConfig`] fields that differ for the queue
/// named exactly `name`. An absent field keeps the `[queues]` value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueOverride {
    /// The queue (address) this entry applies to.
    pub name: String,
    /// See [`QueuesConfig::auto_create`].
    pub auto_create: Option<bool>,
    /// See [`QueuesConfig::durable`].
    pub durable: Option<bool>,
    /// See [`QueuesConfig::persist`].
    pub persist: Option<Persist>,
    /// See [`QueuesConfig::max_length`].
    pub max_length: Option<u64>,
    /// See [`QueuesConfig::max_bytes`].
    pub max_bytes: Option<u64>,
    /// See [`QueuesConfig::overflow`].
    pub overflow: Option<Overflow>,
    /// See [`QueuesConfig::delivery_limit`].
    pub delivery_limit: Option<u32>,
    /// See [`QueuesConfig::dead_letter_queue`]; `""` removes a default one.
    pub dead_letter_queue: Option<String>,
    /// See [`QueuesConfig::default_ttl_ms`].
    pub default_ttl_ms: Option<u64>,
    /// See [`QueuesConfig::dedup_window_ms`].
    pub dedup_window_ms: Option<u64>,
    /// See [`QueuesConfig::dedup_window_ids`].
    pub dedup_window_ids: Option<u64>,
    /// See [`QueuesConfig::queue_type`].
    #[serde(rename = "type")]
    pub queue_type: Option<QueueType>,
    /// See [`QueuesConfig::last_value_key`].
    pub last_value_key: Option<String>,
    /// See [`QueuesConfig::priority_levels`].
    pub priority_levels: Option<u8>,
    /// See [`QueuesConfig::message_groups`].
    pub message_groups: Option<bool>,
    /// See [`QueuesConfig::single_active_consumer`].
    pub single_active_consumer: Option<bool>,
}

impl QueueOverride {
    /// `base` with this entry's fields laid over it.
    fn apply(&self, mut base: QueuesConfig) -> QueuesConfig {
        let Self {
            name: _,
            auto_create,
            durable,
            persist,
            max_length,
            max_bytes,
            overflow,
            delivery_limit,
            dead_letter_queue,
            default_ttl_ms,
            dedup_window_ms,
            dedup_window_ids,
            queue_type,
            last_value_key,
            priority_levels,
            message_groups,
            single_active_consumer,
        } = self;
        base.auto_create = auto_create.unwrap_or(base.auto_create);
        base.durable = durable.unwrap_or(base.durable);
        base.persist = persist.unwrap_or(base.persist);
        base.max_length = max_length.unwrap_or(base.max_length);
        base.max_bytes = max_bytes.unwrap_or(base.max_bytes);
        base.overflow = overflow.unwrap_or(base.overflow);
        base.delivery_limit = delivery_limit.unwrap_or(base.delivery_limit);
        if let Some(queue) = dead_letter_queue {
            base.dead_letter_queue.clone_from(queue);
        }
        base.default_ttl_ms = default_ttl_ms.unwrap_or(base.default_ttl_ms);
        base.dedup_window_ms = dedup_window_ms.unwrap_or(base.dedup_window_ms);
        base.dedup_window_ids = dedup_window_ids.unwrap_or(base.dedup_window_ids);
        base.queue_type = queue_type.unwrap_or(base.queue_type);
        if let Some(key) = last_value_key {
            base.last_value_key.clone_from(key);
        }
        base.priority_levels = priority_levels.unwrap_or(base.priority_levels);
        base.message_groups = message_groups.unwrap_or(base.message_groups);
        base.single_active_consumer = single_active_consumer.unwrap_or(base.single_active_consumer);
        base
    }
}

/// One queue's settings, resolved: `[queues]` merged with its `[[queue]]`
/// entry, with `None` for "unlimited" or "none". A `Some` limit is never 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// May the queue be created by the first attach to its address.
    pub auto_create: bool,
    /// Whether the queue (if auto-created) is durable.
    pub durable: bool,
    /// Which messages are written to disk before being accepted.
    pub persist: Persist,
    /// The most messages the queue holds.
    pub max_length: Option<u64>,
    /// The most message bytes the queue holds.
    pub max_bytes: Option<u64>,
    /// What the full queue does with one more message.
    pub overflow: Overflow,
    /// Deliveries of one message before it is dead-lettered.
    pub delivery_limit: Option<u32>,
    /// Where dead-lettered messages go; `None` drops them. Never the queue
    /// itself.
    pub dead_letter_queue: Option<String>,
    /// Expiry for messages that carry no TTL of their own.
    pub default_ttl: Option<Duration>,
    /// The `message-id` de-duplication window, if on.
    pub dedup: Option<DedupWindow>,
    /// How it orders and keeps messages.
    pub kind: QueueKind,
    /// Messages with the same `group-id` go to one consumer at a time.
    pub message_groups: bool,
    /// One consumer receives at a time.
    pub single_active_consumer: bool,
}

/// A queue type with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// First in, first out.
    Standard,
    /// Keyed on this application property.
    LastValue(String),
    /// With this many priority levels (at least 1).
    Priority(u8),
}

/// How long, and for how many ids, a queue remembers `message-id`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupWindow {
    /// How long an id is remembered.
    pub duration: Duration,
    /// The most ids remembered (at least 1).
    pub ids: u64,
}

impl QueueSettings {
    /// Resolves `raw` for the queue `name`.
    fn resolve(name: &str, raw: QueuesConfig) -> Self {
        Self {
            auto_create: raw.auto_create,
            durable: raw.durable,
            persist: raw.persist,
            max_length: (raw.max_length > 0).then_some(raw.max_length),
            max_bytes: (raw.max_bytes > 0).then_some(raw.max_bytes),
            overflow: raw.overflow,
            delivery_limit: (raw.delivery_limit > 0).then_some(raw.delivery_limit),
            // A queue never dead-letters into itself: with a default
            // dead-letter queue, that queue's own dead letters are dropped
            // instead of circling forever.
            dead_letter_queue: Some(raw.dead_letter_queue)
                .filter(|queue| !queue.is_empty() && queue != name),
            default_ttl: (raw.default_ttl_ms > 0)
                .then(|| Duration::from_millis(raw.default_ttl_ms)),
            dedup: (raw.dedup_window_ms > 0 && raw.dedup_window_ids > 0).then(|| DedupWindow {
                duration: Duration::from_millis(raw.dedup_window_ms),
                ids: raw.dedup_window_ids,
            }),
            kind: match raw.queue_type {
                QueueType::Standard => QueueKind::Standard,
                QueueType::LastValue => QueueKind::LastValue(raw.last_value_key),
                QueueType::Priority => QueueKind::Priority(raw.priority_levels.max(1)),
            },
            message_groups: raw.message_groups,
            single_active_consumer: raw.single_active_consumer,
        }
    }
}

/// Flow-control limits (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The most client connections open at once; the excess is closed at
    /// accept, before it costs more than a socket. Also capped below the
    /// process's file-descriptor limit.
    pub max_connections: u32,
    /// The most connections one source address may have open that have not
    /// yet authenticated: a single host cannot hold every slot with
    /// handshakes it never finishes.
    pub max_handshakes_per_source: u32,
    /// Above this much memory held by messages, producers get no more link
    /// credit until it falls back; 0 disables the watermark. A quarter of
    /// it (but at least one message of the largest size) bounds the bytes
    /// of messages whose transfers have not all arrived, over all links.
    pub memory_high_watermark_bytes: u64,
    /// Each producer's window (at least 1): how many messages it may have
    /// in flight, sent but not yet answered. Every message in the window
    /// waits behind the others, so the window bounds latency under load
    /// (about the window divided by the throughput) as well as memory.
    pub producer_credit: u32,
    /// While the data directory has less free space than this, producers
    /// get no more link credit (they wait; nothing is refused), until it
    /// rises again; 0 turns the check off.
    pub disk_free_min_bytes: u64,
    /// Whether a queue that pages takes non-durable messages (written
    /// without an fsync, as it pages them), or refuses them with
    /// `amqp:resource-limit-exceeded`, for producers that would rather
    /// hear "no" than add to a backlog on disk.
    pub page_transient_messages: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_handshakes_per_source: 128,
            memory_high_watermark_bytes: 1 << 30,
            producer_credit: 256,
            disk_free_min_bytes: 64 << 20,
            page_transient_messages: true,
        }
    }
}

/// The durable log (`[storage]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A log segment file is sealed and a new one started past this size.
    pub segment_bytes_max: u64,
    /// After this many logged commands the broker writes a snapshot of its
    /// queues and deletes the segments it covers: it bounds both recovery
    /// time and disk use.
    pub snapshot_every_records: u64,
    /// Disk space the log holds back (a file `reserve` in its directory)
    /// so that a disk filled by messages can be freed by consuming them:
    /// settles and the snapshot that deletes old segments may use it, new
    /// messages may not. 0 turns the reserve off.
    pub disk_reserve_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            snapshot_every_records: 100_000,
            disk_reserve_bytes: 16 << 20,
        }
    }
}

/// The greatest node id: a consumer's id holds its node's id in 16 bits.
pub const NODE_ID_MAX: u64 = u16::MAX as u64;

/// The most data groups a cluster may have.
pub const GROUPS_MAX: u32 = 256;

/// Membership of a replicated cluster (`[cluster]`). With no peers the broker
/// is a single node, exactly as if the section were absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id: unique in the cluster, and not 0 (Raft reserves it).
    pub node_id: u64,
    /// Where the other nodes connect to this one.
    pub listen: SocketAddr,
    /// Every other node of the cluster (`[[cluster.peer]]`).
    #[serde(rename = "peer")]
    pub peers: Vec<Peer>,
    /// Shared by every node of the cluster: a node proves it knows it
    /// before anything it sends is taken, so no stranger can join or inject
    /// messages. It never crosses the wire. At least
    /// [`SECRET_BYTES_MIN`] bytes when there are peers.
    pub secret: String,
    /// How many Raft data groups the queues are spread over; 0 (the
    /// default) means one per node. Every node must agree.
    pub groups: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 5700)),
            peers: Vec::new(),
            secret: String::new(),
            groups: 0,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is one of several.
    pub fn is_clustered(&self) -> bool {
        !self.peers.is_empty()
    }

    /// How many data groups there are: [`ClusterConfig::groups`], or one
    /// per node.
    pub fn groups_or_default(&self) -> u32 {
        match self.groups {
            0 => u32::try_from(self.peers.len() + 1).unwrap_or(u32::MAX),
            groups => groups,
        }
    }
}

/// Another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its node id.
    pub id: u64,
    /// Where it listens for other nodes, as `host:port`.
    pub address: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// Parses `ID=HOST:PORT`, the form of the `--peer` flag.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, address) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
        let id = id
            .parse()
            .map_err(|_| format!("{id:?} is not a node id (a positive integer)"))?;
        Ok(Self {
            id,
            address: address.to_owned(),
        })
    }
}

impl LimitsConfig {
    /// The memory high watermark, or `None` if disabled.
    pub fn memory_high_watermark(&self) -> Option<u64> {
        (self.memory_high_watermark_bytes > 0).then_some(self.memory_high_watermark_bytes)
    }

    /// How many bytes messages received in several transfers may hold, over
    /// every link, until their last transfer: a quarter of the memory
    /// watermark, so that reassembly cannot take the memory queued
    /// messages are allowed, but room for one message of
    /// `max_message_size`, which must always be receivable. `None` with the
    /// watermark off.
    pub fn unfinished_message_bytes(&self, max_message_size: u64) -> Option<u64> {
        self.memory_high_watermark()
            .map(|watermark| (watermark / 4).max(max_message_size))
    }
}

impl Config {
    /// Parses and validates a TOML document; missing fields take their
    /// defaults.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for bad TOML, an unknown field, a value of the
    /// wrong type or an unusable password hash; [`ConfigError::Invalid`] as
    /// [`Config::validate`] says.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but cannot work.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first unusable field: a
    /// max-frame-size below AMQP's minimum, an empty container id, an
    /// unusable or repeated user name, a `[[permissions]]` entry naming an
    /// unknown user or a pattern that does not parse, a connection limit
    /// or producer credit of 0, or a `[[queue]]` entry that is unnamed,
    /// repeated or its own dead-letter queue, or a last-value queue with no
    /// key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_amqp()?;
        self.validate_users()?;
        self.validate_permissions()?;
        validate_queue_type("[queues]", &self.queues)?;
        self.validate_queue_overrides()?;
        self.validate_cluster()?;
        self.validate_tls()?;
        if self.limits.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                "must be at least 1, or no client could connect".to_owned(),
            ));
        }
        if self.limits.max_handshakes_per_source == 0 {
            return Err(invalid(
                "limits.max_handshakes_per_source",
                "must be at least 1, or no client could connect".to_owned(),
            ));
        }
        if self.limits.producer_credit == 0 {
            return Err(invalid(
                "limits.producer_credit",
                "must be at least 1, or producers could never send".to_owned(),
            ));
        }
        if self.storage.snapshot_every_records == 0 {
            return Err(invalid(
                "storage.snapshot_every_records",
                "must be at least 1".to_owned(),
            ));
        }
        if self.storage.segment_bytes_max < STORAGE_SEGMENT_BYTES_MIN {
            return Err(invalid(
                "storage.segment_bytes_max",
                format!("must be at least {STORAGE_SEGMENT_BYTES_MIN} bytes"),
            ));
        }
        Ok(())
    }

    /// The settings of the queue `name`: `[queues]` with the `[[queue]]`
    /// entry of that exact name, if any, laid over it.
    pub fn queue_settings(&self, name: &str) -> QueueSettings {
        let raw = match self.queue_overrides.iter().find(|entry| entry.name == name) {
            Some(entry) => entry.apply(self.queues.clone()),
            None => self.queues.clone(),
        };
        QueueSettings::resolve(name, raw)
    }

    /// A TLS listener needs its certificate and key. The file may name
    /// them without a listener, which `--listen-tls` then opens.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if tls.listen.is_some() && tls.cert_file.is_none() {
            return Err(invalid(
                "tls.cert_file",
                "a TLS listener (tls.listen, --listen-tls) needs the broker's certificate"
                    .to_owned(),
            ));
        }
        if tls.listen.is_some() && tls.key_file.is_none() {
            return Err(invalid(
                "tls.key_file",
                "a TLS listener (tls.listen, --listen-tls) needs the certificate's private key"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    fn validate_amqp(&self) -> Result<(), ConfigError> {
        if self.amqp.max_frame_size < MAX_FRAME_SIZE_MIN {
            return Err(invalid(
                "amqp.max_frame_size",
                format!(
                    "{} is below AMQP's minimum of {MAX_FRAME_SIZE_MIN} bytes",
                    self.amqp.max_frame_size
                ),
            ));
        }
        if self.amqp.container_id.is_empty() {
            return Err(invalid("amqp.container_id", "must not be empty".to_owned()));
        }
        Ok(())
    }

    /// Names must be sendable in a PLAIN response (non-empty, no NUL) and
    /// distinct, so that a name means one password.
    fn validate_users(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for user in &self.users {
            // Without a password, only a client certificate logs it in.
            let credential = user.password_hash.is_some() || user.scram_sha256.is_some();
            if !credential && self.tls.client_ca_file.is_none() {
                return Err(invalid(
                    "users.password_hash",
                    format!(
                        "user `{}` has no credential: give `password_hash` (`sluice passwd`) \
                         or `scram_sha256` (`sluice passwd --scram`), or set \
                         tls.client_ca_file for a user who logs in with a certificate",
                        user.name
                    ),
                ));
            }
            if user.name.is_empty() || user.name.contains('\0') {
                return Err(invalid(
                    "users.name",
                    format!("{:?} is not a usable login name", user.name),
                ));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(invalid(
                    "users.name",
                    format!("user `{}` is listed twice", user.name),
                ));
            }
        }
        Ok(())
    }

    /// Each entry names a configured user and a pattern that parses.
    fn validate_permissions(&self) -> Result<(), ConfigError> {
        for entry in &self.permissions {
            // ANONYMOUS's clients, admitted beside the accounts with
            // `auth.anonymous`, are the user `anonymous`.
            let anonymous = self.auth.anonymous && entry.user == ANONYMOUS_IDENTITY;
            if !anonymous && !self.users.iter().any(|user| user.name == entry.user) {
                return Err(invalid(
                    "permissions.user",
                    format!(
                        "`{}` is not a user: a [[permissions]] entry names a [[users]] entry \
                         (or `anonymous`, with auth.anonymous)",
                        entry.user
                    ),
                ));
            }
            if let Err(error) = Pattern::parse(&entry.pattern) {
                return Err(invalid(
                    "permissions.pattern",
                    format!("{:?} (user `{}`): {error}", entry.pattern, entry.user),
                ));
            }
        }
        Ok(())
    }

    /// A cluster needs distinct node ids from 1 to [`NODE_ID_MAX`],
    /// addresses that name a port, and a secret long enough not to be
    /// guessed.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !(1..=NODE_ID_MAX).contains(&cluster.node_id) {
            return Err(invalid(
                "cluster.node_id",
                format!("must be from 1 to {NODE_ID_MAX} (0 is reserved)"),
            ));
        }
        let mut seen = HashSet::from([cluster.node_id]);
        for peer in &cluster.peers {
            if !(1..=NODE_ID_MAX).contains(&peer.id) || !seen.insert(peer.id) {
                return Err(invalid(
                    "cluster.peer.id",
                    format!(
                        "node id {} is not from 1 to {NODE_ID_MAX}, or is used twice \
                         (this node is {})",
                        peer.id, cluster.node_id
                    ),
                ));
            }
            let port = peer.address.rsplit_once(':').map(|(_, port)| port);
            if port.is_none_or(|port| port.parse::<u16>().is_err()) {
                return Err(invalid(
                    "cluster.peer.address",
                    format!("{:?} is not HOST:PORT", peer.address),
                ));
            }
        }
        if cluster.groups > GROUPS_MAX {
            return Err(invalid(
                "cluster.groups",
                format!("at most {GROUPS_MAX} data groups"),
            ));
        }
        if cluster.is_clustered() && cluster.secret.len() < SECRET_BYTES_MIN {
            return Err(invalid(
                "cluster.secret",
                format!(
                    "a cluster needs a secret of at least {SECRET_BYTES_MIN} bytes, \
                     shared by every node"
                ),
            ));
        }
        Ok(())
    }

    /// Each entry must name one queue, once, and not dead-letter into
    /// itself (a message dead-lettered there would circle forever).
    fn validate_queue_overrides(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for entry in &self.queue_overrides {
            if entry.name.is_empty() {
                return Err(invalid("queue.name", "must not be empty".to_owned()));
            }
            if !seen.insert(entry.name.as_str()) {
                return Err(invalid(
                    "queue.name",
                    format!("queue `{}` has two [[queue]] entries", entry.name),
                ));
            }
            if entry.dead_letter_queue.as_deref() == Some(entry.name.as_str()) {
                return Err(invalid(
                    "queue.dead_letter_queue",
                    format!("queue `{}` cannot be its own dead-letter queue", entry.name),
                ));
            }
            validate_queue_type(&entry.name, &entry.apply(self.queues.clone()))?;
        }
        Ok(())
    }
}

/// A last-value queue needs its key; a priority queue at least one level.
fn validate_queue_type(name: &str, raw: &QueuesConfig) -> Result<(), ConfigError> {
    if raw.queue_type == QueueType::LastValue && raw.last_value_key.is_empty() {
        return Err(invalid(
            "queue.last_value_key",
            format!("last-value queue `{name}` needs the application property it keys on"),
        ));
    }
    if raw.queue_type == QueueType::Priority && raw.priority_levels == 0 {
        return Err(invalid(
            "queue.priority_levels",
            format!("priority queue `{name}` needs from 1 to 255 levels"),
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

#[cfg(test)]
mod tests;
