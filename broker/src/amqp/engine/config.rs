//! What one connection engine is configured with.

use std::time::Duration;

use bytes::Bytes;

use super::unfinished::UnfinishedBytes;
use crate::amqp::codec::Symbol;
use crate::amqp::frame::MIN_MAX_FRAME_SIZE;
use crate::amqp::types::{Fields, SaslCode};

/// Limits and identity of one end of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Our container id, sent in `open`.
    pub container_id: String,
    /// The host name we connect to (client role), sent in `sasl-init` and `open`.
    pub hostname: Option<String>,
    /// The largest frame we accept; also bounds what the peer can make us
    /// buffer for one frame.
    pub max_frame_size: u32,
    /// The highest channel number we accept.
    pub channel_max: u16,
    /// Close the connection if the peer sends nothing for this long; also
    /// bounds how long a handshake may take. `None` disables it. `open`
    /// advertises half of it (§2.4.5), so that a peer that keeps to what
    /// we advertise stays well inside it.
    pub idle_timeout: Option<Duration>,
    /// The largest message we accept on a link; bounds reassembly.
    pub max_message_size: u64,
    /// The pool, shared with other connections, that messages received in
    /// several transfers hold their bytes in until their last one arrives:
    /// a link whose message would pass it is detached with
    /// `amqp:resource-limit-exceeded`. `None`: only `max_message_size`
    /// bounds each link.
    pub unfinished: Option<UnfinishedBytes>,
    /// Transfer frames a session accepts before it must refresh the window.
    pub session_window: u32,
    /// How long to wait for the peer's `close` after ours before giving up.
    pub close_timeout: Duration,
    /// Capabilities offered in `open` (e.g. `ANONYMOUS-RELAY`).
    pub offered_capabilities: Vec<Symbol>,
    /// Connection properties sent in `open` (e.g. `product`, `version`).
    pub properties: Fields,
    /// Whether a link the peer attaches, on which we receive, honours the
    /// peer's request for rcv-settle-mode `second`. Otherwise our attach
    /// answers `first`: the receiver's attach says the mode it uses
    /// (§2.7.3), and a sender that asked for `second` then settles first.
    pub rcv_settle_second: bool,
    /// How long the peer has, from the engine's creation, to get through
    /// the protocol header, SASL and its `open`: unlike the idle timeout,
    /// a trickle of bytes does not extend it. `None` disables it.
    pub handshake_timeout: Option<Duration>,
}

impl ConnectionConfig {
    /// Defaults suited to a broker or client on a LAN.
    pub fn new(container_id: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            hostname: None,
            max_frame_size: 256 * 1024,
            channel_max: 255,
            idle_timeout: Some(Duration::from_secs(60)),
            max_message_size: 64 * 1024 * 1024,
            unfinished: None,
            session_window: 2048,
            close_timeout: Duration::from_secs(10),
            offered_capabilities: Vec::new(),
            properties: Fields::new(),
            rcv_settle_second: false,
            handshake_timeout: Some(Duration::from_secs(10)),
        }
    }

    /// The max-frame-size we advertise: never below the spec's minimum.
    pub(super) fn advertised_max_frame_size(&self) -> u32 {
        self.max_frame_size.max(MIN_MAX_FRAME_SIZE)
    }
}

/// How a client authenticates.
#[derive(Debug, Clone)]
pub enum ClientSasl {
    /// Skip the SASL layer: send the AMQP header straight away.
    None,
    /// SASL ANONYMOUS.
    Anonymous,
    /// SASL PLAIN with a user name and password.
    Plain {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// SASL EXTERNAL: the identity the server already knows from outside
    /// SASL, the client's TLS certificate.
    External,
    /// SASL SCRAM-SHA-256 (RFC 7677): the password never crosses the wire,
    /// and the server proves it knows the credential.
    Scram {
        /// The user name.
        username: String,
        /// The password.
        password: String,
        /// A fresh random nonce (printable ASCII, no commas): the engine
        /// draws no randomness of its own.
        nonce: String,
    },
    /// SASL SCRAM-SHA-256 with the password salted already for the
    /// account's salt and iteration count (see
    /// [`SaltedPassword`](crate::sasl::scram::SaltedPassword)).
    ScramSalted {
        /// The user name.
        username: String,
        /// The password, salted.
        salted: crate::sasl::scram::SaltedPassword,
        /// As [`ClientSasl::Scram`]'s.
        nonce: String,
    },
}

impl ClientSasl {
    /// Whether the client speaks SASL at all.
    pub(super) fn uses_sasl(&self) -> bool {
        !matches!(self, ClientSasl::None)
    }
}

/// What the server role offers in SASL.
#[derive(Debug, Clone, Default)]
pub struct ServerSasl {
    /// The mechanisms to offer, in order of preference. The engine refuses
    /// a `sasl-init` for any other; it checks no credentials itself.
    pub mechanisms: Vec<Symbol>,
    /// The identity of a client that skips SASL and sends the AMQP header
    /// directly, or `None` to refuse such clients.
    pub unauthenticated: Option<String>,
}

/// The application's answer to [`Event::SaslInit`](super::Event::SaslInit)
/// or [`Event::SaslResponse`](super::Event::SaslResponse) (server role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslVerdict {
    /// The mechanism needs another round: send this challenge.
    Challenge(Bytes),
    /// The client is who it says: `identity` names it in logs and policy;
    /// `additional_data` goes in the outcome (SCRAM's server signature).
    Accept {
        /// The authenticated identity.
        identity: String,
        /// Mechanism data for the client's final check.
        additional_data: Option<Bytes>,
    },
    /// Authentication failed with this code: `auth` for bad credentials,
    /// `sys-temp` when the server cannot check them now.
    Refuse(SaslCode),
}
