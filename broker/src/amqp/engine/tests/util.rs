//! The `Pair` harness: a client and a server engine back to back in memory,
//! with a virtual clock (after quinn-proto's `tests/util.rs`).
//!
//! `drive` moves `poll_transmit` bytes both ways until both sides are quiet,
//! optionally cutting every delivery into random-size chunks from a seeded
//! ChaCha RNG (to prove reassembly across arbitrary splits); `advance` and
//! `step` move the virtual clock and fire both sides' timers. Everything each
//! side writes is kept (`client_wire`, `server_wire`) so tests can decode
//! the exact frames sent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::amqp::codec::{Encode, Symbol};
use crate::amqp::engine::{
    ClientSasl, Connection, ConnectionConfig, DeliveryId, Event, LinkId, LinkOptions, LinkReply,
    SaslVerdict, ServerSasl, SessionId,
};
use crate::amqp::frame::{Frame, FrameDecoder, Layer, PROTOCOL_HEADER_LEN, put_amqp_frame};
use crate::amqp::types::{
    Accepted, AttachSource, Close, DeliveryState, Error, Message, Performative, ReceiverSettleMode,
    Role, SaslCode, SenderSettleMode, Source, Target, Transfer,
};
use crate::sasl::PlainCredentials;
use crate::sasl::scram::{Lookup, ScramCredential, ScramServer};

/// The user name the test authenticator accepts with PLAIN.
pub(super) const USER: &str = "alice";
/// The password the test authenticator accepts with PLAIN.
pub(super) const PASSWORD: &str = "secret";
/// The identity the test authenticator gives clients that skip SASL.
pub(super) const GUEST: &str = "guest";

/// Rounds `drive` may take before the pair is declared live-locked.
const DRIVE_ROUNDS_MAX: usize = 10_000;
/// The largest chunk a chunked delivery hands to `handle_bytes`.
const CHUNK_BYTES_MAX: usize = 64;

/// Offers SCRAM-SHA-256, PLAIN and ANONYMOUS; SCRAM and PLAIN accept only
/// [`USER`] / [`PASSWORD`]. Answers the server's SASL events as a broker's
/// driver would, at once.
#[derive(Debug, Default)]
pub(super) struct TestAuth {
    /// Accept clients that skip SASL, as [`GUEST`].
    pub allow_unauthenticated: bool,
    /// The SCRAM exchange in progress.
    scram: Option<ScramServer>,
}

impl Clone for TestAuth {
    /// A fresh authenticator with the same settings.
    fn clone(&self) -> Self {
        Self {
            allow_unauthenticated: self.allow_unauthenticated,
            scram: None,
        }
    }
}

impl TestAuth {
    /// An authenticator that also admits clients that skip SASL.
    pub fn guest() -> Self {
        Self {
            allow_unauthenticated: true,
            scram: None,
        }
    }

    /// What the server offers.
    pub fn sasl(&self) -> ServerSasl {
        ServerSasl {
            mechanisms: ["SCRAM-SHA-256", "PLAIN", "ANONYMOUS"]
                .into_iter()
                .map(Symbol::from_static)
                .collect(),
            unauthenticated: self.allow_unauthenticated.then(|| GUEST.to_owned()),
        }
    }

    /// The verdict on a SASL event, or `None` for any other event.
    pub fn answer(&mut self, event: &Event) -> Option<SaslVerdict> {
        let accept = |identity: &str, additional_data: Option<Vec<u8>>| SaslVerdict::Accept {
            identity: identity.to_owned(),
            additional_data: additional_data.map(Bytes::from),
        };
        let refuse = SaslVerdict::Refuse(SaslCode::Auth);
        Some(match event {
            Event::SaslInit {
                mechanism,
                initial_response,
                ..
            } => match mechanism.as_str() {
                "ANONYMOUS" => accept("anonymous", None),
                "PLAIN" => match PlainCredentials::parse(initial_response) {
                    Some(PlainCredentials { authcid, password })
                        if authcid == USER && password == PASSWORD.as_bytes() =>
                    {
                        accept(USER, None)
                    }
                    _ => refuse,
                },
                _ => {
                    let credential = |user: &str| {
                        (user == USER)
                            .then(|| ScramCredential::derive(PASSWORD.as_bytes(), b"salt", 4096))
                    };
                    let lookup = Lookup {
                        credential: &credential,
                        decoy_salt: &|_| b"decoy".to_vec(),
                    };
                    match ScramServer::start(initial_response, "server-nonce", &lookup) {
                        Ok((server, first)) => {
                            self.scram = Some(server);
                            SaslVerdict::Challenge(Bytes::from(first))
                        }
                        Err(_) => refuse,
                    }
                }
            },
            Event::SaslResponse { response } => {
                match self.scram.take().map(|server| server.finish(response)) {
                    Some(Ok((identity, last))) => accept(&identity, Some(last)),
                    _ => refuse,
                }
            }
            _ => return None,
        })
    }
}

/// The base of every test's virtual clock.
// The engine takes time only as an argument; this is the one place the
// engine tests read the real clock, to get an `Instant` to count from.
#[allow(clippy::disallowed_methods)]
pub(super) fn base_instant() -> Instant {
    Instant::now() // determinism-ok: test clock base only
}

/// The client's default configuration in these tests.
pub(super) fn client_config() -> ConnectionConfig {
    ConnectionConfig {
        hostname: Some("localhost".to_owned()),
        ..ConnectionConfig::new("client")
    }
}

/// The server's default configuration in these tests.
pub(super) fn server_config() -> ConnectionConfig {
    ConnectionConfig::new("server")
}

/// A lone server engine at `now`, for feeding raw bytes.
pub(super) fn lone_server(config: ConnectionConfig, auth: TestAuth, now: Instant) -> Connection {
    Connection::server(config, auth.sasl(), now)
}

/// Options for a client link named `name` with our `role`.
pub(super) fn link_options(name: &str, role: Role) -> LinkOptions {
    LinkOptions {
        name: name.to_owned(),
        role,
        source: Some(
            Source {
                address: Some("client-side".to_owned()),
                ..Source::default()
            }
            .into(),
        ),
        target: Some(
            Target {
                address: Some("queue".to_owned()),
                ..Target::default()
            }
            .into(),
        ),
        snd_settle_mode: SenderSettleMode::Mixed,
        rcv_settle_mode: ReceiverSettleMode::First,
    }
}

/// The `accepted` outcome.
pub(super) fn accepted() -> Option<DeliveryState> {
    Some(DeliveryState::Accepted(Accepted))
}

/// The encoded message number `i`: one data section.
pub(super) fn message(i: u32) -> Bytes {
    Message::data(format!("message {i}").into_bytes()).encode()
}

/// Message number `i`, padded to about `bytes` bytes.
pub(super) fn sized_message(i: u32, bytes: usize) -> Bytes {
    let mut body = format!("message {i} ").into_bytes();
    body.resize(bytes, b'.');
    Message::data(body).encode()
}

/// A delivery tag for message number `i`.
pub(super) fn tag(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

/// Appends one AMQP frame, as a misbehaving or hand-driven peer would.
pub(super) fn raw_frame(
    buf: &mut BytesMut,
    channel: u16,
    performative: &impl Encode,
    payload: &[u8],
) {
    put_amqp_frame(buf, channel, performative, payload);
}

/// A single-frame transfer starting a delivery.
pub(super) fn first_transfer(handle: u32, delivery_id: u32, more: bool) -> Transfer {
    Transfer {
        handle,
        delivery_id: Some(delivery_id),
        delivery_tag: Some(tag(delivery_id)),
        message_format: Some(0),
        more,
        ..Transfer::default()
    }
}

/// One unit of a byte stream: a protocol header or a frame.
// Test-only and short-lived; boxing the frame would only obscure the
// patterns tests match it with.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Unit {
    /// An 8-byte protocol header, as sent.
    Header([u8; PROTOCOL_HEADER_LEN]),
    /// A frame and its declared size.
    Frame {
        /// The frame's size field.
        size: u32,
        /// The decoded frame.
        frame: Frame,
    },
}

/// Splits everything one side wrote into protocol headers and frames.
///
/// Panics if the stream does not decode exactly: an engine's output must
/// always be well formed.
pub(super) fn units(wire: &[u8]) -> Vec<Unit> {
    let decoder = FrameDecoder::new(u32::MAX);
    let mut buf = BytesMut::from(wire);
    let mut units = Vec::new();
    while !buf.is_empty() {
        if buf.starts_with(b"AMQP") {
            let header = *buf
                .first_chunk::<PROTOCOL_HEADER_LEN>()
                .expect("a whole protocol header");
            buf.advance(PROTOCOL_HEADER_LEN);
            units.push(Unit::Header(header));
            continue;
        }
        let size = u32::from_be_bytes(*buf.first_chunk::<4>().expect("a whole frame size"));
        let layer = if buf.get(5) == Some(&1) {
            Layer::Sasl
        } else {
            Layer::Amqp
        };
        match decoder.decode(&mut buf, layer) {
            Ok(Some(frame)) => units.push(Unit::Frame { size, frame }),
            Ok(None) => panic!("the stream ends inside a frame: {units:#?}"),
            Err(e) => panic!("the stream does not decode ({e}) after {units:#?}"),
        }
    }
    units
}

/// The AMQP performatives in a stream, with their channels.
pub(super) fn performatives(wire: &[u8]) -> Vec<(u16, Performative)> {
    units(wire)
        .into_iter()
        .filter_map(|unit| match unit {
            Unit::Frame {
                frame:
                    Frame::Amqp {
                        channel,
                        performative,
                        ..
                    },
                ..
            } => Some((channel, performative)),
            _ => None,
        })
        .collect()
}

/// The `close` a stream ends with; panics unless there is exactly one and it
/// is the last frame.
pub(super) fn closing(wire: &[u8]) -> Close {
    let performatives = performatives(wire);
    let closes: Vec<&Close> = performatives
        .iter()
        .filter_map(|(_, p)| match p {
            Performative::Close(close) => Some(close),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes.len(),
        1,
        "expected exactly one close in {performatives:#?}"
    );
    assert!(
        matches!(performatives.last(), Some((0, Performative::Close(_)))),
        "the close must be the last frame on channel 0: {performatives:#?}"
    );
    closes[0].clone()
}

/// The condition of the error a stream's `close` carries.
pub(super) fn close_condition(wire: &[u8]) -> String {
    let close = closing(wire);
    let error = close.error.expect("the close carries an error");
    error.condition.as_str().to_owned()
}

/// True if `event` is `Closed` by us with `condition`.
pub(super) fn closed_locally(event: &Event, condition: &str) -> bool {
    matches!(event, Event::Closed { local: Some(Error { condition: c, .. }), remote: None } if c == condition)
}

/// True if `event` is `Closed` by the peer with `condition`.
pub(super) fn closed_remotely(event: &Event, condition: &str) -> bool {
    matches!(event, Event::Closed { local: None, remote: Some(Error { condition: c, .. }) } if c == condition)
}

/// Hands `bytes` to `conn`, whole or in random-size chunks.
fn feed(conn: &mut Connection, now: Instant, bytes: &[u8], chunker: Option<&mut ChaCha8Rng>) {
    let Some(rng) = chunker else {
        conn.handle_bytes(now, bytes);
        return;
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = rng.gen_range(1..=rest.len().min(CHUNK_BYTES_MAX));
        let (chunk, tail) = rest.split_at(len);
        conn.handle_bytes(now, chunk);
        rest = tail;
    }
}

/// A client and a server engine connected in memory.
pub(super) struct Pair {
    /// The virtual clock.
    pub now: Instant,
    /// Where the virtual clock started.
    pub start: Instant,
    /// The client-role engine.
    pub client: Connection,
    /// The server-role engine.
    pub server: Connection,
    /// Every byte the client has written, in order.
    pub client_wire: Vec<u8>,
    /// Every byte the server has written, in order.
    pub server_wire: Vec<u8>,
    client_events: VecDeque<Event>,
    server_events: VecDeque<Event>,
    /// Cuts every delivery into random-size chunks when set.
    chunker: Option<ChaCha8Rng>,
    /// Answers the server's SASL events.
    auth: TestAuth,
}

impl Pair {
    /// A pair whose client has just sent its protocol header; nothing has
    /// been delivered yet.
    pub fn new(
        client: ConnectionConfig,
        sasl: ClientSasl,
        server: ConnectionConfig,
        auth: TestAuth,
    ) -> Self {
        let now = base_instant();
        Self {
            now,
            start: now,
            client: Connection::client(client, sasl, now),
            server: lone_server(server, auth.clone(), now),
            client_wire: Vec::new(),
            server_wire: Vec::new(),
            client_events: VecDeque::new(),
            server_events: VecDeque::new(),
            chunker: None,
            auth,
        }
    }

    /// From now on, delivers bytes in random-size chunks drawn from `seed`.
    pub fn chunked(mut self, seed: u64) -> Self {
        self.chunker = Some(ChaCha8Rng::seed_from_u64(seed));
        self
    }

    /// A pair with default configurations, connected with SASL ANONYMOUS.
    pub fn connected() -> Self {
        Self::connected_with(client_config(), server_config())
    }

    /// A pair connected with SASL ANONYMOUS, the handshake's events checked
    /// and consumed.
    pub fn connected_with(client: ConnectionConfig, server: ConnectionConfig) -> Self {
        let mut pair = Self::new(client, ClientSasl::Anonymous, server, TestAuth::default());
        pair.handshake();
        pair
    }

    /// Drives the handshake and checks both sides opened.
    pub fn handshake(&mut self) {
        self.drive();
        assert_events!(
            self.server_events(),
            [
                Event::Authenticated { .. },
                Event::Opened { remote } if remote.container_id == "client",
            ]
        );
        assert_events!(
            self.client_events(),
            [Event::Opened { remote } if remote.container_id == "server"]
        );
        assert!(!self.client.is_finished());
        assert!(!self.server.is_finished());
    }

    /// Moves the client's output to the server; false if it had none.
    pub fn client_to_server(&mut self) -> bool {
        let Some(bytes) = self.client.poll_transmit() else {
            self.collect();
            return false;
        };
        assert!(!bytes.is_empty(), "poll_transmit returned no bytes");
        self.client_wire.extend_from_slice(&bytes);
        feed(&mut self.server, self.now, &bytes, self.chunker.as_mut());
        self.collect();
        true
    }

    /// Moves the server's output to the client; false if it had none.
    pub fn server_to_client(&mut self) -> bool {
        let Some(bytes) = self.server.poll_transmit() else {
            self.collect();
            return false;
        };
        assert!(!bytes.is_empty(), "poll_transmit returned no bytes");
        self.server_wire.extend_from_slice(&bytes);
        feed(&mut self.client, self.now, &bytes, self.chunker.as_mut());
        self.collect();
        true
    }

    /// Exchanges bytes until neither side has anything to send.
    pub fn drive(&mut self) {
        for _ in 0..DRIVE_ROUNDS_MAX {
            let client_sent = self.client_to_server();
            let server_sent = self.server_to_client();
            if !client_sent && !server_sent {
                return;
            }
        }
        panic!("the pair was still talking after {DRIVE_ROUNDS_MAX} rounds");
    }

    /// Feeds raw bytes to the server as if the client had sent them.
    pub fn inject_to_server(&mut self, bytes: &[u8]) {
        feed(&mut self.server, self.now, bytes, self.chunker.as_mut());
        self.collect();
    }

    /// Moves the clock forward and fires both sides' timers (which do
    /// nothing unless due). Delivers nothing.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.collect();
    }

    /// Jumps the clock to the earliest deadline either side asked for and
    /// fires both sides' timers; false if neither has a timer.
    pub fn step(&mut self) -> bool {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return false;
        };
        assert!(next >= self.now, "a deadline in the past was not handled");
        self.now = next;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.collect();
        true
    }

    /// Virtual time since the pair was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn collect(&mut self) {
        while let Some(event) = self.client.poll_event() {
            self.client_events.push_back(event);
        }
        while let Some(event) = self.server.poll_event() {
            match self.auth.answer(&event) {
                Some(verdict) => self
                    .server
                    .answer_sasl(verdict)
                    .expect("the server awaits a verdict"),
                None => self.server_events.push_back(event),
            }
        }
    }

    /// Takes the client's events so far.
    pub fn client_events(&mut self) -> Vec<Event> {
        self.collect();
        self.client_events.drain(..).collect()
    }

    /// Takes the server's events so far.
    pub fn server_events(&mut self) -> Vec<Event> {
        self.collect();
        self.server_events.drain(..).collect()
    }

    /// The client begins a session; returns (client's id, server's id).
    pub fn begin(&mut self) -> (SessionId, SessionId) {
        let session = self.client.begin().expect("begin on an open connection");
        self.drive();
        let server_session = match self.server_events().as_slice() {
            [Event::SessionBegun { session, remote }] => {
                assert_eq!(
                    remote.remote_channel, None,
                    "the client's begin starts the session"
                );
                *session
            }
            other => panic!("expected SessionBegun on the server, got {other:#?}"),
        };
        assert_events!(
            self.client_events(),
            [
                Event::SessionBegun { session: s, remote } if *s == session && remote.remote_channel == Some(session.0),
            ]
        );
        (session, server_session)
    }

    /// Attaches a client link on `session` with `options`; the server
    /// accepts it. Returns (client's id, server's id).
    pub fn attach(&mut self, session: SessionId, options: LinkOptions) -> (LinkId, LinkId) {
        let role = options.role;
        let link = self
            .client
            .attach(session, options)
            .expect("attach on a mapped session");
        self.drive();
        let (server_link, reply) = match self.server_events().as_slice() {
            [
                Event::LinkAttached {
                    link,
                    remote,
                    initiated_by_peer: true,
                },
            ] => {
                assert_eq!(remote.role, role);
                let reply = LinkReply {
                    source: remote.source.as_ref().and_then(AttachSource::node).cloned(),
                    target: remote.target.clone(),
                    offered_capabilities: Vec::new(),
                };
                (*link, reply)
            }
            other => panic!("expected LinkAttached on the server, got {other:#?}"),
        };
        self.server
            .accept_link(server_link, reply)
            .expect("accept a link the peer attached");
        self.drive();
        assert_events!(
            self.client_events(),
            [
                Event::LinkAttached { link: l, remote, initiated_by_peer: false } if *l == link && remote.role != role,
            ]
        );
        assert_events!(self.server_events(), []);
        (link, server_link)
    }

    /// A session plus a client sender the server accepted.
    pub fn sender(&mut self, name: &str) -> (LinkId, LinkId) {
        let (session, _) = self.begin();
        self.attach(session, link_options(name, Role::Sender))
    }

    /// Grants `credit` from the server's receiving link and checks the
    /// client's sender sees it.
    pub fn grant(&mut self, client_link: LinkId, server_link: LinkId, credit: u32) {
        self.server
            .flow(server_link, credit, false)
            .expect("flow on a receiving link");
        self.drive();
        assert_events!(
            self.client_events(),
            [
                Event::Credit { link, credit: c, drain: false, available: None } if *link == client_link && *c == credit,
            ]
        );
        assert_eq!(self.client.credit(client_link), credit);
    }

    /// Sends message number `i` from the client, unsettled.
    pub fn send(&mut self, link: LinkId, i: u32) -> DeliveryId {
        self.client
            .send(link, tag(i), message(i), false)
            .expect("send under credit")
    }
}
