//! Per-link state: settle modes, credit, and reassembly of incoming messages.

use bytes::{Bytes, BytesMut};

use super::unfinished::{Reservation, UnfinishedBytes};
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
    /// Receiver role: the highest delivery-count limit (delivery-count plus
    /// link-credit) we have advertised. A sender uses its credit until it
    /// sees a flow that lowers it, so transfers up to here may be in flight
    /// legally (spec §2.6.7); only one past it is a violation.
    pub credit_limit: u32,
    /// The receiver asked us to drain (sender role).
    pub drain: bool,
    /// The largest message the peer accepts (sender role).
    pub peer_max_message_size: Option<u64>,
    /// A message being received across several transfers (receiver role).
    pub incoming: Option<PartialDelivery>,
    /// The transaction the receiver acquires in (sender role): the
    /// `txn-id` of its latest flow's properties (AMQP 1.0 §4.4.3).
    pub acquiring: Option<Bytes>,
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
            credit_limit: 0,
            drain: false,
            peer_max_message_size: None,
            incoming: None,
            acquiring: None,
        }
    }

    /// Sender role: recomputes credit from the receiver's flow (spec §2.6.7):
    /// credit = delivery-count(rcv) + link-credit(rcv) − delivery-count(snd).
    ///
    /// Our count is ahead of the receiver's by the transfers it had not
    /// seen when it sent the flow. A credit lowered below them leaves none,
    /// not a negative credit wrapped around.
    pub fn credit_from_flow(&mut self, rcv_delivery_count: u32, rcv_link_credit: u32) {
        let unseen = self.delivery_count.wrapping_sub(rcv_delivery_count);
        self.link_credit = if unseen <= SERIAL_SPAN_MAX {
            rcv_link_credit.saturating_sub(unseen)
        } else {
            // The receiver counts ahead of us, which only a confused peer
            // does: the spec's formula still holds, short of wrapping.
            rcv_link_credit.saturating_add(unseen.wrapping_neg())
        };
    }

    /// Receiver role: starts counting at the sender's initial
    /// delivery-count; credit granted before its attach arrived counts from
    /// there.
    pub fn start_count(&mut self, initial_delivery_count: u32) {
        self.delivery_count = initial_delivery_count;
        self.credit_limit = initial_delivery_count;
        self.grant(self.link_credit);
    }

    /// Receiver role: advertises `credit` at our delivery-count, and keeps
    /// the highest limit advertised so far.
    pub fn grant(&mut self, credit: u32) {
        self.link_credit = credit;
        // Limits are ordered only within half the serial-number space; no
        // sender has 2^31 deliveries in flight.
        let limit = self
            .delivery_count
            .wrapping_add(credit.min(SERIAL_SPAN_MAX));
        if serial_lt(self.credit_limit, limit) {
            self.credit_limit = limit;
        }
    }

    /// Receiver role: takes the delivery-count from the sender's flow (it
    /// moves on when the sender gives credit back after a drain).
    pub fn sender_count(&mut self, delivery_count: u32) {
        self.delivery_count = delivery_count;
        // A count past every limit leaves no credit; keeping the limit from
        // trailing the count keeps their comparison well defined.
        if !serial_le(delivery_count, self.credit_limit) {
            self.credit_limit = delivery_count;
        }
    }

    /// Receiver role: counts the first transfer of a delivery; false if it
    /// is past every limit we advertised.
    pub fn take_credit(&mut self) -> bool {
        if !serial_lt(self.delivery_count, self.credit_limit) {
            return false;
        }
        self.delivery_count = self.delivery_count.wrapping_add(1);
        // Under a lowered credit, transfers sent before the sender saw it
        // outlast it: the credit stays at zero rather than wrapping.
        self.link_credit = self.link_credit.saturating_sub(1);
        true
    }
}

/// The largest distance between two delivery-counts that serial-number
/// arithmetic (RFC 1982) orders.
const SERIAL_SPAN_MAX: u32 = (1 << 31) - 1;

/// Whether delivery-count `a` comes before `b` (RFC 1982).
fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) <= SERIAL_SPAN_MAX
}

/// Whether delivery-count `a` is `b` or comes before it (RFC 1982).
fn serial_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) <= SERIAL_SPAN_MAX
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
    /// What the message holds of the connection's pool of unfinished bytes.
    reservation: Reservation,
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
            reservation: Reservation::default(),
        }
    }

    /// Takes the message's length so far from `pool`; false if the pool
    /// has not the room.
    pub fn reserve(&mut self, pool: &UnfinishedBytes) -> bool {
        self.reservation.grow_to(pool, self.len)
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
