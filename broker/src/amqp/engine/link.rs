//! Per-link state: settle modes, credit, and reassembly of incoming messages.

use bytes::{Bytes, BytesMut};

use crate::amqp::types::{DeliveryState, ReceiverSettleMode, Role, SenderSettleMode};

/// Where a link is in its attach/detach lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    /// We sent `attach` and await the peer's.
    AttachSent,
    /// The peer sent `attach`; the application has not answered yet.
    AttachReceived,
    /// Both attaches exchanged.
    Attached,
    /// We sent `detach` and await the peer's.
    DetachSent,
}

/// One end of a link.
#[derive(Debug)]
pub(super) struct Link {
    pub name: String,
    /// Our role on the link.
    pub role: Role,
    pub state: LinkState,
    pub remote_handle: Option<u32>,
    pub snd_settle_mode: SenderSettleMode,
    pub rcv_settle_mode: ReceiverSettleMode,
    /// Deliveries sent (sender) or received (receiver), modulo 2^32.
    pub delivery_count: u32,
    /// Deliveries that may still be sent.
    pub link_credit: u32,
    /// The receiver asked us to drain (sender role).
    pub drain: bool,
    /// The largest message the peer accepts (sender role).
    pub peer_max_message_size: Option<u64>,
    /// A message being received across several transfers (receiver role).
    pub incoming: Option<PartialDelivery>,
}

impl Link {
    pub fn new(name: String, role: Role, state: LinkState) -> Self {
        Self {
            name,
            role,
            state,
            remote_handle: None,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            delivery_count: 0,
            link_credit: 0,
            drain: false,
            peer_max_message_size: None,
            incoming: None,
        }
    }

    /// Sender role: recomputes credit from the receiver's flow (spec §2.6.7):
    /// credit = delivery-count(rcv) + link-credit(rcv) − delivery-count(snd).
    pub fn credit_from_flow(&mut self, rcv_delivery_count: u32, rcv_link_credit: u32) {
        self.link_credit = rcv_delivery_count
            .wrapping_add(rcv_link_credit)
            .wrapping_sub(self.delivery_count);
    }
}

/// A message whose transfers have not all arrived.
#[derive(Debug)]
pub(super) struct PartialDelivery {
    pub delivery_id: u32,
    pub tag: Bytes,
    pub settled: bool,
    pub message_format: u32,
    pub rcv_settle_mode: ReceiverSettleMode,
    pub state: Option<DeliveryState>,
    chunks: Vec<Bytes>,
    len: u64,
}

impl PartialDelivery {
    pub fn new(
        delivery_id: u32,
        tag: Bytes,
        message_format: u32,
        rcv_settle_mode: ReceiverSettleMode,
    ) -> Self {
        Self {
            delivery_id,
            tag,
            settled: false,
            message_format,
            rcv_settle_mode,
            state: None,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Appends one transfer's payload; returns the message length so far.
    pub fn push(&mut self, payload: Bytes) -> u64 {
        self.len += payload.len() as u64;
        if !payload.is_empty() {
            self.chunks.push(payload);
        }
        self.len
    }

    /// The whole message. A single-transfer message is not copied.
    pub fn into_message(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.swap_remove(0),
            _ => {
                let mut whole = BytesMut::with_capacity(self.len as usize);
                self.chunks.iter().for_each(|c| whole.extend_from_slice(c));
                whole.freeze()
            }
        }
    }
}
