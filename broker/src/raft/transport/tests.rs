use super::*;
use crate::io::TokioIo;

fn config(peers: &[(u64, &str)], secret: &[u8]) -> TransportConfig {
    TransportConfig {
        node_id: 1,
        listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        peers: peers
            .iter()
            .map(|&(id, addr)| (id, addr.to_owned()))
            .collect(),
        secret: Arc::from(secret),
        seed: 0,
    }
}

const SECRET: &[u8] = b"sixteen bytes at least";

#[tokio::test]
async fn start_refuses_a_short_secret_and_a_node_among_its_peers() {
    let short = Transport::start(TokioIo, config(&[(2, "127.0.0.1:1")], b"short")).await;
    assert!(matches!(short, Err(StartError::SecretTooShort(5))));
    let itself = Transport::start(TokioIo, config(&[(1, "127.0.0.1:1")], SECRET)).await;
    assert!(matches!(itself, Err(StartError::SelfPeer(1))));
}

#[tokio::test]
async fn send_drops_and_counts_what_cannot_be_queued() {
    // Nobody at the peer's address knows the secret, so its queue is never
    // drained and fills up.
    let (transport, _received) = Transport::start(TokioIo, config(&[(2, "127.0.0.1:1")], SECRET))
        .await
        .unwrap();
    assert_eq!(
        transport.send(3, Bytes::from_static(b"x")),
        Err(SendError::UnknownPeer(3))
    );
    let huge = Bytes::from(vec![0; PAYLOAD_BYTES_MAX + 1]);
    assert_eq!(
        transport.send(2, huge),
        Err(SendError::TooLarge(PAYLOAD_BYTES_MAX + 1))
    );
    for _ in 0..QUEUE_MESSAGES_MAX {
        transport.send(2, Bytes::from_static(b"x")).unwrap();
    }
    assert_eq!(
        transport.send(2, Bytes::from_static(b"x")),
        Err(SendError::QueueFull(2))
    );
    assert_eq!(transport.dropped(), 3);
}
