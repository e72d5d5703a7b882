//! What one connection engine is configured with.

use std::time::Duration;

use bytes::Bytes;

use crate::amqp::codec::Symbol;
use crate::amqp::frame::MIN_MAX_FRAME_SIZE;
use crate::amqp::types::Fields;

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
            session_window: 2048,
            close_timeout: Duration::from_secs(10),
            offered_capabilities: Vec::new(),
            properties: Fields::new(),
            rcv_settle_second: false,
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
}

impl ClientSasl {
    pub(super) fn mechanism(&self) -> Option<&'static str> {
        match self {
            ClientSasl::None => None,
            ClientSasl::Anonymous => Some("ANONYMOUS"),
            ClientSasl::Plain { .. } => Some("PLAIN"),
        }
    }

    /// The initial response: PLAIN's `\0user\0password` (RFC 4616).
    pub(super) fn initial_response(&self) -> Option<Bytes> {
        match self {
            ClientSasl::Plain { username, password } => {
                let mut response = Vec::with_capacity(username.len() + password.len() + 2);
                response.push(0);
                response.extend_from_slice(username.as_bytes());
                response.push(0);
                response.extend_from_slice(password.as_bytes());
                Some(Bytes::from(response))
            }
            ClientSasl::None | ClientSasl::Anonymous => None,
        }
    }
}

/// What a SASL mechanism check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client is who it says: `identity` names it in logs and policy.
    Ok {
        /// The authenticated identity.
        identity: String,
    },
    /// Bad credentials or an unsupported mechanism.
    Denied,
}

/// Checks SASL credentials (server role).
pub trait Authenticator: Send + Sync {
    /// The mechanisms to offer, in order of preference.
    fn mechanisms(&self) -> Vec<String>;

    /// Checks one `sasl-init`.
    fn authenticate(
        &self,
        mechanism: &str,
        initial_response: &[u8],
        hostname: Option<&str>,
    ) -> AuthOutcome;

    /// The identity of a client that skips SASL and sends the AMQP header
    /// directly, or `None` to refuse such clients.
    fn unauthenticated_identity(&self) -> Option<String> {
        None
    }
}
