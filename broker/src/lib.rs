//! Sluice: an AMQP 1.0 message broker whose whole cluster runs under a
//! deterministic simulator.
//!
//! The crate is layered like quinn: sans-IO cores (the AMQP codec and
//! connection engine) take bytes, commands and `now` and return bytes and
//! events; the [`server`] drives them through the [`io`] seam, which is
//! tokio in production and turmoil in simulation.

pub mod amqp;
pub mod client;
pub mod config;
pub mod ctl;
pub mod http;
pub mod io;
pub mod log;
pub mod log_budget;
pub mod metrics;
pub mod node;
pub mod permissions;
pub mod planted;
pub mod queue;
pub mod raft;
pub mod sasl;
pub mod selector;
pub mod server;
