//! AMQP 1.0: the type system codec, the protocol's definitions, framing, and
//! the sans-IO connection engine.

pub mod codec;
pub mod engine;
pub mod frame;
pub mod types;
