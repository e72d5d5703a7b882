//! The network between the workload's clients and the brokers, and the
//! nemesis's faults on each client's own link.
//!
//! Every client runs as a task of one turmoil host ([`CLIENTS_HOST`]):
//! turmoil steps each host's runtime and scans every link on every tick,
//! so a host per client made the simulation several times slower (one
//! node, 40 seeds, one job: 45 simulated seconds per wall second with a
//! host per client, 148 with one host for all; `docs/simulation.md`).
//! turmoil can then no longer cut one client's link on its own, so this
//! module does, at the client's end of each connection: the client talks
//! to one end of an in-memory pipe, and two tasks carry its bytes to and
//! from the broker's turmoil stream, each chunk meeting the link's faults
//! as a segment meets them on a turmoil link:
//!
//! - **cut** (a partition, one way or both): the chunk is lost, and with
//!   it everything after it on that connection, since a TCP stream never
//!   delivers past a gap (turmoil's neither). A connection attempt is
//!   refused, as turmoil refuses one whose SYN it drops.
//! - **loss** (a lossy link): the chunk is lost with the link's rate, with
//!   the same consequence.
//! - **hold**: the chunk waits until the link is released, then arrives
//!   with everything held behind it, in order.
//! - **latency**: the chunk arrives up to the link's extra latency later,
//!   never before the chunk ahead of it.
//!
//! turmoil's own link (its base latency) still carries every chunk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::io::{Io, TurmoilIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{Notify, mpsc};

/// The one turmoil host every client (and the inspector) runs on.
pub const CLIENTS_HOST: &str = "clients";

/// Keeps the per-chunk draws apart from the nemesis's and the workload's.
const SEED_SALT: u64 = 0x6c69_6e6b_7321;

/// Bytes a client may write ahead of its connection's carrier, as a
/// socket's send buffer lets it.
const PIPE_BYTES: usize = 64 * 1024;

/// The most a carrier reads at once: one chunk meets the faults as one
/// segment.
const CHUNK_BYTES: usize = 16 * 1024;

/// Which way a chunk travels on a client's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// From the client to the broker.
    Broker,
    /// From the broker to the client.
    Client,
}

/// The faults in force on one client's link to one broker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFaults {
    /// Chunks toward the broker are lost.
    pub cut_toward_broker: bool,
    /// Chunks toward the client are lost.
    pub cut_toward_client: bool,
    /// Chunks wait for the release.
    pub held: bool,
    /// Each chunk arrives up to this much later.
    pub extra_latency: Option<Duration>,
    /// Each chunk is lost with this probability.
    pub loss: f64,
}

impl LinkFaults {
    fn cut(&self, toward: Toward) -> bool {
        match toward {
            Toward::Broker => self.cut_toward_broker,
            Toward::Client => self.cut_toward_client,
        }
    }
}

/// What happens to one chunk (or a connection attempt) on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Lost, and the stream with it.
    Lost,
    /// Delivered once the link is released.
    Held,
    /// Delivered this much later.
    Delayed(Duration),
}

/// A link: (client, broker).
type LinkKey = (String, String);

/// Every client's links: the faults the nemesis sets on them, and the
/// seeded draws that decide each chunk's fate.
#[derive(Debug)]
pub struct ClientLinks {
    /// By (client, broker); a link without faults has no entry.
    faults: RefCell<BTreeMap<LinkKey, LinkFaults>>,
    rng: RefCell<ChaCha8Rng>,
    /// Woken whenever faults change: held chunks wait on it.
    changed: Notify,
}

impl ClientLinks {
    /// Links without faults, whose per-chunk draws follow `seed`.
    pub fn new(seed: u64) -> Rc<Self> {
        Rc::new(Self {
            faults: RefCell::default(),
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ SEED_SALT)),
            changed: Notify::new(),
        })
    }

    /// Changes the faults on `client`'s link to `broker`.
    pub fn update(&self, client: &str, broker: &str, change: impl FnOnce(&mut LinkFaults)) {
        let key = (client.to_owned(), broker.to_owned());
        let mut faults = self.faults.borrow_mut();
        let link = faults.entry(key.clone()).or_default();
        change(link);
        if *link == LinkFaults::default() {
            faults.remove(&key);
        }
        self.changed.notify_waiters();
    }

    /// Clears every fault on every link: what was held arrives.
    pub fn heal(&self) {
        self.faults.borrow_mut().clear();
        self.changed.notify_waiters();
    }

    /// The faults on a link now.
    fn faults(&self, link: &LinkKey) -> LinkFaults {
        self.faults.borrow().get(link).copied().unwrap_or_default()
    }

    /// Connects `client` to `broker` at `addr` over the link's faults; the
    /// client gets its end of the pipe.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` if the link loses the connection attempt, or
    /// turmoil's error.
    pub async fn connect(
        self: &Rc<Self>,
        client: &str,
        broker: &str,
        addr: &str,
    ) -> io::Result<DuplexStream> {
        let link = Link {
            links: Rc::clone(self),
            key: (client.to_owned(), broker.to_owned()),
        };
        match link.fate(Toward::Broker) {
            Fate::Lost => {
                let refused = format!("{client} to {broker}: the link lost the connection attempt");
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, refused));
            }
            Fate::Held => link.released().await,
            Fate::Delayed(delay) => tokio::time::sleep(delay).await,
        }
        let stream = turmoil::net::TcpStream::connect(addr).await?;
        let (broker_read, broker_write) = stream.into_split();
        let (client_end, carrier_end) = tokio::io::duplex(PIPE_BYTES);
        let (client_read, client_write) = tokio::io::split(carrier_end);
        spawn_on_clients_host(
            link.clone()
                .carry(Toward::Broker, client_read, broker_write),
        );
        spawn_on_clients_host(link.carry(Toward::Client, broker_read, client_write));
        Ok(client_end)
    }
}

/// Runs `task` on the clients' host. What `TurmoilIo::spawn` does, without
/// its `Send` bound, which the clients' shared, single-threaded state
/// (`Rc`) rules out.
#[allow(clippy::disallowed_methods)]
pub fn spawn_on_clients_host<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio::task::spawn_local(task)
}

/// One client's link to one broker, as a connection's carriers see it.
#[derive(Clone)]
struct Link {
    links: Rc<ClientLinks>,
    key: LinkKey,
}

impl Link {
    /// The fate of a chunk sent now `toward` one end.
    fn fate(&self, toward: Toward) -> Fate {
        let faults = self.links.faults(&self.key);
        let mut rng = self.links.rng.borrow_mut();
        if faults.cut(toward) || (faults.loss > 0.0 && rng.gen_bool(faults.loss.min(1.0))) {
            return Fate::Lost;
        }
        if faults.held {
            return Fate::Held;
        }
        Fate::Delayed(
            faults
                .extra_latency
                .map_or(Duration::ZERO, |max| rng.gen_range(Duration::ZERO..=max)),
        )
    }

    /// Waits until the link is not held.
    async fn released(&self) {
        loop {
            // Made before the check, so that a release in between wakes it.
            let changed = self.links.changed.notified();
            if !self.links.faults(&self.key).held {
                return;
            }
            changed.await;
        }
    }

    /// Carries one direction of a connection, `from` one end `to` the
    /// other, each chunk (and the end of the stream) meeting its fate.
    async fn carry(
        self,
        toward: Toward,
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
    ) {
        // The reader stamps each chunk when it is sent; the writer delivers
        // them in order, each when its fate allows.
        let (sent, mut in_flight) = mpsc::unbounded_channel::<(Option<Bytes>, Fate, Instant)>();
        let read = async {
            let mut buf = vec![0; CHUNK_BYTES];
            loop {
                // An error ends the stream as an end of file does: the
                // client sees its connection closed either way.
                let chunk = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
                };
                let end = chunk.is_none();
                // The writer may have stopped (the far end is gone); the
                // reader still drains, as a socket's owner may write on.
                let _ = sent.send((chunk, self.fate(toward), TurmoilIo.now()));
                if end {
                    return;
                }
            }
        };
        let write = async {
            let mut due = TurmoilIo.now();
            while let Some((chunk, fate, sent_at)) = in_flight.recv().await {
                match fate {
                    Fate::Lost => break,
                    Fate::Held => self.released().await,
                    Fate::Delayed(delay) => {
                        due = due.max(sent_at + delay);
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let Some(bytes) = chunk else {
                    let _ = to.shutdown().await;
                    return;
                };
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // Nothing after a gap arrives, not even the end: `to` stays
            // open, unwritten, for good; what the reader sends on is dropped.
            drop(in_flight);
            std::future::pending::<()>().await;
        };
        tokio::join!(read, write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = "node1";
    const ADDR: &str = "node1:5672";
    /// Longer than any delay these tests set, far shorter than forever.
    const PATIENCE: Duration = Duration::from_secs(5);

    /// Runs `client` on the clients' host against an echo server on
    /// `BROKER`, with fresh links.
    fn with_echo<F>(client: impl FnOnce(Rc<ClientLinks>) -> F + 'static)
    where
        F: Future<Output = turmoil::Result> + 'static,
    {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(60))
            .build();
        sim.host(BROKER, || async {
            let listener = turmoil::net::TcpListener::bind("0.0.0.0:5672").await?;
            loop {
                let (stream, _) = listener.accept().await?;
                spawn_on_clients_host(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        let links = ClientLinks::new(7);
        sim.client(CLIENTS_HOST, client(links));
        sim.run().expect("the client's checks pass");
    }

    /// Reads exactly `len` bytes, or `None` if they do not come in time.
    async fn read_within(stream: &mut DuplexStream, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        let read = tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf)).await;
        matches!(read, Ok(Ok(_))).then_some(buf)
    }

    #[test]
    fn a_healthy_link_carries_bytes_both_ways_and_the_end() {
        with_echo(|links| async move {
            let mut stream = links.connect("producer0", BROKER, ADDR).await?;
            stream.write_all(b"ping").await?;
            assert_eq!(
                read_within(&mut stream, 4).await.as_deref(),
                Some(&b"ping"[..])
            );
            stream.shutdown().await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            assert!(
                rest.is_empty(),
                "the echo's end arrives, after nothing else"
            );
            Ok(())
        });
    }

    #[test]
    fn a_cut_refuses_connections_and_loses_an_open_one_for_good() {
        with_echo(|links| async move {
            let mut open = links.connect("producer0", BROKER, ADDR).await?;
            links.update("producer0", BROKER, |link| link.cut_toward_broker = true);
            let refused = links.connect("producer0", BROKER, ADDR).await;
            assert_eq!(
                refused.map(|_| ()).map_err(|error| error.kind()),
                Err(io::ErrorKind::ConnectionRefused)
            );
            let other = links.connect("consumer0", BROKER, ADDR).await;
            assert!(other.is_ok(), "another client's link is not cut");

            open.write_all(b"lost").await?;
            // The carrier meets the cut when it reads the chunk.
            tokio::time::sleep(Duration::from_millis(1)).await;
            links.update("producer0", BROKER, |link| link.cut_toward_broker = false);
            open.write_all(b"late").await?;
            assert_eq!(
                read_within(&mut open, 4).await,
                None,
                "nothing past the gap"
            );

            let mut fresh = links.connect("producer0", BROKER, ADDR).await?;
            fresh.write_all(b"back").await?;
            assert_eq!(
                read_within(&mut fresh, 4).await.as_deref(),
                Some(&b"back"[..])
            );
            Ok(())
        });
    }

    #[test]
    fn a_one_way_cut_toward_the_client_loses_only_the_answers() {
        with_echo(|links| async move {
            links.update("consumer0", BROKER, |link| link.cut_toward_client = true);
            let mut stream = links.connect("consumer0", BROKER, ADDR).await?;
            stream.write_all(b"echo").await?;
            assert_eq!(read_within(&mut stream, 4).await, None);
            Ok(())
        });
    }

    #[test]
    fn a_held_link_delivers_everything_in_order_at_release() {
        with_echo(|links| async move {
            let mut stream = links.connect("producer0", BROKER, ADDR).await?;
            links.update("producer0", BROKER, |link| link.held = true);
            stream.write_all(b"one").await?;
            stream.write_all(b"two").await?;
            assert_eq!(read_within(&mut stream, 1).await, None, "held");
            links.update("producer0", BROKER, |link| link.held = false);
            assert_eq!(
                read_within(&mut stream, 6).await.as_deref(),
                Some(&b"onetwo"[..])
            );
            Ok(())
        });
    }

    #[test]
    fn extra_latency_delays_chunks_and_keeps_their_order() {
        with_echo(|links| async move {
            let mut stream = links.connect("producer0", BROKER, ADDR).await?;
            let started = TurmoilIo.now();
            let max = Duration::from_secs(2);
            links.update("producer0", BROKER, |link| link.extra_latency = Some(max));
            let mut sent = Vec::new();
            for n in 0..20_u8 {
                stream.write_all(&[n]).await?;
                sent.push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let echoed = read_within(&mut stream, sent.len()).await;
            assert_eq!(echoed, Some(sent), "in order");
            let took = TurmoilIo.now() - started;
            assert!(took > Duration::from_millis(400), "delayed: {took:?}");
            assert!(
                took < max * 2 + Duration::from_millis(500),
                "bounded: {took:?}"
            );
            Ok(())
        });
    }
}
