use proptest::prelude::*;

use super::*;
use crate::io::seeded_rng;
use crate::raft::transport::frame::{Decoder, HANDSHAKE_FRAME_BYTES_MAX};

const SECRET: &[u8] = b"correct horse battery staple";
const DIALER: u64 = 1;
const ACCEPTOR: u64 = 2;

fn key() -> ClusterKey {
    ClusterKey::new(SECRET)
}

/// Decodes the one frame in `bytes`, as the driver's handshake decoder does.
fn frame(bytes: &Bytes) -> Frame {
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = Decoder::new(HANDSHAKE_FRAME_BYTES_MAX)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    frame
}

fn batch_frame(bytes: &BytesMut) -> Frame {
    let mut buf = bytes.clone();
    let frame = Decoder::new(FRAME_BYTES_MAX)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    frame
}

fn is_dialer(node: u64) -> bool {
    node == DIALER
}

/// A full handshake with each side's key; the dialer's and the acceptor's
/// sessions.
fn handshake(dialer_key: &ClusterKey, acceptor_key: &ClusterKey) -> (Session, Session) {
    let mut rng = seeded_rng(7);
    let (dialer, hello) = Dialer::new(dialer_key, DIALER, ACCEPTOR, &mut rng);
    let (acceptor, challenge) =
        Acceptor::handle_hello(acceptor_key, ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    let (dialer_session, proof) = dialer.handle_challenge(frame(&challenge)).unwrap();
    let acceptor_session = acceptor.handle_proof(frame(&proof)).unwrap();
    (dialer_session, acceptor_session)
}

fn seal(sealer: &mut Sealer, payloads: &[&'static [u8]]) -> BytesMut {
    let payloads: Vec<Bytes> = payloads.iter().copied().map(Bytes::from_static).collect();
    let mut out = BytesMut::new();
    sealer.seal(&payloads, &mut out);
    out
}

#[test]
fn a_good_secret_authenticates_both_sides_and_batches_flow_both_ways() {
    let (mut dialer, mut acceptor) = handshake(&key(), &key());
    assert_eq!((dialer.peer, acceptor.peer), (ACCEPTOR, DIALER));

    let sent = seal(&mut dialer.sealer, &[b"vote", b"", b"append"]);
    let received = acceptor.opener.open(batch_frame(&sent)).unwrap();
    assert_eq!(received, [&b"vote"[..], b"", b"append"]);

    let heartbeat = seal(&mut acceptor.sealer, &[]);
    assert_eq!(dialer.opener.open(batch_frame(&heartbeat)), Ok(vec![]));
    let sent = seal(&mut acceptor.sealer, &[b"ack"]);
    assert_eq!(
        dialer.opener.open(batch_frame(&sent)).unwrap(),
        [&b"ack"[..]]
    );
}

#[test]
fn a_dialer_refuses_an_acceptor_with_another_secret() {
    let mut rng = seeded_rng(7);
    let (dialer, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let stranger = ClusterKey::new(b"not the cluster secret");
    let (_, challenge) =
        Acceptor::handle_hello(&stranger, ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    assert_eq!(
        dialer.handle_challenge(frame(&challenge)).unwrap_err(),
        ProtocolError::BadProof
    );
}

#[test]
fn an_acceptor_refuses_a_dialer_with_another_secret() {
    let mut rng = seeded_rng(7);
    let stranger = ClusterKey::new(b"not the cluster secret");
    let (dialer, hello) = Dialer::new(&stranger, DIALER, ACCEPTOR, &mut rng);
    let (acceptor, challenge) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    // A stranger cannot check the challenge; it answers with a proof from
    // the key its own secret gave it anyway.
    let challenge = frame(&challenge);
    let pake_a: [u8; PAKE_BYTES] = challenge.body[8..8 + PAKE_BYTES].try_into().unwrap();
    let agreed = Agreed::finish(dialer.pake, &pake_a).unwrap();
    let transcript = Transcript::new(DIALER, ACCEPTOR, &dialer.pake_d, &pake_a);
    let proof = encode(Kind::Proof, &agreed.tag(DIALER_LABEL, &transcript));
    assert_eq!(
        acceptor.handle_proof(frame(&proof)).unwrap_err(),
        ProtocolError::BadProof
    );
}

/// A stranger who dials with a guess learns from the Challenge only that
/// the guess was wrong.
#[test]
fn a_challenge_refutes_a_wrong_guess() {
    let mut rng = seeded_rng(7);
    let guess = ClusterKey::new(b"a guess at the secret");
    let (dialer, hello) = Dialer::new(&guess, DIALER, ACCEPTOR, &mut rng);
    let (_, challenge) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    let challenge = frame(&challenge);
    let pake_a: [u8; PAKE_BYTES] = challenge.body[8..8 + PAKE_BYTES].try_into().unwrap();
    let confirm_a: [u8; CONFIRM_BYTES] = challenge.body[8 + PAKE_BYTES..].try_into().unwrap();
    let transcript = Transcript::new(DIALER, ACCEPTOR, &dialer.pake_d, &pake_a);
    // The stranger's guess fails. (Testing any other password against
    // this recording would take the acceptor's secret scalar: SPAKE2's
    // guarantee, which this test cannot show, only rely on.)
    let own = Agreed::finish(dialer.pake, &pake_a).unwrap();
    assert_eq!(
        own.verify(ACCEPTOR_LABEL, &transcript, &confirm_a),
        Err(ProtocolError::BadProof)
    );
}

#[test]
fn a_proof_replayed_from_an_earlier_handshake_is_refused() {
    let mut rng = seeded_rng(7);
    let (dialer, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let (_, challenge) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    let (_, recorded_proof) = dialer.handle_challenge(frame(&challenge)).unwrap();

    // The recorded Hello and Proof, replayed: the acceptor's fresh nonce
    // makes the old proof worthless.
    let (acceptor, _) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    assert_eq!(
        acceptor.handle_proof(frame(&recorded_proof)).unwrap_err(),
        ProtocolError::BadProof
    );
}

#[test]
fn a_challenge_mac_reflected_as_a_proof_is_refused() {
    let mut rng = seeded_rng(7);
    let (_, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let (acceptor, challenge) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    let mac_a = &frame(&challenge).body[8 + PAKE_BYTES..];
    let reflected = encode(Kind::Proof, mac_a);
    assert_eq!(
        acceptor.handle_proof(frame(&reflected)).unwrap_err(),
        ProtocolError::BadProof
    );
}

#[test]
fn a_hello_for_another_node_is_refused() {
    let mut rng = seeded_rng(7);
    let (_, hello) = Dialer::new(&key(), DIALER, 3, &mut rng);
    assert_eq!(
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap_err(),
        ProtocolError::NotForUs {
            wanted: 3,
            local: ACCEPTOR
        }
    );
}

#[test]
fn a_challenge_from_another_node_is_refused() {
    let mut rng = seeded_rng(7);
    let (dialer, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    // Node 3 answers as if dialled, with a valid MAC for its own id.
    let (_, challenge) = Acceptor::handle_hello(&key(), 3, is_dialer, &mut rng, {
        let mut hello = frame(&hello);
        let mut body = hello.body.to_vec();
        body[9..17].copy_from_slice(&3_u64.to_be_bytes());
        hello.body = body.into();
        hello
    })
    .unwrap();
    assert_eq!(
        dialer.handle_challenge(frame(&challenge)).unwrap_err(),
        ProtocolError::WrongPeer {
            expected: ACCEPTOR,
            got: 3
        }
    );
}

#[test]
fn a_hello_from_an_unknown_node_or_ourselves_is_refused() {
    let mut rng = seeded_rng(7);
    for claimed in [9, ACCEPTOR] {
        let (_, hello) = Dialer::new(&key(), claimed, ACCEPTOR, &mut rng);
        assert_eq!(
            Acceptor::handle_hello(&key(), ACCEPTOR, |_| claimed != 9, &mut rng, frame(&hello))
                .unwrap_err(),
            ProtocolError::UnknownPeer(claimed)
        );
    }
}

#[test]
fn a_hello_of_another_version_is_refused() {
    let mut rng = seeded_rng(7);
    let (_, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let mut hello = frame(&hello);
    let mut body = hello.body.to_vec();
    body[0] = PROTOCOL_VERSION + 1;
    hello.body = body.into();
    assert_eq!(
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, hello).unwrap_err(),
        ProtocolError::Version(PROTOCOL_VERSION + 1)
    );
}

#[test]
fn malformed_handshake_frames_name_what_is_wrong() {
    let mut rng = seeded_rng(7);
    let (_, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let hello = frame(&hello);
    let handle = |frame: Frame, rng: &mut SeededRng| {
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, rng, frame).unwrap_err()
    };
    let truncated = Frame {
        kind: Kind::Hello,
        body: hello.body.slice(..hello.body.len() - 1),
    };
    assert_eq!(
        handle(truncated, &mut rng),
        ProtocolError::MissingData("hello key exchange")
    );
    let mut longer = hello.body.to_vec();
    longer.push(0);
    let trailing = Frame {
        kind: Kind::Hello,
        body: longer.into(),
    };
    assert_eq!(
        handle(trailing, &mut rng),
        ProtocolError::TrailingData("hello")
    );
    let proof_first = Frame {
        kind: Kind::Proof,
        body: hello.body,
    };
    assert_eq!(
        handle(proof_first, &mut rng),
        ProtocolError::UnexpectedFrame {
            expected: Kind::Hello,
            got: Kind::Proof
        }
    );
}

#[test]
fn a_tampered_batch_is_rejected() {
    let (mut dialer, _) = handshake(&key(), &key());
    let sent = seal(&mut dialer.sealer, &[b"append entries"]);
    // Every byte of the body, the count and the tag included.
    for at in frame::HEADER_BYTES..sent.len() {
        let (_, mut acceptor) = handshake(&key(), &key());
        let mut tampered = sent.clone();
        tampered[at] ^= 0x01;
        assert_eq!(
            acceptor.opener.open(batch_frame(&tampered)),
            Err(ProtocolError::BadTag),
            "flipped byte {at}"
        );
    }
}

#[test]
fn a_replayed_batch_is_rejected() {
    let (mut dialer, mut acceptor) = handshake(&key(), &key());
    let sent = seal(&mut dialer.sealer, &[b"vote"]);
    acceptor.opener.open(batch_frame(&sent)).unwrap();
    assert_eq!(
        acceptor.opener.open(batch_frame(&sent)),
        Err(ProtocolError::BadTag)
    );
}

#[test]
fn reordered_batches_are_rejected() {
    let (mut dialer, mut acceptor) = handshake(&key(), &key());
    let _first = seal(&mut dialer.sealer, &[b"first"]);
    let second = seal(&mut dialer.sealer, &[b"second"]);
    assert_eq!(
        acceptor.opener.open(batch_frame(&second)),
        Err(ProtocolError::BadTag)
    );
}

#[test]
fn a_batch_reflected_to_its_sender_is_rejected() {
    let (mut dialer, _) = handshake(&key(), &key());
    let sent = seal(&mut dialer.sealer, &[b"vote"]);
    assert_eq!(
        dialer.opener.open(batch_frame(&sent)),
        Err(ProtocolError::BadTag)
    );
}

#[test]
fn a_batch_from_another_session_is_rejected() {
    let (mut earlier, _) = handshake(&key(), &key());
    let mut rng = seeded_rng(8);
    let (dialer, hello) = Dialer::new(&key(), DIALER, ACCEPTOR, &mut rng);
    let (acceptor, challenge) =
        Acceptor::handle_hello(&key(), ACCEPTOR, is_dialer, &mut rng, frame(&hello)).unwrap();
    let (_, proof) = dialer.handle_challenge(frame(&challenge)).unwrap();
    let mut later = acceptor.handle_proof(frame(&proof)).unwrap();

    let sent = seal(&mut earlier.sealer, &[b"vote"]);
    assert_eq!(
        later.opener.open(batch_frame(&sent)),
        Err(ProtocolError::BadTag)
    );
}

/// Seals arbitrary bytes as a batch body, which only a peer holding the
/// session key could send.
fn sealed_batch(sealer: &mut Sealer, plain: &[u8]) -> Frame {
    let mut body = plain.to_vec();
    let tag = sealer
        .key
        .seal_in_place_separate_tag(batch_nonce(sealer.seq), Aad::empty(), &mut body)
        .unwrap();
    body.extend_from_slice(tag.as_ref());
    sealer.seq += 1;
    Frame {
        kind: Kind::Batch,
        body: body.into(),
    }
}

#[test]
fn a_batch_count_larger_than_its_body_is_refused_before_allocating() {
    let (mut dialer, mut acceptor) = handshake(&key(), &key());
    let plain = u32::MAX.to_be_bytes();
    assert_eq!(
        acceptor
            .opener
            .open(sealed_batch(&mut dialer.sealer, &plain)),
        Err(ProtocolError::MissingData("batch payloads"))
    );
}

/// Nobody without the key reads what crosses between nodes.
#[test]
fn batches_do_not_carry_their_payloads_in_clear_text() {
    let (mut dialer, _) = handshake(&key(), &key());
    let sent = seal(&mut dialer.sealer, &[b"order 42: buy 100 at 99.5"]);
    assert!(!sent.windows(8).any(|w| w == b"order 42"));
}

proptest! {
    /// Whatever an authenticated peer seals, opening it never panics, and
    /// what opens re-seals to the same bytes.
    #[test]
    fn authentic_arbitrary_batches_never_panic_and_round_trip(
        count in 0_u32..4,
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (mut dialer, mut acceptor) = handshake(&key(), &key());
        let mut plain = count.to_be_bytes().to_vec();
        plain.extend(&rest);
        let frame = sealed_batch(&mut dialer.sealer, &plain);
        if let Ok(payloads) = acceptor.opener.open(frame.clone()) {
            let (mut again, _) = handshake(&key(), &key());
            let mut resealed = BytesMut::new();
            again.sealer.seal(&payloads, &mut resealed);
            prop_assert_eq!(&resealed[frame::HEADER_BYTES..], &frame.body[..]);
        }
    }
}
