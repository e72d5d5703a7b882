//! The workload: producer and consumer clients, each a task of the
//! clients' turmoil host, speaking AMQP through [`sluice::client::Client`]
//! over its links to the brokers ([`crate::client_net`]).
//!
//! Every random choice comes from a ChaCha RNG seeded from the run's seed
//! and the client's number, so the workload replays with the seed. Clients
//! record what they do and see into the shared [`History`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::engine::{ClientSasl, ConnectionConfig, DeliveryId, Event, LinkId, SessionId};
use sluice::amqp::types::{
    Accepted, DeliveryState, DistributionMode, ExpiryPolicy, Header, Message, MessageId, Modified,
    Properties, ReceiverSettleMode, Rejected, Released, Section, Source, TerminusDurability,
};
use sluice::client::{Client, ClientError};
use sluice::config::Overflow;
use sluice::io::{Io, TurmoilIo};
use sluice::node::{NodeHandle, ReplicaStatus};
use sluice::sasl::scram::SaltedPassword;
use tokio::io::DuplexStream;

use crate::client_net::ClientLinks;
use crate::history::{
    ClientId, ConnId, History, MessageKind, MsgId, NodeId, NodeReplicas, Op, Outcome, QueueState,
    TxnId, broker_name,
};
use crate::queue_types::{
    GROUPED_QUEUE, Grouped, LAST_VALUE_KEY, Marking, Marks, Pace, QueueTypes, group_id,
};
use crate::{intruder, request_reply};

/// The brokers' AMQP port.
pub const AMQP_PORT: u16 = 5672;

/// How long a client waits for a connect, begin or attach before giving up
/// on the attempt: a partitioned broker answers nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// The AMQP idle timeout clients ask for: a silent broker (crashed, or cut
/// off by a partition) is detected within about this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting client looks at the phase.
pub(crate) const PHASE_POLL: Duration = Duration::from_millis(100);
/// How long the inspector waits for the other clients to exit: each gets
/// [`HANDSHAKE_TIMEOUT`] to close.
const EXIT_WAIT_MAX: Duration = Duration::from_millis(3_500);
/// How long the inspector waits for the broker to let go of every delivery:
/// it notices a dropped connection within its idle timeout (2 s here), and a
/// last settle may still wait for its fsync.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(3);
/// In a cluster, how long the inspector waits for every node to have applied
/// every group as far as the others (restarted nodes replay their whole
/// log, and a node that was cut off catches up).
pub const CONVERGE_WAIT_MAX: Duration = Duration::from_secs(10);

/// Where the run is; the world sets it between steps, clients read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Faults are injected; producers produce; consumers mix outcomes.
    Faults,
    /// Faults healed; producers stopped; consumers accept everything.
    Drain,
    /// The run is over: clients close and exit.
    Finished,
}

/// What the world and the clients share. Single-threaded: turmoil runs
/// every host on the thread that steps the simulation.
#[derive(Debug)]
pub struct Shared {
    /// The history every client appends to.
    pub history: RefCell<History>,
    /// The current phase.
    pub phase: Cell<Phase>,
    /// The subscribers whose subscription exists: topic producers wait for
    /// all of them, so that every topic message has a definite set of
    /// subscriptions to reach.
    subscribed: RefCell<BTreeSet<u32>>,
    /// Whether the dead-letter queue exists: producers to the queue that
    /// dead-letters into it wait for it, as the broker drops what it would
    /// dead-letter into a queue that does not exist.
    dead_letters_ready: Cell<bool>,
    /// Whether the requests' queue exists: the anonymous relay never makes
    /// a queue, so requesters wait for the responder to have made it.
    pub(crate) requests_ready: Cell<bool>,
    /// The brokers clients connect to: the single node's, or every cluster
    /// node.
    pub brokers: Vec<NodeId>,
    /// Each running broker's node, set each time it starts listening: the
    /// inspector asks them for their queues and replicas at the end.
    pub broker_nodes: RefCell<BTreeMap<NodeId, NodeHandle>>,
    /// How many producers, consumers and subscribers have exited.
    pub clients_exited: Cell<u32>,
    /// Every client's links to the brokers, with their faults.
    pub links: Rc<ClientLinks>,
    /// Where SCRAM's client nonces come from: drawn in the order clients
    /// connect, which the seed fixes, from a stream no client's own draws
    /// use.
    nonces: RefCell<ChaCha8Rng>,
}

impl Shared {
    /// A fresh history, in the fault phase, for clients of `brokers` that
    /// reach them over `links`, in the run of `seed`.
    ///
    /// # Panics
    ///
    /// If `brokers` is empty.
    pub fn new(brokers: Vec<NodeId>, links: Rc<ClientLinks>, seed: u64) -> Rc<Self> {
        assert!(!brokers.is_empty(), "a world has a broker");
        let mut nonces = ChaCha8Rng::seed_from_u64(seed);
        nonces.set_stream(NONCE_STREAM);
        Rc::new(Self {
            history: RefCell::new(History::default()),
            phase: Cell::new(Phase::Faults),
            subscribed: RefCell::default(),
            dead_letters_ready: Cell::new(false),
            requests_ready: Cell::new(false),
            brokers,
            broker_nodes: RefCell::default(),
            clients_exited: Cell::new(0),
            links,
            nonces: RefCell::new(nonces),
        })
    }

    /// A SCRAM-SHA-256 login as `username` with `password`, with a fresh
    /// nonce.
    pub(crate) fn scram(&self, username: &str, password: &str) -> ClientSasl {
        ClientSasl::Scram {
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: self.nonce(),
        }
    }

    /// As [`Shared::scram`], with the password salted already.
    pub(crate) fn scram_salted(&self, username: &str, salted: SaltedPassword) -> ClientSasl {
        ClientSasl::ScramSalted {
            username: username.to_owned(),
            salted,
            nonce: self.nonce(),
        }
    }

    fn nonce(&self) -> String {
        let nonce: u128 = self.nonces.borrow_mut().r#gen();
        format!("{nonce:032x}")
    }

    /// The broker a client's next connection goes to: the only one, or a
    /// cluster node drawn from the client's `rng` (a single node draws
    /// nothing, so its clients' streams are as they always were).
    pub(crate) fn pick_broker(&self, rng: &mut ChaCha8Rng) -> NodeId {
        match self.brokers.as_slice() {
            [only] => *only,
            brokers => brokers[rng.gen_range(0..brokers.len())],
        }
    }

    fn is_cluster(&self) -> bool {
        self.brokers.len() > 1
    }

    fn node_handle(&self, node: NodeId) -> Option<NodeHandle> {
        self.broker_nodes.borrow().get(&node).cloned()
    }

    /// Records `op` at the current simulated time.
    pub fn record(&self, op: Op) {
        // Outside a host (never, for workload code) the time is 0.
        let time = turmoil::sim_elapsed().unwrap_or_default();
        self.history.borrow_mut().push(time, op);
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }
}

/// The workload's shape, drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadParams {
    /// The queues messages go to.
    pub queues: Vec<String>,
    /// Producers to queues; producer `i` sends to queue `i % queues`.
    pub producers: u32,
    /// Consumers; consumer `i` reads queue `i % queues`.
    pub consumers: u32,
    /// The most messages one producer sends (new ones, not counting resends).
    pub messages_per_producer: u64,
    /// The topic.
    pub topic: String,
    /// Producers to the topic, numbered after the queue producers.
    pub topic_producers: u32,
    /// Subscribers to the topic: each durable one gets every message sent
    /// to it; see [`WorkloadParams::volatile_subscribers`].
    pub subscribers: u32,
    /// If set, the queue that dead-letters into [`DEAD_LETTER_QUEUE`]
    /// after [`WorkloadParams::delivery_limit`] failed deliveries or a
    /// rejection; one client consumes the dead-letter queue.
    pub dead_lettering: Option<String>,
    /// Failed deliveries (`modified` with delivery-failed, or a link lost
    /// while holding it) before a message of the dead-lettering queue is
    /// dead-lettered.
    pub delivery_limit: u32,
    /// If set, queue 1's length limit and what it does when full.
    pub limit: Option<(u64, Overflow)>,
    /// Browsers of queue 0 (0 or 1).
    pub browsers: u32,
    /// Whether the last consumer, if there are 3 (a second on queue 0),
    /// reads only what [`SELECTOR`] selects.
    pub selective: bool,
    /// The typed queues (last-value, priority), each with a producer and a
    /// consumer of its own: see [`WorkloadParams::typed_queues`].
    pub queue_types: QueueTypes,
    /// Whether consumers and subscribers may attach with rcv-settle-mode
    /// `second`: each then does with a chance of one in two, drawn from its
    /// own feature stream (see [`settles_second`]).
    pub rcv_settle_second: bool,
    /// Requesters (see [`crate::request_reply`]); with any, one responder.
    pub requesters: u32,
    /// The grouped queue, if the run has it: its producer comes after the
    /// other typed queues' producers, its consumers after theirs (see
    /// [`WorkloadParams::typed_queues`]).
    pub grouped: Option<Grouped>,
    /// How the selective consumer selects (the same messages either way).
    pub selective_filter: SelectiveFilter,
    /// Of the subscribers, how many (the first ones) attach non-durable
    /// subscriptions, each of which lives as long as its link: see
    /// [`crate::volatile`].
    pub volatile_subscribers: u32,
    /// Intruders (see [`crate::intruder`]): one in every run, unless a
    /// replay file pins none. Nothing is drawn for them here, so every
    /// other draw stayed as it was.
    pub intruders: u32,
    /// Whether a single node's queues that page refuse non-durable
    /// messages rather than page them (`limits.page_transient_messages`
    /// false).
    pub refuse_transient: bool,
}

/// How the selective consumer selects: each filter takes the messages
/// with an even sequence number (every message says which, in its
/// `parity` application property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectiveFilter {
    /// The JMS selector [`SELECTOR`].
    JmsSelector,
    /// The OASIS `amqp:application-properties-filter` `{"parity": "even"}`.
    ApplicationProperties,
}

impl SelectiveFilter {
    /// What it says, for the checker's reports.
    pub fn describe(self) -> &'static str {
        match self {
            SelectiveFilter::JmsSelector => "the selector parity = 'even'",
            SelectiveFilter::ApplicationProperties => {
                "the application-properties filter {parity: even}"
            }
        }
    }

    /// The entry of a source's filter set that selects this way.
    fn entry(self) -> (Value, Value) {
        let (key, descriptor, value) = match self {
            SelectiveFilter::JmsSelector => (
                "jms-selector",
                "apache.org:selector-filter:string",
                Value::from(SELECTOR),
            ),
            SelectiveFilter::ApplicationProperties => (
                "parity-filter",
                "amqp:application-properties-filter",
                Value::Map(vec![(Value::from("parity"), Value::from("even"))]),
            ),
        };
        let filter = Described {
            descriptor: Descriptor::Name(Symbol::from_static(descriptor)),
            value,
        };
        (Value::Symbol(Symbol::from_static(key)), Value::from(filter))
    }
}

/// Of seeds, the percentage whose receivers may settle in mode `second`.
const RCV_SETTLE_SECOND_PCT: u32 = 40;

/// Of seeds, the percentage whose subscribers may attach non-durable
/// subscriptions.
const VOLATILE_PCT: u32 = 50;

/// Of seeds, the percentage whose single node refuses non-durable
/// messages to queues that page.
const REFUSE_TRANSIENT_PCT: u32 = 30;

/// The JMS selector of the selective consumer, when it selects with one
/// ([`SelectiveFilter::JmsSelector`]): messages with an even sequence
/// number (every message says which, in its `parity` property).
pub const SELECTOR: &str = "parity = 'even'";

/// What a delivery that is not one of the workload's messages is recorded
/// as: an id no producer sends, so the checker reports it as never sent.
const UNKNOWN_MSG: MsgId = MsgId {
    producer: u32::MAX,
    seq: u64::MAX,
};

/// The dead-letter queue, when the workload has one.
pub const DEAD_LETTER_QUEUE: &str = "dlq";

/// The link name every subscriber attaches with; with its container id it
/// names its durable subscription.
pub const SUBSCRIPTION_LINK: &str = "subscription";

impl WorkloadParams {
    /// Draws the workload's shape from `rng`.
    pub fn draw(rng: &mut ChaCha8Rng) -> Self {
        let queues = vec!["q0".to_owned(), "q1".to_owned()];
        // At least one consumer per queue, so that the drain can finish.
        let consumers = rng.gen_range(2..=3);
        let producers = rng.gen_range(1..=3);
        let messages_per_producer = rng.gen_range(100..=400);
        let topic_producers = rng.gen_range(0..=1);
        // A topic with no subscriber would take messages to nowhere.
        let subscribers = if topic_producers > 0 {
            rng.gen_range(1..=2)
        } else {
            0
        };
        // Queue 0: queue producer 0 always sends to it.
        let dead_lettering = rng.gen_bool(0.5).then(|| queues[0].clone());
        let delivery_limit = rng.gen_range(2..=4);
        // Small enough that a queue whose consumers are away fills up.
        let limit = match rng.gen_range(0..4) {
            0 => Some((rng.gen_range(5..=50), Overflow::RejectPublish)),
            1 => Some((rng.gen_range(5..=50), Overflow::DropHead)),
            _ => None,
        };
        Self {
            queues,
            producers,
            consumers,
            messages_per_producer,
            topic: "t0".to_owned(),
            topic_producers,
            subscribers,
            dead_lettering,
            delivery_limit,
            limit,
            browsers: rng.gen_range(0..=1),
            selective: rng.gen_bool(0.5),
            // Last: what the seeds drew before these came stays as it was.
            queue_types: QueueTypes::draw(rng),
            // Drawn last, so that every draw above is what it was before.
            rcv_settle_second: rng.gen_range(0..100) < RCV_SETTLE_SECOND_PCT,
            requesters: if rng.gen_range(0..100) < request_reply::SEEDS_PCT {
                rng.gen_range(1..=request_reply::REQUESTERS_MAX)
            } else {
                0
            },
            // Last again, for the same reason.
            grouped: Grouped::draw(rng),
            // Drawn last, as above.
            selective_filter: if rng.gen_bool(0.5) {
                SelectiveFilter::ApplicationProperties
            } else {
                SelectiveFilter::JmsSelector
            },
            volatile_subscribers: if rng.gen_range(0..100) < VOLATILE_PCT {
                rng.gen_range(1..=2u32).min(subscribers)
            } else {
                0
            },
            intruders: 1,
            // Drawn last, as above.
            refuse_transient: rng.gen_range(0..100) < REFUSE_TRANSIENT_PCT,
        }
    }

    /// Whether subscriber `n` attaches non-durable subscriptions.
    pub fn is_volatile(&self, subscriber: u32) -> bool {
        subscriber < self.volatile_subscribers
    }

    /// The durable subscribers' numbers.
    pub fn durable_subscribers(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.subscribers).filter(|&n| !self.is_volatile(n))
    }

    /// The history's name for every queue of volatile subscriber `n`: each
    /// link's subscription is recorded as this followed by the link (see
    /// [`volatile_link_queue`]). The broker names it otherwise: the client
    /// never learns the name.
    pub fn volatile_subscription(&self, subscriber: u32) -> String {
        format!(
            "{}{}",
            self.volatile_prefix(),
            ClientId::Subscriber(subscriber)
        )
    }

    /// What the history's names of volatile subscriptions start with.
    fn volatile_prefix(&self) -> String {
        format!("topic://{}::~", self.topic)
    }

    /// Whether `queue` is the history's name of a volatile subscription.
    pub fn is_volatile_queue(&self, queue: &str) -> bool {
        queue.starts_with(&self.volatile_prefix())
    }

    /// The typed queues, in the order of their clients: typed queue `k`'s
    /// producer is numbered `k` after the queue and topic producers; the
    /// last-value and priority queues' consumer `k` after the plain
    /// queues' consumers, and the grouped queue's consumers after theirs.
    pub fn typed_queues(&self) -> Vec<&'static str> {
        let grouped = self.grouped.map(|_| GROUPED_QUEUE);
        self.queue_types
            .queues()
            .into_iter()
            .chain(grouped)
            .collect()
    }

    /// The typed queue producer `n` sends to, if it is one's.
    pub fn typed_queue_of_producer(&self, producer: u32) -> Option<&'static str> {
        let k = producer.checked_sub(self.producers + self.topic_producers)?;
        self.typed_queues().get(k as usize).copied()
    }

    /// The typed queue consumer `n` reads, if it is one's.
    pub fn typed_queue_of_consumer(&self, consumer: u32) -> Option<&'static str> {
        let k = consumer.checked_sub(self.consumers)?;
        let single = self.queue_types.queues();
        match single.get(k as usize) {
            Some(queue) => Some(*queue),
            None => (k < self.typed_consumers()).then_some(GROUPED_QUEUE),
        }
    }

    /// The typed queues' consumers: one each of the last-value and
    /// priority queues', then the grouped queue's.
    fn typed_consumers(&self) -> u32 {
        let grouped = self.grouped.map_or(0, |grouped| grouped.consumers);
        self.queue_types.queues().len() as u32 + grouped
    }

    /// Every consumer's number: the plain queues' first, then the typed
    /// queues'.
    pub fn all_consumers(&self) -> std::ops::Range<u32> {
        0..self.consumers + self.typed_consumers()
    }

    /// The queue consumer `n` reads.
    pub fn consumer_queue(&self, consumer: u32) -> &str {
        self.typed_queue_of_consumer(consumer)
            .unwrap_or_else(|| self.queue_of(consumer))
    }

    /// The consumer that reads through [`SELECTOR`], if any.
    pub fn selective_consumer(&self) -> Option<u32> {
        (self.selective && self.consumers == 3).then_some(2)
    }

    /// Whether `queue` drops its oldest messages when full: then an
    /// accepted message may be gone before any consumer took it.
    pub fn drops_head(&self, queue: &str) -> bool {
        matches!(self.limit, Some((_, Overflow::DropHead))) && queue == self.queues[1]
    }

    /// Whether an accepted message of `queue` (`durable` as sent) may be
    /// dropped to make room: any of a drop-head queue; and in a queue with
    /// a length limit of either kind, a transient one, which a persistent
    /// message displaces from a full queue (`sluice::queue::Overflow`).
    pub fn may_drop(&self, queue: &str, durable: bool) -> bool {
        self.drops_head(queue) || (!durable && self.limit.is_some() && queue == self.queues[1])
    }

    /// The dead-letter queue of `queue`, if it has one.
    pub fn dead_letter_queue_of(&self, queue: &str) -> Option<&'static str> {
        (self.dead_lettering.as_deref() == Some(queue)).then_some(DEAD_LETTER_QUEUE)
    }

    /// Whether `queue` is the workload's dead-letter queue.
    pub fn is_dead_letter_queue(&self, queue: &str) -> bool {
        self.has_dead_letters() && queue == DEAD_LETTER_QUEUE
    }

    /// Whether the workload has a dead-letter queue (and its consumer).
    pub fn has_dead_letters(&self) -> bool {
        self.dead_lettering.is_some()
    }

    /// The queue consumer `n` uses (and queue producer `n` sends to).
    pub fn queue_of(&self, n: u32) -> &str {
        let index = n as usize % self.queues.len();
        &self.queues[index]
    }

    /// Every client of the workload, in the order the world spawns them.
    pub fn clients(&self) -> Vec<ClientId> {
        let producers = self.all_producers().map(ClientId::Producer);
        let consumers = self.all_consumers().map(ClientId::Consumer);
        let subscribers = (0..self.subscribers).map(ClientId::Subscriber);
        let dead_letters = self.has_dead_letters().then_some(ClientId::DeadLetters(0));
        let browsers = (0..self.browsers).map(ClientId::Browser);
        let responders = (0..self.responders()).map(ClientId::Responder);
        let requesters = (0..self.requesters).map(ClientId::Requester);
        let intruders = (0..self.intruders).map(ClientId::Intruder);
        producers
            .chain(consumers)
            .chain(subscribers)
            .chain(dead_letters)
            .chain(browsers)
            .chain(responders)
            .chain(requesters)
            .chain(intruders)
            .collect()
    }

    /// Responders: one if there are requesters.
    pub fn responders(&self) -> u32 {
        u32::from(self.requesters > 0)
    }

    /// Every producer's number: queue producers first, then topic
    /// producers, then the typed queues'.
    pub fn all_producers(&self) -> std::ops::Range<u32> {
        0..self.producers + self.topic_producers + self.typed_queues().len() as u32
    }

    /// The address producer `n` sends to.
    pub fn target_of(&self, producer: u32) -> String {
        if let Some(queue) = self.typed_queue_of_producer(producer) {
            queue.to_owned()
        } else if producer < self.producers {
            self.queue_of(producer).to_owned()
        } else {
            format!("topic://{}", self.topic)
        }
    }

    /// The queues every message of producer `n` must reach: its queue, or
    /// every durable subscription (all are made before any topic producer
    /// starts). What a volatile one must get is [`crate::volatile`]'s.
    pub fn destinations_of(&self, producer: u32) -> Vec<String> {
        if let Some(queue) = self.typed_queue_of_producer(producer) {
            vec![queue.to_owned()]
        } else if producer < self.producers {
            vec![self.queue_of(producer).to_owned()]
        } else {
            self.durable_subscribers()
                .map(|n| self.subscription(n))
                .collect()
        }
    }

    /// Whether producer `n` sends to the topic.
    pub fn is_topic_producer(&self, producer: u32) -> bool {
        (self.producers..self.producers + self.topic_producers).contains(&producer)
    }

    /// The broker's queue behind subscriber `n`'s durable subscription:
    /// the topic, then the subscription's container id and link name.
    pub fn subscription(&self, subscriber: u32) -> String {
        format!(
            "topic://{}::{}:{SUBSCRIPTION_LINK}",
            self.topic,
            ClientId::Subscriber(subscriber)
        )
    }

    /// Every queue the broker holds for the workload (a volatile
    /// subscription goes with its link).
    pub fn all_queues(&self) -> Vec<String> {
        let subscriptions = self.durable_subscribers().map(|n| self.subscription(n));
        let dead_letters = self
            .has_dead_letters()
            .then(|| DEAD_LETTER_QUEUE.to_owned());
        let typed = self.typed_queues().into_iter().map(str::to_owned);
        self.queues
            .iter()
            .cloned()
            .chain(subscriptions)
            .chain(dead_letters)
            .chain(typed)
            .collect()
    }
}

/// A client's task, boxed so that the world can wrap every kind alike.
pub type ClientFuture = std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// The RNG for one client: the run's seed mixed with the client's identity,
/// so adding a client does not change what the others draw.
pub(crate) fn client_rng(seed: u64, client: ClientId) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream_of(client));
    rng
}

/// The number of `client`'s main stream: its kind and number.
fn stream_of(client: ClientId) -> u64 {
    let (kind, n) = match client {
        ClientId::Producer(n) => (1u64, n),
        ClientId::Consumer(n) => (2u64, n),
        ClientId::Subscriber(n) => (3u64, n),
        ClientId::DeadLetters(n) => (4u64, n),
        ClientId::Browser(n) => (5u64, n),
        ClientId::Requester(n) => (6u64, n),
        ClientId::Responder(n) => (7u64, n),
        ClientId::Intruder(n) => (8u64, n),
    };
    kind << 32 | u64::from(n)
}

/// The RNG for what `client` draws about features added after its main
/// stream's draws were fixed: its own stream, so that adding a feature
/// changes none of the draws that replay files pinned.
fn feature_rng(seed: u64, client: ClientId) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(FEATURE_STREAMS | stream_of(client));
    rng
}

/// Set in the stream number of a client's [`feature_rng`]: no main stream
/// has it.
const FEATURE_STREAMS: u64 = 1 << 48;

/// The stream number of [`Shared`]'s SCRAM nonces: no client's main or
/// feature stream.
const NONCE_STREAM: u64 = 1 << 49;

/// Whether receiver `client` of a run of `params` attaches with
/// rcv-settle-mode `second`.
pub fn settles_second(seed: u64, params: &WorkloadParams, client: ClientId) -> bool {
    params.rcv_settle_second && feature_rng(seed, client).gen_bool(0.5)
}

/// A message of `kind` whose body carries its id (and so does its
/// `message-id`, if it has one).
pub fn encode_message(id: MsgId, kind: MessageKind) -> Bytes {
    let mut body = Vec::with_capacity(12);
    body.extend_from_slice(&id.producer.to_be_bytes());
    body.extend_from_slice(&id.seq.to_be_bytes());
    let ttl = kind
        .ttl
        .map(|ttl| u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX));
    // In the order the spec gives: header, message annotations,
    // properties, body.
    let mut sections = vec![Section::Header(Header {
        durable: kind.durable,
        ttl,
        priority: kind.priority.unwrap_or(Header::default().priority),
        ..Header::default()
    })];
    if let Some(delay) = kind.delay {
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        sections.push(Section::MessageAnnotations(vec![(
            Value::Symbol(Symbol::from_static("x-opt-delivery-delay")),
            Value::Long(millis),
        )]));
    }
    if kind.message_id || kind.group.is_some() {
        sections.push(Section::Properties(Box::new(Properties {
            message_id: kind.message_id.then(|| MessageId::String(id.to_string())),
            group_id: kind.group.map(group_id),
            ..Properties::default()
        })));
    }
    let parity = if id.seq % 2 == 0 { "even" } else { "odd" };
    let mut properties = vec![("parity".to_owned(), Value::from(parity))];
    if let Some(key) = kind.key {
        properties.push((LAST_VALUE_KEY.to_owned(), Value::from(format!("k{key}"))));
    }
    sections.push(Section::ApplicationProperties(properties));
    sections.push(Section::Data(Bytes::from(body)));
    Message { sections }.encode()
}

/// What one producer sends, drawn from its RNG: the share of messages of
/// each kind, whether they carry a `message-id`, and whether it sends some
/// in transactions.
#[derive(Debug, Clone, Copy)]
struct MessageMix {
    transient_pct: u32,
    presettled_pct: u32,
    ttl_pct: u32,
    delay_pct: u32,
    message_id: bool,
    transactional: bool,
    /// A typed queue's producer's marks.
    marking: Option<Marking>,
}

impl MessageMix {
    /// Many producers send only plain messages, so that the rules that
    /// need them (FIFO, and loss of what was accepted) see plenty.
    fn draw(rng: &mut ChaCha8Rng, to_queue: bool) -> Self {
        let share = |rng: &mut ChaCha8Rng| *[0, 0, 10, 25].choose(rng).expect("not empty");
        Self {
            transient_pct: share(rng),
            presettled_pct: share(rng),
            ttl_pct: share(rng),
            delay_pct: share(rng),
            // A topic's subscriptions would each remember the id: the
            // same rule, with more to model.
            message_id: to_queue && rng.gen_bool(0.5),
            // A topic's transactions would commit to every subscription:
            // the same rules, with more to model.
            transactional: to_queue && rng.gen_bool(1.0 / 3.0),
            marking: None,
        }
    }

    /// A typed queue's producer's: plain messages, each marked, so that
    /// the queue type's rules see every message (a message that may
    /// expire or vanish on a restart would need excuses of its own).
    fn typed(marking: Marking) -> Self {
        Self {
            transient_pct: 0,
            presettled_pct: 0,
            ttl_pct: 0,
            delay_pct: 0,
            message_id: false,
            transactional: false,
            marking: Some(marking),
        }
    }

    /// Whether the next new message of a transactional producer starts a
    /// transaction, and if so how many new messages it sends (at most
    /// `left`) and whether it commits.
    fn next_transaction(self, rng: &mut ChaCha8Rng, left: u64) -> Option<(u64, bool)> {
        if rng.gen_range(0..100) >= TXN_START_PCT {
            return None;
        }
        let messages = rng.gen_range(1..=TXN_MESSAGES_MAX).min(left);
        let commit = rng.gen_range(0..100) >= TXN_ROLLBACK_PCT;
        Some((messages, commit))
    }

    /// The kind of the next new message.
    fn next(self, rng: &mut ChaCha8Rng) -> MessageKind {
        let durable = rng.gen_range(0..100) >= self.transient_pct;
        let presettled = rng.gen_range(0..100) < self.presettled_pct;
        let ttl = (rng.gen_range(0..100) < self.ttl_pct)
            .then(|| Duration::from_millis(rng.gen_range(TTL_MIN_MS..=TTL_MAX_MS)));
        // Not with a TTL: a message due after it expired never shows.
        let delay = (ttl.is_none() && rng.gen_range(0..100) < self.delay_pct)
            .then(|| Duration::from_millis(rng.gen_range(DELAY_MIN_MS..=DELAY_MAX_MS)));
        let marks = self
            .marking
            .map_or(Marks::default(), |marking| marking.draw(rng));
        MessageKind {
            durable,
            presettled,
            ttl,
            message_id: self.message_id,
            delay,
            txn: None,
            key: marks.key,
            priority: marks.priority,
            group: marks.group,
        }
    }
}

/// A typed queue's producer sends this fraction of the messages the others
/// send (see [`producer`]).
const TYPED_SHARE: u64 = 4;

/// Of a transactional producer's new messages, the percentage that start
/// a transaction.
const TXN_START_PCT: u32 = 10;
/// The most new messages one transaction sends.
const TXN_MESSAGES_MAX: u64 = 5;
/// Of transactions, the percentage rolled back rather than committed.
const TXN_ROLLBACK_PCT: u32 = 25;

/// The range of the TTLs messages are sent with: short enough that many
/// expire in a queue during the run, long enough that most are delivered
/// first.
const TTL_MIN_MS: u64 = 20;
const TTL_MAX_MS: u64 = 2_000;

/// The range of the delays scheduled messages are sent with.
const DELAY_MIN_MS: u64 = 10;
const DELAY_MAX_MS: u64 = 1_500;

/// The id and header of a received message, or `None` if it is not one
/// of ours (which the checker reports through the id it cannot find).
pub fn decode_message(message: Bytes) -> Option<(MsgId, Header)> {
    let message = Message::decode(message).ok()?;
    let mut header = Header::default();
    let mut id = None;
    for section in &message.sections {
        match section {
            Section::Header(h) => header = h.clone(),
            Section::Data(data) if data.len() == 12 => {
                let producer = u32::from_be_bytes(data[..4].try_into().ok()?);
                let seq = u64::from_be_bytes(data[4..].try_into().ok()?);
                id = Some(MsgId { producer, seq });
            }
            _ => {}
        }
    }
    Some((id?, header))
}

/// A workload client's connection, over its link's faults (see
/// [`crate::client_net`]).
pub(crate) type SimClient = Client<TurmoilIo, DuplexStream>;

/// Connects `conn`'s client to broker `node` as container `container`,
/// logged in as the workload's user.
pub(crate) async fn connect(
    shared: &Shared,
    conn: ConnId,
    container: String,
    node: NodeId,
) -> Result<SimClient, ClientError> {
    let sasl = shared.scram_salted(intruder::SIM_USER, intruder::sim_password());
    connect_as(shared, conn, container, node, sasl).await
}

/// Connects `conn`'s client to broker `node` as container `container`,
/// logging in with `sasl`.
pub(crate) async fn connect_as(
    shared: &Shared,
    conn: ConnId,
    container: String,
    node: NodeId,
    sasl: ClientSasl,
) -> Result<SimClient, ClientError> {
    let mut config = ConnectionConfig::new(container);
    config.idle_timeout = Some(IDLE_TIMEOUT);
    let broker = broker_name(node);
    let address = format!("{broker}:{AMQP_PORT}");
    let client = conn.client.to_string();
    let attempt = async {
        let stream = shared.links.connect(&client, &broker, &address).await?;
        Client::handshake(TurmoilIo, stream, config, sasl).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Closed(None)),
    }
}

pub(crate) async fn with_timeout<T>(
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, future).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Closed(None)),
    }
}

/// A producer's connection: its client, its sending link, and, for a
/// transactional producer, its coordinator link.
struct Sender {
    client: SimClient,
    link: LinkId,
    coordinator: Option<LinkId>,
}

/// Connects to `node` and attaches a sending link to `queue`, and a
/// coordinator link if `transactional`.
async fn open_sender(
    shared: &Shared,
    conn: ConnId,
    node: NodeId,
    queue: &str,
    transactional: bool,
) -> Result<Sender, ClientError> {
    let mut client = connect(shared, conn, conn.to_string(), node).await?;
    let session = with_timeout(client.begin()).await?;
    let link = with_timeout(client.attach_sender(session, "producer", Some(queue))).await?;
    let coordinator = if transactional {
        Some(with_timeout(client.attach_coordinator(session, "coordinator")).await?)
    } else {
        None
    };
    Ok(Sender {
        client,
        link,
        coordinator,
    })
}

/// One transaction of a producer: the coordinator link it runs on, its id,
/// the new messages it sends, and whether it commits.
struct TxnPlan {
    coordinator: LinkId,
    txn: TxnId,
    seqs: std::ops::Range<u64>,
    commit: bool,
}

/// Runs a transaction on `sender`: declares it, sends its messages in it
/// (recording where each delivery went in `in_txn`, for their provisional
/// outcomes), and discharges it. Its messages are never resent: if the
/// connection is lost on the way, they are abandoned, and the checker
/// knows their fate from what was recorded (never discharged, or a commit
/// with no answer). The error says why the connection is to be dropped.
async fn transact(
    sender: &mut Sender,
    shared: &Shared,
    conn: ConnId,
    plan: TxnPlan,
    in_txn: &mut BTreeMap<DeliveryId, u64>,
) -> Result<(), String> {
    let coordinator = plan.coordinator;
    let client = &mut sender.client;
    let txn_id = with_timeout(client.declare(coordinator))
        .await
        .map_err(|error| format!("declare: {error}"))?;
    let txn = plan.txn;
    shared.record(Op::TxnDeclared { conn, txn });
    let kind = MessageKind {
        txn: Some(txn.n),
        ..MessageKind::PLAIN
    };
    for seq in plan.seqs {
        let msg = MsgId {
            producer: txn.producer,
            seq,
        };
        shared.record(Op::Send {
            conn,
            msg,
            resend: false,
            kind,
        });
        let tag = Bytes::copy_from_slice(&seq.to_be_bytes());
        let send =
            client.send_in_transaction(sender.link, tag, encode_message(msg, kind), txn_id.clone());
        let delivery = with_timeout(send)
            .await
            .map_err(|error| format!("send: {error}"))?;
        in_txn.insert(delivery, seq);
    }
    let commit = plan.commit;
    shared.record(Op::Discharge { conn, txn, commit });
    let outcome = match with_timeout(client.discharge(coordinator, txn_id, !commit)).await {
        Ok(()) => Outcome::Accepted,
        Err(ClientError::Transaction(_)) => Outcome::Rejected,
        Err(error) => return Err(format!("discharge: {error}")),
    };
    shared.record(Op::Discharged { conn, txn, outcome });
    Ok(())
}

/// What a receiving client reads.
struct ReadFrom {
    /// The queue behind its link, as the history records it.
    queue: String,
    /// The source it attaches with.
    source: Source,
    /// Its link's name.
    link_name: &'static str,
    /// Its container id, if fixed: a durable subscription is named by the
    /// container id and the link name, so a subscriber keeps both across
    /// connections.
    container: Option<String>,
    /// Settles in mode `second`: the broker settles each delivery after
    /// the client's outcome, and only then is it consumed.
    second: bool,
    /// Each link reads a subscription of its own (a non-durable one), which
    /// the history names after `queue` and the link (see
    /// [`volatile_link_queue`]).
    per_link: bool,
}

/// The history's name of the subscription of the `link`th link (from 1) on
/// `conn` of the volatile subscriber whose subscriptions are named after
/// `queue` ([`WorkloadParams::volatile_subscription`]).
pub fn volatile_link_queue(queue: &str, conn: ConnId, link: u32) -> String {
    format!("{queue}/c{}/l{link}", conn.n)
}

impl ReadFrom {
    fn queue(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            source: Source {
                address: Some(queue.to_owned()),
                ..Source::default()
            },
            link_name: "consumer",
            container: None,
            second: false,
            per_link: false,
        }
    }

    /// The queue the history names for the `link`th link on `conn`.
    fn queue_of_link(&self, conn: ConnId, link: u32) -> String {
        if self.per_link {
            volatile_link_queue(&self.queue, conn, link)
        } else {
            self.queue.clone()
        }
    }

    /// The same, settling in mode `second` if `second`.
    fn settling_second(mut self, second: bool) -> Self {
        self.second = second;
        self
    }

    /// `queue`, through `filter`.
    fn selected(queue: &str, filter: SelectiveFilter) -> Self {
        let mut from = Self::queue(queue);
        from.source.filter = vec![filter.entry()];
        from
    }

    /// `queue`, browsed: the broker sends copies and keeps the messages.
    fn browsed(queue: &str) -> Self {
        let mut from = Self::queue(queue);
        from.source.distribution_mode = Some(DistributionMode::Copy);
        from.link_name = "browser";
        from
    }

    fn subscription(params: &WorkloadParams, subscriber: u32) -> Self {
        Self {
            queue: params.subscription(subscriber),
            source: Source {
                address: Some(format!("topic://{}", params.topic)),
                durable: Some(TerminusDurability::UnsettledState),
                expiry_policy: Some(ExpiryPolicy::Never),
                ..Source::default()
            },
            link_name: SUBSCRIPTION_LINK,
            container: Some(ClientId::Subscriber(subscriber).to_string()),
            second: false,
            per_link: false,
        }
    }

    /// A non-durable subscription to the topic: one per link, made by its
    /// attach and deleted with its link (however it ends), so it holds only
    /// what was published while the link lived.
    fn volatile_subscription(params: &WorkloadParams, subscriber: u32) -> Self {
        Self {
            queue: params.volatile_subscription(subscriber),
            source: Source {
                address: Some(format!("topic://{}", params.topic)),
                ..Source::default()
            },
            link_name: SUBSCRIPTION_LINK,
            container: None,
            second: false,
            per_link: true,
        }
    }
}

/// Connects to `node` and attaches a receiving link as `from` says, with
/// `credit`.
async fn open_receiver(
    shared: &Shared,
    conn: ConnId,
    node: NodeId,
    from: &ReadFrom,
    credit: u32,
) -> Result<(SimClient, SessionId, LinkId), ClientError> {
    let container = from.container.clone().unwrap_or_else(|| conn.to_string());
    let mut client = connect(shared, conn, container, node).await?;
    let session = with_timeout(client.begin()).await?;
    let link = attach_receiver(&mut client, session, from, credit).await?;
    Ok((client, session, link))
}

async fn attach_receiver(
    client: &mut SimClient,
    session: SessionId,
    from: &ReadFrom,
    credit: u32,
) -> Result<LinkId, ClientError> {
    let mode = if from.second {
        ReceiverSettleMode::Second
    } else {
        ReceiverSettleMode::First
    };
    let source = from.source.clone();
    let attach = client.attach_receiver_settling(session, from.link_name, source, credit, mode);
    with_timeout(attach).await
}

/// Detaches the receiving link and attaches it again on the same
/// connection. A subscriber only suspends its link (a detach that does not
/// close it), so that its durable subscription stays; a consumer closes it.
async fn relink(
    client: &mut SimClient,
    session: SessionId,
    link: LinkId,
    from: &ReadFrom,
    credit: u32,
) -> Result<LinkId, ClientError> {
    let closed = from.container.is_none();
    with_timeout(client.detach(link, closed)).await?;
    attach_receiver(client, session, from, credit).await
}

/// The inspector: once the run is finished and the other clients have
/// exited, asks the broker for its own account of its queues and records it
/// for the checker, which compares it with what the history says the
/// broker must and may still hold. It waits (boundedly) for the broker to
/// return every delivery of the closed connections first.
///
/// In a cluster it asks the first node. Once that node has let go of every
/// delivery, it waits (boundedly) for every node to have applied every
/// group as far as the others, records each node's replicas for the
/// convergence rule, and reads the first node's queues again once it has let
/// go of every delivery (boundedly, as before).
pub async fn inspector(clients: u32, shared: Rc<Shared>) -> turmoil::Result {
    while shared.phase() != Phase::Finished {
        tokio::time::sleep(PHASE_POLL).await;
    }
    let exit_deadline = TurmoilIo.now() + EXIT_WAIT_MAX;
    while shared.clients_exited.get() < clients && TurmoilIo.now() < exit_deadline {
        tokio::time::sleep(PHASE_POLL).await;
    }
    let first = shared.brokers[0];
    let Some(mut queues) = settled_queues(&shared, first).await else {
        // The broker is down: it has nothing to account for now.
        return Ok(());
    };
    if shared.is_cluster() {
        let nodes = converged_replicas(&shared).await;
        shared.record(Op::Replicas { nodes });
        // Converging may have been what a consumer's detach waited for:
        // a node that rejoined after damage to its log learns of its dead
        // incarnation's consumers only once it has caught up, and only
        // then detaches them.
        if let Some(now_converged) = settled_queues(&shared, first).await {
            queues = now_converged;
        }
    }
    shared.record(Op::BrokerState { queues });
    Ok(())
}

/// The queues of broker `node` once nothing is unsettled and no consumer
/// is left (or [`SETTLE_WAIT_MAX`] has passed); `None` if it is down (a
/// cluster node is asked again until then: it may be restarting).
async fn settled_queues(shared: &Shared, node: NodeId) -> Option<Vec<QueueState>> {
    let settle_deadline = TurmoilIo.now() + SETTLE_WAIT_MAX;
    loop {
        let queues = queue_states(shared, node).await;
        let past = TurmoilIo.now() >= settle_deadline;
        match queues {
            Some(queues) => {
                let settled = queues.iter().all(|q| q.unsettled == 0 && q.consumers == 0);
                if settled || past {
                    return Some(queues);
                }
            }
            None if past || !shared.is_cluster() => return None,
            None => {}
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
}

/// Broker `node`'s queues, if it answers.
async fn queue_states(shared: &Shared, node: NodeId) -> Option<Vec<QueueState>> {
    let handle = shared.node_handle(node)?;
    let asked = tokio::time::timeout(HANDSHAKE_TIMEOUT, handle.queue_info()).await;
    let Ok(Ok(info)) = asked else {
        return None;
    };
    let queues = info
        .into_iter()
        .map(|(name, info)| QueueState {
            name,
            depth: info.depth,
            unsettled: info.unsettled,
            consumers: info.consumers,
        })
        .collect();
    Some(queues)
}

/// Broker `node`'s replicated groups, if it answers.
async fn replica_statuses(shared: &Shared, node: NodeId) -> Option<Vec<ReplicaStatus>> {
    let handle = shared.node_handle(node)?;
    let asked = tokio::time::timeout(HANDSHAKE_TIMEOUT, handle.replica_status()).await;
    asked.ok()?.ok()
}

/// Every cluster node's replicas once every node has applied each group
/// as far as the others (or [`CONVERGE_WAIT_MAX`] has passed).
async fn converged_replicas(shared: &Shared) -> Vec<NodeReplicas> {
    let deadline = TurmoilIo.now() + CONVERGE_WAIT_MAX;
    loop {
        let mut nodes = Vec::new();
        for &node in &shared.brokers {
            let groups = replica_statuses(shared, node).await;
            let id = node.unwrap_or_default();
            nodes.push(NodeReplicas { node: id, groups });
        }
        if applied_alike(&nodes) || TurmoilIo.now() >= deadline {
            return nodes;
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
}

/// Whether every node answered, with the same groups, each applied to the
/// same index on every node, and no member is still rejoining after damage
/// to its log.
fn applied_alike(nodes: &[NodeReplicas]) -> bool {
    let rejoining = nodes
        .iter()
        .flat_map(|node| node.groups.iter().flatten())
        .any(|group| group.rejoining);
    let applied = |node: &NodeReplicas| {
        node.groups.as_ref().map(|groups| {
            groups
                .iter()
                .map(|g| (g.group, g.applied))
                .collect::<Vec<_>>()
        })
    };
    let Some(first) = nodes.first().and_then(applied) else {
        return false;
    };
    !rejoining
        && nodes
            .iter()
            .all(|node| applied(node).as_ref() == Some(&first))
}

/// Closes the connection, and records whether the broker answered: a
/// close it never answered (a partition, a crash) is a lost connection, as
/// what was sent last may never have reached it.
pub(crate) async fn close(client: SimClient, shared: &Shared, conn: ConnId) {
    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.close()).await {
        Ok(Ok(())) => {
            shared.record(Op::Closed { conn });
            return;
        }
        Ok(Err(error)) => format!("close: {error}"),
        Err(_) => "close: no answer".to_owned(),
    };
    shared.record(Op::ConnectionLost { conn, why });
}

/// Waits before reconnecting, so a down broker is not hammered.
pub(crate) async fn backoff(rng: &mut ChaCha8Rng) {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
}

/// How long a sender takes in the broker's answers before it looks again:
/// while it may send, a random gap of up to `gap_ms_max` milliseconds,
/// which spreads its sends out; otherwise (its window, credit or phase
/// holds it back) until its next look at the phase. It draws from `rng`
/// only in the first case.
pub(crate) fn pause(can_send: bool, gap_ms_max: u64, rng: &mut ChaCha8Rng) -> Duration {
    if can_send {
        Duration::from_millis(rng.gen_range(0..=gap_ms_max))
    } else {
        PHASE_POLL
    }
}

/// The client's next event, or `None` if `until` is over first.
pub(crate) async fn next_event_before(
    client: &mut SimClient,
    until: impl Future<Output = ()>,
) -> Option<Result<Event, ClientError>> {
    tokio::select! {
        () = until => None,
        event = client.next_event() => Some(event),
    }
}

/// The client's event, or why it ends the client's connection: the
/// connection closed, a link of it was detached, or the client failed.
pub(crate) fn unless_lost(event: Result<Event, ClientError>) -> Result<Event, String> {
    match event {
        Ok(Event::Closed { local, remote }) => Err(format!("closed: {:?}", local.or(remote))),
        Ok(Event::LinkDetached { error, .. }) => Err(format!("link detached: {error:?}")),
        Ok(event) => Ok(event),
        Err(error) => Err(error.to_string()),
    }
}

/// The outcome a sender's disposition gives its delivery, once final:
/// `None` while it is neither settled nor an outcome.
pub(crate) fn final_outcome(state: Option<&DeliveryState>, settled: bool) -> Option<Outcome> {
    let outcome = outcome_of(state);
    (settled || outcome != Outcome::None).then_some(outcome)
}

pub(crate) fn outcome_of(state: Option<&DeliveryState>) -> Outcome {
    match state {
        // A message's outcome in a transaction: provisional.
        Some(DeliveryState::Transactional(state)) => outcome_of(state.outcome.as_deref()),
        Some(DeliveryState::Accepted(_)) => Outcome::Accepted,
        Some(DeliveryState::Rejected(_)) => Outcome::Rejected,
        Some(DeliveryState::Released(_)) => Outcome::Released,
        Some(DeliveryState::Modified(_)) => Outcome::Modified,
        _ => Outcome::None,
    }
}

/// A producer: sends its messages with a window, of the kinds its
/// [`MessageMix`] draws; on a lost connection reconnects and resends
/// everything unsettled not yet confirmed (a legal source of duplicates,
/// unless the message carries a `message-id`); a transactional one sends
/// some new messages in transactions instead (see [`transact`]), never
/// resent. Stops when the fault phase ends.
pub async fn producer(
    n: u32,
    seed: u64,
    params: WorkloadParams,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let me = ClientId::Producer(n);
    let mut rng = client_rng(seed, me);
    let queue = params.target_of(n);
    // A topic producer starts once every subscription exists; a producer
    // to a dead-lettering queue once its dead-letter queue does.
    let marking = Marking::of(&params, n);
    let to_queue = n < params.producers || marking.is_some();
    let ready = || {
        if to_queue {
            params.dead_letter_queue_of(&queue).is_none() || shared.dead_letters_ready.get()
        } else {
            shared.subscribed.borrow().len() >= params.subscribers as usize
        }
    };
    while !ready() {
        if shared.phase() != Phase::Faults {
            return Ok(());
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
    let window = rng.gen_range(1..=32usize);
    let gap_ms_max = rng.gen_range(1..=20u64);
    let mix = match marking {
        Some(marking) => MessageMix::typed(marking),
        None => MessageMix::draw(&mut rng, to_queue),
    };
    // A typed queue's consumer takes one message per credit, each a round
    // trip through the broker's commit (slow under `bad-disk` in a
    // cluster: ten a second): a quarter of the messages keeps its backlog
    // within what the drain can take.
    let messages_max = if marking.is_some() {
        params.messages_per_producer / TYPED_SHARE
    } else {
        params.messages_per_producer
    };
    let mut next_seq = 0u64;
    let mut next_txn = 0u32;
    // Sent unsettled at least once and not yet answered with a final
    // outcome, and the kind each was sent as.
    let mut unconfirmed: BTreeMap<u64, MessageKind> = BTreeMap::new();
    let mut conn_n = 0;
    loop {
        if shared.phase() != Phase::Faults {
            return Ok(());
        }
        if next_seq == messages_max && unconfirmed.is_empty() {
            return Ok(());
        }
        conn_n += 1;
        let conn = ConnId {
            client: me,
            n: conn_n,
        };
        let node = shared.pick_broker(&mut rng);
        let mut sender = match open_sender(&shared, conn, node, &queue, mix.transactional).await {
            Ok(opened) => opened,
            Err(error) => {
                shared.record(Op::ConnectionLost {
                    conn,
                    why: format!("connect: {error}"),
                });
                backoff(&mut rng).await;
                continue;
            }
        };
        shared.record(Op::Connected {
            conn,
            address: queue.clone(),
            node,
        });
        // Everything unconfirmed goes again on the new connection, oldest
        // first.
        let mut to_send: BTreeSet<u64> = unconfirmed.keys().copied().collect();
        let mut in_flight: BTreeMap<DeliveryId, u64> = BTreeMap::new();
        // Messages sent in transactions, for their provisional outcomes.
        let mut in_txn: BTreeMap<DeliveryId, u64> = BTreeMap::new();
        let link = sender.link;
        let lost = 'conn: loop {
            if shared.phase() != Phase::Faults {
                // Dropped, not closed: what is unconfirmed stays unknown,
                // which the checker allows.
                return Ok(());
            }
            let more_new = next_seq < messages_max;
            if in_flight.is_empty() && to_send.is_empty() && !more_new {
                close(sender.client, &shared, conn).await;
                return Ok(());
            }
            let can_send = in_flight.len() < window && sender.client.connection().credit(link) > 0;
            let left = messages_max - next_seq;
            // Only a transactional producer has a coordinator.
            let txn = sender
                .coordinator
                .filter(|_| can_send && to_send.is_empty() && more_new)
                .and_then(|coordinator| {
                    let (messages, commit) = mix.next_transaction(&mut rng, left)?;
                    Some((coordinator, messages, commit))
                });
            if let Some((coordinator, messages, commit)) = txn {
                let plan = TxnPlan {
                    coordinator,
                    txn: TxnId {
                        producer: n,
                        n: next_txn,
                    },
                    seqs: next_seq..next_seq + messages,
                    commit,
                };
                next_txn += 1;
                next_seq += messages;
                if let Err(error) = transact(&mut sender, &shared, conn, plan, &mut in_txn).await {
                    break 'conn error;
                }
            } else if can_send && (!to_send.is_empty() || more_new) {
                let (seq, resend, kind) = match to_send.pop_first() {
                    Some(seq) => (seq, true, unconfirmed[&seq]),
                    None => {
                        let seq = next_seq;
                        next_seq += 1;
                        let kind = mix.next(&mut rng);
                        if !kind.presettled {
                            unconfirmed.insert(seq, kind);
                        }
                        (seq, false, kind)
                    }
                };
                let msg = MsgId { producer: n, seq };
                shared.record(Op::Send {
                    conn,
                    msg,
                    resend,
                    kind,
                });
                let tag = Bytes::copy_from_slice(&seq.to_be_bytes());
                let message = encode_message(msg, kind);
                match sender
                    .client
                    .send(link, tag, message, kind.presettled)
                    .await
                {
                    Ok(delivery) if !kind.presettled => {
                        in_flight.insert(delivery, seq);
                    }
                    Ok(_) => {}
                    Err(error) => break 'conn format!("send: {error}"),
                }
            }
            // Between sends, take in whatever the broker answers.
            let sleep = tokio::time::sleep(pause(can_send, gap_ms_max, &mut rng));
            tokio::pin!(sleep);
            loop {
                let Some(event) = next_event_before(&mut sender.client, &mut sleep).await else {
                    break;
                };
                match unless_lost(event) {
                    Ok(Event::Disposition {
                        delivery,
                        state,
                        settled,
                        ..
                    }) => {
                        let Some(outcome) = final_outcome(state.as_ref(), settled) else {
                            continue;
                        };
                        let Some(seq) = in_flight.remove(&delivery) else {
                            // Provisional: recorded, never acted on.
                            if let Some(seq) = in_txn.remove(&delivery) {
                                let msg = MsgId { producer: n, seq };
                                shared.record(Op::ProducerOutcome { conn, msg, outcome });
                            }
                            continue;
                        };
                        let msg = MsgId { producer: n, seq };
                        shared.record(Op::ProducerOutcome { conn, msg, outcome });
                        match outcome {
                            Outcome::Accepted | Outcome::Rejected => {
                                unconfirmed.remove(&seq);
                            }
                            // Not taken: send it again.
                            Outcome::Released | Outcome::Modified | Outcome::None => {
                                to_send.insert(seq);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(why) => break 'conn why,
                }
            }
        };
        shared.record(Op::ConnectionLost { conn, why: lost });
        backoff(&mut rng).await;
    }
}

/// A consumer of queue `n % queues`: see [`receive`].
pub async fn consumer(
    n: u32,
    seed: u64,
    params: WorkloadParams,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let queue = params.consumer_queue(n);
    let me = ClientId::Consumer(n);
    let from = match params.selective_consumer() {
        Some(selective) if selective == n => ReadFrom::selected(queue, params.selective_filter),
        _ => ReadFrom::queue(queue),
    };
    let pace = params
        .typed_queue_of_consumer(n)
        .map_or(Pace::EAGER, Pace::of);
    let from = from.settling_second(settles_second(seed, &params, me));
    receive(me, seed, from, pace, shared).await
}

/// A browser of queue 0: attaches in copy mode, records what it sees, and
/// now and then attaches again to browse from the start. It settles
/// nothing: a browsed message stays the queue's.
pub async fn browser(
    n: u32,
    seed: u64,
    params: WorkloadParams,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let me = ClientId::Browser(n);
    let mut rng = client_rng(seed, me);
    let from = ReadFrom::browsed(&params.queues[0]);
    let mut conn_n = 0;
    while shared.phase() != Phase::Finished {
        conn_n += 1;
        let conn = ConnId {
            client: me,
            n: conn_n,
        };
        let node = shared.pick_broker(&mut rng);
        let credit = rng.gen_range(1..=50);
        let lost = match open_receiver(&shared, conn, node, &from, credit).await {
            Ok((client, _, _)) => {
                shared.record(Op::Connected {
                    conn,
                    address: from.queue.clone(),
                    node,
                });
                browse(client, &shared, conn, &from.queue, &mut rng).await
            }
            Err(error) => Some(format!("connect: {error}")),
        };
        if let Some(why) = lost {
            shared.record(Op::ConnectionLost { conn, why });
        }
        backoff(&mut rng).await;
    }
    Ok(())
}

/// Browses on one connection until the run is finished or, after a
/// random number of messages, closes to browse again; why the connection
/// was lost, if it was.
async fn browse(
    mut client: SimClient,
    shared: &Shared,
    conn: ConnId,
    queue: &str,
    rng: &mut ChaCha8Rng,
) -> Option<String> {
    let mut left = rng.gen_range(1..=200u32);
    loop {
        if shared.phase() == Phase::Finished || left == 0 {
            close(client, shared, conn).await;
            return None;
        }
        let Some(event) = next_event_before(&mut client, tokio::time::sleep(PHASE_POLL)).await
        else {
            continue;
        };
        match unless_lost(event) {
            Ok(Event::Delivery { message, .. }) => {
                left -= 1;
                let msg = decode_message(message).map_or(UNKNOWN_MSG, |(msg, _)| msg);
                shared.record(Op::Browsed {
                    conn,
                    queue: queue.to_owned(),
                    msg,
                });
            }
            Ok(_) => {}
            Err(why) => return Some(why),
        }
    }
}

/// A subscriber to the topic: see [`receive`]. A durable one's
/// subscription outlives its connections, so messages sent while it is
/// away wait for it; a volatile one's lives as long as its link.
pub async fn subscriber(
    n: u32,
    seed: u64,
    params: WorkloadParams,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let me = ClientId::Subscriber(n);
    let from = if params.is_volatile(n) {
        ReadFrom::volatile_subscription(&params, n)
    } else {
        ReadFrom::subscription(&params, n)
    };
    let from = from.settling_second(settles_second(seed, &params, me));
    receive(me, seed, from, Pace::EAGER, shared).await
}

/// The consumer of the dead-letter queue: see [`receive`].
pub async fn dead_letter_consumer(n: u32, seed: u64, shared: Rc<Shared>) -> turmoil::Result {
    let from = ReadFrom::queue(DEAD_LETTER_QUEUE);
    receive(ClientId::DeadLetters(n), seed, from, Pace::EAGER, shared).await
}

/// A receiver: reads with random credit, settles with a mix of outcomes
/// (or holds a delivery unsettled until its link or connection ends), and
/// now and then closes its connection or detaches and re-attaches its link
/// (churn); `pace` may hold its credit at 1, defer some top-ups, and defer
/// some settles. In the drain phase it accepts everything; it exits when
/// the run is finished.
async fn receive(
    me: ClientId,
    seed: u64,
    from: ReadFrom,
    pace: Pace,
    shared: Rc<Shared>,
) -> turmoil::Result {
    let mut rng = client_rng(seed, me);
    let credit_drawn = rng.gen_range(1..=50u32);
    let credit_max = if pace.single_credit { 1 } else { credit_drawn };
    // Percent chances, per delivery, in the fault phase.
    let churn_pct = rng.gen_range(0..=3u32);
    let mut conn_n = 0;
    loop {
        if shared.phase() == Phase::Finished {
            return Ok(());
        }
        conn_n += 1;
        let conn = ConnId {
            client: me,
            n: conn_n,
        };
        let credit = rng.gen_range(1..=credit_max);
        let node = shared.pick_broker(&mut rng);
        let mut link_n = 1;
        let mut queue = from.queue_of_link(conn, link_n);
        let (mut client, session, mut link) =
            match open_receiver(&shared, conn, node, &from, credit).await {
                Ok(opened) => opened,
                Err(ClientError::SettleModeRefused) => {
                    shared.record(Op::SettleModeRefused { conn });
                    backoff(&mut rng).await;
                    continue;
                }
                Err(error) => {
                    shared.record(Op::ConnectionLost {
                        conn,
                        why: format!("connect: {error}"),
                    });
                    backoff(&mut rng).await;
                    continue;
                }
            };
        match me {
            ClientId::Subscriber(n) => {
                shared.subscribed.borrow_mut().insert(n);
            }
            ClientId::DeadLetters(_) => shared.dead_letters_ready.set(true),
            ClientId::Producer(_)
            | ClientId::Consumer(_)
            | ClientId::Browser(_)
            | ClientId::Requester(_)
            | ClientId::Responder(_)
            | ClientId::Intruder(_) => {}
        }
        shared.record(Op::Connected {
            conn,
            address: queue.clone(),
            node,
        });
        // Deliveries left unsettled on purpose: released when the
        // connection ends, or accepted in the drain phase.
        let mut held: BTreeMap<DeliveryId, MsgId> = BTreeMap::new();
        // Deliveries whose settle `pace` deferred: each message, the
        // outcome it is to get, and when.
        let mut deferred: BTreeMap<DeliveryId, (MsgId, Outcome, Instant)> = BTreeMap::new();
        // A top-up of credit deferred by `pace`, and when it is due.
        let mut paused_until = None;
        let mut awaiting = Awaiting::new();
        let lost = 'conn: loop {
            match shared.phase() {
                Phase::Finished => {
                    close(client, &shared, conn).await;
                    return Ok(());
                }
                Phase::Drain => {
                    let deferred = std::mem::take(&mut deferred)
                        .into_iter()
                        .map(|(delivery, (msg, _, _))| (delivery, msg));
                    held.extend(deferred);
                    while let Some((delivery, msg)) = held.pop_first() {
                        let settling = Settling {
                            conn,
                            queue: &queue,
                            awaiting: from.second.then_some(&mut awaiting),
                        };
                        if let Err(error) = settle(
                            &mut client,
                            &shared,
                            settling,
                            delivery,
                            msg,
                            Outcome::Accepted,
                        )
                        .await
                        {
                            break 'conn error.to_string();
                        }
                    }
                }
                Phase::Faults => {}
            }
            let now = TurmoilIo.now();
            while let Some((&delivery, &(msg, outcome, _))) =
                deferred.iter().find(|(_, (_, _, due))| *due <= now)
            {
                deferred.remove(&delivery);
                let settling = Settling {
                    conn,
                    queue: &queue,
                    awaiting: from.second.then_some(&mut awaiting),
                };
                if let Err(error) =
                    settle(&mut client, &shared, settling, delivery, msg, outcome).await
                {
                    break 'conn error.to_string();
                }
            }
            let draining = shared.phase() != Phase::Faults;
            if paused_until.is_some_and(|until| draining || TurmoilIo.now() >= until) {
                paused_until = None;
                let current = client.connection().credit(link);
                let credit = credit_to_give(draining, credit_max, pace, &mut rng).max(current);
                if let Err(error) = client.connection().flow(link, credit, false) {
                    break 'conn error.to_string();
                }
            }
            // Woken in time for the next deferred settle.
            let wait = deferred
                .values()
                .map(|(_, _, due)| due.saturating_duration_since(now))
                .fold(PHASE_POLL, Duration::min);
            let Some(event) = next_event_before(&mut client, tokio::time::sleep(wait)).await else {
                continue;
            };
            match unless_lost(event) {
                Ok(Event::Delivery {
                    delivery, message, ..
                }) => {
                    let Some((msg, header)) = decode_message(message) else {
                        // Not ours: recorded as an impossible id, so the
                        // checker reports it as never sent.
                        shared.record(Op::Delivered {
                            conn,
                            queue: queue.clone(),
                            msg: UNKNOWN_MSG,
                            delivery_count: 0,
                            first_acquirer: false,
                        });
                        continue;
                    };
                    shared.record(Op::Delivered {
                        conn,
                        queue: queue.clone(),
                        msg,
                        delivery_count: header.delivery_count,
                        first_acquirer: header.first_acquirer,
                    });
                    let draining = shared.phase() != Phase::Faults;
                    let roll = rng.gen_range(0..100u32);
                    let outcome = match roll {
                        _ if draining => Some(Outcome::Accepted),
                        0..70 => Some(Outcome::Accepted),
                        70..78 => Some(Outcome::Released),
                        78..86 => Some(Outcome::Modified),
                        86..90 => Some(Outcome::Rejected),
                        _ => None,
                    };
                    let hold = !draining
                        && outcome.is_some()
                        && pace.hold_pct > 0
                        && rng.gen_range(0..100) < pace.hold_pct;
                    match outcome {
                        Some(outcome) if hold => {
                            let ms = rng.gen_range(1..=pace.hold_ms_max);
                            let due = TurmoilIo.now() + Duration::from_millis(ms);
                            deferred.insert(delivery, (msg, outcome, due));
                        }
                        Some(outcome) => {
                            let settling = Settling {
                                conn,
                                queue: &queue,
                                awaiting: from.second.then_some(&mut awaiting),
                            };
                            if let Err(error) =
                                settle(&mut client, &shared, settling, delivery, msg, outcome).await
                            {
                                break 'conn error.to_string();
                            }
                        }
                        None => {
                            held.insert(delivery, msg);
                        }
                    }
                    let low = if draining && !pace.single_credit {
                        64
                    } else {
                        credit_max / 2
                    };
                    let current = client.connection().credit(link);
                    let pause =
                        !draining && pace.pause_pct > 0 && rng.gen_range(0..100) < pace.pause_pct;
                    if current <= low && paused_until.is_some() {
                        // A top-up is due already.
                    } else if current <= low && pause {
                        let ms = rng.gen_range(1..=pace.pause_ms_max);
                        paused_until = Some(TurmoilIo.now() + Duration::from_millis(ms));
                    } else if current <= low {
                        // Never below the current credit: transfers the
                        // broker sent under the old credit may be in flight,
                        // and the engine detaches a link that receives more
                        // than its credit (transfer-limit-exceeded).
                        let credit =
                            credit_to_give(draining, credit_max, pace, &mut rng).max(current);
                        if let Err(error) = client.connection().flow(link, credit, false) {
                            break 'conn error.to_string();
                        }
                    }
                    if !draining && rng.gen_range(0..100) < churn_pct {
                        if rng.gen_bool(0.5) {
                            close(client, &shared, conn).await;
                            backoff(&mut rng).await;
                            // Closed on purpose: reconnect without recording
                            // a loss.
                            break 'conn String::new();
                        }
                        // What the old link held goes back to the broker,
                        // and its settles are no longer answered.
                        held.clear();
                        deferred.clear();
                        paused_until = None;
                        awaiting.clear();
                        let credit = rng.gen_range(1..=credit_max);
                        match relink(&mut client, session, link, &from, credit).await {
                            Ok(new_link) => link = new_link,
                            Err(error) => break 'conn format!("relink: {error}"),
                        }
                        link_n += 1;
                        queue = from.queue_of_link(conn, link_n);
                        shared.record(Op::Relinked { conn });
                    }
                }
                Ok(Event::Disposition {
                    delivery,
                    settled: true,
                    ..
                }) => confirmed(&mut awaiting, &shared, conn, &queue, delivery),
                Ok(_) => {}
                Err(why) => break 'conn why,
            }
        };
        if !lost.is_empty() {
            shared.record(Op::ConnectionLost { conn, why: lost });
            backoff(&mut rng).await;
        }
    }
}

/// The credit a receiver tops up to: its most, in the drain (but 1 if
/// `pace` keeps it at 1), or a draw up to `credit_max`.
fn credit_to_give(draining: bool, credit_max: u32, pace: Pace, rng: &mut ChaCha8Rng) -> u32 {
    if pace.single_credit {
        1
    } else if draining {
        128
    } else {
        rng.gen_range(1..=credit_max)
    }
}

/// The deliveries of a receiver in mode `second` whose outcome it sent and
/// whose settle from the broker it awaits: each message and outcome.
type Awaiting = BTreeMap<DeliveryId, (MsgId, Outcome)>;

/// Where a receiver settles: its connection, its queue, and in mode
/// `second` what it awaits the broker's settle for.
struct Settling<'a> {
    conn: ConnId,
    queue: &'a str,
    awaiting: Option<&'a mut Awaiting>,
}

/// Settles `delivery` of `msg` with `outcome`: in mode `first` at once; in
/// mode `second` by sending the outcome unsettled and noting it in
/// `awaiting` (the broker's settle comes as an event, recorded as
/// [`Op::SettleConfirmed`] by [`confirmed`]).
async fn settle(
    client: &mut SimClient,
    shared: &Shared,
    settling: Settling<'_>,
    delivery: DeliveryId,
    msg: MsgId,
    outcome: Outcome,
) -> Result<(), ClientError> {
    let Settling {
        conn,
        queue,
        awaiting,
    } = settling;
    let state = match outcome {
        Outcome::Accepted | Outcome::None => DeliveryState::Accepted(Accepted),
        Outcome::Rejected => DeliveryState::Rejected(Rejected { error: None }),
        Outcome::Released => DeliveryState::Released(Released),
        Outcome::Modified => DeliveryState::Modified(Modified {
            delivery_failed: true,
            ..Modified::default()
        }),
    };
    // Recorded before the disposition goes out: if the connection dies
    // while sending, the checker must still know the consumer meant it.
    shared.record(Op::Settled {
        conn,
        queue: queue.to_owned(),
        msg,
        outcome,
    });
    let Some(awaiting) = awaiting else {
        return client.settle(delivery, state).await;
    };
    awaiting.insert(delivery, (msg, outcome));
    client.settle_second(delivery, state).await
}

/// Under rcv-settle-mode `second`, the broker's settle of `delivery`, if it
/// awaited one: records it as [`Op::SettleConfirmed`]. Recorded as it
/// comes, not after a wait: a receiver that waited for each settle in turn
/// would record the deliveries that came meanwhile late (rule 9 reads
/// their times).
fn confirmed(
    awaiting: &mut Awaiting,
    shared: &Shared,
    conn: ConnId,
    queue: &str,
    delivery: DeliveryId,
) {
    if let Some((msg, outcome)) = awaiting.remove(&delivery) {
        shared.record(Op::SettleConfirmed {
            conn,
            queue: queue.to_owned(),
            msg,
            outcome,
        });
    }
}
