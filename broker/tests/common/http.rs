//! What the HTTP listener's tests share: a broker with the listener on a
//! free port, a plain HTTP/1.1 client that reads each answer whole, and an
//! AMQP client that publishes and waits for each message's acceptance.

use std::net::SocketAddr;

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use serde_json::Value as Json;
use sluice::amqp::engine::{ClientSasl, ConnectionConfig, Event, LinkId, SessionId};
use sluice::amqp::types::{DeliveryState, Header, Message, Section};
use sluice::client::Client;
use sluice::config::Config;
use sluice::io::{Io, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::{Broker, WAIT};

/// A broker with the HTTP listener on a free loopback port.
pub async fn broker_with(config: Config) -> (Broker, SocketAddr) {
    let config = Config {
        http: sluice::config::HttpConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
        },
        ..config
    };
    let broker = Broker::start_configured(config).await;
    let http = broker.http_addr.expect("the HTTP listener is bound");
    (broker, http)
}

/// An HTTP response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {self:?}"))
    }
}

/// Sends `request` (the whole text) and reads the answer to its end: the
/// request asks for the connection to close.
pub async fn exchange(addr: SocketAddr, request: &str) -> Response {
    let mut stream = TokioIo.connect(&addr.to_string()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `method path`, with Basic credentials if given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    login: Option<(&str, &str)>,
) -> Response {
    request_with(addr, method, path, login, "").await
}

/// `method path` with `body`, with Basic credentials if given.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    login: Option<(&str, &str)>,
    body: &str,
) -> Response {
    let authorization = login.map_or(String::new(), |(name, password)| {
        let encoded = Base64::encode_string(format!("{name}:{password}").as_bytes());
        format!("Authorization: Basic {encoded}\r\n")
    });
    let length = body.len();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n{authorization}\
         Content-Length: {length}\r\n\r\n{body}"
    );
    exchange(addr, &text).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, None).await
}
pub fn message(body: &str) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from(body.to_owned())),
        ],
    }
    .encode()
}

pub async fn connect(broker: &Broker, sasl: ClientSasl) -> (Client<TokioIo>, SessionId) {
    let mut client = timeout(
        WAIT,
        Client::connect(
            TokioIo,
            &broker.addr.to_string(),
            ConnectionConfig::new("http-test"),
            sasl,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let session = client.begin().await.unwrap();
    (client, session)
}

/// [`connect`], logged in with SCRAM as `username`.
pub async fn connect_scram(
    broker: &Broker,
    username: &str,
    password: &str,
) -> (Client<TokioIo>, SessionId) {
    let sasl = ClientSasl::Scram {
        username: username.into(),
        password: password.into(),
        nonce: "http-test".into(),
    };
    connect(broker, sasl).await
}

/// Sends `body` and waits for `accepted`.
pub async fn publish(client: &mut Client<TokioIo>, link: LinkId, body: &str) {
    let delivery = client
        .send(link, Bytes::from(body.to_owned()), message(body), false)
        .await
        .unwrap();
    let outcome = client.wait_for(
        |e| matches!(e, Event::Disposition { delivery: d, state: Some(_), .. } if *d == delivery),
    );
    match timeout(WAIT, outcome).await.unwrap().unwrap() {
        Event::Disposition {
            state: Some(DeliveryState::Accepted(_)),
            ..
        } => {}
        other => panic!("not accepted: {other:?}"),
    }
}
