//! Malformed input over real TCP: the broker closes the offending connection
//! with the spec's error condition and keeps serving everyone else.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use sluice::amqp::codec::Symbol;
use sluice::amqp::frame::{Frame, FrameDecoder, Layer, ProtocolId, put_amqp_frame, put_sasl_frame};
use sluice::amqp::types::{Begin, Open, Performative, SaslFrame, SaslInit, Transfer, condition};
use sluice::io::{Io, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

mod common;

use common::{Broker, WAIT};

/// A well-formed SASL ANONYMOUS handshake and open, as a client sends them.
fn handshake() -> BytesMut {
    let mut out = BytesMut::new();
    out.put_slice(&ProtocolId::Sasl.header());
    put_sasl_frame(
        &mut out,
        &SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("ANONYMOUS"),
            initial_response: None,
            hostname: None,
        }),
    );
    out.put_slice(&ProtocolId::Amqp.header());
    put_amqp_frame(&mut out, 0, &Open::new("malformed-input-test"), &[]);
    out
}

/// Sends `bytes`, then reads everything the broker sends until it closes
/// the socket, and returns the AMQP frames of it.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Performative> {
    let mut stream = TokioIo.connect(&addr.to_string()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the broker ends the connection")
        .unwrap();
    amqp_frames(Bytes::from(received))
}

/// Skips the SASL exchange and decodes the AMQP frames that follow.
fn amqp_frames(received: Bytes) -> Vec<Performative> {
    let mut buf = BytesMut::from(&received[..]);
    let decoder = FrameDecoder::new(u32::MAX);
    assert_eq!(&buf.split_to(8)[..], ProtocolId::Sasl.header());
    while let Some(frame) = decoder.decode(&mut buf, Layer::Sasl).unwrap() {
        if matches!(frame, Frame::Sasl(SaslFrame::Outcome(_))) {
            break;
        }
    }
    assert_eq!(&buf.split_to(8)[..], ProtocolId::Amqp.header());
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf, Layer::Amqp).unwrap() {
        if let Frame::Amqp { performative, .. } = frame {
            frames.push(performative);
        }
    }
    frames
}

/// The condition of the `close` the broker ended with.
fn close_condition(frames: &[Performative]) -> String {
    match frames.last() {
        Some(Performative::Close(close)) => close
            .error
            .as_ref()
            .expect("the close carries an error")
            .condition
            .to_string(),
        other => panic!("expected a close, got {other:?} after {frames:?}"),
    }
}

/// Checks that a well-behaved client is still served.
async fn assert_still_serving(addr: SocketAddr) {
    let mut bytes = handshake();
    put_amqp_frame(&mut bytes, 0, &sluice::amqp::types::Close::default(), &[]);
    let frames = exchange(addr, &bytes).await;
    assert!(
        matches!(frames.first(), Some(Performative::Open(_))),
        "{frames:?}"
    );
    assert_eq!(
        frames.last(),
        Some(&Performative::Close(Default::default()))
    );
}

fn begin() -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 100,
        outgoing_window: 100,
        handle_max: u32::MAX,
        offered_capabilities: Vec::new(),
        desired_capabilities: Vec::new(),
        properties: Vec::new(),
    }
}

#[tokio::test]
async fn each_malformed_connection_is_closed_with_the_spec_condition() {
    let broker = Broker::start().await;
    let addr = broker.addr;

    let garbage = {
        let mut bytes = handshake();
        // A well-sized frame whose body is not an AMQP value.
        bytes.put_slice(&[0, 0, 0, 16, 2, 0, 0, 0]);
        bytes.put_slice(b"\xffgarbage");
        bytes
    };
    let two_gib_frame = {
        let mut bytes = handshake();
        bytes.put_slice(&[0x80, 0, 0, 0, 2, 0, 0, 0]);
        bytes
    };
    let unknown_performative = {
        let mut bytes = handshake();
        // Descriptor 0x99 names no performative; its body is an empty list.
        bytes.put_slice(&[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x99, 0x45]);
        bytes
    };
    let unattached_transfer = {
        let mut bytes = handshake();
        put_amqp_frame(&mut bytes, 0, &begin(), &[]);
        let transfer = Transfer {
            handle: 7,
            delivery_id: Some(0),
            delivery_tag: Some(Bytes::from_static(b"t")),
            ..Transfer::default()
        };
        put_amqp_frame(&mut bytes, 0, &transfer, b"payload");
        bytes
    };

    for (input, expected) in [
        (garbage, condition::DECODE_ERROR),
        (two_gib_frame, condition::FRAMING_ERROR),
        (unknown_performative, condition::DECODE_ERROR),
        (unattached_transfer, condition::UNATTACHED_HANDLE),
    ] {
        let frames = exchange(addr, &input).await;
        assert_eq!(close_condition(&frames), expected, "frames: {frames:?}");
        assert_still_serving(addr).await;
    }

    broker.stop().await;
}

#[tokio::test]
async fn a_non_amqp_header_is_answered_with_ours_and_the_socket_closed() {
    let broker = Broker::start().await;
    let addr = broker.addr;

    let mut stream = TokioIo.connect(&addr.to_string()).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, ProtocolId::Sasl.header());
    assert_still_serving(addr).await;

    broker.stop().await;
}
