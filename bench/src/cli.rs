//! Command-line options, and parsing of the URL and durations they carry.

use std::time::Duration;

use clap::Parser;
use sluice::amqp::engine::ClientSasl;

/// The smallest body that holds the probe: run id, producer, sequence number
/// and send timestamp.
pub const MIN_SIZE: usize = 24;

/// Load generator for any AMQP 1.0 broker, in the spirit of quiver and
/// RabbitMQ PerfTest.
///
/// Producers send messages whose body carries a run id, the producer's
/// number, a sequence number and the send time (this process's monotonic
/// clock); consumers accept each message and measure end-to-end latency into
/// an HDR histogram, and count lost and duplicate messages. Consumers attach
/// before producers. Each producer and each consumer gets its own connection
/// unless `--connections` is given.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-bench", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Another measurement instead of the load run.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Broker URL: amqp://[user:pass@]host:port. Without user, SASL
    /// ANONYMOUS; with one, SASL PLAIN.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,

    /// Broker URL for the consumers' connections instead of --url: another
    /// node of a cluster than the producers', for instance. Each link then
    /// has its own connection (no --connections).
    #[arg(long, conflicts_with = "connections")]
    pub consumer_url: Option<String>,

    /// Node address producers send to and consumers receive from (Sluice: a
    /// queue name; RabbitMQ 3.10: /amq/queue/NAME; RabbitMQ 4: /queues/NAME).
    #[arg(long, default_value = "sluice-bench")]
    pub address: String,

    /// Spread the links over this many queues: `--address` is then a
    /// pattern whose `{}` is replaced by the queue's number (0-based), and
    /// producer i and consumer i use queue i modulo the count.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,

    /// Every consumer gets every message (subscribers of a topic, such as
    /// Sluice's `topic://NAME`): consumers wait for a copy per consumer of
    /// each confirmed message, and loss and duplicates are counted per
    /// consumer.
    #[arg(long)]
    pub fanout: bool,

    /// Number of producers (sending links).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,

    /// Number of consumers (receiving links).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,

    /// Number of connections the links share, round-robin (consumers
    /// first). Default: one connection per producer and per consumer.
    #[arg(long)]
    pub connections: Option<usize>,

    /// Message body size in bytes (at least 24: the probe).
    #[arg(long, default_value_t = 100)]
    pub size: usize,

    /// Send with header.durable = true (the default).
    #[arg(long, overrides_with = "non_durable")]
    pub durable: bool,

    /// Send with header.durable = false.
    #[arg(long, overrides_with = "durable")]
    pub non_durable: bool,

    /// Producers send pre-settled (at most once): no outcomes, no window.
    /// Default: unsettled (at least once), each outcome awaited. Consumers
    /// let the broker choose either way, and accept what arrives unsettled.
    #[arg(long)]
    pub presettled: bool,

    /// Most unsettled sends per producer (at-least-once only).
    #[arg(long, default_value_t = 1000)]
    pub window: u32,

    /// Link credit each consumer grants; topped up at half.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,

    /// Consumers attach with this JMS selector
    /// (`apache.org:selector-filter:string`).
    #[arg(long)]
    pub selector: Option<String>,

    /// An application property every message carries, NAME=VALUE (a
    /// string), for a selector to test. Repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,

    /// The header priority every message carries (durable messages only:
    /// a non-durable one has no header).
    #[arg(long)]
    pub priority: Option<u8>,

    /// Fixed offered load in msg/s, over all producers. Default: as fast as
    /// the window and credit allow.
    #[arg(long)]
    pub rate: Option<f64>,

    /// How long producers send, e.g. 10s, 500ms, 2m. Default: 10s, unless
    /// --count is given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Total messages to send over all producers (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,

    /// The id that tells this run's messages from leftovers of others
    /// (default: from the clock). A run that only consumes (`--producers
    /// 0`) given the id of a run that only produced counts that run's
    /// messages as its own: fill a queue, then drain it.
    #[arg(long)]
    pub run_id: Option<u32>,

    /// Once producers are done, how long consumers wait without receiving
    /// anything before counting what is missing as lost.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,

    /// Print the result as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Report this process's CPU use over the run (from /proc/PID/stat);
    /// repeat for a broker of several processes.
    #[arg(long = "broker-pid")]
    pub broker_pids: Vec<u32>,

    /// Worker threads of the client runtime (1: one thread for all
    /// connections, which leaves the most CPU to a broker on the same
    /// machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Report every gap at least this long between two accepted outcomes of
    /// one producer, with the wall-clock time of both ends: what a producer
    /// saw of a failover, say. A producer that gives up with sends still
    /// unanswered reports an open gap from its last accepted outcome.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub stall_threshold: Duration,

    /// A label copied into the result (e.g. the broker's name).
    #[arg(long, default_value = "")]
    pub label: String,

    /// Print each connection's protocol events (all but deliveries and
    /// dispositions) to stderr, to see why a broker detached or closed.
    #[arg(long)]
    pub trace: bool,

    /// No progress line, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// The measurements besides the load run.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// What fleets of queues, connections, consumers and links cost a
    /// running broker: creation time per step as the count grows, memory
    /// per object, the stall after a big disconnect, and an unrelated
    /// client's rate before and after.
    Fleet(crate::fleet::FleetArgs),
}

/// What is wrong with the options.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    /// The URL is not amqp://[user:pass@]host:port.
    #[error("bad --url {0:?}: expected amqp://[user:pass@]host:port")]
    Url(String),
    /// Some option is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// What `--address` holds where `--queues` puts the queue's number.
pub const QUEUE_NUMBER: &str = "{}";

/// The address of link `link` (a producer's or a consumer's number) when
/// the links are spread over `queues` queues named by `pattern`.
pub fn queue_address(pattern: &str, queues: usize, link: u32) -> String {
    let queue = link as usize % queues.max(1);
    pattern.replace(QUEUE_NUMBER, &queue.to_string())
}

/// Where to connect and how to log in.
#[derive(Debug, Clone)]
pub struct Target {
    /// host:port.
    pub addr: String,
    /// The host name, for `open` and `sasl-init`.
    pub host: String,
    /// ANONYMOUS or PLAIN.
    pub sasl: ClientSasl,
}

/// Parses amqp://[user:pass@]host[:port] (port 5672 by default).
pub fn parse_url(url: &str) -> Result<Target, CliError> {
    let bad = || CliError::Url(url.to_owned());
    let rest = url.strip_prefix("amqp://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((auth, hostport)) => (Some(auth), hostport),
        None => (None, rest),
    };
    let sasl = match auth {
        None => ClientSasl::Anonymous,
        Some(auth) => {
            let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
            if user.is_empty() {
                return Err(bad());
            }
            ClientSasl::Plain {
                username: user.to_owned(),
                password: pass.to_owned(),
            }
        }
    };
    if hostport.is_empty() || hostport.contains('/') {
        return Err(bad());
    }
    // A bracketed IPv6 literal keeps its colons.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || hostport.starts_with('[') => {
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            (host, port)
        }
        _ => (hostport, "5672"),
    };
    Ok(Target {
        addr: format!("{host}:{port}"),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        sasl,
    })
}

/// Parses 10s, 500ms, 2m, 1h, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad duration {text:?}: {e}"))
}

impl Args {
    /// Checks the options that clap cannot.
    pub fn validate(&self) -> Result<(), CliError> {
        let invalid = |m: &str| Err(CliError::Invalid(m.to_owned()));
        if self.size < MIN_SIZE {
            return invalid("--size must be at least 24 (the probe)");
        }
        if self.producers == 0 && self.consumers == 0 {
            return invalid("need at least one producer or consumer");
        }
        if self.window == 0 || self.prefetch == 0 {
            return invalid("--window and --prefetch must be at least 1");
        }
        if self.connections == Some(0) || self.threads == 0 {
            return invalid("--connections and --threads must be at least 1");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid("--rate must be a positive number of msg/s");
        }
        if self.stall_threshold.is_zero() {
            return invalid("--stall-threshold must be more than 0");
        }
        if self.count == Some(0) {
            return invalid("--count must be at least 1");
        }
        self.validate_queues()
    }

    /// `--queues` needs a pattern, and a topic's subscribers share one
    /// address.
    fn validate_queues(&self) -> Result<(), CliError> {
        let invalid = |m: &str| Err(CliError::Invalid(m.to_owned()));
        if self.queues == 0 {
            return invalid("--queues must be at least 1");
        }
        if self.queues > 1 && !self.address.contains(QUEUE_NUMBER) {
            return invalid("with --queues above 1, --address needs {} for the queue's number");
        }
        if self.queues > 1 && self.fanout {
            return invalid(
                "--fanout sends every message to every consumer of one address: no --queues",
            );
        }
        Ok(())
    }

    /// How many copies of each confirmed message the consumers get in all.
    pub fn copies(&self) -> u64 {
        if self.fanout {
            self.consumers as u64
        } else {
            1
        }
    }

    /// Durable unless --non-durable.
    pub fn durable(&self) -> bool {
        !self.non_durable
    }

    /// The send phase's length, when not bounded by --count.
    pub fn send_duration(&self) -> Option<Duration> {
        match self.count {
            Some(_) => None,
            None => Some(self.duration.unwrap_or(Duration::from_secs(10))),
        }
    }
}

/// `NAME=VALUE`, an application property.
fn parse_property(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("amqp://127.0.0.1:5672").unwrap();
        assert_eq!(t.addr, "127.0.0.1:5672");
        assert!(matches!(t.sasl, ClientSasl::Anonymous));
        let t = parse_url("amqp://guest:guest@localhost:5673/").unwrap();
        assert_eq!(t.addr, "localhost:5673");
        assert_eq!(t.host, "localhost");
        assert!(matches!(t.sasl, ClientSasl::Plain { ref username, .. } if username == "guest"));
        assert_eq!(parse_url("amqp://h").unwrap().addr, "h:5672");
        assert!(parse_url("http://h:1").is_err());
        assert!(parse_url("amqp://h:notaport").is_err());
        assert!(parse_url("amqp://").is_err());
    }

    #[test]
    fn consumer_url_and_stall_threshold() {
        let args = Args::try_parse_from([
            "sluice-bench",
            "--url",
            "amqp://127.0.0.1:1",
            "--consumer-url",
            "amqp://127.0.0.1:2",
            "--stall-threshold",
            "20ms",
        ])
        .unwrap();
        assert_eq!(args.consumer_url.as_deref(), Some("amqp://127.0.0.1:2"));
        assert_eq!(args.stall_threshold, Duration::from_millis(20));
        assert_eq!(args.validate(), Ok(()));
        let both = ["sluice-bench", "--consumer-url", "amqp://h:2"];
        assert!(Args::try_parse_from(both.iter().chain(&["--connections", "1"])).is_err());
        let zero = Args::try_parse_from(["sluice-bench", "--stall-threshold", "0s"]).unwrap();
        assert!(zero.validate().is_err());
    }

    #[test]
    fn queue_addresses() {
        assert_eq!(queue_address("q-{}", 1000, 7), "q-7");
        assert_eq!(queue_address("/queues/q-{}", 1000, 1007), "/queues/q-7");
        assert_eq!(queue_address("plain", 1, 5), "plain");
        assert_eq!(queue_address("q-{}", 1, 5), "q-0");
    }

    #[test]
    fn queues_and_fanout_are_checked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["sluice-bench"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap()
        };
        assert!(parse(&["--queues", "10"]).validate().is_err());
        assert_eq!(
            parse(&["--queues", "10", "--address", "q-{}"]).validate(),
            Ok(())
        );
        assert!(parse(&["--queues", "0"]).validate().is_err());
        let topic = ["--queues", "2", "--address", "t{}", "--fanout"];
        assert!(parse(&topic).validate().is_err());
        let fanout = parse(&["--fanout", "--consumers", "1000", "--address", "topic://t"]);
        assert_eq!(fanout.validate(), Ok(()));
        assert_eq!(fanout.copies(), 1000);
        assert_eq!(parse(&["--consumers", "1000"]).copies(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
