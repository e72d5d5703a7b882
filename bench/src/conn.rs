//! One connection: the engine pumped over a socket from the I/O seam, and
//! the producers and consumers whose links share it.
//!
//! This drives `sluice::amqp::engine::Connection` directly rather than
//! `sluice::client::Client`, because a producer needs its own timer (a
//! fixed rate) and must keep writing while reads arrive: the socket is
//! split, and one `select!` waits on read, write and the earliest deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::engine::{
    ClientSasl, Connection, ConnectionConfig, EngineError, Event, LinkId, LinkOptions, SessionId,
};
use sluice::amqp::types::{ReceiverSettleMode, Role, SenderSettleMode, Source, Target};
use sluice::io::{self as seam, Io, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Barrier, Semaphore};

use crate::cli;
use crate::consumer::Consumer;
use crate::probe::Template;
use crate::producer::{Producer, ProducerPlan};
use crate::stats::{ConsumerStats, ProducerStats, Shared};

/// How long the handshake and each attach may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections opening at once (from the connect to the broker's `open`):
/// fewer than Sluice's `limits.max_handshakes_per_source` (128), past which a
/// broker closes an address's new connections at accept.
pub const CONNECTS_AT_ONCE: usize = 64;

/// How often the loop looks at the shared counters when nothing happens.
const TICK: Duration = Duration::from_millis(50);

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused a command.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The broker closed the connection.
    #[error("connection closed by the broker: {0}")]
    Closed(String),
    /// The broker refused or detached a link.
    #[error("link {0} refused or detached: {1}")]
    Link(String, String),
    /// Setup took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Another connection of the run failed to set up.
    #[error("stopped: another connection failed to set up")]
    Stopped,
}

/// What one connection carries.
#[derive(Debug, Clone)]
pub struct ConnPlan {
    /// host:port.
    pub addr: String,
    /// Host name for `open`.
    pub host: String,
    /// Login.
    pub sasl: ClientSasl,
    /// The node address, or with `queues` above 1 the pattern of the
    /// queues' addresses (see [`cli::queue_address`]).
    pub address: String,
    /// How many queues the links are spread over.
    pub queues: usize,
    /// Copies of each confirmed message the consumers get in all (the
    /// consumer count when they subscribe to one topic, else 1).
    pub copies: u64,
    /// The consumers' JMS selector, if any.
    pub selector: Option<String>,
    /// Consumers: their numbers.
    pub consumers: Vec<u32>,
    /// Producers.
    pub producers: Vec<ProducerPlan>,
    /// Consumer credit.
    pub prefetch: u32,
    /// Producers send pre-settled (at most once). Consumers always let the
    /// broker choose, and accept what arrives unsettled.
    pub presettled: bool,
    /// How many producers the run has (for seq tracking).
    pub total_producers: usize,
    /// Total messages of a `--count` run (consumers-only runs stop there).
    pub count: Option<u64>,
    /// End of the send phase of a `--duration` run.
    pub deadline_after: Option<Duration>,
    /// Once producers are done, how long consumers wait for the rest.
    pub drain_timeout: Duration,
    /// The message every producer sends.
    pub template: Template,
    /// The run's id.
    pub run_id: u32,
    /// The run's clock origin.
    pub base: Instant,
    /// `--trace`.
    pub trace: bool,
}

/// What one connection's links did.
#[derive(Debug, Default)]
pub struct ConnResult {
    /// Per producer, with its number.
    pub producers: Vec<(u32, ProducerStats)>,
    /// Per consumer.
    pub consumers: Vec<ConsumerStats>,
}

struct Driver {
    io: TokioIo,
    conn: Connection,
    reader: ReadHalf<<TokioIo as Io>::Stream>,
    writer: WriteHalf<<TokioIo as Io>::Stream>,
    out: BytesMut,
    read_buf: Vec<u8>,
    events: VecDeque<Event>,
    /// Link names, for error messages.
    names: Vec<(LinkId, String)>,
    /// Print events (but deliveries and dispositions) to stderr.
    trace: bool,
}

impl Driver {
    async fn connect(io: TokioIo, plan: &ConnPlan, id: usize) -> Result<Self, ConnError> {
        let stream = io.connect(&plan.addr).await?;
        let (reader, writer) = tokio::io::split(stream);
        let mut config = ConnectionConfig::new(format!("sluice-bench-{}-{id}", plan.run_id));
        config.hostname = Some(plan.host.clone());
        let conn = Connection::client(config, plan.sasl.clone(), io.now());
        let mut driver = Self {
            io,
            conn,
            reader,
            writer,
            out: BytesMut::with_capacity(64 * 1024),
            read_buf: vec![0; 64 * 1024],
            events: VecDeque::new(),
            names: Vec::new(),
            trace: plan.trace,
        };
        driver
            .wait_for("open", |e| matches!(e, Event::Opened { .. }))
            .await?;
        Ok(driver)
    }

    /// Moves the engine's output and events into the driver.
    fn collect(&mut self) {
        while let Some(bytes) = self.conn.poll_transmit() {
            self.out.extend_from_slice(&bytes);
        }
        while let Some(event) = self.conn.poll_event() {
            if self.trace && !matches!(event, Event::Delivery { .. } | Event::Disposition { .. }) {
                eprintln!("event: {event:?}");
            }
            self.events.push_back(event);
        }
    }

    /// Waits for one of: bytes to read, room to write what is queued, or
    /// `wake` (or the engine's own timer).
    async fn step(&mut self, wake: Option<Instant>) -> Result<(), ConnError> {
        self.collect();
        if !self.events.is_empty() {
            // Events to handle first; still push out what fits without
            // waiting, so that the peer gets our sends early.
            return Ok(());
        }
        let deadline = match (wake, self.conn.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let writing = !self.out.is_empty();
        tokio::select! {
            read = self.reader.read(&mut self.read_buf) => {
                let read = read?;
                if read == 0 {
                    return Err(ConnError::Closed("end of stream".into()));
                }
                self.conn.handle_bytes(self.io.now(), &self.read_buf[..read]);
            }
            written = self.writer.write(&self.out), if writing => {
                let written = written?;
                self.out.advance(written);
                if self.out.is_empty() {
                    self.writer.flush().await?;
                }
            }
            () = sleep_until(deadline) => self.conn.handle_timeout(self.io.now()),
        }
        self.collect();
        Ok(())
    }

    async fn next_event(&mut self) -> Result<Event, ConnError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if self.conn.is_finished() {
                return Err(ConnError::Closed("connection finished".into()));
            }
            self.step(None).await?;
        }
    }

    /// Pumps until an event matches, within [`SETUP_TIMEOUT`], keeping the
    /// others in order.
    async fn wait_for(
        &mut self,
        what: &'static str,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<Event, ConnError> {
        let mut skipped = VecDeque::new();
        let timeout = seam::sleep_until(self.io.now() + SETUP_TIMEOUT);
        tokio::pin!(timeout);
        let found = loop {
            let event = tokio::select! {
                event = self.next_event() => event?,
                () = &mut timeout => return Err(ConnError::Timeout(what)),
            };
            if wanted(&event) {
                break event;
            }
            if let Event::Closed { local, remote } = &event {
                return Err(ConnError::Closed(format!(
                    "{:?}",
                    local.clone().or(remote.clone())
                )));
            }
            skipped.push_back(event);
        };
        skipped.extend(self.events.drain(..));
        self.events = skipped;
        Ok(found)
    }

    async fn attach(
        &mut self,
        session: SessionId,
        options: LinkOptions,
    ) -> Result<LinkId, ConnError> {
        let name = options.name.clone();
        let link = self.conn.attach(session, options)?;
        self.names.push((link, name.clone()));
        let attached = self
            .wait_for(
                "attach",
                |e| matches!(e, Event::LinkAttached { link: l, .. } if *l == link),
            )
            .await?;
        if let Event::LinkAttached { remote, .. } = attached {
            let refused = match remote.role {
                Role::Sender => remote.source.is_none(),
                Role::Receiver => remote.target.is_none(),
            };
            if refused {
                let detached = self
                    .wait_for(
                        "detach",
                        |e| matches!(e, Event::LinkDetached { link: l, .. } if *l == link),
                    )
                    .await?;
                let why = match detached {
                    Event::LinkDetached { error, .. } => format!("{error:?}"),
                    _ => String::new(),
                };
                return Err(ConnError::Link(name, why));
            }
        }
        Ok(link)
    }

    fn name(&self, link: LinkId) -> String {
        self.names
            .iter()
            .find(|(l, _)| *l == link)
            .map_or_else(|| format!("{link:?}"), |(_, name)| name.clone())
    }

    /// The reason behind an engine error: a refused command usually follows
    /// a detach or close from the broker that is still among the events.
    fn explain(&mut self, error: EngineError) -> ConnError {
        self.collect();
        let events: Vec<Event> = self.events.drain(..).collect();
        for event in events {
            match event {
                Event::LinkDetached { link, error, .. } => {
                    return ConnError::Link(self.name(link), format!("{error:?}"));
                }
                Event::Closed { local, remote } => {
                    return ConnError::Closed(format!("{:?}", local.or(remote)));
                }
                _ => {}
            }
        }
        if self.conn.is_finished() {
            return ConnError::Closed(format!("connection finished ({error})"));
        }
        ConnError::Engine(error)
    }

    /// Closes the connection, waiting briefly for the broker's answer.
    async fn close(mut self) {
        self.conn.close(self.io.now(), None);
        let give_up = self.io.now() + Duration::from_secs(2);
        while !self.conn.is_finished() && self.io.now() < give_up {
            self.events.clear();
            if self.step(Some(give_up)).await.is_err() {
                break;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => seam::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs one connection: connects, attaches its consumers, waits at
/// `consumers_ready` for every connection's consumers, attaches its
/// producers, waits at `go`, and runs until its links are done.
pub async fn run(
    io: TokioIo,
    id: usize,
    plan: ConnPlan,
    shared: Arc<Shared>,
    consumers_ready: Arc<Barrier>,
    go: Arc<Barrier>,
    connecting: Arc<Semaphore>,
) -> Result<ConnResult, ConnError> {
    let setup = async {
        // The semaphore is never closed; were it, connecting unbounded is
        // still correct.
        let permit = connecting.acquire().await.ok();
        let mut driver = Driver::connect(io, &plan, id).await?;
        drop(permit);
        let session = driver.conn.begin()?;
        driver
            .wait_for(
                "begin",
                |e| matches!(e, Event::SessionBegun { session: s, .. } if *s == session),
            )
            .await?;
        let mut consumers = Vec::new();
        for &number in &plan.consumers {
            let options = LinkOptions {
                name: format!("sluice-bench-{}-consumer-{number}", plan.run_id),
                role: Role::Receiver,
                source: Some(
                    Source {
                        address: Some(cli::queue_address(&plan.address, plan.queues, number)),
                        filter: plan.selector.iter().map(|text| selector(text)).collect(),
                        ..Source::default()
                    }
                    .into(),
                ),
                target: Some(Target::default().into()),
                // As Proton's receivers: the broker chooses. (RabbitMQ 3.10
                // detaches a consumer that asks for `settled`.)
                snd_settle_mode: SenderSettleMode::Mixed,
                rcv_settle_mode: ReceiverSettleMode::First,
            };
            let link = driver.attach(session, options).await?;
            driver.conn.flow(link, plan.prefetch, false)?;
            consumers.push(Consumer::new(
                link,
                plan.run_id,
                plan.base,
                plan.prefetch,
                plan.total_producers,
            ));
        }
        Ok::<_, ConnError>((driver, session, consumers))
    };
    // A connection that fails setup still reaches the barriers, so that the
    // others do not wait forever; its error is reported after.
    let (mut driver, session, consumers) = match setup.await {
        Ok(ok) => ok,
        Err(error) => {
            shared.failed.store(true, Ordering::Relaxed);
            consumers_ready.wait().await;
            go.wait().await;
            return Err(error);
        }
    };
    consumers_ready.wait().await;
    let mut links = Vec::new();
    let mut setup_error = None;
    for p in &plan.producers {
        let options = LinkOptions {
            name: format!("sluice-bench-{}-producer-{}", plan.run_id, p.id),
            role: Role::Sender,
            source: Some(Source::default().into()),
            target: Some(
                Target {
                    address: Some(cli::queue_address(&plan.address, plan.queues, p.id)),
                    ..Target::default()
                }
                .into(),
            ),
            snd_settle_mode: if plan.presettled {
                SenderSettleMode::Settled
            } else {
                SenderSettleMode::Unsettled
            },
            rcv_settle_mode: ReceiverSettleMode::First,
        };
        match driver.attach(session, options).await {
            Ok(link) => links.push(link),
            Err(error) => {
                setup_error = Some(error);
                break;
            }
        }
    }
    if setup_error.is_some() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    go.wait().await;
    if let Some(error) = setup_error {
        return Err(error);
    }
    let start = io.now();
    let deadline = plan.deadline_after.map(|d| start + d);
    let mut producers: Vec<Producer> = plan
        .producers
        .iter()
        .zip(links)
        .map(|(p, link)| {
            let mut p = p.clone();
            p.deadline = deadline;
            Producer::new(p, link, plan.template.clone(), plan.base, start)
        })
        .collect();
    let mut consumers = consumers;
    let result = drive(
        &mut driver,
        &plan,
        &shared,
        &mut producers,
        &mut consumers,
        deadline,
    )
    .await;
    driver.close().await;
    result?;
    Ok(ConnResult {
        producers: producers.into_iter().map(|p| (p.id(), p.stats)).collect(),
        consumers: consumers.into_iter().map(|c| c.stats).collect(),
    })
}

async fn drive(
    driver: &mut Driver,
    plan: &ConnPlan,
    shared: &Arc<Shared>,
    producers: &mut [Producer],
    consumers: &mut [Consumer],
    deadline: Option<Instant>,
) -> Result<(), ConnError> {
    let io = driver.io;
    let now_fn = || io.now();
    let total_producers = plan.total_producers;
    let mut last_receive = io.now();
    let mut consumers_done = consumers.is_empty();
    loop {
        let mut wake = None;
        for p in producers.iter_mut() {
            let next = p.pump(&mut driver.conn, &now_fn, shared);
            wake = earliest(wake, next.map_err(|e| driver.explain(e))?);
        }
        while let Some(event) = driver.events.pop_front() {
            match event {
                Event::Disposition {
                    delivery,
                    state,
                    settled,
                } => {
                    if let Some(p) = producers.iter_mut().find(|p| p.link == delivery.link) {
                        p.on_outcome(state.as_ref(), settled, io.now(), shared);
                    }
                }
                Event::Delivery {
                    delivery,
                    message,
                    settled,
                    ..
                } => {
                    if let Some(c) = consumers.iter_mut().find(|c| c.link == delivery.link) {
                        let now = io.now();
                        let fresh =
                            c.on_delivery(&mut driver.conn, delivery, message, settled, now);
                        if fresh.map_err(|e| driver.explain(e))? {
                            Shared::add(&shared.received, 1);
                        }
                        last_receive = now;
                    }
                }
                Event::LinkDetached { link, error, .. } => {
                    return Err(ConnError::Link(driver.name(link), format!("{error:?}")));
                }
                Event::Closed { local, remote } => {
                    return Err(ConnError::Closed(format!("{:?}", local.or(remote))));
                }
                _ => {}
            }
        }
        if shared.failed.load(Ordering::Relaxed) {
            return Err(ConnError::Stopped);
        }
        let now = io.now();
        if !consumers_done {
            let producers_done = shared.producers_done.load(Ordering::Relaxed) >= total_producers;
            let received = Shared::get(&shared.received);
            consumers_done = if total_producers == 0 {
                plan.count.is_some_and(|count| received >= count)
                    || deadline.is_some_and(|d| now >= d)
                    || now >= last_receive + plan.drain_timeout.max(Duration::from_secs(1)) * 4
            } else {
                producers_done
                    && (received >= Shared::get(&shared.confirmed).saturating_mul(plan.copies)
                        || now >= last_receive + plan.drain_timeout)
            };
        }
        if consumers_done && producers.iter().all(Producer::is_done) {
            return Ok(());
        }
        driver.step(earliest(wake, Some(now + TICK))).await?;
    }
}

/// A source's filter-set entry holding the JMS selector `text`.
fn selector(text: &str) -> (Value, Value) {
    let filter = Described {
        descriptor: Descriptor::Name(Symbol::from_static("apache.org:selector-filter:string")),
        value: Value::from(text),
    };
    (
        Value::Symbol(Symbol::from_static("jms-selector")),
        Value::from(filter),
    )
}
