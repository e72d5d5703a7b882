//! Connection caps, applied at accept: the broker refuses the excess while
//! it costs no more than a socket, instead of running out of file
//! descriptors, and no single address can hold every slot with handshakes
//! it never finishes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing::warn;

use crate::log_budget::{LogBudget, LogLine};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `limits.max_connections` are open.
    Full,
    /// Its address has `limits.max_handshakes_per_source` connections that
    /// have not authenticated yet.
    SourceBusy,
}

/// The open connections, and those of each address still in their
/// handshake.
#[derive(Debug)]
struct Counts {
    open: u32,
    handshaking: BTreeMap<IpAddr, u32>,
    refusals_log: Option<LogBudget>,
}

/// The caps, and the counts they are checked against.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    max_connections: u32,
    max_handshakes_per_source: u32,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub(crate) fn new(max_connections: u32, max_handshakes_per_source: u32) -> Self {
        Self {
            max_connections,
            max_handshakes_per_source,
            counts: Arc::new(Mutex::new(Counts {
                open: 0,
                handshaking: BTreeMap::new(),
                refusals_log: None,
            })),
        }
    }

    /// Admits a connection from `peer`, or refuses it (logged at a bounded
    /// rate). The ticket holds its place until dropped.
    pub(crate) fn admit(&self, peer: IpAddr, now: Instant) -> Result<Ticket, Refused> {
        let mut counts = self.lock();
        let handshaking = counts.handshaking.get(&peer).copied().unwrap_or(0);
        let refused = if counts.open >= self.max_connections {
            Some(Refused::Full)
        } else if handshaking >= self.max_handshakes_per_source {
            Some(Refused::SourceBusy)
        } else {
            None
        };
        if let Some(refused) = refused {
            let line = counts
                .refusals_log
                .get_or_insert_with(|| LogBudget::new(now))
                .spend(now);
            if let LogLine::Write { suppressed } = line {
                warn!(%peer, ?refused, suppressed, "connection refused at accept");
            }
            return Err(refused);
        }
        counts.open += 1;
        counts.handshaking.insert(peer, handshaking + 1);
        Ok(Ticket {
            admission: self.clone(),
            peer,
            handshaking: true,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection's place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Admission,
    peer: IpAddr,
    handshaking: bool,
}

impl Ticket {
    /// The client authenticated: it no longer counts against its address's
    /// handshakes.
    pub(crate) fn authenticated(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            end_handshake(&mut self.admission.lock(), self.peer);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.open -= 1;
        if self.handshaking {
            end_handshake(&mut counts, self.peer);
        }
    }
}

fn end_handshake(counts: &mut Counts, peer: IpAddr) {
    if let Some(handshaking) = counts.handshaking.get_mut(&peer) {
        *handshaking -= 1;
        if *handshaking == 0 {
            counts.handshaking.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now() // determinism-ok: only the log budget reads it
    }

    #[test]
    fn the_total_cap_refuses_the_excess_and_frees_a_place_on_drop() {
        let admission = Admission::new(2, 10);
        let first = admission.admit(A, now()).unwrap();
        let _second = admission.admit(B, now()).unwrap();
        assert_eq!(admission.admit(A, now()).unwrap_err(), Refused::Full);
        drop(first);
        assert!(admission.admit(A, now()).is_ok());
    }

    #[test]
    fn one_address_cannot_hold_more_than_its_handshakes() {
        let admission = Admission::new(100, 2);
        let mut first = admission.admit(A, now()).unwrap();
        let _second = admission.admit(A, now()).unwrap();
        assert_eq!(admission.admit(A, now()).unwrap_err(), Refused::SourceBusy);
        // Another address is not affected.
        assert!(admission.admit(B, now()).is_ok());
        // Once authenticated, a connection leaves its address's handshakes.
        first.authenticated();
        first.authenticated();
        let third = admission.admit(A, now()).unwrap();
        drop(third);
        drop(first);
        assert_eq!(admission.lock().open, 1);
        assert_eq!(admission.lock().handshaking.get(&A), Some(&1));
    }
}
