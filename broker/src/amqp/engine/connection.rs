//! The connection engine: protocol headers, SASL, and the connection's
//! sessions and links, as a sans-IO state machine.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::config::{ClientSasl, ConnectionConfig, SaslVerdict, ServerSasl};
use super::event::{DeliveryId, Event, LinkId, SessionId};
use super::link::{Link, LinkState, PartialDelivery};
use super::session::{PendingTransfer, Session, SessionState, ids_in_range, lowest_free};
use super::unfinished::UnfinishedBytes;
use crate::amqp::codec::Symbol;
use crate::amqp::frame::{
    EMPTY_FRAME, Frame, FrameDecoder, Layer, MIN_MAX_FRAME_SIZE, PROTOCOL_HEADER_LEN, ProtocolId,
    put_amqp_frame, put_sasl_frame, put_transfer_frame,
};
use crate::amqp::types::{
    Attach, AttachSource, AttachTarget, Begin, Close, DeliveryState, Detach, Disposition, End,
    Error, Flow, Open, Performative, ReceiverSettleMode, Role, SaslChallenge, SaslCode, SaslFrame,
    SaslInit, SaslMechanisms, SaslOutcome, SaslResponse, SenderSettleMode, Source, TXN_ID_MAX,
    TransactionalState, Transfer, acquisition, condition,
};
use crate::sasl::scram::ScramClient;

/// The shortest interval between our heartbeats, whatever idle timeout the
/// peer asks for: a peer cannot make us spin sending empty frames.
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// The highest link handle we accept per session: bounds the links one
/// session can make us track.
pub const HANDLE_MAX: u32 = 1023;

/// Where the connection is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Awaiting the client's first protocol header (server).
    ServerHello,
    /// Awaiting the client's AMQP header after SASL (server).
    ServerAfterSasl,
    /// Awaiting the server's answer to the header we sent (client).
    ClientHello(ProtocolId),
    /// Awaiting `sasl-init` (server).
    SaslAwaitInit,
    /// Awaiting the application's [`SaslVerdict`] on what the client sent
    /// (server); input waits unread.
    SaslDeciding,
    /// Awaiting the client's answer to our challenge (server).
    SaslAwaitResponse,
    /// Awaiting `sasl-mechanisms` (client).
    SaslAwaitMechanisms,
    /// Awaiting a challenge or `sasl-outcome` (client).
    SaslAwaitOutcome,
    /// Exchanging AMQP frames.
    Amqp,
    /// Reading nothing more.
    Done,
}

/// A disposition waiting to be written; consecutive ones are merged into
/// ranges when the output is polled.
#[derive(Debug, Clone, PartialEq)]
struct PendingDisposition {
    channel: u16,
    role: Role,
    id: u32,
    settled: bool,
    state: Option<DeliveryState>,
}

/// What the peer's `open` allows us.
#[derive(Debug, Clone, Copy)]
struct PeerLimits {
    max_frame_size: u32,
    channel_max: u16,
    idle_timeout: Option<Duration>,
}

/// A command the engine cannot carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
    /// No session has that id.
    #[error("no such session")]
    NoSuchSession,
    /// No link has that id.
    #[error("no such link")]
    NoSuchLink,
    /// The link is not attached (or not in the state the command needs).
    #[error("the link is not attached")]
    NotAttached,
    /// The command needs the other role (e.g. sending on a receiving link).
    #[error("the link has the wrong role for this command")]
    WrongRole,
    /// The peer has given no credit on this link.
    #[error("no link credit")]
    NoCredit,
    /// The message exceeds the peer's max-message-size.
    #[error("message of {size} bytes exceeds the peer's limit of {max}")]
    MessageTooLarge {
        /// The message's size.
        size: u64,
        /// The peer's limit.
        max: u64,
    },
    /// Every channel the peer allows is in use.
    #[error("no free channel")]
    NoFreeChannel,
    /// Every handle the peer allows is in use.
    #[error("no free link handle")]
    NoFreeHandle,
    /// The delivery is not unsettled on this connection.
    #[error("no such unsettled delivery")]
    NoSuchDelivery,
    /// A delivery tag longer than the spec's 32 bytes.
    #[error("delivery tag of {0} bytes exceeds 32")]
    TagTooLong(usize),
}

/// The longest delivery tag the spec allows (part 2 §2.8.7).
const DELIVERY_TAG_MAX: usize = 32;

/// How many bytes of queued transfers are encoded ahead of the output being
/// polled. A transfer's frames are written only as output is taken, so a
/// link with a large credit window over a slow socket holds its queued
/// messages (which share their bodies with the queue) rather than an
/// encoded copy of each: 1,000 consumers with 1,000 credit each had made
/// the broker hold a gigabyte of frames no socket could take yet.
const TRANSFERS_AHEAD_BYTES: usize = 64 * 1024;

/// How a link we initiate is set up.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The link's name.
    pub name: String,
    /// Our role.
    pub role: Role,
    /// The source terminus.
    pub source: Option<AttachSource>,
    /// The target terminus.
    pub target: Option<AttachTarget>,
    /// The sender's settle mode.
    pub snd_settle_mode: SenderSettleMode,
    /// The receiver's settle mode.
    pub rcv_settle_mode: ReceiverSettleMode,
}

/// Our answer to a link the peer attached.
#[derive(Debug, Clone, Default)]
pub struct LinkReply {
    /// The source terminus as we set it up.
    pub source: Option<Source>,
    /// The target terminus as we set it up.
    pub target: Option<AttachTarget>,
    /// Capabilities we offer on the link.
    pub offered_capabilities: Vec<Symbol>,
}

/// One AMQP 1.0 connection as a sans-IO state machine.
///
/// Feed it received bytes with [`Connection::handle_bytes`] and expired
/// timers with [`Connection::handle_timeout`]; after each input, drain
/// [`Connection::poll_transmit`], [`Connection::poll_timeout`] and
/// [`Connection::poll_event`], in that order. Commands (`begin`, `attach`,
/// `send`, `disposition`, …) queue frames for the next `poll_transmit`.
///
/// Every protocol violation by the peer closes the connection with the
/// spec's error condition: the engine never panics on input.
pub struct Connection {
    config: ConnectionConfig,
    server_sasl: ServerSasl,
    client_sasl: ClientSasl,
    /// The client's SCRAM exchange, once started.
    scram: Option<ScramClient>,
    phase: Phase,
    decoder: FrameDecoder,
    input: BytesMut,
    out: BytesMut,
    pending_dispositions: Vec<PendingDisposition>,
    events: VecDeque<Event>,
    open_sent: bool,
    peer: Option<PeerLimits>,
    close_sent: bool,
    close_received: bool,
    sessions: BTreeMap<u16, Session>,
    /// Our channel, by the peer's channel.
    remote_channels: BTreeMap<u16, u16>,
    now: Instant,
    last_received: Instant,
    last_sent: Instant,
    close_deadline: Option<Instant>,
    /// When the peer's `open` must have arrived by.
    handshake_deadline: Option<Instant>,
    /// The error our `close` carried, reported when the connection ends.
    local_close_error: Option<Error>,
    finished: bool,
    /// The channel after the last one whose transfers were written: the
    /// next poll starts there, so that one busy session cannot hold back
    /// the others.
    next_channel: u16,
}

impl Connection {
    /// A server-side engine: it awaits the client's protocol header.
    pub fn server(config: ConnectionConfig, sasl: ServerSasl, now: Instant) -> Self {
        Self::new(config, sasl, ClientSasl::None, Phase::ServerHello, now)
    }

    /// A client-side engine: it sends its protocol header (and, without
    /// SASL, its `open`) straight away.
    pub fn client(config: ConnectionConfig, sasl: ClientSasl, now: Instant) -> Self {
        let hello = if sasl.uses_sasl() {
            ProtocolId::Sasl
        } else {
            ProtocolId::Amqp
        };
        let mut conn = Self::new(
            config,
            ServerSasl::default(),
            sasl,
            Phase::ClientHello(hello),
            now,
        );
        conn.out.extend_from_slice(&hello.header());
        if hello == ProtocolId::Amqp {
            conn.send_open();
        }
        conn
    }

    fn new(
        config: ConnectionConfig,
        server_sasl: ServerSasl,
        client_sasl: ClientSasl,
        phase: Phase,
        now: Instant,
    ) -> Self {
        // A window of 0 could never be refreshed into use.
        let config = ConnectionConfig {
            session_window: config.session_window.max(1),
            ..config
        };
        let handshake_deadline = config.handshake_timeout.map(|timeout| now + timeout);
        Self {
            decoder: FrameDecoder::new(config.advertised_max_frame_size()),
            config,
            server_sasl,
            client_sasl,
            scram: None,
            phase,
            input: BytesMut::new(),
            out: BytesMut::new(),
            pending_dispositions: Vec::new(),
            events: VecDeque::new(),
            open_sent: false,
            peer: None,
            close_sent: false,
            close_received: false,
            sessions: BTreeMap::new(),
            remote_channels: BTreeMap::new(),
            now,
            last_received: now,
            last_sent: now,
            close_deadline: None,
            handshake_deadline,
            local_close_error: None,
            finished: false,
            next_channel: 0,
        }
    }

    // ---- inputs -------------------------------------------------------

    /// Feeds bytes received from the peer.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.advance_clock(now);
        if self.phase == Phase::Done || bytes.is_empty() {
            return;
        }
        self.last_received = now;
        self.input.extend_from_slice(bytes);
        while self.phase != Phase::Done && self.read_one() {}
    }

    /// Fires the timers that are due at `now`: the idle timeout, heartbeats
    /// and the wait for the peer's `close`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        if self.close_deadline.is_some_and(|deadline| now >= deadline) {
            self.events.push_back(Event::Closed {
                local: self.local_close_error.take(),
                remote: None,
            });
            self.finish();
            return;
        }
        if self.phase == Phase::Done {
            return;
        }
        if self
            .handshake_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            self.end_handshake_or_fail(condition::RESOURCE_LIMIT_EXCEEDED, "handshake timed out");
            return;
        }
        if let Some(timeout) = self.config.idle_timeout
            && now >= self.last_received + timeout
        {
            self.end_handshake_or_fail(condition::RESOURCE_LIMIT_EXCEEDED, "idle timeout expired");
            return;
        }
        if let Some(deadline) = self.heartbeat_deadline()
            && now >= deadline
        {
            self.out.extend_from_slice(&EMPTY_FRAME);
            self.last_sent = now;
        }
    }

    /// Closes with `why` in the AMQP layer, or, before it, just ends: before
    /// the protocol header, or inside SASL, frames of ours would be garbage.
    fn end_handshake_or_fail(&mut self, condition: &'static str, why: &str) {
        if self.phase == Phase::Amqp {
            self.fail(Error::new(condition, why));
        } else {
            self.handshake_failed(condition, why.into());
        }
    }

    fn advance_clock(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    // ---- outputs ------------------------------------------------------

    /// Bytes to write to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.refresh_windows();
        self.flush_dispositions();
        self.write_queued_transfers();
        if self.out.is_empty() {
            return None;
        }
        self.last_sent = self.now;
        Some(self.out.split().freeze())
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let idle = (self.phase != Phase::Done)
            .then(|| self.config.idle_timeout.map(|t| self.last_received + t))
            .flatten();
        [
            idle,
            self.heartbeat_deadline(),
            self.close_deadline,
            self.handshake_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Received bytes held while waiting for the rest of a frame. Never more
    /// than one frame: the decoder refuses a frame above our max-frame-size
    /// before buffering it (the `frame_stream` fuzz target asserts it).
    pub fn buffered_bytes(&self) -> usize {
        self.input.len()
    }

    /// Whether the peer's `close` arrived. After a `close` of ours, this
    /// says the peer answered it, and so had read everything sent before.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// True once the connection is over: write out `poll_transmit`, then
    /// drop the transport.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// When we must send a heartbeat: half the peer's idle timeout after we
    /// last sent anything, so that one late frame does not trip it.
    fn heartbeat_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Amqp || !self.open_sent || self.close_sent {
            return None;
        }
        let timeout = self.peer?.idle_timeout?;
        Some(self.last_sent + (timeout / 2).max(HEARTBEAT_INTERVAL_MIN))
    }

    // ---- reading ------------------------------------------------------

    /// Handles one header or frame from the input; false if more bytes are
    /// needed.
    fn read_one(&mut self) -> bool {
        match self.phase {
            Phase::ServerHello | Phase::ServerAfterSasl | Phase::ClientHello(_) => {
                self.read_header()
            }
            Phase::SaslAwaitInit
            | Phase::SaslAwaitResponse
            | Phase::SaslAwaitMechanisms
            | Phase::SaslAwaitOutcome => match self.decoder.decode(&mut self.input, Layer::Sasl) {
                Ok(Some(Frame::Sasl(frame))) => {
                    self.handle_sasl(frame);
                    true
                }
                Ok(Some(_)) => unreachable!("the SASL layer yields only SASL frames"),
                Ok(None) => false,
                Err(e) => {
                    self.handshake_failed(condition::FRAMING_ERROR, e.to_string());
                    false
                }
            },
            Phase::Amqp => match self.decoder.decode(&mut self.input, Layer::Amqp) {
                Ok(Some(frame)) => {
                    self.handle_frame(frame);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    self.fail(Error::new(e.condition(), e.to_string()));
                    false
                }
            },
            Phase::SaslDeciding | Phase::Done => false,
        }
    }

    fn read_header(&mut self) -> bool {
        let Some(header) = self.input.first_chunk::<PROTOCOL_HEADER_LEN>().copied() else {
            return false;
        };
        self.input.advance(PROTOCOL_HEADER_LEN);
        let received = ProtocolId::parse(&header);
        match (self.phase, received) {
            (Phase::ServerHello, Some(ProtocolId::Sasl)) => self.offer_mechanisms(),
            (Phase::ServerHello, Some(ProtocolId::Amqp)) => {
                match self.server_sasl.unauthenticated.clone() {
                    Some(identity) => {
                        self.events.push_back(Event::Authenticated { identity });
                        self.out.extend_from_slice(&ProtocolId::Amqp.header());
                        self.phase = Phase::Amqp;
                    }
                    None => self.refuse_header(ProtocolId::Sasl, "SASL authentication is required"),
                }
            }
            (Phase::ServerAfterSasl, Some(ProtocolId::Amqp)) => {
                self.out.extend_from_slice(&ProtocolId::Amqp.header());
                self.phase = Phase::Amqp;
            }
            (Phase::ClientHello(sent), Some(got)) if sent == got => {
                self.phase = match got {
                    ProtocolId::Sasl => Phase::SaslAwaitMechanisms,
                    _ => Phase::Amqp,
                };
            }
            (Phase::ServerHello, Some(ProtocolId::Tls)) => {
                self.refuse_header(ProtocolId::Sasl, "TLS is not supported")
            }
            (Phase::ServerHello, None) => {
                self.refuse_header(ProtocolId::Sasl, "not an AMQP 1.0 protocol header")
            }
            (Phase::ServerAfterSasl, _) => {
                self.refuse_header(ProtocolId::Amqp, "expected the AMQP protocol header")
            }
            _ => self.handshake_failed(
                condition::FRAMING_ERROR,
                format!("unexpected protocol header {header:?}"),
            ),
        }
        true
    }

    /// Answers an unacceptable protocol header with the one we support, then
    /// closes, as the spec prescribes (part 2 §2.2).
    fn refuse_header(&mut self, supported: ProtocolId, why: &str) {
        self.out.extend_from_slice(&supported.header());
        self.handshake_failed(condition::FRAMING_ERROR, why.to_owned());
    }

    /// Ends a connection that never got as far as AMQP frames.
    fn handshake_failed(&mut self, condition: &'static str, description: String) {
        self.events.push_back(Event::Closed {
            local: Some(Error::new(condition, description)),
            remote: None,
        });
        self.finish();
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.finished = true;
        self.input.clear();
    }

    // ---- SASL ---------------------------------------------------------

    fn offer_mechanisms(&mut self) {
        self.out.extend_from_slice(&ProtocolId::Sasl.header());
        if self.server_sasl.mechanisms.is_empty() {
            return self.handshake_failed(
                condition::INTERNAL_ERROR,
                "no SASL mechanism is configured".into(),
            );
        }
        let mechanisms = self.server_sasl.mechanisms.clone();
        put_sasl_frame(
            &mut self.out,
            &SaslFrame::Mechanisms(SaslMechanisms { mechanisms }),
        );
        self.phase = Phase::SaslAwaitInit;
    }

    fn handle_sasl(&mut self, frame: SaslFrame) {
        match (self.phase, frame) {
            (Phase::SaslAwaitInit, SaslFrame::Init(init)) => self.sasl_init(init),
            (Phase::SaslAwaitResponse, SaslFrame::Response(SaslResponse { response })) => {
                self.phase = Phase::SaslDeciding;
                self.events.push_back(Event::SaslResponse { response });
            }
            (Phase::SaslAwaitMechanisms, SaslFrame::Mechanisms(offer)) => {
                self.choose_mechanism(offer)
            }
            (Phase::SaslAwaitOutcome, SaslFrame::Challenge(SaslChallenge { challenge })) => {
                self.answer_challenge(&challenge)
            }
            (Phase::SaslAwaitOutcome, SaslFrame::Outcome(outcome)) => self.sasl_outcome(outcome),
            (_, frame) => self.handshake_failed(
                condition::FRAMING_ERROR,
                format!("unexpected SASL frame {frame:?}"),
            ),
        }
    }

    /// Hands a `sasl-init` for an offered mechanism to the application;
    /// refuses any other mechanism without asking it.
    fn sasl_init(&mut self, init: SaslInit) {
        if !self.server_sasl.mechanisms.contains(&init.mechanism) {
            return self.refuse_sasl(SaslCode::Auth);
        }
        self.phase = Phase::SaslDeciding;
        self.events.push_back(Event::SaslInit {
            mechanism: init.mechanism,
            initial_response: init.initial_response.unwrap_or_default(),
            hostname: init.hostname,
        });
    }

    /// Carries out the application's verdict on the last [`Event::SaslInit`]
    /// or [`Event::SaslResponse`] (server role), then reads on.
    ///
    /// # Errors
    ///
    /// [`EngineError::Closed`] if the connection is not waiting for a
    /// verdict (it ended meanwhile, or none was asked for).
    pub fn answer_sasl(&mut self, verdict: SaslVerdict) -> Result<(), EngineError> {
        if self.phase != Phase::SaslDeciding {
            return Err(EngineError::Closed);
        }
        match verdict {
            SaslVerdict::Challenge(challenge) => {
                put_sasl_frame(
                    &mut self.out,
                    &SaslFrame::Challenge(SaslChallenge { challenge }),
                );
                self.phase = Phase::SaslAwaitResponse;
            }
            SaslVerdict::Accept {
                identity,
                additional_data,
            } => {
                put_sasl_frame(
                    &mut self.out,
                    &SaslFrame::Outcome(SaslOutcome {
                        code: SaslCode::Ok,
                        additional_data,
                    }),
                );
                self.events.push_back(Event::Authenticated { identity });
                self.phase = Phase::ServerAfterSasl;
            }
            SaslVerdict::Refuse(code) => self.refuse_sasl(code),
        }
        // What the client pipelined behind its SASL frames waited unread.
        while self.phase != Phase::Done && self.read_one() {}
        Ok(())
    }

    fn refuse_sasl(&mut self, code: SaslCode) {
        // `ok` here would admit the client unauthenticated.
        let code = if code == SaslCode::Ok {
            SaslCode::Auth
        } else {
            code
        };
        put_sasl_frame(
            &mut self.out,
            &SaslFrame::Outcome(SaslOutcome {
                code,
                additional_data: None,
            }),
        );
        let why = format!("SASL authentication failed: {code:?}");
        self.handshake_failed(condition::UNAUTHORIZED_ACCESS, why);
    }

    fn choose_mechanism(&mut self, offer: SaslMechanisms) {
        let (mechanism, initial_response) = match &self.client_sasl {
            ClientSasl::None => {
                return self
                    .handshake_failed(condition::FRAMING_ERROR, "unexpected SASL layer".into());
            }
            ClientSasl::Anonymous => ("ANONYMOUS", None),
            // An empty authorization identity: be whom the certificate says.
            ClientSasl::External => (crate::sasl::EXTERNAL, Some(Bytes::new())),
            ClientSasl::Plain { username, password } => (
                "PLAIN",
                Some(crate::sasl::plain_response(username, password)),
            ),
            ClientSasl::Scram {
                username,
                password,
                nonce,
            } => {
                let (scram, first) = ScramClient::start(username, password.as_bytes(), nonce);
                self.scram = Some(scram);
                (crate::sasl::scram::MECHANISM, Some(Bytes::from(first)))
            }
            ClientSasl::ScramSalted {
                username,
                salted,
                nonce,
            } => {
                let (scram, first) = ScramClient::start_salted(username, salted.clone(), nonce);
                self.scram = Some(scram);
                (crate::sasl::scram::MECHANISM, Some(Bytes::from(first)))
            }
        };
        if !offer.mechanisms.iter().any(|m| m == mechanism) {
            let why = format!("server does not offer {mechanism}: {:?}", offer.mechanisms);
            return self.handshake_failed(condition::UNAUTHORIZED_ACCESS, why);
        }
        let init = SaslInit {
            mechanism: Symbol::from_static(mechanism),
            initial_response,
            hostname: self.config.hostname.clone(),
        };
        put_sasl_frame(&mut self.out, &SaslFrame::Init(init));
        self.phase = Phase::SaslAwaitOutcome;
    }

    /// Answers a server challenge: only SCRAM has one, once.
    fn answer_challenge(&mut self, challenge: &[u8]) {
        let answered = match &mut self.scram {
            Some(scram) => scram.respond(challenge).map_err(|error| error.to_string()),
            None => Err("a challenge for a mechanism that has none".to_owned()),
        };
        match answered {
            Ok(response) => put_sasl_frame(
                &mut self.out,
                &SaslFrame::Response(SaslResponse {
                    response: Bytes::from(response),
                }),
            ),
            Err(why) => self.handshake_failed(condition::UNAUTHORIZED_ACCESS, why),
        }
    }

    fn sasl_outcome(&mut self, outcome: SaslOutcome) {
        if outcome.code != SaslCode::Ok {
            let why = format!("SASL authentication failed: {:?}", outcome.code);
            return self.handshake_failed(condition::UNAUTHORIZED_ACCESS, why);
        }
        // SCRAM's server proves it knew the credential: a server that
        // merely says `ok` could be anyone.
        if let Some(scram) = &self.scram {
            let data = outcome.additional_data.as_deref().unwrap_or_default();
            if let Err(error) = scram.verify(data) {
                return self.handshake_failed(condition::UNAUTHORIZED_ACCESS, error.to_string());
            }
        }
        // The AMQP header and open are pipelined, as the spec allows.
        self.out.extend_from_slice(&ProtocolId::Amqp.header());
        self.send_open();
        self.phase = Phase::ClientHello(ProtocolId::Amqp);
    }

    // ---- AMQP frames ----------------------------------------------------

    fn handle_frame(&mut self, frame: Frame) {
        let (channel, performative, payload) = match frame {
            Frame::Empty => return,
            Frame::Sasl(_) => unreachable!("the AMQP layer yields no SASL frames"),
            Frame::Amqp {
                channel,
                performative,
                payload,
            } => (channel, performative, payload),
        };
        if self.close_received {
            return;
        }
        // After our `close`, only the peer's `open` and `close` still matter:
        // anything else would act on a connection we have given up.
        if self.close_sent
            && !matches!(performative, Performative::Open(_) | Performative::Close(_))
        {
            return;
        }
        let result = match performative {
            Performative::Open(open) => self.on_open(open),
            _ if self.peer.is_none() => Err(Error::new(
                condition::ILLEGAL_STATE,
                format!("{} before open", performative.name()),
            )),
            Performative::Close(close) => {
                self.on_close(close);
                Ok(())
            }
            Performative::Begin(begin) => self.on_begin(channel, begin),
            other => self.on_session_frame(channel, other, payload),
        };
        if let Err(error) = result {
            self.fail(error);
        }
    }

    fn on_open(&mut self, open: Open) -> Result<(), Error> {
        if self.peer.is_some() {
            return Err(Error::new(condition::ILLEGAL_STATE, "second open"));
        }
        if open.max_frame_size < MIN_MAX_FRAME_SIZE {
            return Err(Error::new(
                condition::INVALID_FIELD,
                format!(
                    "max-frame-size {} is below the minimum of 512",
                    open.max_frame_size
                ),
            ));
        }
        self.handshake_deadline = None;
        self.peer = Some(PeerLimits {
            max_frame_size: open.max_frame_size,
            channel_max: open.channel_max,
            idle_timeout: open
                .idle_time_out
                .filter(|ms| *ms > 0)
                .map(|ms| Duration::from_millis(u64::from(ms))),
        });
        self.events.push_back(Event::Opened { remote: open });
        if !self.open_sent {
            self.send_open();
        }
        Ok(())
    }

    fn send_open(&mut self) {
        let config = &self.config;
        let open = Open {
            hostname: config.hostname.clone(),
            max_frame_size: config.advertised_max_frame_size(),
            channel_max: config.channel_max,
            // Half of what we enforce, as §2.4.5 recommends: a frame the
            // peer sends a little late is still in time.
            idle_time_out: config
                .idle_timeout
                .map(|t| u32::try_from((t / 2).as_millis()).unwrap_or(u32::MAX)),
            offered_capabilities: config.offered_capabilities.clone(),
            properties: config.properties.clone(),
            ..Open::new(config.container_id.clone())
        };
        self.write(0, &open);
        self.open_sent = true;
    }

    fn on_close(&mut self, close: Close) {
        self.close_received = true;
        if !self.close_sent {
            self.write(0, &Close::default());
            self.close_sent = true;
        }
        self.events.push_back(Event::Closed {
            local: self.local_close_error.take(),
            remote: close.error,
        });
        self.finish();
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) -> Result<(), Error> {
        if channel > self.config.channel_max {
            return Err(Error::new(
                condition::NOT_ALLOWED,
                format!(
                    "channel {channel} exceeds channel-max {}",
                    self.config.channel_max
                ),
            ));
        }
        if self.remote_channels.contains_key(&channel) {
            return Err(Error::new(
                condition::NOT_ALLOWED,
                format!("channel {channel} is already in use"),
            ));
        }
        let local = match begin.remote_channel {
            Some(local) => {
                let session = self
                    .sessions
                    .get_mut(&local)
                    .filter(|s| s.state == SessionState::BeginSent)
                    .ok_or_else(|| {
                        Error::new(
                            condition::NOT_ALLOWED,
                            format!("begin answers unknown channel {local}"),
                        )
                    })?;
                session.state = SessionState::Mapped;
                local
            }
            None => {
                let local = self.free_channel().ok_or_else(|| {
                    Error::new(
                        condition::RESOURCE_LIMIT_EXCEEDED,
                        "no free channel for a new session",
                    )
                })?;
                let session = Session::new(SessionState::Mapped, self.config.session_window);
                self.sessions.insert(local, session);
                local
            }
        };
        self.remote_channels.insert(channel, local);
        let session = self
            .sessions
            .get_mut(&local)
            .expect("session inserted or found above");
        session.remote_channel = Some(channel);
        session.next_incoming_id = begin.next_outgoing_id;
        session.remote_incoming_window = begin.incoming_window;
        session.remote_handle_max = begin.handle_max;
        if begin.remote_channel.is_none() {
            self.send_begin(local);
        }
        self.events.push_back(Event::SessionBegun {
            session: SessionId(local),
            remote: begin,
        });
        Ok(())
    }

    fn free_channel(&self) -> Option<u16> {
        let max = self.peer.map_or(self.config.channel_max, |p| {
            p.channel_max.min(self.config.channel_max)
        });
        lowest_free(self.sessions.keys().map(|c| u32::from(*c)), u32::from(max)).map(|c| c as u16)
    }

    fn send_begin(&mut self, channel: u16) {
        let session = &self.sessions[&channel];
        let begin = Begin {
            remote_channel: session.remote_channel,
            next_outgoing_id: session.next_outgoing_id,
            incoming_window: session.incoming_window,
            outgoing_window: u32::MAX,
            handle_max: HANDLE_MAX,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: Vec::new(),
        };
        self.write(channel, &begin);
    }

    /// Routes a frame that belongs to a session.
    fn on_session_frame(
        &mut self,
        channel: u16,
        performative: Performative,
        payload: Bytes,
    ) -> Result<(), Error> {
        let Some(&local) = self.remote_channels.get(&channel) else {
            return Err(Error::new(
                condition::NOT_ALLOWED,
                format!(
                    "{} on channel {channel}, which has no session",
                    performative.name()
                ),
            ));
        };
        let session = SessionId(local);
        match performative {
            Performative::Attach(attach) => self.on_attach(session, *attach),
            Performative::Flow(flow) => self.on_flow(session, flow),
            Performative::Transfer(transfer) => self.on_transfer(session, transfer, payload),
            Performative::Disposition(disposition) => {
                self.on_disposition(session, disposition);
                Ok(())
            }
            Performative::Detach(detach) => self.on_detach(session, detach),
            Performative::End(end) => {
                self.on_end(channel, local, end);
                Ok(())
            }
            Performative::Open(_) | Performative::Begin(_) | Performative::Close(_) => {
                unreachable!("connection-level performatives are handled before")
            }
        }
    }

    fn on_attach(&mut self, id: SessionId, attach: Attach) -> Result<(), Error> {
        let session = self.session_mut(id);
        if session.remote_handles.contains_key(&attach.handle) {
            return Err(Error::new(
                condition::HANDLE_IN_USE,
                format!("handle {} is already attached", attach.handle),
            ));
        }
        if attach.handle > HANDLE_MAX {
            return Err(Error::new(
                condition::NOT_ALLOWED,
                format!("handle {} exceeds handle-max {HANDLE_MAX}", attach.handle),
            ));
        }
        let our_role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let answered = session
            .links
            .iter()
            .find(|(_, l)| {
                l.state == LinkState::AttachSent && l.role == our_role && l.name == attach.name
            })
            .map(|(handle, _)| *handle);
        let (handle, initiated_by_peer) = match answered {
            Some(handle) => (handle, false),
            None => {
                let handle = session.free_handle().ok_or_else(|| {
                    Error::new(
                        condition::RESOURCE_LIMIT_EXCEEDED,
                        "no free handle for a new link",
                    )
                })?;
                let mut link = Link::new(attach.name.clone(), our_role, LinkState::AttachReceived);
                link.snd_settle_mode = attach.snd_settle_mode;
                link.rcv_settle_mode = attach.rcv_settle_mode;
                session.links.insert(handle, link);
                (handle, true)
            }
        };
        session.remote_handles.insert(attach.handle, handle);
        let link = session
            .links
            .get_mut(&handle)
            .expect("link found or inserted above");
        link.remote_handle = Some(attach.handle);
        link.peer_max_message_size = attach.max_message_size;
        if our_role == Role::Receiver {
            link.start_count(attach.initial_delivery_count.unwrap_or(0));
        }
        if !initiated_by_peer {
            link.state = LinkState::Attached;
            // The sender decides the settle modes it actually uses.
            link.snd_settle_mode = attach.snd_settle_mode;
            link.rcv_settle_mode = attach.rcv_settle_mode;
        }
        self.events.push_back(Event::LinkAttached {
            link: LinkId {
                session: id,
                handle,
            },
            remote: Box::new(attach),
            initiated_by_peer,
        });
        Ok(())
    }

    fn on_flow(&mut self, id: SessionId, flow: Flow) -> Result<(), Error> {
        let session = self.session_mut(id);
        // The peer's window, as of its view of our next-outgoing-id (or our
        // initial id, 0, if it has not seen our begin yet).
        session.remote_incoming_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        let mut echo_link = None;
        if let Some(remote_handle) = flow.handle {
            let handle = *session
                .remote_handles
                .get(&remote_handle)
                .ok_or_else(|| unattached(remote_handle))?;
            let link = session
                .links
                .get_mut(&handle)
                .expect("remote handle maps to a link");
            let link_id = LinkId {
                session: id,
                handle,
            };
            let mut acquiring = None;
            match link.role {
                Role::Sender => {
                    let txn_id = acquisition(&flow.properties);
                    if txn_id.as_ref().is_some_and(|id| id.len() > TXN_ID_MAX) {
                        // It would not fit our transfers' frames, and names
                        // no transaction of ours.
                        let error = Error::new(
                            condition::INVALID_FIELD,
                            format!("flow properties: a txn-id is at most {TXN_ID_MAX} bytes"),
                        );
                        self.detach_with(link_id, true, Some(error));
                        return Ok(());
                    }
                    if let Some(credit) = flow.link_credit {
                        link.credit_from_flow(flow.delivery_count.unwrap_or(0), credit);
                    }
                    link.drain = flow.drain;
                    if link.acquiring != txn_id {
                        link.acquiring.clone_from(&txn_id);
                        acquiring = Some(txn_id);
                    }
                }
                Role::Receiver => {
                    if let Some(count) = flow.delivery_count {
                        link.sender_count(count);
                    }
                    link.link_credit = flow.link_credit.unwrap_or(link.link_credit);
                }
            }
            let credit = Event::Credit {
                link: link_id,
                credit: link.link_credit,
                drain: flow.drain,
                available: flow.available,
            };
            if let Some(txn_id) = acquiring {
                // Before the credit, which may be spent at once.
                let event = Event::Acquiring {
                    link: link_id,
                    txn_id,
                };
                self.events.push_back(event);
            }
            self.events.push_back(credit);
            echo_link = Some(handle);
        }
        if flow.echo {
            self.send_flow(id, echo_link);
        }
        self.flush_transfers(id, TRANSFERS_AHEAD_BYTES);
        Ok(())
    }

    fn on_transfer(
        &mut self,
        id: SessionId,
        transfer: Transfer,
        payload: Bytes,
    ) -> Result<(), Error> {
        let limits = IncomingLimits {
            max_message_size: self.config.max_message_size,
            unfinished: self.config.unfinished.as_ref(),
        };
        let session = self
            .sessions
            .get_mut(&id.0)
            .expect("session ids come from the session map");
        if session.incoming_window == 0 {
            return Err(Error::new(
                condition::WINDOW_VIOLATION,
                "transfer beyond the session's incoming window",
            ));
        }
        session.incoming_window -= 1;
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        let handle = *session
            .remote_handles
            .get(&transfer.handle)
            .ok_or_else(|| unattached(transfer.handle))?;
        let link = session
            .links
            .get_mut(&handle)
            .expect("remote handle maps to a link");
        if link.role != Role::Receiver {
            return Err(Error::new(
                condition::NOT_ALLOWED,
                format!(
                    "transfer on handle {}, where the peer is the receiver",
                    transfer.handle
                ),
            ));
        }
        let link_id = LinkId {
            session: id,
            handle,
        };
        let outcome = if link.state == LinkState::DetachSent {
            // In flight when we detached: the peer will learn from our detach.
            Ok(None)
        } else {
            receive_transfer(link, transfer, payload, &limits)
        };
        match outcome {
            Ok(Some(delivery)) => {
                let id = delivery.delivery_id;
                if !delivery.settled {
                    session.incoming_unsettled.insert(id, handle);
                }
                self.events.push_back(Event::Delivery {
                    delivery: DeliveryId { link: link_id, id },
                    tag: delivery.tag.clone(),
                    settled: delivery.settled,
                    rcv_settle_mode: delivery.rcv_settle_mode,
                    state: delivery.state.clone(),
                    message_format: delivery.message_format,
                    message: delivery.into_message(),
                });
            }
            Ok(None) => {}
            Err(LinkFault::Connection(error)) => return Err(error),
            Err(LinkFault::Link(error)) => {
                self.detach_with(link_id, true, Some(error));
            }
        }
        Ok(())
    }

    fn on_disposition(&mut self, id: SessionId, disposition: Disposition) {
        let session = self
            .sessions
            .get_mut(&id.0)
            .expect("session ids come from the session map");
        // A disposition from the receiver is about what we sent, and the
        // reverse.
        let unsettled = match disposition.role {
            Role::Receiver => &mut session.outgoing_unsettled,
            Role::Sender => &mut session.incoming_unsettled,
        };
        let last = disposition.last.unwrap_or(disposition.first);
        for delivery_id in ids_in_range(unsettled, disposition.first, last) {
            let handle = if disposition.settled {
                unsettled.remove(&delivery_id)
            } else {
                unsettled.get(&delivery_id).copied()
            };
            let Some(handle) = handle else { continue };
            self.events.push_back(Event::Disposition {
                delivery: DeliveryId {
                    link: LinkId {
                        session: id,
                        handle,
                    },
                    id: delivery_id,
                },
                state: disposition.state.clone(),
                settled: disposition.settled,
            });
        }
    }

    fn on_detach(&mut self, id: SessionId, detach: Detach) -> Result<(), Error> {
        let session = self.session_mut(id);
        let handle = session
            .remote_handles
            .remove(&detach.handle)
            .ok_or_else(|| unattached(detach.handle))?;
        let link = session
            .links
            .remove(&handle)
            .expect("remote handle maps to a link");
        session.outgoing_unsettled.retain(|_, h| *h != handle);
        session.incoming_unsettled.retain(|_, h| *h != handle);
        session.pending.retain(|p| p.handle != handle);
        if link.state != LinkState::DetachSent {
            let answer = Detach {
                handle,
                closed: detach.closed,
                error: None,
            };
            self.write(id.0, &answer);
        }
        self.events.push_back(Event::LinkDetached {
            link: LinkId {
                session: id,
                handle,
            },
            closed: detach.closed,
            error: detach.error,
        });
        Ok(())
    }

    fn on_end(&mut self, remote_channel: u16, local: u16, end: End) {
        self.remote_channels.remove(&remote_channel);
        let session = self
            .sessions
            .remove(&local)
            .expect("remote channel maps to a session");
        self.pending_dispositions.retain(|d| d.channel != local);
        if session.state != SessionState::EndSent {
            self.write(local, &End::default());
        }
        let id = SessionId(local);
        for handle in session.links.keys() {
            self.events.push_back(Event::LinkDetached {
                link: LinkId {
                    session: id,
                    handle: *handle,
                },
                closed: false,
                error: None,
            });
        }
        self.events.push_back(Event::SessionEnded {
            session: id,
            error: end.error,
        });
    }

    // ---- commands -------------------------------------------------------

    /// Begins a session; [`Event::SessionBegun`] follows when the peer answers.
    pub fn begin(&mut self) -> Result<SessionId, EngineError> {
        self.check_open()?;
        let channel = self.free_channel().ok_or(EngineError::NoFreeChannel)?;
        let session = Session::new(SessionState::BeginSent, self.config.session_window);
        self.sessions.insert(channel, session);
        self.send_begin(channel);
        Ok(SessionId(channel))
    }

    /// Attaches a link; [`Event::LinkAttached`] follows when the peer answers.
    pub fn attach(
        &mut self,
        session: SessionId,
        options: LinkOptions,
    ) -> Result<LinkId, EngineError> {
        self.check_open()?;
        let max_message_size = self.config.max_message_size;
        let s = self
            .sessions
            .get_mut(&session.0)
            .filter(|s| s.state != SessionState::EndSent)
            .ok_or(EngineError::NoSuchSession)?;
        let handle = s
            .free_handle()
            .filter(|h| *h <= HANDLE_MAX)
            .ok_or(EngineError::NoFreeHandle)?;
        let mut link = Link::new(options.name.clone(), options.role, LinkState::AttachSent);
        link.snd_settle_mode = options.snd_settle_mode;
        link.rcv_settle_mode = options.rcv_settle_mode;
        s.links.insert(handle, link);
        let attach = Attach {
            name: options.name,
            handle,
            role: options.role,
            snd_settle_mode: options.snd_settle_mode,
            rcv_settle_mode: options.rcv_settle_mode,
            source: options.source,
            target: options.target,
            unsettled: Vec::new(),
            incomplete_unsettled: false,
            initial_delivery_count: (options.role == Role::Sender).then_some(0),
            max_message_size: Some(max_message_size),
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: Vec::new(),
        };
        self.write(session.0, &attach);
        Ok(LinkId { session, handle })
    }

    /// Accepts a link the peer attached ([`Event::LinkAttached`] with
    /// `initiated_by_peer`), answering with our attach.
    pub fn accept_link(&mut self, id: LinkId, reply: LinkReply) -> Result<(), EngineError> {
        let attach = self.answer_attach(id, reply)?;
        self.link_mut(id)?.state = LinkState::Attached;
        self.write(id.session.0, &attach);
        Ok(())
    }

    /// Refuses a link the peer attached: the spec's way is an attach with no
    /// terminus, then a detach that closes it with `error`.
    pub fn refuse_link(&mut self, id: LinkId, error: Error) -> Result<(), EngineError> {
        if self.link_mut(id)?.state != LinkState::AttachReceived {
            return Err(EngineError::NotAttached);
        }
        self.detach(id, true, Some(error))
    }

    fn answer_attach(&mut self, id: LinkId, reply: LinkReply) -> Result<Attach, EngineError> {
        let max_message_size = self.config.max_message_size;
        let honour_second = self.config.rcv_settle_second;
        let link = self.link_mut(id)?;
        if link.state != LinkState::AttachReceived {
            return Err(EngineError::NotAttached);
        }
        if link.role == Role::Receiver && !honour_second {
            link.rcv_settle_mode = ReceiverSettleMode::First;
        }
        Ok(Attach {
            name: link.name.clone(),
            handle: id.handle,
            role: link.role,
            snd_settle_mode: link.snd_settle_mode,
            rcv_settle_mode: link.rcv_settle_mode,
            source: reply.source.map(AttachSource::Node),
            target: reply.target,
            unsettled: Vec::new(),
            incomplete_unsettled: false,
            initial_delivery_count: (link.role == Role::Sender).then_some(link.delivery_count),
            max_message_size: Some(max_message_size),
            offered_capabilities: reply.offered_capabilities,
            desired_capabilities: Vec::new(),
            properties: Vec::new(),
        })
    }

    /// Grants `credit` on a receiving link, optionally asking the sender to
    /// drain it.
    ///
    /// Allowed as soon as our attach is sent, before the peer answers: the
    /// credit then travels with the attach, as Proton clients send it.
    pub fn flow(&mut self, id: LinkId, credit: u32, drain: bool) -> Result<(), EngineError> {
        let link = self.usable_link(id, &[LinkState::Attached, LinkState::AttachSent])?;
        if link.role != Role::Receiver {
            return Err(EngineError::WrongRole);
        }
        link.grant(credit);
        link.drain = drain;
        self.send_flow(id.session, Some(id.handle));
        Ok(())
    }

    /// Grants `credit` on a receiving link unless the sender already holds
    /// at least that much; returns whether a flow went out.
    ///
    /// A flow sets link-credit afresh at our delivery-count. An application
    /// that counts deliveries behind us (the broker's node, across a queue)
    /// computes credit that can fall short of what the sender still holds;
    /// granting it would take back credit the sender may be using already.
    pub fn raise_credit(&mut self, id: LinkId, credit: u32) -> Result<bool, EngineError> {
        let link = self.usable_link(id, &[LinkState::Attached, LinkState::AttachSent])?;
        if link.role != Role::Receiver {
            return Err(EngineError::WrongRole);
        }
        if credit <= link.link_credit {
            return Ok(false);
        }
        self.flow(id, credit, false)?;
        Ok(true)
    }

    /// Sending link: gives back unused credit after the receiver asked for a
    /// drain and we have nothing more to send.
    pub fn drain_complete(&mut self, id: LinkId) -> Result<(), EngineError> {
        let link = self.attached_link(id)?;
        if link.role != Role::Sender {
            return Err(EngineError::WrongRole);
        }
        link.delivery_count = link.delivery_count.wrapping_add(link.link_credit);
        link.link_credit = 0;
        // The flow echoes `drain` so the receiver sees its drain answered;
        // then the request is spent.
        self.send_flow(id.session, Some(id.handle));
        self.link_mut(id)?.drain = false;
        Ok(())
    }

    /// True if a sending link settles every delivery as it sends it: its
    /// receiver asked for snd-settle-mode `settled`.
    pub fn sends_settled(&self, id: LinkId) -> bool {
        self.sessions
            .get(&id.session.0)
            .and_then(|s| s.links.get(&id.handle))
            .is_some_and(|l| l.snd_settle_mode == SenderSettleMode::Settled)
    }

    /// The receiver settle mode a link uses, as attached (`None` for a
    /// link that has gone).
    pub fn rcv_settle_mode(&self, id: LinkId) -> Option<ReceiverSettleMode> {
        self.sessions
            .get(&id.session.0)
            .and_then(|s| s.links.get(&id.handle))
            .map(|l| l.rcv_settle_mode)
    }

    /// The transaction the receiver of sending link `id` acquires in, if
    /// any (see [`Event::Acquiring`]).
    pub fn acquiring(&self, id: LinkId) -> Option<&Bytes> {
        self.sessions
            .get(&id.session.0)
            .and_then(|s| s.links.get(&id.handle))
            .and_then(|l| l.acquiring.as_ref())
    }

    /// The credit on a link now: what we may still send on a sending link,
    /// or what we granted and the sender has not used on a receiving one.
    pub fn credit(&self, id: LinkId) -> u32 {
        self.sessions
            .get(&id.session.0)
            .and_then(|s| s.links.get(&id.handle))
            .map_or(0, |l| l.link_credit)
    }

    /// Sends one message on a sending link, using one unit of credit. Frames
    /// beyond the peer's session window wait for it to open.
    pub fn send(
        &mut self,
        id: LinkId,
        tag: Bytes,
        message: Bytes,
        settled: bool,
    ) -> Result<DeliveryId, EngineError> {
        self.send_in(id, tag, message, settled, None)
    }

    /// Sends one message, unsettled, as part of transaction `txn_id` (a
    /// controller's publish, §4.4.1): its transfer's state names the
    /// transaction, and the message counts only if the transaction commits.
    pub fn send_transactional(
        &mut self,
        id: LinkId,
        tag: Bytes,
        message: Bytes,
        txn_id: Bytes,
    ) -> Result<DeliveryId, EngineError> {
        self.send_in(id, tag, message, false, Some(txn_id))
    }

    /// [`Connection::send`], in transaction `txn_id` if there is one.
    fn send_in(
        &mut self,
        id: LinkId,
        tag: Bytes,
        message: Bytes,
        settled: bool,
        txn_id: Option<Bytes>,
    ) -> Result<DeliveryId, EngineError> {
        let link = self.attached_link(id)?;
        if link.role != Role::Sender {
            return Err(EngineError::WrongRole);
        }
        if link.link_credit == 0 {
            return Err(EngineError::NoCredit);
        }
        if tag.len() > DELIVERY_TAG_MAX {
            return Err(EngineError::TagTooLong(tag.len()));
        }
        if let Some(max) = link.peer_max_message_size
            && message.len() as u64 > max
        {
            return Err(EngineError::MessageTooLarge {
                size: message.len() as u64,
                max,
            });
        }
        let settled = settled || link.snd_settle_mode == SenderSettleMode::Settled;
        // What is published or acquired in a transaction says so; a settled
        // transfer is not acquired, it is gone.
        let txn_id = txn_id.or_else(|| link.acquiring.clone());
        let state = txn_id.filter(|_| !settled).map(|txn_id| {
            Box::new(DeliveryState::Transactional(TransactionalState {
                txn_id,
                outcome: None,
            }))
        });
        link.link_credit -= 1;
        link.delivery_count = link.delivery_count.wrapping_add(1);
        let session = self.session_mut(id.session);
        let delivery_id = session.next_delivery_id;
        session.next_delivery_id = delivery_id.wrapping_add(1);
        if !settled {
            session.outgoing_unsettled.insert(delivery_id, id.handle);
        }
        session.pending.push_back(PendingTransfer {
            handle: id.handle,
            delivery_id,
            tag,
            settled,
            state,
            payload: message,
            sent: 0,
        });
        self.flush_transfers(id.session, TRANSFERS_AHEAD_BYTES);
        Ok(DeliveryId {
            link: id,
            id: delivery_id,
        })
    }

    /// Updates (and optionally settles) a delivery. Dispositions queued
    /// together are sent as ranges.
    pub fn disposition(
        &mut self,
        delivery: DeliveryId,
        state: Option<DeliveryState>,
        settled: bool,
    ) -> Result<(), EngineError> {
        let role = self.link_mut(delivery.link)?.role;
        let session = self.session_mut(delivery.link.session);
        let unsettled = match role {
            Role::Receiver => &mut session.incoming_unsettled,
            Role::Sender => &mut session.outgoing_unsettled,
        };
        if unsettled.get(&delivery.id) != Some(&delivery.link.handle) {
            return Err(EngineError::NoSuchDelivery);
        }
        if settled {
            unsettled.remove(&delivery.id);
        }
        if role == Role::Sender {
            // The peer must have the transfer before news of it.
            self.flush_transfers(delivery.link.session, usize::MAX);
        }
        self.pending_dispositions.push(PendingDisposition {
            channel: delivery.link.session.0,
            role,
            id: delivery.id,
            settled,
            state,
        });
        Ok(())
    }

    /// Detaches a link (closing it if `closed`); [`Event::LinkDetached`]
    /// follows when the peer answers.
    pub fn detach(
        &mut self,
        id: LinkId,
        closed: bool,
        error: Option<Error>,
    ) -> Result<(), EngineError> {
        let link = self.link_mut(id)?;
        if link.state == LinkState::DetachSent {
            return Ok(());
        }
        self.detach_with(id, closed, error);
        Ok(())
    }

    fn detach_with(&mut self, id: LinkId, closed: bool, error: Option<Error>) {
        // A link the peer attached and we never answered gets its attach
        // first (with no terminus, as a refusal): a detach alone would name a
        // handle the peer has never seen.
        if let Ok(attach) = self.answer_attach(id, LinkReply::default()) {
            self.write(id.session.0, &attach);
        }
        if let Some(session) = self.sessions.get_mut(&id.session.0) {
            // Transfers still waiting for the peer's session window must not
            // follow the detach: the peer would see them on an unattached
            // handle.
            session.pending.retain(|p| p.handle != id.handle);
            if let Some(link) = session.links.get_mut(&id.handle) {
                link.state = LinkState::DetachSent;
                link.incoming = None;
            }
        }
        self.write(
            id.session.0,
            &Detach {
                handle: id.handle,
                closed,
                error,
            },
        );
    }

    /// Ends a session; [`Event::SessionEnded`] follows when the peer answers.
    pub fn end(&mut self, id: SessionId, error: Option<Error>) -> Result<(), EngineError> {
        let session = self
            .sessions
            .get_mut(&id.0)
            .ok_or(EngineError::NoSuchSession)?;
        if session.state == SessionState::EndSent {
            return Ok(());
        }
        session.state = SessionState::EndSent;
        // As for a detach: queued transfers must not follow the `end`.
        session.pending.clear();
        self.write(id.0, &End { error });
        Ok(())
    }

    /// Closes the connection, with `error` if it is closed because of one.
    /// The engine then waits (up to the configured close timeout) for the
    /// peer's `close`.
    pub fn close(&mut self, now: Instant, error: Option<Error>) {
        self.advance_clock(now);
        if self.close_sent || self.finished {
            return;
        }
        if self.phase != Phase::Amqp {
            self.handshake_failed(
                condition::CONNECTION_FORCED,
                "closed before the handshake completed".into(),
            );
            return;
        }
        if !self.open_sent {
            self.send_open();
        }
        self.write(
            0,
            &Close {
                error: error.clone(),
            },
        );
        self.close_sent = true;
        self.local_close_error = error;
        self.close_deadline = Some(self.now + self.config.close_timeout);
    }

    // ---- helpers --------------------------------------------------------

    /// Closes the connection because of a protocol error: the peer learns why
    /// from our `close`, and we stop reading.
    fn fail(&mut self, error: Error) {
        if !self.close_sent {
            if !self.open_sent {
                self.send_open();
            }
            self.write(
                0,
                &Close {
                    error: Some(error.clone()),
                },
            );
            self.close_sent = true;
        }
        self.events.push_back(Event::Closed {
            local: Some(error),
            remote: None,
        });
        self.finish();
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.close_sent || self.finished {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }

    /// The session behind an id the engine itself produced from its maps.
    fn session_mut(&mut self, id: SessionId) -> &mut Session {
        self.sessions
            .get_mut(&id.0)
            .expect("session ids come from the session map")
    }

    fn link_mut(&mut self, id: LinkId) -> Result<&mut Link, EngineError> {
        self.sessions
            .get_mut(&id.session.0)
            .ok_or(EngineError::NoSuchSession)?
            .links
            .get_mut(&id.handle)
            .ok_or(EngineError::NoSuchLink)
    }

    fn attached_link(&mut self, id: LinkId) -> Result<&mut Link, EngineError> {
        self.usable_link(id, &[LinkState::Attached])
    }

    /// A link that commands may use: the connection open, its session not
    /// ending, and the link in one of `states`.
    fn usable_link(&mut self, id: LinkId, states: &[LinkState]) -> Result<&mut Link, EngineError> {
        self.check_open()?;
        if self
            .sessions
            .get(&id.session.0)
            .is_some_and(|s| s.state == SessionState::EndSent)
        {
            return Err(EngineError::NotAttached);
        }
        let link = self.link_mut(id)?;
        if !states.contains(&link.state) {
            return Err(EngineError::NotAttached);
        }
        Ok(link)
    }

    /// Queues one frame. Dispositions queued before it go out first, so that
    /// a later `detach`, `end` or `close` cannot overtake them.
    fn write(&mut self, channel: u16, performative: &impl crate::amqp::codec::Encode) {
        self.flush_dispositions();
        put_amqp_frame(&mut self.out, channel, performative, &[]);
    }

    fn send_flow(&mut self, id: SessionId, handle: Option<u32>) {
        if handle.is_some() {
            // A link's delivery-count counts the transfers queued for it:
            // they must reach the peer before the count does.
            self.flush_transfers(id, usize::MAX);
        }
        let session = &self.sessions[&id.0];
        let link = handle.and_then(|h| session.links.get(&h));
        let flow = Flow {
            next_incoming_id: session.remote_channel.map(|_| session.next_incoming_id),
            incoming_window: session.incoming_window,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: u32::MAX,
            handle: link.and(handle),
            delivery_count: link.map(|l| l.delivery_count),
            link_credit: link.map(|l| l.link_credit),
            available: None,
            drain: link.is_some_and(|l| l.drain),
            echo: false,
            properties: Vec::new(),
        };
        self.write(id.0, &flow);
    }

    /// Writes the sessions' queued transfers up to
    /// [`TRANSFERS_AHEAD_BYTES`] of output, taking the sessions in turn
    /// from where the last poll stopped.
    fn write_queued_transfers(&mut self) {
        let next = self.next_channel;
        let queued: Vec<u16> = self
            .sessions
            .range(next..)
            .chain(self.sessions.range(..next))
            .filter(|(_, session)| !session.pending.is_empty())
            .map(|(&channel, _)| channel)
            .collect();
        for channel in queued {
            if self.out.len() >= TRANSFERS_AHEAD_BYTES {
                return;
            }
            self.flush_transfers(SessionId(channel), TRANSFERS_AHEAD_BYTES);
        }
    }

    /// Writes queued transfers while the peer's session window allows and
    /// the output holds less than `limit` bytes. Once our `close` is out,
    /// nothing follows it.
    fn flush_transfers(&mut self, id: SessionId, limit: usize) {
        if self.close_sent {
            return;
        }
        let max_frame_size = self.peer.map_or(MIN_MAX_FRAME_SIZE, |p| p.max_frame_size) as usize;
        let channel = id.0;
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        while session.remote_incoming_window > 0 && self.out.len() < limit {
            let Some(pending) = session.pending.front_mut() else {
                break;
            };
            let first = pending.sent == 0;
            let mut transfer = Transfer {
                handle: pending.handle,
                delivery_id: first.then_some(pending.delivery_id),
                delivery_tag: first.then(|| pending.tag.clone()),
                message_format: first.then_some(0),
                settled: (first && pending.settled).then_some(true),
                state: pending.state.take().map(|state| *state),
                ..Transfer::default()
            };
            let rest = &pending.payload[pending.sent..];
            let Some(carried) =
                put_transfer_frame(&mut self.out, channel, &mut transfer, rest, max_frame_size)
            else {
                // The peer's max-frame-size (at least 512) always fits a
                // transfer performative with a tag of at most 32 bytes.
                unreachable!("a transfer performative fits in any legal frame");
            };
            pending.sent += carried;
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
            session.remote_incoming_window -= 1;
            if !transfer.more {
                session.pending.pop_front();
            }
            self.next_channel = channel.wrapping_add(1);
        }
    }

    /// Reopens the incoming window of sessions that have used half of it.
    ///
    /// Done when output is polled, not per transfer, so that a peer which
    /// sends more transfers in one burst than we granted is caught
    /// (`amqp:session:window-violation`) rather than silently absorbed.
    fn refresh_windows(&mut self) {
        if self.close_sent {
            return;
        }
        let window = self.config.session_window;
        let due: Vec<u16> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.state == SessionState::Mapped && s.incoming_window <= window / 2)
            .map(|(channel, s)| {
                s.incoming_window = window;
                *channel
            })
            .collect();
        for channel in due {
            self.send_flow(SessionId(channel), None);
        }
    }

    /// Writes queued dispositions, merging runs of consecutive delivery-ids
    /// with the same role, settlement and state into one range.
    fn flush_dispositions(&mut self) {
        let mut pending = std::mem::take(&mut self.pending_dispositions)
            .into_iter()
            .peekable();
        while let Some(first) = pending.next() {
            let mut last = first.id;
            while let Some(next) = pending.next_if(|n| {
                n.channel == first.channel
                    && n.role == first.role
                    && n.settled == first.settled
                    && n.state == first.state
                    && n.id == last.wrapping_add(1)
            }) {
                last = next.id;
            }
            let disposition = Disposition {
                role: first.role,
                first: first.id,
                last: (last != first.id).then_some(last),
                settled: first.settled,
                state: first.state,
                batchable: false,
            };
            put_amqp_frame(&mut self.out, first.channel, &disposition, &[]);
        }
    }
}

fn unattached(handle: u32) -> Error {
    Error::new(
        condition::UNATTACHED_HANDLE,
        format!("handle {handle} is not attached"),
    )
}

/// A fault found while receiving a transfer, and how far it reaches.
enum LinkFault {
    /// The link must be detached with this error.
    Link(Error),
    /// The whole connection must be closed with this error.
    Connection(Error),
}

/// What an incoming message may take.
struct IncomingLimits<'a> {
    max_message_size: u64,
    /// The pool unfinished messages take their bytes from, if any.
    unfinished: Option<&'a UnfinishedBytes>,
}

/// Applies one incoming transfer to a receiving link; returns the delivery
/// once its last transfer has arrived.
fn receive_transfer(
    link: &mut Link,
    transfer: Transfer,
    payload: Bytes,
    limits: &IncomingLimits<'_>,
) -> Result<Option<PartialDelivery>, LinkFault> {
    let mut delivery = match link.incoming.take() {
        Some(partial) => {
            if transfer
                .delivery_id
                .is_some_and(|id| id != partial.delivery_id)
            {
                return Err(LinkFault::Connection(Error::new(
                    condition::NOT_ALLOWED,
                    "a new delivery began before the previous one was complete",
                )));
            }
            partial
        }
        None => {
            let (Some(delivery_id), Some(tag)) =
                (transfer.delivery_id, transfer.delivery_tag.clone())
            else {
                return Err(LinkFault::Connection(Error::new(
                    condition::INVALID_FIELD,
                    "the first transfer of a delivery needs a delivery-id and a delivery-tag",
                )));
            };
            if !link.take_credit() {
                return Err(LinkFault::Link(Error::new(
                    condition::TRANSFER_LIMIT_EXCEEDED,
                    "transfer without link credit",
                )));
            }
            PartialDelivery::new(
                delivery_id,
                tag,
                transfer.message_format.unwrap_or(0),
                transfer.rcv_settle_mode.unwrap_or(link.rcv_settle_mode),
            )
        }
    };
    if transfer.aborted {
        return Ok(None);
    }
    delivery.settled |= transfer.settled.unwrap_or(false);
    if transfer.state.is_some() {
        delivery.state = transfer.state;
    }
    let len = delivery.push(payload);
    let max = limits.max_message_size;
    if len > max {
        return Err(LinkFault::Link(Error::new(
            condition::MESSAGE_SIZE_EXCEEDED,
            format!("message exceeds the link's max-message-size of {max} bytes"),
        )));
    }
    if !transfer.more {
        return Ok(Some(delivery));
    }
    // Only a message kept for later transfers takes from the pool: a
    // single-transfer message costs it nothing.
    if let Some(pool) = limits.unfinished
        && !delivery.reserve(pool)
    {
        return Err(LinkFault::Link(Error::new(
            condition::RESOURCE_LIMIT_EXCEEDED,
            format!(
                "the broker holds at most {} bytes of unfinished multi-transfer messages \
                 over all links, and this link's message ({len} bytes so far) would pass \
                 that: send it again later, or smaller",
                pool.limit_bytes()
            ),
        )));
    }
    link.incoming = Some(delivery);
    Ok(None)
}
