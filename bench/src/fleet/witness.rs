//! The witness: an unrelated client that sends to its own queue and takes
//! back what it sent, on one connection. Its round trip says when the
//! broker serves clients again, and its rate what a fleet costs everyone
//! else.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::amqp::engine::{DeliveryId, Event, LinkId};
use sluice::amqp::types::{Accepted, DeliveryState, Source};
use sluice::client::Client;
use sluice::io::{Io, TokioIo};

use super::FleetError;
use crate::probe::{Shape, Template};

/// Most sends awaiting their outcome while measuring the rate.
const WINDOW: u64 = 256;

/// Credit the witness's receiver grants, topped up at half.
const CREDIT: u32 = 1_000;

/// The witness's body size.
const SIZE: usize = 100;

/// One connection with a sender and a receiver on the same queue.
pub struct Witness {
    io: TokioIo,
    client: Client<TokioIo>,
    sender: LinkId,
    receiver: LinkId,
    message: Bytes,
    next_tag: u64,
    /// Our sends the broker accepted.
    accepted: u64,
    /// Our messages received back.
    received: u64,
    /// Credit the receiver has left, as granted.
    credit: u32,
}

impl Witness {
    /// Connects and attaches both links to `address`.
    pub async fn open(
        io: TokioIo,
        client: Client<TokioIo>,
        address: &str,
    ) -> Result<Self, FleetError> {
        let mut client = client;
        let session = client.begin().await?;
        let source = Source {
            address: Some(address.to_owned()),
            ..Source::default()
        };
        // The sender first: with auto-creation it makes the queue.
        let sender = client
            .attach_sender(session, "fleet-witness-sender", Some(address))
            .await?;
        let receiver = client
            .attach_receiver(session, "fleet-witness-receiver", source, CREDIT)
            .await?;
        let shape = Shape {
            durable: true,
            ..Shape::default()
        };
        Ok(Self {
            io,
            client,
            sender,
            receiver,
            message: Template::new(SIZE, &shape).message(&crate::probe::Probe {
                run_id: 0,
                producer: 0,
                seq: 0,
                sent_ns: 0,
            }),
            next_tag: 0,
            accepted: 0,
            received: 0,
            credit: CREDIT,
        })
    }

    /// Sends one message and waits until it is accepted and received back:
    /// how long that took.
    pub async fn round_trip(&mut self) -> Result<Duration, FleetError> {
        let started = self.io.now();
        let (accepted, received) = (self.accepted + 1, self.received + 1);
        self.send()?;
        while self.accepted < accepted || self.received < received {
            self.next().await?;
        }
        Ok(self.io.now().saturating_duration_since(started))
    }

    /// Sends as fast as the window allows for `duration`, then waits for
    /// what is in flight: accepted messages per second, from the first send
    /// to the last outcome.
    pub async fn rate(&mut self, duration: Duration) -> Result<f64, FleetError> {
        let started = self.io.now();
        let stop = started + duration;
        let (accepted0, received0) = (self.accepted, self.received);
        let mut sent = 0u64;
        loop {
            let now = self.io.now();
            while now < stop
                && sent - (self.accepted - accepted0) < WINDOW
                && self.client.connection().credit(self.sender) > 0
            {
                self.send()?;
                sent += 1;
            }
            let done = self.accepted - accepted0 == sent && self.received - received0 == sent;
            if now >= stop && done {
                let elapsed = now.saturating_duration_since(started).as_secs_f64();
                return Ok(sent as f64 / elapsed.max(1e-9));
            }
            self.next().await?;
        }
    }

    fn send(&mut self) -> Result<(), FleetError> {
        let tag = Bytes::copy_from_slice(&self.next_tag.to_be_bytes());
        self.next_tag += 1;
        let message = self.message.clone();
        self.client
            .connection()
            .send(self.sender, tag, message, false)?;
        Ok(())
    }

    /// Handles the next event: counts outcomes and settles what arrives.
    async fn next(&mut self) -> Result<(), FleetError> {
        match self.client.next_event().await? {
            Event::Disposition {
                delivery,
                state: Some(state),
                ..
            } if delivery.link == self.sender => match state {
                DeliveryState::Accepted(_) => self.accepted += 1,
                other => return Err(FleetError::Refused(format!("witness send: {other:?}"))),
            },
            Event::Delivery { delivery, .. } if delivery.link == self.receiver => {
                self.take(delivery)?;
            }
            Event::LinkDetached { error, .. } => {
                return Err(FleetError::Refused(format!(
                    "witness link detached: {error:?}"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// Accepts a received message, and tops the receiver's credit up.
    fn take(&mut self, delivery: DeliveryId) -> Result<(), FleetError> {
        self.received += 1;
        let conn = self.client.connection();
        conn.disposition(delivery, Some(DeliveryState::Accepted(Accepted)), true)?;
        self.credit = self.credit.saturating_sub(1);
        if self.credit < CREDIT / 2 {
            conn.flow(self.receiver, CREDIT, false)?;
            self.credit = CREDIT;
        }
        Ok(())
    }

    /// How long from `since` until now.
    pub fn since(&self, since: Instant) -> Duration {
        self.io.now().saturating_duration_since(since)
    }
}
