//! Routing and authentication: which handler answers a request, and who
//! asks.

use std::net::SocketAddr;

use base64ct::{Base64, Encoding};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};

use super::api::error;
use super::console::{self, CONSOLE_HEADER};
use super::{Answer, Api};
use crate::io::Io;
use crate::server::auth::{ANONYMOUS_IDENTITY, Checked};

/// Every route, as `(method, path)`; `{name}` stands for a queue's name,
/// percent-encoded. `docs/openapi.yaml` must list exactly these (a test
/// checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/console/"),
    ("GET", "/console/console.js"),
    ("GET", "/console/console.css"),
    ("GET", "/metrics"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/api/queues"),
    ("GET", "/api/queues/{name}"),
    ("DELETE", "/api/queues/{name}"),
    ("POST", "/api/queues/{name}/purge"),
    ("POST", "/api/queues/{name}/move"),
    ("GET", "/api/connections"),
    ("DELETE", "/api/connections/{id}"),
    ("GET", "/api/cluster"),
];

/// The path prefix of one queue's resource.
const QUEUE_PREFIX: &str = "/api/queues/";

/// The path prefix of one connection's resource.
const CONNECTION_PREFIX: &str = "/api/connections/";

/// A request's resource under `/api/`.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Queues,
    /// A queue, and what is asked of it (`purge`, `move`) if anything.
    Queue(String, Option<String>),
    Connections,
    Connection(u64),
    Cluster,
}

impl Resource {
    /// The resource of `path`, or the answer saying there is none.
    fn of(path: &str) -> Result<Self, Answer> {
        match path {
            "/api/queues" => return Ok(Self::Queues),
            "/api/connections" => return Ok(Self::Connections),
            "/api/cluster" => return Ok(Self::Cluster),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix(QUEUE_PREFIX) {
            // A name's own slashes are percent-encoded: a raw one ends it.
            let (name, action) = match rest.split_once('/') {
                Some((name, action)) => (name, Some(action.to_owned())),
                None => (rest, None),
            };
            return match percent_decode(name) {
                Some(name) if !name.is_empty() => Ok(Self::Queue(name, action)),
                _ => Err(error(
                    StatusCode::BAD_REQUEST,
                    "the queue name is not valid",
                )),
            };
        }
        if let Some(id) = path.strip_prefix(CONNECTION_PREFIX) {
            return match id.parse() {
                Ok(id) => Ok(Self::Connection(id)),
                Err(_) => Err(error(StatusCode::NOT_FOUND, "no such connection")),
            };
        }
        Err(error(StatusCode::NOT_FOUND, "no such resource"))
    }
}

impl<I: Io> Api<I> {
    /// Answers `request`.
    pub(super) async fn answer(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if !known_path(&path) {
            return error(StatusCode::NOT_FOUND, "no such resource");
        }
        if !allowed(&method, &path) {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "that method is not served here",
            );
        }
        match path.as_str() {
            "/metrics" => return self.metrics().await,
            "/health" => return self.health().await,
            "/ready" => return self.ready().await,
            _ => {}
        }
        if let Some(file) = console::file(&path) {
            return file;
        }
        // Refused before the credentials are checked: a forged request
        // costs no password check.
        if method != Method::GET && !from_this_origin(request.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "the request comes from another site's page (its Origin is not this listener)",
            );
        }
        let resource = match Resource::of(&path) {
            Ok(resource) => resource,
            Err(answer) => return answer,
        };
        let user = match self.authenticate(&request, peer).await {
            Ok(user) => user,
            Err(answer) => return answer,
        };
        match (method, resource) {
            (Method::GET, Resource::Queues) => self.queues(&user).await,
            (Method::GET, Resource::Connections) => self.connections(&user),
            (Method::GET, Resource::Cluster) => self.cluster(&user).await,
            (Method::GET, Resource::Queue(name, None)) => self.queue(&user, &name).await,
            (Method::DELETE, Resource::Queue(name, None)) => self.delete(&user, name).await,
            (Method::POST, Resource::Queue(name, Some(action))) if action == "purge" => {
                self.purge(&user, name).await
            }
            (Method::POST, Resource::Queue(name, Some(action))) if action == "move" => {
                let body = match read_body(request.into_body()).await {
                    Ok(body) => body,
                    Err(answer) => return answer,
                };
                self.move_messages(&user, name, &body).await
            }
            (Method::DELETE, Resource::Connection(id)) => self.close(&user, id).await,
            _ => error(StatusCode::NOT_FOUND, "no such resource"),
        }
    }

    /// The user making `request`: with no accounts configured, anyone (as
    /// the AMQP port admits anonymous clients); otherwise the account of
    /// its Basic credentials, checked as SASL checks PLAIN's (the same
    /// threads, throttle per source and log), or the answer refusing it.
    async fn authenticate(
        &self,
        request: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<String, Answer> {
        if self.auth.is_open() {
            return Ok(ANONYMOUS_IDENTITY.to_owned());
        }
        let Some((name, password)) = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(basic_credentials)
        else {
            return Err(unauthorized(request.headers()));
        };
        let checked = self
            .auth
            .check_password(&self.io, peer.ip(), &name, password.as_bytes())
            .await;
        match checked {
            Checked::Valid => Ok(name),
            Checked::Invalid => Err(unauthorized(request.headers())),
            Checked::Busy => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once: try again later",
            )),
        }
    }
}

/// Whether some route has `path`, whatever its method.
fn known_path(path: &str) -> bool {
    ROUTES.iter().any(|&(_, route)| matches(route, path))
}

/// Whether a route has `path` with `method`.
fn allowed(method: &Method, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|&(route_method, route)| method.as_str() == route_method && matches(route, path))
}

/// Whether `path` is one of `route`'s, whose `{…}` stands for one segment.
fn matches(route: &str, path: &str) -> bool {
    let mut routes = route.split('/');
    let mut paths = path.split('/');
    loop {
        match (routes.next(), paths.next()) {
            (None, None) => return true,
            (Some(pattern), Some(segment)) if pattern.starts_with('{') => {
                if segment.is_empty() {
                    return false;
                }
            }
            (Some(pattern), Some(segment)) if pattern == segment => {}
            _ => return false,
        }
    }
}

/// The most bytes a request's body may have (a move's is a small object).
const BODY_BYTES_MAX: usize = 4 * 1024;

/// A request's whole body, or the answer refusing it.
async fn read_body(body: Incoming) -> Result<Bytes, Answer> {
    match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request's body is too large, or was cut short",
        )),
    }
}

/// 401, asking for Basic credentials; but not of the console's script,
/// whose page has a login form of its own (the browser would open its own
/// dialog over it).
fn unauthorized(headers: &HeaderMap) -> Answer {
    let mut answer = error(StatusCode::UNAUTHORIZED, "credentials required");
    if !headers.contains_key(CONSOLE_HEADER) {
        answer.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
        );
    }
    answer
}

/// Whether a request with `headers` may change something: not one that a
/// page of another site made the browser send. A browser that once cached
/// Basic credentials for this listener attaches them to any request to it,
/// a cross-site form's POST too; but it names the page's origin in
/// `Origin` on every request other than a GET or HEAD, and that must then
/// be this listener, as the `Host` header names it (`null`, an opaque
/// origin, never is). A request without `Origin` comes from no browser's
/// page (curl, `sluice ctl`).
fn from_this_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let host = headers.get(HOST).and_then(|host| host.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, authority)| authority);
    match (authority, host) {
        (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// The user name and password of a `Basic` authorization header (RFC
/// 7617), or `None` if it is not one.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let header = header.to_str().ok()?;
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// `text` with its `%XX` escapes decoded, or `None` if an escape is
/// malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail.get(2..)?;
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("orders").as_deref(), Some("orders"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn basic_credentials_are_parsed_strictly() {
        let header = |text: &str| HeaderValue::from_str(text).unwrap();
        // "alice:s3:cret", whose password holds a colon.
        assert_eq!(
            basic_credentials(&header("Basic YWxpY2U6czM6Y3JldA==")),
            Some(("alice".to_owned(), "s3:cret".to_owned()))
        );
        assert_eq!(
            basic_credentials(&header("basic YWxpY2U6czM6Y3JldA==")).map(|(name, _)| name),
            Some("alice".to_owned())
        );
        assert_eq!(basic_credentials(&header("Bearer abc")), None);
        assert_eq!(basic_credentials(&header("Basic !!!")), None);
        // "alice", without a colon.
        assert_eq!(basic_credentials(&header("Basic YWxpY2U=")), None);
    }

    #[test]
    fn every_route_is_known_and_others_are_not() {
        for (_, route) in ROUTES {
            assert!(known_path(&route.replace("{name}", "orders")), "{route}");
        }
        assert!(!known_path("/api/queue"));
        assert!(known_path("/"));
        assert!(!known_path("/console"));
        assert!(!known_path("/console/index.html"));
        assert!(!known_path("/api/queues/orders/drain"));
        assert!(!known_path("/api/queues//purge"));
        assert!(allowed(&Method::POST, "/api/queues/a%2Fb/purge"));
        assert!(!allowed(&Method::GET, "/api/queues/orders/purge"));
        assert!(!allowed(&Method::POST, "/api/queues/orders"));
        assert!(allowed(&Method::DELETE, "/api/connections/7"));
    }

    #[test]
    fn resources_are_parsed() {
        let queue = |name: &str, action: Option<&str>| {
            Resource::Queue(name.to_owned(), action.map(str::to_owned))
        };
        let of = |path: &str| Resource::of(path).ok();
        assert_eq!(of("/api/queues/a%2Fb"), Some(queue("a/b", None)));
        assert_eq!(
            of("/api/queues/a%2Fb/move"),
            Some(queue("a/b", Some("move")))
        );
        assert_eq!(of("/api/connections/12"), Some(Resource::Connection(12)));
        assert_eq!(of("/api/connections/x"), None);
        assert_eq!(of("/api/queues/%zz"), None);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(name, value)| {
                (
                    hyper::header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn only_pages_of_this_listener_may_write() {
        let host = ("host", "127.0.0.1:8080");
        assert!(from_this_origin(&headers(&[host])), "no Origin: no browser");
        assert!(from_this_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        // Behind a TLS-terminating proxy that passes the Host on.
        assert!(from_this_origin(&headers(&[
            ("host", "Broker.example"),
            ("origin", "https://broker.example")
        ])));
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "http://127.0.0.1",
            "null",
            "127.0.0.1:8080",
        ] {
            let forged = [
                host,
                ("origin", origin),
                ("authorization", "Basic YWxpY2U6c2VjcmV0"),
            ];
            assert!(!from_this_origin(&headers(&forged)), "{origin}");
        }
        assert!(!from_this_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8080"
        )])));
    }

    #[test]
    fn the_console_is_not_sent_the_browser_dialog_challenge() {
        let challenge = |pairs: &[(&'static str, &'static str)]| {
            unauthorized(&headers(pairs))
                .headers()
                .get(WWW_AUTHENTICATE)
                .cloned()
        };
        assert_eq!(
            challenge(&[]),
            Some(HeaderValue::from_static(
                "Basic realm=\"sluice\", charset=\"UTF-8\""
            ))
        );
        assert_eq!(challenge(&[("x-sluice-console", "1")]), None);
        assert_eq!(
            unauthorized(&headers(&[("x-sluice-console", "1")])).status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
