//! The HTTP listener on the wire: `/metrics` moves as a client publishes,
//! consumes and rejects, the management API's JSON field by field, Basic
//! authentication, the probes, the slow-client limits, and the OpenAPI
//! document against the routes served. The exposition's names and help
//! are an insta snapshot, so that a rename is reviewed.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::cluster::{Cluster, NODES};
use common::http::{
    Response, broker_with, connect, connect_scram, exchange, get, message, publish, request,
    request_with,
};
use common::{Broker, WAIT, test_config, user};
use serde_json::Value as Json;
use sluice::amqp::engine::{ClientSasl, DeliveryId, Event, LinkId};
use sluice::amqp::types::{Accepted, DeliveryState, Rejected, Source};
use sluice::client::Client;
use sluice::config::{Config, Permission};
use sluice::io::{Io, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// `/metrics`, checked to be an OpenMetrics exposition.
async fn scrape(addr: SocketAddr) -> String {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{response:?}"
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);
    response.body
}

async fn receive(client: &mut Client<TokioIo>, link: LinkId) -> DeliveryId {
    let delivered =
        client.wait_for(|e| matches!(e, Event::Delivery { delivery, .. } if delivery.link == link));
    match timeout(WAIT, delivered).await.unwrap().unwrap() {
        Event::Delivery { delivery, .. } => delivery,
        other => unreachable!("wait_for returned {other:?}"),
    }
}

fn queue(address: &str) -> Source {
    Source {
        address: Some(address.to_owned()),
        ..Source::default()
    }
}

/// The counters are read by asking the node, which answers only after
/// what was asked before: a settle sent just now may not have been applied
/// yet. Asks again until `wanted` holds, within `WAIT`.
async fn scrape_until(addr: SocketAddr, wanted: impl Fn(&str) -> bool) -> String {
    let reached = timeout(WAIT, async {
        loop {
            let exposition = scrape(addr).await;
            if wanted(&exposition) {
                return exposition;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match reached {
        Ok(exposition) => exposition,
        Err(_) => panic!("not reached within {WAIT:?}: {}", scrape(addr).await),
    }
}

#[tokio::test]
async fn metrics_follow_what_clients_do() {
    let (broker, http) = broker_with(test_config()).await;
    let before = scrape(http).await;
    assert_eq!(
        sample(&before, "sluice_queue_messages{queue=\"work\"}"),
        None
    );
    assert_eq!(
        sample(&before, "sluice_connections{listener=\"amqp\"}"),
        None
    );

    let (mut client, session) = connect(&broker, ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    for body in ["a", "b", "c"] {
        publish(&mut client, sender, body).await;
    }
    let exposition = scrape(http).await;
    let value = |series: &str| sample(&exposition, series);
    assert_eq!(value("sluice_queue_messages{queue=\"work\"}"), Some(3.0));
    let bytes = 3 * message("a").len();
    assert_eq!(
        value("sluice_queue_messages_bytes{queue=\"work\"}"),
        Some(bytes as f64)
    );
    assert_eq!(
        value("sluice_queue_published_messages_total{queue=\"work\"}"),
        Some(3.0)
    );
    assert_eq!(
        value("sluice_queue_delivered_messages_total{queue=\"work\"}"),
        Some(0.0)
    );
    assert_eq!(value("sluice_queue_consumers{queue=\"work\"}"), Some(0.0));
    assert_eq!(value("sluice_connections{listener=\"amqp\"}"), Some(1.0));
    assert_eq!(
        value("sluice_connections_opened_total{listener=\"amqp\"}"),
        Some(1.0)
    );
    let age = value("sluice_queue_oldest_message_age_seconds{queue=\"work\"}").unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(value("sluice_group_leader{group=\"1\"}"), Some(1.0));
    assert!(value("sluice_group_applied_index{group=\"1\"}").unwrap() >= 3.0);
    assert!(value("sluice_log_fsync_duration_seconds_count").unwrap() >= 1.0);

    // One accepted, one rejected (dead-lettered, dropped: no DLQ), one
    // released and delivered again.
    let receiver = client
        .attach_receiver(session, "c", queue("work"), 10)
        .await
        .unwrap();
    let first = receive(&mut client, receiver).await;
    let second = receive(&mut client, receiver).await;
    let third = receive(&mut client, receiver).await;
    client
        .settle(first, DeliveryState::Accepted(Accepted))
        .await
        .unwrap();
    client
        .settle(second, DeliveryState::Rejected(Rejected { error: None }))
        .await
        .unwrap();
    client
        .settle(
            third,
            DeliveryState::Released(sluice::amqp::types::Released),
        )
        .await
        .unwrap();
    let again = receive(&mut client, receiver).await;
    let exposition = scrape_until(http, |e| {
        sample(e, "sluice_queue_redelivered_messages_total{queue=\"work\"}") == Some(1.0)
    })
    .await;
    let value = |series: &str| sample(&exposition, series);
    assert_eq!(value("sluice_queue_messages{queue=\"work\"}"), Some(0.0));
    assert_eq!(
        value("sluice_queue_messages_unsettled{queue=\"work\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("sluice_queue_delivered_messages_total{queue=\"work\"}"),
        Some(4.0)
    );
    assert_eq!(
        value("sluice_queue_acked_messages_total{queue=\"work\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("sluice_queue_dead_lettered_messages_total{queue=\"work\"}"),
        Some(1.0)
    );
    assert_eq!(value("sluice_queue_consumers{queue=\"work\"}"), Some(1.0));

    client
        .settle(again, DeliveryState::Accepted(Accepted))
        .await
        .unwrap();
    let exposition = scrape_until(http, |e| {
        sample(e, "sluice_queue_acked_messages_total{queue=\"work\"}") == Some(2.0)
    })
    .await;
    // Empty: no oldest message, so no age.
    assert_eq!(
        sample(
            &exposition,
            "sluice_queue_oldest_message_age_seconds{queue=\"work\"}"
        ),
        None
    );
    client.close().await.unwrap();
    scrape_until(http, |e| {
        sample(e, "sluice_connections{listener=\"amqp\"}") == Some(0.0)
    })
    .await;
    broker.stop().await;
}

/// The exposition with every value replaced, for the snapshot.
fn normalised(exposition: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    // The series of one family come in no set order (a hash map's).
    let mut series: Vec<String> = Vec::new();
    for line in exposition.lines() {
        if line.starts_with('#') {
            series.sort();
            lines.append(&mut series);
            lines.push(line.to_owned());
        } else {
            let name = line.rsplit_once(' ').map_or(line, |(series, _)| series);
            series.push(format!("{name} V"));
        }
    }
    series.sort();
    lines.append(&mut series);
    lines.join("\n")
}

#[tokio::test]
async fn metric_names_and_help() {
    let (broker, http) = broker_with(test_config()).await;
    let (mut client, session) = connect(&broker, ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    publish(&mut client, sender, "x").await;
    let exposition = scrape(http).await;
    insta::assert_snapshot!(normalised(&exposition));
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn the_management_api_describes_queues_connections_and_the_cluster() {
    let (broker, http) = broker_with(test_config()).await;
    let (mut client, session) = connect(&broker, ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "p", Some("a/b c"))
        .await
        .unwrap();
    publish(&mut client, sender, "hello").await;
    publish(&mut client, sender, "world").await;

    // No accounts: the API is open, as the AMQP port is.
    let queues = request(http, "GET", "/api/queues", None).await;
    assert_eq!(queues.status, 200, "{queues:?}");
    assert_eq!(queues.header("content-type"), Some("application/json"));
    let queues = queues.json();
    let list = queues.as_array().unwrap();
    assert_eq!(list.len(), 1, "{queues}");
    let queue = &list[0];
    assert_eq!(queue["name"], "a/b c");
    assert_eq!(queue["messages"], 2);
    assert_eq!(queue["messages_unsettled"], 0);
    assert_eq!(
        queue["bytes"],
        message("hello").len() + message("world").len()
    );
    assert_eq!(queue["consumers"], 0);
    assert_eq!(queue["published"], 2);
    assert_eq!(queue["delivered"], 0);
    assert_eq!(queue["redelivered"], 0);
    assert_eq!(queue["acked"], 0);
    assert_eq!(queue["dead_lettered"], 0);
    assert_eq!(queue["expired"], 0);
    assert!(queue["oldest_message_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(queue["group"], 1);
    assert_eq!(queue["leader"], 1);
    assert_eq!(queue["replicas"], serde_json::json!([1]));

    // One queue by its percent-encoded name: the same object.
    let one = request(http, "GET", "/api/queues/a%2Fb%20c", None).await;
    assert_eq!(one.status, 200, "{one:?}");
    let mut expected = queue.clone();
    let mut got = one.json();
    // Ages move between the two requests.
    expected["oldest_message_age_seconds"] = Json::Null;
    got["oldest_message_age_seconds"] = Json::Null;
    assert_eq!(got, expected);
    let missing = request(http, "GET", "/api/queues/nothing", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no such queue");
    assert_eq!(
        request(http, "GET", "/api/queues/bad%zz", None)
            .await
            .status,
        400
    );

    let connections = request(http, "GET", "/api/connections", None).await;
    assert_eq!(connections.status, 200);
    let connections = connections.json();
    let list = connections.as_array().unwrap();
    assert_eq!(list.len(), 1, "{connections}");
    assert_eq!(list[0]["id"], 1);
    assert_eq!(list[0]["listener"], "amqp");
    assert!(list[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(list[0]["opened_unix_ms"].as_u64().unwrap() > 0);

    let cluster = request(http, "GET", "/api/cluster", None).await;
    assert_eq!(cluster.status, 200);
    let cluster = cluster.json();
    assert_eq!(cluster["node_id"], 1);
    assert_eq!(cluster["clustered"], false);
    assert_eq!(cluster["members"], serde_json::json!([1]));
    let groups = cluster["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["group"], 1);
    assert_eq!(groups[0]["leader"], 1);
    assert_eq!(groups[0]["rejoining"], false);
    assert!(groups[0]["applied_index"].as_u64().unwrap() >= 2);

    assert_eq!(request(http, "GET", "/api/nothing", None).await.status, 404);
    assert_eq!(request(http, "POST", "/api/queues", None).await.status, 405);
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn probes_answer_without_credentials() {
    let config = Config {
        users: vec![user("alice", "secret")],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let health = get(http, "/health").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "up".into())
    );
    let ready = get(http, "/ready").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );
    assert_eq!(get(http, "/metrics").await.status, 200);
    broker.stop().await;
}

#[tokio::test]
async fn the_api_asks_for_an_account_when_there_are_accounts() {
    let config = Config {
        users: vec![user("alice", "secret")],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let (mut client, session) = connect_scram(&broker, "alice", "secret").await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut client, sender, "x").await;

    for path in [
        "/api/queues",
        "/api/queues/work",
        "/api/connections",
        "/api/cluster",
    ] {
        let refused = request(http, "GET", path, None).await;
        assert_eq!(refused.status, 401, "{path}: {refused:?}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Basic realm=\"sluice\", charset=\"UTF-8\"")
        );
        for wrong in [("alice", "wrong"), ("mallory", "secret")] {
            let refused = request(http, "GET", path, Some(wrong)).await;
            assert_eq!(refused.status, 401, "{path} as {wrong:?}");
        }
        let served = request(http, "GET", path, Some(("alice", "secret"))).await;
        assert_eq!(served.status, 200, "{path}: {served:?}");
    }
    let exposition = scrape(http).await;
    assert_eq!(sample(&exposition, "sluice_auth_failures_total"), Some(8.0));
    client.close().await.unwrap();
    broker.stop().await;
}

/// Each user sees what `monitor` grants it: the queues matching its
/// patterns in the list, 403 for another queue, and the broker-wide
/// resources only with a pattern that matches the empty address (`**`).
#[tokio::test]
async fn the_api_shows_each_user_what_it_may_monitor() {
    let grant = |user: &str, pattern: &str| Permission {
        user: user.to_owned(),
        pattern: pattern.to_owned(),
        send: true,
        receive: true,
        manage: true,
        monitor: true,
        ..Permission::default()
    };
    let config = Config {
        users: vec![user("alice", "secret"), user("bob", "builder")],
        permissions: vec![grant("alice", "**"), grant("bob", "work")],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let (mut client, session) = connect_scram(&broker, "alice", "secret").await;
    for queue in ["work", "other"] {
        let sender = client
            .attach_sender(session, queue, Some(queue))
            .await
            .unwrap();
        publish(&mut client, sender, "x").await;
    }

    let names = |response: Response| -> Vec<String> {
        let list = response.json();
        let list = list.as_array().unwrap();
        list.iter()
            .map(|queue| queue["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let alice = Some(("alice", "secret"));
    let bob = Some(("bob", "builder"));
    assert_eq!(
        names(request(http, "GET", "/api/queues", alice).await),
        ["other", "work"]
    );
    assert_eq!(
        names(request(http, "GET", "/api/queues", bob).await),
        ["work"]
    );
    assert_eq!(
        request(http, "GET", "/api/queues/work", bob).await.status,
        200
    );
    assert_eq!(
        request(http, "GET", "/api/queues/other", bob).await.status,
        403
    );
    for path in ["/api/connections", "/api/cluster"] {
        assert_eq!(
            request(http, "GET", path, alice).await.status,
            200,
            "{path}"
        );
        assert_eq!(request(http, "GET", path, bob).await.status, 403, "{path}");
    }
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_the_listener_stops_with_the_broker() {
    let (broker, http) = broker_with(test_config()).await;
    // Half a request line, then nothing: closed once the header timeout
    // passes, not held.
    let mut slow = TokioIo.connect(&http.to_string()).await.unwrap();
    slow.write_all(b"GET /metr").await.unwrap();
    let mut rest = Vec::new();
    let wait = sluice::http::HEADER_READ_TIMEOUT + Duration::from_secs(5);
    let read = timeout(wait, slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after {wait:?}");

    // Headers past the limit are refused.
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: sluice\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "x".repeat(sluice::http::HEADER_BYTES_MAX)
    );
    let refused = exchange(http, &huge).await;
    assert_eq!(refused.status, 431, "{refused:?}");

    broker.stop().await;
    let refused = timeout(WAIT, TokioIo.connect(&http.to_string()))
        .await
        .unwrap();
    assert_eq!(
        refused.map(drop).map_err(|error| error.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
}

/// The paths and methods of `docs/openapi.yaml`, read line by line: a path
/// is a two-space-indented key under `paths:`, a method a four-space one.
fn openapi_routes() -> BTreeSet<(String, String)> {
    let text = include_str!("../../docs/openapi.yaml");
    let paths = text.split_once("\npaths:\n").unwrap().1;
    let mut routes = BTreeSet::new();
    let mut current = None;
    for line in paths.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(path) = line.strip_prefix("  /") {
            current = Some(format!("/{}", path.trim_end_matches(':')));
        } else if let Some(method) = line.strip_prefix("    ") {
            let method = method.trim_end_matches(':');
            if ["get", "post", "delete", "put"].contains(&method) {
                routes.insert((method.to_ascii_uppercase(), current.clone().unwrap()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_the_routes_served() {
    let served: BTreeSet<(String, String)> = sluice::http::ROUTES
        .iter()
        .map(|&(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(openapi_routes(), served);
    // And each is served (none is a 404).
    let (broker, http) = broker_with(test_config()).await;
    let (mut client, session) = connect(&broker, ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    publish(&mut client, sender, "x").await;
    let sender = client
        .attach_sender(session, "q", Some("parked"))
        .await
        .unwrap();
    publish(&mut client, sender, "y").await;
    let connection = get(http, "/api/connections").await.json()[0]["id"].clone();
    // Reads first, the deletion last; the close needs the connection no
    // more.
    let mut routes: Vec<_> = served.iter().collect();
    routes.sort_by_key(|(method, path)| (method == "DELETE", path.contains("queues")));
    for (method, path) in routes {
        let path = path
            .replace("{name}", "orders")
            .replace("{id}", &connection.to_string());
        let body = if path.ends_with("/move") {
            r#"{"to": "parked"}"#
        } else {
            ""
        };
        let response = request_with(http, method, &path, None, body).await;
        // The root leads to the console.
        let served = if path == "/" { 302 } else { 200 };
        assert_eq!(response.status, served, "{method} {path}: {response:?}");
    }
    drop(client);
    broker.stop().await;
}

/// The console's files need no credentials, carry the headers that keep
/// other code out of the page, and the root leads to them; a write that
/// another site's page had the browser send (with the credentials it
/// cached) is refused, the console's own is not; and the console's
/// requests are refused without the challenge that opens the browser's
/// own login dialog.
#[tokio::test]
async fn the_console_is_served_and_the_api_refuses_other_sites_pages() {
    let config = Config {
        users: vec![user("alice", "secret")],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let root = get(http, "/").await;
    assert_eq!(root.status, 302, "{root:?}");
    assert_eq!(root.header("location"), Some("console/"));
    let files = [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ];
    for (path, content_type) in files {
        let file = get(http, path).await;
        assert_eq!(file.status, 200, "{path}: {file:?}");
        assert!(
            file.header("content-type")
                .is_some_and(|t| t.starts_with(content_type)),
            "{path}: {file:?}"
        );
        assert_eq!(
            file.header("content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
    }

    let alice = Base64::encode_string(b"alice:secret");
    let purge_from = |origin: &str| {
        format!(
            "POST /api/queues/orders/purge HTTP/1.1\r\nHost: {http}\r\nOrigin: {origin}\r\n\
             Authorization: Basic {alice}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for origin in ["http://evil.example".to_owned(), "null".to_owned()] {
        let forged = exchange(http, &purge_from(&origin)).await;
        assert_eq!(forged.status, 403, "{origin}: {forged:?}");
    }
    // Past the check (and the credentials'): there is no such queue.
    let own = exchange(http, &purge_from(&format!("http://{http}"))).await;
    assert_eq!(own.status, 404, "{own:?}");

    let asked = |console: &str| {
        format!("GET /api/queues HTTP/1.1\r\nHost: {http}\r\n{console}Connection: close\r\n\r\n")
    };
    let browser = exchange(http, &asked("")).await;
    assert_eq!(browser.status, 401);
    assert!(browser.header("www-authenticate").is_some(), "{browser:?}");
    let console = exchange(http, &asked("X-Sluice-Console: 1\r\n")).await;
    assert_eq!(console.status, 401);
    assert_eq!(console.header("www-authenticate"), None, "{console:?}");
    broker.stop().await;
}

/// Asks `path` of `addr` until `wanted` holds of its JSON, within `WAIT`:
/// a node shows what its groups applied, which follows the leader's.
async fn json_until(addr: SocketAddr, path: &str, wanted: impl Fn(&Json) -> bool) -> Json {
    let reached = timeout(WAIT, async {
        loop {
            let response = get(addr, path).await;
            if response.status == 200 && wanted(&response.json()) {
                return response.json();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match reached {
        Ok(json) => json,
        Err(_) => panic!(
            "{path} not as wanted within {WAIT:?}: {:?}",
            get(addr, path).await
        ),
    }
}

#[tokio::test]
async fn in_a_cluster_every_node_shows_the_queue_its_group_and_leaders() {
    let base = Config {
        http: sluice::config::HttpConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
        },
        ..test_config()
    };
    let cluster = Cluster::start(&base).await;
    let (mut client, session) = connect(cluster.node(2), ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut client, sender, "x").await;

    for id in NODES {
        let http = cluster.node(id).http_addr.unwrap();
        let ready = get(http, "/ready").await;
        assert_eq!(ready.status, 200, "node {id}: {ready:?}");
        let queue = json_until(http, "/api/queues/work", |q| q["messages"] == 1).await;
        assert_eq!(queue["published"], 1, "node {id}: {queue}");
        assert_eq!(queue["replicas"], serde_json::json!([1, 2, 3]));
        let group = queue["group"].as_u64().unwrap();
        let leader = queue["leader"].as_u64().unwrap();
        assert!(NODES.contains(&leader), "node {id}: {queue}");

        let status = get(http, "/api/cluster").await.json();
        assert_eq!(status["node_id"], id);
        assert_eq!(status["clustered"], true);
        assert_eq!(status["members"], serde_json::json!([1, 2, 3]));
        let groups = status["groups"].as_array().unwrap();
        let of_queue = groups.iter().find(|g| g["group"] == group).unwrap();
        assert_eq!(of_queue["leader"], leader, "node {id}: {status}");
        assert!(groups.iter().all(|g| g["leader"].is_u64()), "{status}");

        let raft = &of_queue["raft"];
        assert!(raft["term"].as_u64() >= Some(1), "node {id}: {status}");
        assert!(
            raft["commit_index"].as_u64() >= of_queue["applied_index"].as_u64(),
            "node {id}: {status}"
        );
        // Only the leader tracks its followers; once heartbeats have
        // carried the publish, neither lags.
        let followers: Vec<u64> = NODES.into_iter().filter(|&n| n != id).collect();
        if id == leader {
            let caught_up = |status: &Json| {
                let groups = status["groups"].as_array().unwrap();
                let of_queue = groups.iter().find(|g| g["group"] == group).unwrap();
                let followers = of_queue["raft"]["followers"].as_array().unwrap();
                followers.len() == 2 && followers.iter().all(|f| f["lag_entries"] == 0)
            };
            let status = json_until(http, "/api/cluster", caught_up).await;
            let groups = status["groups"].as_array().unwrap();
            let of_queue = groups.iter().find(|g| g["group"] == group).unwrap();
            let nodes: Vec<u64> = of_queue["raft"]["followers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["node"].as_u64().unwrap())
                .collect();
            assert_eq!(nodes, followers, "{status}");
        } else {
            assert_eq!(
                raft["followers"],
                serde_json::json!([]),
                "node {id}: {status}"
            );
        }

        let exposition = scrape(http).await;
        assert_eq!(sample(&exposition, "sluice_node_id"), Some(id as f64));
        let series = format!("sluice_group_leader{{group=\"{group}\"}}");
        assert_eq!(sample(&exposition, &series), Some(leader as f64));
        let term = sample(
            &exposition,
            &format!("sluice_group_term{{group=\"{group}\"}}"),
        );
        assert!(term >= Some(1.0), "node {id}: {exposition}");
        for follower in followers {
            let lag = format!(
                "sluice_group_follower_lag_entries{{group=\"{group}\",follower=\"{follower}\"}}"
            );
            let shown = sample(&exposition, &lag).is_some();
            assert_eq!(shown, id == leader, "node {id}: {exposition}");
        }
    }
    client.close().await.unwrap();
    cluster.stop().await;
}

/// A consumer's link ends with `condition`, within `WAIT`.
async fn detached_with(client: &mut Client<TokioIo>, link: LinkId, condition: &str) {
    let detached =
        client.wait_for(|e| matches!(e, Event::LinkDetached { link: l, .. } if *l == link));
    match timeout(WAIT, detached).await.unwrap().unwrap() {
        Event::LinkDetached {
            error: Some(error), ..
        } => assert_eq!(error.condition.as_str(), condition, "{error:?}"),
        other => panic!("detached without an error: {other:?}"),
    }
}

/// The connection is closed by the broker with `condition`, whose
/// description contains `naming`.
async fn closed_with(client: &mut Client<TokioIo>, condition: &str, naming: &str) {
    let error = loop {
        match timeout(WAIT, client.next_event()).await.unwrap() {
            Ok(Event::Closed { local, remote }) => break remote.or(local).unwrap(),
            Ok(_) => {}
            Err(sluice::client::ClientError::Closed(Some(error))) => break error,
            Err(error) => panic!("expected the connection closed, got {error}"),
        }
    };
    assert_eq!(error.condition.as_str(), condition, "{error:?}");
    let description = error.description.unwrap_or_default();
    assert!(description.contains(naming), "{description}");
}

/// A config whose queue `work` dead-letters to `work.dlq`: both live in
/// one group, as a move needs.
fn dead_lettering_config() -> Config {
    Config {
        queue_overrides: vec![sluice::config::QueueOverride {
            name: "work".to_owned(),
            dead_letter_queue: Some("work.dlq".to_owned()),
            ..sluice::config::QueueOverride::default()
        }],
        ..test_config()
    }
}

/// Moves, purges and deletes through `http`, checking on every node of
/// `https` that each took effect, and closes the client's connection
/// through `client_http`, the HTTP listener of the node it is connected to.
async fn exercise_the_write_side(
    client_node: &Broker,
    client_http: SocketAddr,
    http: SocketAddr,
    https: &[SocketAddr],
) {
    let (mut client, session) = connect(client_node, ClientSasl::Anonymous).await;
    let sender = client
        .attach_sender(session, "w", Some("work"))
        .await
        .unwrap();
    for body in ["1", "2", "3", "4", "5"] {
        publish(&mut client, sender, body).await;
    }
    let sender = client
        .attach_sender(session, "d", Some("work.dlq"))
        .await
        .unwrap();
    publish(&mut client, sender, "parked").await;
    // The node asked must know both queues, and their messages.
    json_until(http, "/api/queues/work", |q| q["messages"] == 5).await;
    json_until(http, "/api/queues/work.dlq", |q| q["messages"] == 1).await;

    let body = r#"{"to": "work.dlq", "max": 2}"#;
    let moved = request_with(http, "POST", "/api/queues/work/move", None, body).await;
    assert_eq!(moved.status, 200, "{moved:?}");
    assert_eq!(
        moved.json(),
        serde_json::json!({"queue": "work", "to": "work.dlq", "moved": 2})
    );
    for &node in https {
        json_until(node, "/api/queues/work", |q| q["messages"] == 3).await;
        json_until(node, "/api/queues/work.dlq", |q| q["messages"] == 3).await;
    }

    let purged = request(http, "POST", "/api/queues/work/purge", None).await;
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(
        purged.json(),
        serde_json::json!({"queue": "work", "purged": 3})
    );
    for &node in https {
        json_until(node, "/api/queues/work", |q| q["messages"] == 0).await;
    }

    // The moved messages are delivered from their new queue; a consumer
    // holds them when it is deleted.
    let receiver = client
        .attach_receiver(session, "c", queue("work.dlq"), 10)
        .await
        .unwrap();
    for _ in 0..3 {
        receive(&mut client, receiver).await;
    }
    let deleted = request(http, "DELETE", "/api/queues/work.dlq", None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        deleted.json(),
        serde_json::json!({"queue": "work.dlq", "deleted": true})
    );
    detached_with(&mut client, receiver, "amqp:resource-deleted").await;
    for &node in https {
        let gone = timeout(WAIT, async {
            loop {
                let response = get(node, "/api/queues/work.dlq").await;
                if response.status == 404 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        gone.await.unwrap();
    }
    for path in [
        "/api/queues/nothing/purge",
        "/api/queues/work.dlq/purge",
        "/api/connections/999999",
    ] {
        let method = if path.contains("connections") {
            "DELETE"
        } else {
            "POST"
        };
        assert_eq!(
            request(http, method, path, None).await.status,
            404,
            "{path}"
        );
    }
    let moved = request_with(http, "POST", "/api/queues/work/move", None, "{}").await;
    assert_eq!(moved.status, 400, "{moved:?}");

    let connections = get(client_http, "/api/connections").await.json();
    let id = connections[0]["id"].as_u64().unwrap();
    let path = format!("/api/connections/{id}");
    let closed = request(client_http, "DELETE", &path, None).await;
    assert_eq!(closed.status, 200, "{closed:?}");
    assert_eq!(
        closed.json(),
        serde_json::json!({"connection": id, "closed": true})
    );
    closed_with(&mut client, "amqp:connection:forced", "anonymous").await;
}

#[tokio::test]
async fn the_write_side_purges_moves_deletes_and_closes_on_one_node() {
    let (broker, http) = broker_with(dead_lettering_config()).await;
    exercise_the_write_side(&broker, http, http, &[http]).await;
    broker.stop().await;
}

#[tokio::test]
async fn the_write_side_works_through_any_node_of_a_cluster() {
    let base = Config {
        http: sluice::config::HttpConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
        },
        ..dead_lettering_config()
    };
    let cluster = Cluster::start(&base).await;
    cluster.wait_for_leaders().await;
    let https: Vec<SocketAddr> = NODES
        .iter()
        .map(|&id| cluster.node(id).http_addr.unwrap())
        .collect();
    // The client on node 2, the commands through node 3.
    exercise_the_write_side(cluster.node(2), https[1], https[2], &https).await;
    cluster.stop().await;
}

/// Writes need `manage`: refused with 403 before anything is looked up, so
/// that a user who may not manage a name does not learn whether its queue
/// exists; 404 only to one who may.
#[tokio::test]
async fn writes_need_manage_and_do_not_tell_others_what_exists() {
    let grant = |user: &str, pattern: &str, manage: bool| Permission {
        user: user.to_owned(),
        pattern: pattern.to_owned(),
        send: true,
        receive: true,
        manage,
        monitor: true,
        ..Permission::default()
    };
    let config = Config {
        users: vec![user("alice", "secret"), user("carol", "singer")],
        permissions: vec![
            grant("alice", "**", true),
            grant("carol", "work", false),
            grant("carol", "mine", true),
        ],
        ..test_config()
    };
    let (broker, http) = broker_with(config).await;
    let (mut client, session) = connect_scram(&broker, "alice", "secret").await;
    for queue in ["work", "mine"] {
        let sender = client
            .attach_sender(session, queue, Some(queue))
            .await
            .unwrap();
        publish(&mut client, sender, "x").await;
    }
    let alice = Some(("alice", "secret"));
    let carol = Some(("carol", "singer"));
    let id = request(http, "GET", "/api/connections", alice).await.json()[0]["id"].clone();
    let close = format!("/api/connections/{id}");
    let move_to = |to: &str| format!(r#"{{"to": "{to}"}}"#);
    for (method, path, body, status) in [
        ("POST", "/api/queues/work/purge", String::new(), 403),
        ("POST", "/api/queues/nothing/purge", String::new(), 403),
        ("DELETE", "/api/queues/work", String::new(), 403),
        ("DELETE", "/api/queues/nothing", String::new(), 403),
        ("POST", "/api/queues/mine/move", move_to("work"), 403),
        ("POST", "/api/queues/work/move", move_to("mine"), 403),
        ("DELETE", close.as_str(), String::new(), 403),
        ("POST", "/api/queues/mine/purge", String::new(), 200),
    ] {
        let response = request_with(http, method, path, carol, &body).await;
        assert_eq!(response.status, status, "{method} {path}: {response:?}");
    }
    let response = request(http, "POST", "/api/queues/nothing/purge", alice).await;
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(
        request(http, "POST", "/api/queues/work/purge", None)
            .await
            .status,
        401
    );
    client.close().await.unwrap();
    broker.stop().await;
}
