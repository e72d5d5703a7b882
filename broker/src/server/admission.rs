//! Connection caps, applied at accept: the broker refuses the excess while
//! it costs no more than a socket, instead of running out of file
//! descriptors, and no single address can hold every slot with handshakes
//! it never finishes. Addresses known to be friends (the cluster's peers)
//! are held only to the cap per address, so strangers filling every other
//! slot cannot keep them out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing::warn;

use crate::config::Config;
use crate::log_budget::{LogBudget, LogLine};
use crate::raft::transport::PENDING_HANDSHAKES_MAX;

/// Descriptors kept for what is not a connection: the standard streams,
/// the listeners, the log's segments and snapshot files, the votes file,
/// the runtime's own, and the one each refused connection holds briefly.
const DESCRIPTORS_FOR_THE_BROKER: u64 = 256;

/// The open-file limit leaves nothing for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the open-file limit ({limit}) leaves no descriptor for client connections: \
     the broker needs {reserved} for itself; raise it (ulimit -n)"
)]
pub struct TooFewDescriptors {
    /// The process's limit.
    pub limit: u64,
    /// What the broker keeps for itself.
    pub reserved: u64,
}

/// Lowers `limits.max_connections` so that, with everything else the
/// broker configured by `config` may hold open (its files, HTTP
/// connections, cluster peers and handshakes), it fits under `limit` open
/// descriptors. Returns the configured value if it was lowered.
///
/// # Errors
///
/// [`TooFewDescriptors`] if not even one client connection fits.
pub fn fit_to_descriptors(
    config: &mut Config,
    limit: u64,
) -> Result<Option<u32>, TooFewDescriptors> {
    let reserved = descriptors_reserved(config);
    let room = limit.saturating_sub(reserved);
    if room == 0 {
        return Err(TooFewDescriptors { limit, reserved });
    }
    let wanted = config.limits.max_connections;
    if u64::from(wanted) <= room {
        return Ok(None);
    }
    config.limits.max_connections = u32::try_from(room).unwrap_or(u32::MAX);
    Ok(Some(wanted))
}

/// The descriptors a broker configured by `config` may hold open besides
/// its client connections.
fn descriptors_reserved(config: &Config) -> u64 {
    let http = if config.http.listen.is_some() {
        crate::http::CONNECTIONS_MAX as u64
    } else {
        0
    };
    // A connection each way per peer, and the strangers' handshakes.
    let peers = config.cluster.peers.len() as u64;
    let cluster = if peers == 0 {
        0
    } else {
        u64::from(PENDING_HANDSHAKES_MAX) + 2 * peers
    };
    // The single node's page store (a cluster's groups do not page yet).
    let pages = crate::io::pages::PAGE_FILES_MAX;
    DESCRIPTORS_FOR_THE_BROKER + pages + http + cluster
}

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
    /// Addresses exempt from the cap on all connections.
    preferred: BTreeSet<IpAddr>,
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
                preferred: BTreeSet::new(),
                refusals_log: None,
            })),
        }
    }

    /// Admits a connection from `peer`, or refuses it (logged at a bounded
    /// rate). The ticket holds its place until dropped.
    pub(crate) fn admit(&self, peer: IpAddr, now: Instant) -> Result<Ticket, Refused> {
        let mut counts = self.lock();
        let handshaking = counts.handshaking.get(&peer).copied().unwrap_or(0);
        let refused = if counts.open >= self.max_connections && !counts.preferred.contains(&peer) {
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

    /// Exempts `peer` from the cap on all connections from now on; the cap
    /// per address still holds.
    pub(crate) fn prefer(&self, peer: IpAddr) {
        self.lock().preferred.insert(peer);
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

    #[test]
    fn max_connections_fits_under_the_descriptor_limit() {
        let mut config = Config::default();
        config.limits.max_connections = 10_000;
        let reserved = DESCRIPTORS_FOR_THE_BROKER + crate::io::pages::PAGE_FILES_MAX;
        assert_eq!(fit_to_descriptors(&mut config, 1 << 20), Ok(None));
        assert_eq!(config.limits.max_connections, 10_000);
        assert_eq!(
            fit_to_descriptors(&mut config, reserved + 1_000),
            Ok(Some(10_000))
        );
        assert_eq!(config.limits.max_connections, 1_000);
        // An HTTP listener and a cluster peer keep more for themselves.
        config.http.listen = Some("127.0.0.1:0".parse().unwrap());
        config.cluster.peers = vec![crate::config::Peer {
            id: 2,
            address: "node2:7000".to_owned(),
        }];
        let more = crate::http::CONNECTIONS_MAX as u64 + u64::from(PENDING_HANDSHAKES_MAX) + 2;
        assert_eq!(
            fit_to_descriptors(&mut config, reserved + more + 10),
            Ok(Some(1_000))
        );
        assert_eq!(config.limits.max_connections, 10);
        assert_eq!(
            fit_to_descriptors(&mut config, reserved + more),
            Err(TooFewDescriptors {
                limit: reserved + more,
                reserved: reserved + more,
            })
        );
    }

    #[test]
    fn a_preferred_address_passes_a_full_cap_but_not_its_own() {
        let admission = Admission::new(1, 2);
        let _stranger = admission.admit(B, now()).unwrap();
        assert_eq!(admission.admit(A, now()).unwrap_err(), Refused::Full);
        admission.prefer(A);
        let _first = admission.admit(A, now()).unwrap();
        let _second = admission.admit(A, now()).unwrap();
        assert_eq!(admission.admit(A, now()).unwrap_err(), Refused::SourceBusy);
        // Strangers still meet the full cap.
        assert_eq!(admission.admit(B, now()).unwrap_err(), Refused::Full);
    }
}
