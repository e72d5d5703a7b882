//! Who may do what: each connection's user, as its authentication named
//! it, checked against the configured permissions ([`crate::permissions`])
//! at attach and for each message of the anonymous relay, and against the
//! user's limits (`[[users]] max_connections`, `max_sessions`,
//! `max_links`). Kept in the node core so that a single node and a
//! cluster node enforce them alike; each node counts only what its own
//! connections hold.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::amqp::engine::{LinkId, SessionId};
use crate::amqp::types::{Error, condition};
use crate::config::{Config, UserLimits};
use crate::node::{ConnId, Refusal};
use crate::permissions::{Operation, Permissions};

/// The connections' users and what they hold.
#[derive(Debug)]
pub(super) struct Access {
    permissions: Permissions,
    limits: BTreeMap<String, UserLimits>,
    /// Each authenticated connection's user.
    users: BTreeMap<ConnId, String>,
    /// Each user's authenticated connections: what the user's limits
    /// count, found without a walk over every connection.
    connections: BTreeMap<String, BTreeSet<ConnId>>,
    /// Connections over their user's `max_connections`: closed by their
    /// bridge, and refused whatever they ask meanwhile.
    refused: BTreeSet<ConnId>,
    /// Each connection's sessions: admitted (true), or over the user's
    /// `max_sessions` and being ended (false), so that a link attached on
    /// one meanwhile is refused.
    sessions: BTreeMap<(ConnId, SessionId), bool>,
}

impl Access {
    pub(super) fn new(config: &Config) -> Self {
        let permissions = Permissions::from_config(config);
        if !config.users.is_empty() && !permissions.is_enforced() {
            warn!(
                "users are configured but no [[permissions]]: every user may send to, \
                 receive from, create and delete every queue"
            );
        }
        let limits = config
            .users
            .iter()
            .map(|user| (user.name.clone(), user.limits))
            .collect();
        Self {
            permissions,
            limits,
            users: BTreeMap::new(),
            connections: BTreeMap::new(),
            refused: BTreeSet::new(),
            sessions: BTreeMap::new(),
        }
    }

    fn limits_of(&self, conn: ConnId) -> UserLimits {
        self.user_of(conn)
            .and_then(|user| self.limits.get(user))
            .copied()
            .unwrap_or_default()
    }

    fn user_of(&self, conn: ConnId) -> Option<&str> {
        self.users.get(&conn).map(String::as_str)
    }

    /// The connections of `conn`'s user (itself included).
    pub(super) fn connections_like(&self, conn: ConnId) -> Vec<ConnId> {
        let Some(user) = self.user_of(conn) else {
            return vec![conn];
        };
        let connections = self.connections.get(user).into_iter().flatten();
        connections.copied().collect()
    }

    /// `conn` authenticated as `user`: admitted, or refused if the user
    /// holds `max_connections` already.
    pub(super) fn authenticated(&mut self, conn: ConnId, user: String) -> Result<(), Refusal> {
        let max = self.limits.get(&user).and_then(|l| l.max_connections);
        let held = self.connections.get(&user).map_or(0, BTreeSet::len);
        if max.is_some_and(|max| held >= max as usize) {
            info!(
                conn,
                user, held, "connection refused: the user's max_connections"
            );
            self.refused.insert(conn);
            return Err(Refusal {
                condition: condition::RESOURCE_LIMIT_EXCEEDED,
                description: format!(
                    "user {user:?} may hold {held} connections at once (max_connections)"
                ),
            });
        }
        self.connections
            .entry(user.clone())
            .or_default()
            .insert(conn);
        self.users.insert(conn, user);
        Ok(())
    }

    /// A session of `conn` began: admitted, or refused if its user holds
    /// `max_sessions` already.
    pub(super) fn session_begun(
        &mut self,
        conn: ConnId,
        session: SessionId,
    ) -> Result<(), Refusal> {
        let Some(max) = self.limits_of(conn).max_sessions else {
            self.sessions.insert((conn, session), true);
            return Ok(());
        };
        let held: usize = self
            .connections_like(conn)
            .into_iter()
            .map(|c| {
                let sessions = self.sessions.range(session_range(c));
                sessions.filter(|(_, admitted)| **admitted).count()
            })
            .sum();
        let admitted = held < max as usize;
        self.sessions.insert((conn, session), admitted);
        if admitted {
            return Ok(());
        }
        info!(
            conn,
            session = session.0,
            held,
            "session refused: the user's max_sessions"
        );
        Err(Refusal {
            condition: condition::RESOURCE_LIMIT_EXCEEDED,
            description: format!("the user may hold {held} sessions at once (max_sessions)"),
        })
    }

    pub(super) fn session_ended(&mut self, conn: ConnId, session: SessionId) {
        self.sessions.remove(&(conn, session));
    }

    pub(super) fn disconnected(&mut self, conn: ConnId) {
        if let Some(user) = self.users.remove(&conn)
            && let Some(connections) = self.connections.get_mut(&user)
        {
            connections.remove(&conn);
            if connections.is_empty() {
                self.connections.remove(&user);
            }
        }
        self.refused.remove(&conn);
        let sessions: Vec<_> = self
            .sessions
            .range(session_range(conn))
            .map(|(k, _)| *k)
            .collect();
        for session in sessions {
            self.sessions.remove(&session);
        }
    }

    /// Whether `conn` may attach one more link, given how many links each
    /// connection holds.
    pub(super) fn admit_link(
        &self,
        conn: ConnId,
        link: LinkId,
        links_of: impl Fn(ConnId) -> usize,
    ) -> Result<(), Refusal> {
        if self.refused.contains(&conn) || self.sessions.get(&(conn, link.session)) == Some(&false)
        {
            return Err(Refusal {
                condition: condition::RESOURCE_LIMIT_EXCEEDED,
                description: "the connection or session is over its user's limits".to_owned(),
            });
        }
        let Some(max) = self.limits_of(conn).max_links else {
            return Ok(());
        };
        let held: usize = self.connections_like(conn).into_iter().map(links_of).sum();
        if held < max as usize {
            return Ok(());
        }
        Err(Refusal {
            condition: condition::RESOURCE_LIMIT_EXCEEDED,
            description: format!("the user may hold {held} links at once (max_links)"),
        })
    }

    /// Whether `conn`'s user may do `op` on `address`; the refusal names
    /// both, and says nothing of whether the address exists. A connection
    /// that never authenticated may do nothing once permissions are
    /// enforced.
    pub(super) fn check(&self, conn: ConnId, address: &str, op: Operation) -> Result<(), Refusal> {
        if !self.permissions.is_enforced() {
            return Ok(());
        }
        let user = self.user_of(conn);
        if user.is_some_and(|user| self.permissions.allows(user, address, op)) {
            return Ok(());
        }
        let who = user.unwrap_or("an unauthenticated connection");
        info!(conn, user = who, address, %op, "permission denied");
        Err(Refusal {
            condition: condition::UNAUTHORIZED_ACCESS,
            description: format!("user {who:?} may not {op} on address {address:?}"),
        })
    }

    /// As [`Access::check`], for a message: the error it is rejected with.
    pub(super) fn check_message(
        &self,
        conn: ConnId,
        address: &str,
        op: Operation,
    ) -> Result<(), Error> {
        self.check(conn, address, op)
            .map_err(|refusal| Error::new(refusal.condition, refusal.description))
    }
}

/// The keys of every session of `conn`.
fn session_range(conn: ConnId) -> std::ops::RangeInclusive<(ConnId, SessionId)> {
    (conn, SessionId(0))..=(conn, SessionId(u16::MAX))
}
