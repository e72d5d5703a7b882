//! Placeholder for per-user, per-address permissions (issue 15, item 3),
//! written in parallel elsewhere: the same signature, allowing everything,
//! so that the management API can be coded against it. Replaced at merge.

use crate::config::Config;

/// What a user may do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Send messages to it.
    Send,
    /// Receive (consume) messages from it.
    Receive,
    /// Browse its messages without taking them.
    Browse,
    /// Declare, delete or purge it.
    Manage,
    /// See its counters (metrics, the management API).
    Monitor,
}

/// Who may do what with which addresses.
#[derive(Debug, Clone, Default)]
pub struct Permissions;

impl Permissions {
    /// The permissions `config` grants.
    pub fn from_config(_config: &Config) -> Self {
        Self
    }

    /// Whether `user` may do `operation` on `address`.
    pub fn allows(&self, _user: &str, _address: &str, _operation: Operation) -> bool {
        true
    }
}
