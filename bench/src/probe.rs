//! The probe each message body carries, and the messages that carry it.
//!
//! Body layout (big-endian), then zero padding up to `--size`:
//! `run id u32 | producer u32 | seq u64 | send time u64` (nanoseconds since
//! the run's start on this process's monotonic clock, so producer and
//! consumer must be the same process, as they are here).

use bytes::{Bytes, BytesMut};
use sluice::amqp::codec::Value;
use sluice::amqp::types::{Header, Message, Section};

/// Bytes of probe at the start of the body.
pub const PROBE_LEN: usize = 24;

/// What a body says about where and when it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The run that sent it: other values are leftovers of earlier runs.
    pub run_id: u32,
    /// The producer's number.
    pub producer: u32,
    /// The producer's sequence number, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run's base instant.
    pub sent_ns: u64,
}

impl Probe {
    /// Writes the probe over the start of `body`.
    fn write(&self, body: &mut [u8]) {
        body[0..4].copy_from_slice(&self.run_id.to_be_bytes());
        body[4..8].copy_from_slice(&self.producer.to_be_bytes());
        body[8..16].copy_from_slice(&self.seq.to_be_bytes());
        body[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a probe from the start of a body; `None` if it is too short.
    pub fn read(body: &[u8]) -> Option<Self> {
        let field = |range: std::ops::Range<usize>| body.get(range);
        let u32_at =
            |at: usize| field(at..at + 4).and_then(|b| b.try_into().ok().map(u32::from_be_bytes));
        let u64_at =
            |at: usize| field(at..at + 8).and_then(|b| b.try_into().ok().map(u64::from_be_bytes));
        Some(Self {
            run_id: u32_at(0)?,
            producer: u32_at(4)?,
            seq: u64_at(8)?,
            sent_ns: u64_at(16)?,
        })
    }

    /// Finds the probe in an encoded message: the first data section's body.
    pub fn from_message(message: Bytes) -> Option<Self> {
        let message = Message::decode(message).ok()?;
        message.sections.iter().find_map(|section| match section {
            Section::Data(body) => Self::read(body),
            _ => None,
        })
    }
}

/// An encoded message (header + one data section) whose body bytes are
/// patched in place for each send, so a send costs one copy.
#[derive(Debug, Clone)]
pub struct Template {
    encoded: Bytes,
    body_at: usize,
}

/// What a message carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// `header.durable`.
    pub durable: bool,
    /// `header.priority`, if not the default.
    pub priority: Option<u8>,
    /// Application properties, as strings.
    pub properties: Vec<(String, String)>,
}

impl Template {
    /// A message of `shape` with a `size`-byte body (at least
    /// [`PROBE_LEN`]).
    pub fn new(size: usize, shape: &Shape) -> Self {
        let body = Section::Data(Bytes::from(vec![0u8; size.max(PROBE_LEN)]));
        // A non-durable message carries no header at all (every field at
        // its default), as Proton sends it: RabbitMQ 3.10 detaches a link
        // that sends an empty header list.
        let mut sections = Vec::new();
        if shape.durable {
            sections.push(Section::Header(Header {
                durable: true,
                priority: shape.priority.unwrap_or(Header::default().priority),
                ..Header::default()
            }));
        }
        if !shape.properties.is_empty() {
            let properties = shape.properties.iter();
            sections.push(Section::ApplicationProperties(
                properties
                    .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                    .collect(),
            ));
        }
        sections.push(body);
        let message = Message { sections };
        let encoded = message.encode();
        // The data section's binary ends the encoding.
        let body_at = encoded.len() - size.max(PROBE_LEN);
        Self { encoded, body_at }
    }

    /// The message carrying `probe`.
    pub fn message(&self, probe: &Probe) -> Bytes {
        let mut buf = BytesMut::from(&self.encoded[..]);
        probe.write(&mut buf[self.body_at..]);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let probe = Probe {
            run_id: 7,
            producer: 3,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        for size in [24, 100, 4096] {
            let durable = Shape {
                durable: true,
                ..Shape::default()
            };
            let message = Template::new(size, &durable).message(&probe);
            assert_eq!(Probe::from_message(message.clone()), Some(probe));
            let decoded = Message::decode(message).unwrap();
            assert_eq!(decoded.header().map(|h| h.durable), Some(true));
            let transient = Template::new(size, &Shape::default()).message(&probe);
            assert_eq!(Probe::from_message(transient.clone()), Some(probe));
            assert_eq!(Message::decode(transient).unwrap().header(), None);
        }
        assert_eq!(Probe::read(&[0; 23]), None);
    }
}
