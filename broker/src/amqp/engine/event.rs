//! What the engine reports to the application, and the ids it names things by.

use bytes::Bytes;

use crate::amqp::codec::Symbol;

use crate::amqp::types::{Attach, Begin, DeliveryState, Error, Open, ReceiverSettleMode};

/// A session, by its local channel number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u16);

/// A link, by its session and local handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId {
    /// The session the link belongs to.
    pub session: SessionId,
    /// Our handle for the link.
    pub handle: u32,
}

/// A delivery, by its link and session-scoped delivery-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId {
    /// The link the delivery travels on.
    pub link: LinkId,
    /// The delivery-id, unique within the session while unsettled.
    pub id: u32,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client chose a mechanism the server offers (server role): check
    /// its initial response and answer with
    /// [`super::Connection::answer_sasl`]. The engine reads nothing more
    /// from the client until then.
    SaslInit {
        /// The mechanism, one of those offered.
        mechanism: Symbol,
        /// Its initial response; empty when the client sent none.
        initial_response: Bytes,
        /// The host name the client asked for.
        hostname: Option<String>,
    },
    /// The client answered a challenge (server role): answer with
    /// [`super::Connection::answer_sasl`].
    SaslResponse {
        /// The response data.
        response: Bytes,
    },
    /// SASL succeeded (server role): the peer's identity.
    Authenticated {
        /// Who the peer is.
        identity: String,
    },
    /// The peer's `open` arrived; the server role has already answered it.
    Opened {
        /// The peer's open.
        remote: Open,
    },
    /// A session began: the peer answered our `begin`, or began one that the
    /// engine has answered.
    SessionBegun {
        /// The session.
        session: SessionId,
        /// The peer's begin.
        remote: Begin,
    },
    /// The peer attached a link. For a link the peer initiated, answer with
    /// [`super::Connection::accept_link`] or [`super::Connection::refuse_link`].
    LinkAttached {
        /// The link.
        link: LinkId,
        /// The peer's attach.
        remote: Box<Attach>,
        /// True if the peer initiated the attach (it awaits our answer).
        initiated_by_peer: bool,
    },
    /// Link credit changed.
    ///
    /// On a sending link this is the credit we may use; with `drain` the peer
    /// asks us to use it all or give it back with
    /// [`super::Connection::drain_complete`]. On a receiving link it echoes
    /// the sender's view (e.g. credit 0 once a drain completed).
    Credit {
        /// The link.
        link: LinkId,
        /// Deliveries that may be sent now.
        credit: u32,
        /// The receiver asked the sender to drain.
        drain: bool,
        /// Deliveries the sender says it has waiting.
        available: Option<u32>,
    },
    /// The receiver of a sending link began or ended acquiring in a
    /// transaction (the `txn-id` of its flow's properties): what is sent on
    /// the link from now on carries that transaction's state, until it
    /// ends (`None`).
    Acquiring {
        /// The link.
        link: LinkId,
        /// The transaction, if any.
        txn_id: Option<Bytes>,
    },
    /// A whole message arrived (multi-frame transfers are reassembled).
    Delivery {
        /// The delivery.
        delivery: DeliveryId,
        /// The sender's tag for it.
        tag: Bytes,
        /// The message bytes (its encoded sections).
        message: Bytes,
        /// True if the sender settled it already (at most once).
        settled: bool,
        /// The settle mode that applies to this delivery.
        rcv_settle_mode: ReceiverSettleMode,
        /// The sender's view of the delivery's state, if given.
        state: Option<DeliveryState>,
        /// The message format (0 is a standard AMQP message).
        message_format: u32,
    },
    /// The peer updated the state of a delivery, or settled it.
    Disposition {
        /// The delivery.
        delivery: DeliveryId,
        /// Its new state (an outcome such as `accepted`), if given.
        state: Option<DeliveryState>,
        /// True if the peer settled it: it is forgotten.
        settled: bool,
    },
    /// The peer detached the link (the engine has answered), or answered our
    /// detach.
    LinkDetached {
        /// The link.
        link: LinkId,
        /// True if the link was closed rather than only detached.
        closed: bool,
        /// The peer's error, if any.
        error: Option<Error>,
    },
    /// The session ended (the engine has answered the peer's `end`).
    SessionEnded {
        /// The session.
        session: SessionId,
        /// The peer's error, if any.
        error: Option<Error>,
    },
    /// The connection is closed: by the peer (`remote`), or by us because of
    /// a protocol error (`local`).
    Closed {
        /// The error we closed with, if we did because of one.
        local: Option<Error>,
        /// The error the peer closed with, if any.
        remote: Option<Error>,
    },
}
