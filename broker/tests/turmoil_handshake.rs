//! The turmoil proof: the real server ([`server::run`] on [`TurmoilIo`]) on
//! a simulated host, and a client host that logs in with SASL ANONYMOUS,
//! opens and closes an AMQP connection; and the HTTP listener on the same
//! seam.
//!
//! The client writes and checks raw frames, encoded by hand below, so that
//! the proof does not lean on the engine it is testing. Needs the `sim`
//! feature (`scripts/test.sh` passes `--all-features`).
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use sluice::amqp::engine::ConnectionConfig;
use sluice::config::Config;
use sluice::io::{Io, TurmoilIo};
use sluice::server::{self, Shutdown, shutdown_channel};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Fixed, so that a failure replays: print it in any failure report.
const SEED: u64 = 0x5eed_0001;
const BROKER: &str = "broker";
const AMQP_PORT: u16 = 5672;

const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
const AMQP_FRAME: u8 = 0x00;
const SASL_FRAME: u8 = 0x01;

/// Descriptor codes (AMQP 1.0 parts 2.7 and 5.3).
const OPEN: u64 = 0x10;
const BEGIN: u64 = 0x11;
const ATTACH: u64 = 0x12;
const DETACH: u64 = 0x16;
const CLOSE: u64 = 0x18;
const SASL_MECHANISMS: u64 = 0x40;
const SASL_INIT: u64 = 0x41;
const SASL_OUTCOME: u64 = 0x44;

/// The largest frame the client accepts from the broker.
const FRAME_BYTES_MAX: usize = 1 << 20;

fn simulation() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(SEED)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        .simulation_duration(Duration::from_secs(60))
        .build()
}

/// Hosts the broker; every (re)start of the host runs `server::run` afresh.
fn host_broker(sim: &mut turmoil::Sim<'_>, shutdown: Shutdown) {
    sim.host(BROKER, move || {
        let shutdown = shutdown.clone();
        async move {
            let config = Config {
                listen: (Ipv4Addr::UNSPECIFIED, AMQP_PORT).into(),
                ..Config::default()
            };
            server::run(config, TurmoilIo, shutdown, |_| {}).await?;
            Ok(())
        }
    });
}

#[test]
fn anonymous_client_opens_and_closes_a_connection() {
    let mut sim = simulation();
    let (_never_triggered, shutdown) = shutdown_channel();
    host_broker(&mut sim, shutdown);
    sim.client("client", async {
        let mut socket = connect_and_open().await;

        socket.write_all(&close_frame()).await?;
        let close = read_frame(&mut socket).await;
        assert_eq!((close.kind, close.descriptor()), (AMQP_FRAME, CLOSE));
        assert!(close.first_field().is_none(), "close carries an error");

        // The broker drops the socket once the connection is over.
        let mut rest = Vec::new();
        socket.read_to_end(&mut rest).await?;
        assert!(rest.is_empty(), "bytes after close: {rest:02x?}");
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
}

#[test]
fn a_receiver_without_a_source_is_refused_and_the_connection_stays_open() {
    let mut sim = simulation();
    let (_never_triggered, shutdown) = shutdown_channel();
    host_broker(&mut sim, shutdown);
    sim.client("client", async {
        let mut socket = connect_and_open().await;

        // begin: remote-channel null, next-outgoing-id 0, both windows 100.
        let begin = described(BEGIN, &[vec![0x40], uint(0), uint(100), uint(100)]);
        socket.write_all(&frame(AMQP_FRAME, &begin)).await?;
        let begun = read_frame(&mut socket).await;
        assert_eq!(begun.descriptor(), BEGIN);

        // attach: name, handle 0, role receiver; no source and no target:
        // a lookup of the durable subscription the link's name names (a
        // JMS unsubscribe), and there is none.
        let attach = described(ATTACH, &[string("orders"), uint(0), vec![0x41]]);
        socket.write_all(&frame(AMQP_FRAME, &attach)).await?;
        let attached = read_frame(&mut socket).await;
        assert_eq!(attached.descriptor(), ATTACH);
        let detached = read_frame(&mut socket).await;
        assert_eq!(detached.descriptor(), DETACH);
        assert!(
            contains(&detached.body, b"amqp:not-found"),
            "detach without not-found: {:02x?}",
            detached.body
        );

        socket.write_all(&close_frame()).await?;
        let close = read_frame(&mut socket).await;
        assert_eq!(close.descriptor(), CLOSE);
        assert!(close.first_field().is_none(), "close carries an error");
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
}

#[test]
fn shutdown_closes_connections_with_connection_forced() {
    let mut sim = simulation();
    let (trigger, shutdown) = shutdown_channel();
    host_broker(&mut sim, shutdown);
    sim.client("client", async move {
        let mut socket = connect_and_open().await;

        trigger.trigger();
        let close = read_frame(&mut socket).await;
        assert_eq!((close.kind, close.descriptor()), (AMQP_FRAME, CLOSE));
        assert!(
            contains(&close.body, b"amqp:connection:forced"),
            "close without connection:forced: {:02x?}",
            close.body
        );

        // While this connection winds down, the broker takes no new ones.
        let refused = TurmoilIo.connect(&broker_addr()).await.map(drop);
        assert_eq!(
            refused.map_err(|error| error.kind()),
            Err(ErrorKind::ConnectionRefused),
            "the broker still accepts after shutdown"
        );

        socket.write_all(&close_frame()).await?;
        let mut rest = Vec::new();
        socket.read_to_end(&mut rest).await?;
        assert!(rest.is_empty(), "bytes after close: {rest:02x?}");
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
}

#[test]
fn shutdown_cuts_off_a_client_that_never_answers_close() {
    let mut sim = simulation();
    let (trigger, shutdown) = shutdown_channel();
    host_broker(&mut sim, shutdown);
    sim.client("client", async move {
        let mut socket = connect_and_open().await;

        trigger.trigger();
        let triggered = TurmoilIo.now();
        let close = read_frame(&mut socket).await;
        assert_eq!((close.kind, close.descriptor()), (AMQP_FRAME, CLOSE));

        // No close in reply: the broker waits out the engine's close timeout
        // (in virtual time), then drops the socket. The engine counts from
        // the last input it saw, the client's open, hence the slack below.
        let mut rest = Vec::new();
        socket.read_to_end(&mut rest).await?;
        assert!(rest.is_empty(), "bytes after close: {rest:02x?}");
        let waited = TurmoilIo.now() - triggered;
        let close_timeout = ConnectionConfig::new("sluice").close_timeout;
        let slack = Duration::from_secs(1);
        assert!(
            (close_timeout.saturating_sub(slack)..close_timeout + slack).contains(&waited),
            "cut off after {waited:?}, close timeout {close_timeout:?}"
        );
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
}

fn broker_addr() -> String {
    format!("{BROKER}:{AMQP_PORT}")
}

/// Connects, logs in with SASL ANONYMOUS and exchanges `open`s, checking
/// each of the broker's answers.
async fn connect_and_open() -> turmoil::net::TcpStream {
    let mut socket = TurmoilIo.connect(&broker_addr()).await.unwrap();

    socket.write_all(&SASL_HEADER).await.unwrap();
    assert_eq!(read_header(&mut socket).await, SASL_HEADER);
    let mechanisms = read_frame(&mut socket).await;
    assert_eq!(
        (mechanisms.kind, mechanisms.descriptor()),
        (SASL_FRAME, SASL_MECHANISMS)
    );
    assert!(contains(&mechanisms.body, b"ANONYMOUS"));

    let init = described(SASL_INIT, &[symbol("ANONYMOUS"), binary(b"turmoil-client")]);
    socket.write_all(&frame(SASL_FRAME, &init)).await.unwrap();
    let outcome = read_frame(&mut socket).await;
    assert_eq!(
        (outcome.kind, outcome.descriptor()),
        (SASL_FRAME, SASL_OUTCOME)
    );
    // The first field is the code, a ubyte: 0 is `ok`.
    assert_eq!(
        outcome.first_field().map(|code| &code[..2]),
        Some(&[0x50, 0][..])
    );

    socket.write_all(&AMQP_HEADER).await.unwrap();
    assert_eq!(read_header(&mut socket).await, AMQP_HEADER);
    let open = described(OPEN, &[string("turmoil-client"), string(BROKER)]);
    socket.write_all(&frame(AMQP_FRAME, &open)).await.unwrap();
    let open = read_frame(&mut socket).await;
    assert_eq!((open.kind, open.descriptor()), (AMQP_FRAME, OPEN));
    // The first field is the container id: the configured default.
    assert_eq!(open.first_field().and_then(leading_string), Some("sluice"));
    socket
}

fn close_frame() -> Vec<u8> {
    frame(AMQP_FRAME, &described(CLOSE, &[]))
}

// ---- Encoding: just the types the client sends. ----

/// A frame on channel 0 with the minimal data offset (2 words: no extended
/// header).
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + body.len()).unwrap();
    let mut frame = size.to_be_bytes().to_vec();
    frame.extend([2, kind, 0, 0]);
    frame.extend(body);
    frame
}

/// A performative: a list of `fields` described by a small-ulong code.
fn described(code: u64, fields: &[Vec<u8>]) -> Vec<u8> {
    let mut encoded = vec![0x00, 0x53, u8::try_from(code).unwrap()];
    if fields.is_empty() {
        encoded.push(0x45); // list0
    } else {
        let items = fields.concat();
        encoded.push(0xc0); // list8: size (count + items), count, items
        encoded.push(u8::try_from(items.len() + 1).unwrap());
        encoded.push(u8::try_from(fields.len()).unwrap());
        encoded.extend(items);
    }
    encoded
}

fn symbol(value: &str) -> Vec<u8> {
    variable(0xa3, value.as_bytes())
}

fn string(value: &str) -> Vec<u8> {
    variable(0xa1, value.as_bytes())
}

fn uint(value: u32) -> Vec<u8> {
    let mut encoded = vec![0x70];
    encoded.extend(value.to_be_bytes());
    encoded
}

fn binary(value: &[u8]) -> Vec<u8> {
    variable(0xa0, value)
}

/// A one-byte-length encoding (`sym8`, `str8-utf8`, `vbin8`).
fn variable(constructor: u8, bytes: &[u8]) -> Vec<u8> {
    let mut encoded = vec![constructor, u8::try_from(bytes.len()).unwrap()];
    encoded.extend(bytes);
    encoded
}

// ---- Decoding: just enough of what the broker sends to check it. ----

/// One frame from the broker, header stripped.
struct Frame {
    kind: u8,
    body: Vec<u8>,
}

impl Frame {
    /// The performative's descriptor code, small-ulong or ulong.
    fn descriptor(&self) -> u64 {
        match self.body.as_slice() {
            [0x00, 0x53, code, ..] => u64::from(*code),
            [0x00, 0x80, code @ ..] if code.len() >= 8 => {
                u64::from_be_bytes(code[..8].try_into().unwrap())
            }
            body => panic!("not a described performative: {body:02x?}"),
        }
    }

    /// The encoded fields from the first one on, or `None` for an empty
    /// list or a leading null (an absent first field).
    fn first_field(&self) -> Option<&[u8]> {
        let value_start = match self.body.get(1) {
            Some(0x53) => 3,
            _ => 10,
        };
        let fields = match &self.body[value_start..] {
            [0x45, ..] => return None,
            [0xc0, _size, _count, fields @ ..] => fields,
            [0xd0, _, _, _, _, _, _, _, _, fields @ ..] => fields,
            list => panic!("not a list: {list:02x?}"),
        };
        (fields
            .first()
            .is_some_and(|&constructor| constructor != 0x40))
        .then_some(fields)
    }
}

/// The string or symbol that `encoded` starts with.
fn leading_string(encoded: &[u8]) -> Option<&str> {
    let (length, rest) = match encoded {
        [0xa1 | 0xa3, length, rest @ ..] => (usize::from(*length), rest),
        [0xb1 | 0xb3, a, b, c, d, rest @ ..] => (
            usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).ok()?,
            rest,
        ),
        _ => return None,
    };
    std::str::from_utf8(rest.get(..length)?).ok()
}

async fn read_header(socket: &mut (impl AsyncRead + Unpin)) -> [u8; 8] {
    let mut header = [0; 8];
    socket.read_exact(&mut header).await.unwrap();
    header
}

/// The next frame that has a body; empty frames are heartbeats.
async fn read_frame(socket: &mut (impl AsyncRead + Unpin)) -> Frame {
    loop {
        let size = usize::try_from(socket.read_u32().await.unwrap()).unwrap();
        assert!((8..=FRAME_BYTES_MAX).contains(&size), "frame size {size}");
        let mut rest = vec![0; size - 4];
        socket.read_exact(&mut rest).await.unwrap();
        let body_start = usize::from(rest[0]) * 4 - 4;
        assert!(
            body_start >= 4 && body_start <= rest.len(),
            "data offset {}",
            rest[0]
        );
        if body_start < rest.len() {
            return Frame {
                kind: rest[1],
                body: rest.split_off(body_start),
            };
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

const HTTP_PORT: u16 = 8080;

/// The HTTP listener runs on the seam too: under turmoil it serves a
/// probe, and cuts off a client that stops halfway through its headers
/// once the header timeout has passed in simulated time.
#[test]
fn the_http_listener_serves_a_probe_and_cuts_off_a_stalled_client() {
    let mut sim = simulation();
    let (_never_triggered, shutdown) = shutdown_channel();
    sim.host(BROKER, move || {
        let shutdown = shutdown.clone();
        async move {
            let config = Config {
                listen: (Ipv4Addr::UNSPECIFIED, AMQP_PORT).into(),
                http: sluice::config::HttpConfig {
                    listen: Some((Ipv4Addr::UNSPECIFIED, HTTP_PORT).into()),
                },
                ..Config::default()
            };
            server::run(config, TurmoilIo, shutdown, |_| {}).await?;
            Ok(())
        }
    });
    sim.client("client", async {
        let address = format!("{BROKER}:{HTTP_PORT}");
        let mut probe = TurmoilIo.connect(&address).await?;
        probe
            .write_all(b"GET /ready HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        probe.read_to_end(&mut answer).await?;
        let answer = String::from_utf8(answer)?;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

        let mut stalled = TurmoilIo.connect(&address).await?;
        stalled.write_all(b"GET /metr").await?;
        let started = TurmoilIo.now();
        let mut rest = Vec::new();
        stalled.read_to_end(&mut rest).await?;
        let held = TurmoilIo.now() - started;
        assert!(
            held >= sluice::http::HEADER_READ_TIMEOUT
                && held < sluice::http::HEADER_READ_TIMEOUT + Duration::from_secs(1),
            "held for {held:?}"
        );
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {SEED:#x}: {error}"));
}
