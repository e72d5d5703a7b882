//! The sans-IO AMQP 1.0 connection engine, for both the server and the
//! client role.
//!
//! Bytes, commands and `now` go in; bytes, events and a timer deadline come
//! out (see [`Connection`]). Nothing here touches a socket or a clock, so the
//! same engine runs in the broker, in the simulator's clients, in the
//! benchmark, under the fuzzer, and in tests that pair two engines in memory.

mod config;
mod connection;
mod event;
mod link;
mod session;
mod unfinished;

pub use config::{ClientSasl, ConnectionConfig, SaslVerdict, ServerSasl};
pub use connection::{Connection, EngineError, HANDLE_MAX, LinkOptions, LinkReply};
pub use event::{DeliveryId, Event, LinkId, SessionId};
pub use unfinished::UnfinishedBytes;

#[cfg(test)]
mod tests;
