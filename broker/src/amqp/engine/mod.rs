//! TEMPORARY API SKETCH — replaced by the real engine. Signatures are the contract.
use std::sync::Arc;
use std::time::{Duration, Instant};
use bytes::Bytes;

/// Engine settings for one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub container_id: String,
    pub max_frame_size: u32,
    pub channel_max: u16,
    pub idle_timeout: Option<Duration>,
}

/// What a SASL mechanism check concluded.
pub enum AuthOutcome { Ok { identity: String }, Denied }

/// Checks SASL credentials (server role).
pub trait Authenticator: Send + Sync {
    fn mechanisms(&self) -> Vec<String>;
    fn authenticate(&self, mechanism: &str, initial_response: &[u8], hostname: Option<&str>) -> AuthOutcome;
}

#[derive(Debug)]
pub enum Event { Opened, LinkAttached { link: u32 }, Closed }

pub struct Connection;
impl Connection {
    pub fn server(_config: ConnectionConfig, _auth: Arc<dyn Authenticator>) -> Self { todo!() }
    pub fn handle_bytes(&mut self, _now: Instant, _bytes: &[u8]) { todo!() }
    pub fn handle_timeout(&mut self, _now: Instant) { todo!() }
    /// Bytes to write to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> { todo!() }
    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> { todo!() }
    pub fn poll_event(&mut self) -> Option<Event> { todo!() }
    /// Closes the connection with an error condition (e.g. `amqp:connection:forced` on shutdown).
    pub fn close(&mut self, _condition: &str, _description: &str) { todo!() }
    /// True once the connection is over: flush `poll_transmit` then drop the socket.
    pub fn is_finished(&self) -> bool { todo!() }
}
