//! A small async AMQP 1.0 client on the client-role engine, over the I/O
//! seam: what the simulator's workload, the benchmark and the tests speak.
//!
//! It is deliberately thin: one connection, commands that queue frames, and
//! [`Client::next_event`], which pumps the socket until the engine reports
//! something. Callers build their own flows (credit windows, settlement)
//! from events, as a real client library would.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::amqp::codec::{Symbol, Value, from_bytes, to_bytes};
use crate::amqp::engine::{
    ClientSasl, Connection, ConnectionConfig, DeliveryId, EngineError, Event, LinkId, LinkOptions,
    SessionId,
};
use crate::amqp::types::{
    Attach, AttachSource, AttachTarget, ControlMessage, Coordinator, Declare, DeliveryState,
    Discharge, Error, LOCAL_TRANSACTIONS, Message, ReceiverSettleMode, Role, Section,
    SenderSettleMode, Source, Target,
};
use crate::io::{self as seam, Io};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused a command.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The connection closed (the error, if it carried one).
    #[error("connection closed: {0:?}")]
    Closed(Option<Error>),
    /// The broker refused or closed a link.
    #[error("link refused: {0:?}")]
    LinkRefused(Option<Error>),
    /// The broker answered a receiver's request for rcv-settle-mode
    /// `second` with `first`.
    #[error("rcv-settle-mode second refused: the broker answered first")]
    SettleModeRefused,
    /// The coordinator refused a `declare`, or rolled a transaction back
    /// at its discharge (the error, if it gave one).
    #[error("transaction refused: {0:?}")]
    Transaction(Option<Error>),
}

/// One AMQP connection to a broker, over `S`: the seam's own stream, or
/// one the caller connected (see [`Client::handshake`]).
pub struct Client<I: Io, S = <I as Io>::Stream> {
    io: I,
    stream: S,
    conn: Connection,
    events: VecDeque<Event>,
    read_buf: Vec<u8>,
    /// The delivery tag of the next control message (`declare`,
    /// `discharge`): unique on the connection.
    next_control_tag: u64,
}

impl<I: Io> Client<I> {
    /// Connects to `addr` and completes the SASL and open handshake.
    pub async fn connect(
        io: I,
        addr: &str,
        config: ConnectionConfig,
        sasl: ClientSasl,
    ) -> Result<Self, ClientError> {
        let stream = io.connect(addr).await?;
        Self::handshake(io, stream, config, sasl).await
    }
}

impl<I: Io, S: AsyncRead + AsyncWrite + Unpin> Client<I, S> {
    /// Completes the SASL and open handshake on `stream`, already connected
    /// (the simulator's clients connect through their own fault-injecting
    /// link); `io` still keeps the time.
    pub async fn handshake(
        io: I,
        stream: S,
        config: ConnectionConfig,
        sasl: ClientSasl,
    ) -> Result<Self, ClientError> {
        let conn = Connection::client(config, sasl, io.now());
        let mut client = Self {
            io,
            stream,
            conn,
            events: VecDeque::new(),
            read_buf: vec![0; 16 * 1024],
            next_control_tag: 0,
        };
        loop {
            match client.next_event().await? {
                Event::Opened { .. } => return Ok(client),
                Event::Closed { local, remote } => {
                    return Err(ClientError::Closed(local.or(remote)));
                }
                _ => {}
            }
        }
    }

    /// The engine, for commands this wrapper does not cover.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Begins a session and waits for the broker's answer.
    pub async fn begin(&mut self) -> Result<SessionId, ClientError> {
        let session = self.conn.begin()?;
        self.wait_for(|e| matches!(e, Event::SessionBegun { session: s, .. } if *s == session))
            .await?;
        Ok(session)
    }

    /// Attaches a sending link to `address` (None: the anonymous relay) and
    /// waits until the broker has answered and granted credit.
    pub async fn attach_sender(
        &mut self,
        session: SessionId,
        name: &str,
        address: Option<&str>,
    ) -> Result<LinkId, ClientError> {
        let options = LinkOptions {
            name: name.to_owned(),
            role: Role::Sender,
            source: Some(Source::default().into()),
            target: Some(
                Target {
                    address: address.map(str::to_owned),
                    ..Target::default()
                }
                .into(),
            ),
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
        };
        let link = self.attach(session, options).await?;
        self.await_credit(link).await?;
        Ok(link)
    }

    /// Attaches a receiving link from `source` and grants it `credit`.
    pub async fn attach_receiver(
        &mut self,
        session: SessionId,
        name: &str,
        source: Source,
        credit: u32,
    ) -> Result<LinkId, ClientError> {
        let first = ReceiverSettleMode::First;
        self.attach_receiver_settling(session, name, source, credit, first)
            .await
    }

    /// Attaches a receiving link from `source` asking for `rcv_settle_mode`,
    /// and grants it `credit`. Under `second` the broker settles each
    /// delivery only after the outcome the client sent: see
    /// [`Client::settle_second`].
    ///
    /// # Errors
    ///
    /// [`ClientError::SettleModeRefused`] if the broker's attach answers
    /// `first` to a request for `second` (the link stays attached).
    pub async fn attach_receiver_settling(
        &mut self,
        session: SessionId,
        name: &str,
        source: Source,
        credit: u32,
        rcv_settle_mode: ReceiverSettleMode,
    ) -> Result<LinkId, ClientError> {
        let options = LinkOptions {
            name: name.to_owned(),
            role: Role::Receiver,
            source: Some(source.into()),
            target: Some(Target::default().into()),
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode,
        };
        let link = self.attach(session, options).await?;
        // The sender decides the modes in use (§2.7.3): its answer says
        // whether a settle from us ends the delivery or waits for its own.
        // A link the broker detached as soon as it answered has gone, with
        // no mode to judge.
        match self.conn.rcv_settle_mode(link) {
            Some(mode) if mode == rcv_settle_mode => {}
            Some(_) => return Err(ClientError::SettleModeRefused),
            None => return Err(ClientError::LinkRefused(None)),
        }
        self.conn.flow(link, credit, false)?;
        self.flush().await?;
        Ok(link)
    }

    /// Attaches a receiving link from a dynamic source (a temporary queue
    /// the broker makes and names, deleted when the link closes) and
    /// grants it `credit`: the link, and the address the broker named.
    ///
    /// # Errors
    ///
    /// [`ClientError::LinkRefused`] if the broker refused the link, or
    /// answered with a source that has no address.
    pub async fn attach_dynamic_receiver(
        &mut self,
        session: SessionId,
        name: &str,
        credit: u32,
    ) -> Result<(LinkId, String), ClientError> {
        let source = Source {
            dynamic: true,
            ..Source::default()
        };
        let options = LinkOptions {
            name: name.to_owned(),
            role: Role::Receiver,
            source: Some(source.into()),
            target: Some(Target::default().into()),
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: ReceiverSettleMode::First,
        };
        let (link, remote) = self.attach_answered(session, options).await?;
        let address = remote
            .source
            .as_ref()
            .and_then(AttachSource::node)
            .and_then(|source| source.address.clone());
        let Some(address) = address else {
            return Err(ClientError::LinkRefused(None));
        };
        self.conn.flow(link, credit, false)?;
        self.flush().await?;
        Ok((link, address))
    }

    /// Attaches a link as `options` say and waits for the broker's answer:
    /// the link, or the error the broker refused it with.
    pub async fn attach(
        &mut self,
        session: SessionId,
        options: LinkOptions,
    ) -> Result<LinkId, ClientError> {
        Ok(self.attach_answered(session, options).await?.0)
    }

    /// As [`Client::attach`], with the broker's attach.
    async fn attach_answered(
        &mut self,
        session: SessionId,
        options: LinkOptions,
    ) -> Result<(LinkId, Box<Attach>), ClientError> {
        let link = self.conn.attach(session, options)?;
        let attached = self
            .wait_for(|e| matches!(e, Event::LinkAttached { link: l, .. } if *l == link))
            .await?;
        let Event::LinkAttached { remote, .. } = attached else {
            unreachable!("wait_for returns the event it matched");
        };
        // A refusal is an attach with no terminus, followed by a detach.
        let refused = match remote.role {
            Role::Sender => remote.source.is_none(),
            Role::Receiver => remote.target.is_none(),
        };
        if refused {
            let detached = self
                .wait_for(|e| matches!(e, Event::LinkDetached { link: l, .. } if *l == link))
                .await?;
            let Event::LinkDetached { error, .. } = detached else {
                unreachable!("wait_for returns the event it matched");
            };
            return Err(ClientError::LinkRefused(error));
        }
        Ok((link, remote))
    }

    /// Waits until `link` has credit to send.
    async fn await_credit(&mut self, link: LinkId) -> Result<(), ClientError> {
        while self.conn.credit(link) == 0 {
            self.wait_for(|e| matches!(e, Event::Credit { link: l, .. } if *l == link))
                .await?;
        }
        Ok(())
    }

    /// Sends a message; waits for credit if there is none.
    pub async fn send(
        &mut self,
        link: LinkId,
        tag: Bytes,
        message: Bytes,
        settled: bool,
    ) -> Result<DeliveryId, ClientError> {
        self.await_credit(link).await?;
        let delivery = self.conn.send(link, tag, message, settled)?;
        self.flush().await?;
        Ok(delivery)
    }

    /// Attaches a link to the broker's transaction coordinator, for local
    /// transactions, and waits until it may send.
    pub async fn attach_coordinator(
        &mut self,
        session: SessionId,
        name: &str,
    ) -> Result<LinkId, ClientError> {
        let coordinator = Coordinator {
            capabilities: vec![Symbol::from_static(LOCAL_TRANSACTIONS)],
        };
        let options = LinkOptions {
            name: name.to_owned(),
            role: Role::Sender,
            source: Some(Source::default().into()),
            target: Some(AttachTarget::Coordinator(coordinator)),
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: ReceiverSettleMode::First,
        };
        let link = self.attach(session, options).await?;
        self.await_credit(link).await?;
        Ok(link)
    }

    /// Declares a transaction on `coordinator` and waits for its id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Transaction`] if the coordinator refused it.
    pub async fn declare(&mut self, coordinator: LinkId) -> Result<Bytes, ClientError> {
        let declare = ControlMessage::Declare(Declare::default());
        match self.control(coordinator, &declare).await? {
            DeliveryState::Declared(declared) => Ok(declared.txn_id),
            state => Err(refusal(state)),
        }
    }

    /// Sends a message, unsettled, in transaction `txn_id`; waits for
    /// credit if there is none. Its outcome is provisional: the message
    /// counts only once the transaction commits.
    pub async fn send_in_transaction(
        &mut self,
        link: LinkId,
        tag: Bytes,
        message: Bytes,
        txn_id: Bytes,
    ) -> Result<DeliveryId, ClientError> {
        self.await_credit(link).await?;
        let delivery = self.conn.send_transactional(link, tag, message, txn_id)?;
        self.flush().await?;
        Ok(delivery)
    }

    /// Ends transaction `txn_id` on `coordinator`: commits it, or with
    /// `fail` rolls it back; waits for the coordinator's answer.
    ///
    /// # Errors
    ///
    /// [`ClientError::Transaction`] if the coordinator answered `rejected`:
    /// the transaction was rolled back. Any other error leaves its fate
    /// unknown to the caller.
    pub async fn discharge(
        &mut self,
        coordinator: LinkId,
        txn_id: Bytes,
        fail: bool,
    ) -> Result<(), ClientError> {
        let discharge = ControlMessage::Discharge(Discharge { txn_id, fail });
        match self.control(coordinator, &discharge).await? {
            DeliveryState::Accepted(_) => Ok(()),
            state => Err(refusal(state)),
        }
    }

    /// Sends a control message to the coordinator, as an `amqp-value`
    /// body, and waits for the state the coordinator answers with.
    async fn control(
        &mut self,
        coordinator: LinkId,
        control: &ControlMessage,
    ) -> Result<DeliveryState, ClientError> {
        // A control message is a described list: what it encodes always
        // decodes as a value.
        let body: Value =
            from_bytes(to_bytes(control)).expect("an encoded control message is a value");
        let message = Message {
            sections: vec![Section::AmqpValue(body)],
        };
        let tag = Bytes::copy_from_slice(&self.next_control_tag.to_be_bytes());
        self.next_control_tag += 1;
        let delivery = self.send(coordinator, tag, message.encode(), false).await?;
        let answered = self
            .wait_for(|e| {
                matches!(e, Event::Disposition { delivery: d, state: Some(_), .. } if *d == delivery)
            })
            .await?;
        match answered {
            Event::Disposition {
                state: Some(state), ..
            } => Ok(state),
            _ => unreachable!("wait_for returns the event it matched"),
        }
    }

    /// Under rcv-settle-mode `second`: sends `state` for a received
    /// delivery without settling it. The broker settles the delivery once
    /// the outcome has taken effect: [`Client::next_event`] then reports an
    /// [`Event::Disposition`] for it with `settled`, and the delivery is
    /// settled here too (the engine forgets it, so nothing more goes out).
    pub async fn settle_second(
        &mut self,
        delivery: DeliveryId,
        state: DeliveryState,
    ) -> Result<(), ClientError> {
        self.dispose(delivery, state, false).await
    }

    /// Settles a received delivery with `state`.
    pub async fn settle(
        &mut self,
        delivery: DeliveryId,
        state: DeliveryState,
    ) -> Result<(), ClientError> {
        self.dispose(delivery, state, true).await
    }

    /// Sends `state` for a received delivery, `settled` or not.
    async fn dispose(
        &mut self,
        delivery: DeliveryId,
        state: DeliveryState,
        settled: bool,
    ) -> Result<(), ClientError> {
        self.conn.disposition(delivery, Some(state), settled)?;
        self.flush().await
    }

    /// Detaches `link` (closing it if `closed`) and waits for the broker's
    /// answering detach. Events of other links that arrive meanwhile are
    /// kept for [`Client::next_event`]. Deliveries on `link` not yet taken
    /// are dropped: the broker takes back what a detached link held, and a
    /// link attached next may reuse the handle, so they would look like its
    /// own.
    pub async fn detach(&mut self, link: LinkId, closed: bool) -> Result<(), ClientError> {
        self.conn.detach(link, closed, None)?;
        self.wait_for(|e| matches!(e, Event::LinkDetached { link: l, .. } if *l == link))
            .await?;
        self.events.retain(
            |event| !matches!(event, Event::Delivery { delivery, .. } if delivery.link == link),
        );
        Ok(())
    }

    /// Closes the connection and waits for the broker's answer.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] if the broker closed with an error, or never
    /// answered (the connection dropped, or the close timeout passed): then
    /// what was sent last may never have reached it.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.conn.close(self.io.now(), None);
        loop {
            if let Event::Closed { local, remote } = self.next_event().await? {
                let answered = self.conn.close_received();
                return match local.or(remote) {
                    None if answered => Ok(()),
                    error => Err(ClientError::Closed(error)),
                };
            }
        }
    }

    /// The next event, pumping the socket until there is one.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            self.flush().await?;
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if self.conn.is_finished() {
                return Err(ClientError::Closed(None));
            }
            let deadline = self.conn.poll_timeout();
            tokio::select! {
                read = self.stream.read(&mut self.read_buf) => {
                    let read = read?;
                    if read == 0 {
                        return Err(ClientError::Closed(None));
                    }
                    self.conn.handle_bytes(self.io.now(), &self.read_buf[..read]);
                }
                () = sleep_until(deadline) => self.conn.handle_timeout(self.io.now()),
            }
        }
    }

    /// Pumps until an event matching `wanted` arrives, keeping the others
    /// (in order) for [`Client::next_event`].
    pub async fn wait_for(
        &mut self,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<Event, ClientError> {
        let mut skipped = VecDeque::new();
        let found = loop {
            let event = match self.next_event().await {
                Ok(event) => event,
                Err(error) => {
                    self.events.extend(skipped);
                    return Err(error);
                }
            };
            if wanted(&event) {
                break event;
            }
            if let Event::Closed { local, remote } = &event {
                return Err(ClientError::Closed(local.clone().or(remote.clone())));
            }
            skipped.push_back(event);
        };
        // What arrived while waiting comes first, as it arrived.
        skipped.extend(self.events.drain(..));
        self.events = skipped;
        Ok(found)
    }

    /// Writes out what the engine has queued, and collects its events.
    async fn flush(&mut self) -> Result<(), ClientError> {
        while let Some(bytes) = self.conn.poll_transmit() {
            self.write(&bytes).await?;
        }
        while let Some(event) = self.conn.poll_event() {
            self.events.push_back(event);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes `bytes`, giving up once the engine's timers find the
    /// connection dead: a broker that lost power never reads, and a write
    /// to it can wait for good with nothing else read meanwhile (found by
    /// the simulator, 5 nodes, seed 0xdb: a consumer blocked in a settle
    /// for the rest of the run).
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let write = self.stream.write_all(bytes);
        tokio::pin!(write);
        loop {
            let deadline = self.conn.poll_timeout();
            tokio::select! {
                biased;
                written = &mut write => return Ok(written?),
                () = sleep_until(deadline) => {
                    self.conn.handle_timeout(self.io.now());
                    if self.conn.is_finished() {
                        return Err(ClientError::Closed(None));
                    }
                }
            }
        }
    }
}

/// A coordinator's answer other than the one asked for: the error of a
/// `rejected`, or none.
fn refusal(state: DeliveryState) -> ClientError {
    match state {
        DeliveryState::Rejected(rejected) => ClientError::Transaction(rejected.error),
        _ => ClientError::Transaction(None),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => seam::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
