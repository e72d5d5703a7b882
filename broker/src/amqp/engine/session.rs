//! Per-session state: channels, transfer windows, links and unsettled deliveries.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::link::Link;
use crate::amqp::types::DeliveryState;

/// Where a session is in its begin/end lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionState {
    /// We sent `begin` and await the peer's.
    BeginSent,
    /// Both begins exchanged.
    Mapped,
    /// We sent `end` and await the peer's.
    EndSent,
}

/// A transfer waiting for the peer's session window to open.
#[derive(Debug)]
pub(super) struct PendingTransfer {
    pub handle: u32,
    pub delivery_id: u32,
    pub tag: Bytes,
    pub settled: bool,
    /// Its state, sent with the first frame (boxed: rarely set, and
    /// transfers queue here by the thousand).
    pub state: Option<Box<DeliveryState>>,
    pub payload: Bytes,
    /// How much of `payload` has been sent; > 0 means only continuation
    /// frames remain.
    pub sent: usize,
}

/// One end of a session.
#[derive(Debug)]
pub(super) struct Session {
    pub state: SessionState,
    pub remote_channel: Option<u16>,
    /// The transfer-id of our next outgoing transfer frame.
    pub next_outgoing_id: u32,
    /// The transfer-id we expect next from the peer.
    pub next_incoming_id: u32,
    /// Transfer frames the peer may still send before we refresh the window.
    pub incoming_window: u32,
    /// Transfer frames we may still send.
    pub remote_incoming_window: u32,
    /// The highest handle the peer accepts.
    pub remote_handle_max: u32,
    /// Links by our handle.
    pub links: BTreeMap<u32, Link>,
    /// Our handle, by the peer's handle.
    pub remote_handles: BTreeMap<u32, u32>,
    /// The delivery-id of our next outgoing delivery.
    pub next_delivery_id: u32,
    /// Deliveries we sent that the peer has not settled: delivery-id → our handle.
    pub outgoing_unsettled: BTreeMap<u32, u32>,
    /// Deliveries we received that are not settled: delivery-id → our handle.
    pub incoming_unsettled: BTreeMap<u32, u32>,
    /// Transfers held back by the peer's session window.
    pub pending: VecDeque<PendingTransfer>,
}

impl Session {
    pub fn new(state: SessionState, incoming_window: u32) -> Self {
        Self {
            state,
            remote_channel: None,
            next_outgoing_id: 0,
            next_incoming_id: 0,
            incoming_window,
            remote_incoming_window: 0,
            remote_handle_max: u32::MAX,
            links: BTreeMap::new(),
            remote_handles: BTreeMap::new(),
            next_delivery_id: 0,
            outgoing_unsettled: BTreeMap::new(),
            incoming_unsettled: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// The lowest handle not in use, if any is within the peer's handle-max.
    pub fn free_handle(&self) -> Option<u32> {
        lowest_free(self.links.keys().copied(), self.remote_handle_max)
    }
}

/// The lowest number in `0..=max` that `used` (ascending) does not contain.
pub(super) fn lowest_free(used: impl Iterator<Item = u32>, max: u32) -> Option<u32> {
    let mut candidate = 0u32;
    for n in used {
        if n != candidate {
            break;
        }
        candidate = candidate.checked_add(1)?;
    }
    (candidate <= max).then_some(candidate)
}

/// The ids of `map` in the serial-number range `first..=last`, which may
/// wrap past `u32::MAX`. Iterating the map, not the range, keeps a hostile
/// range of four billion ids cheap.
pub(super) fn ids_in_range<V>(map: &BTreeMap<u32, V>, first: u32, last: u32) -> Vec<u32> {
    if first <= last {
        map.range(first..=last).map(|(id, _)| *id).collect()
    } else {
        map.range(first..)
            .chain(map.range(..=last))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_fills_gaps_and_respects_max() {
        assert_eq!(lowest_free([].into_iter(), 5), Some(0));
        assert_eq!(lowest_free([0, 1, 3].into_iter(), 5), Some(2));
        assert_eq!(lowest_free([0, 1, 2].into_iter(), 2), None);
    }

    #[test]
    fn ranges_wrap_around() {
        let map: BTreeMap<u32, ()> = [0, 1, 5, u32::MAX - 1, u32::MAX]
            .into_iter()
            .map(|k| (k, ()))
            .collect();
        assert_eq!(ids_in_range(&map, 1, 5), vec![1, 5]);
        assert_eq!(
            ids_in_range(&map, u32::MAX - 1, 0),
            vec![u32::MAX - 1, u32::MAX, 0]
        );
    }
}
