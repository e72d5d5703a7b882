//! Routing and authentication: which handler answers a request, and who
//! asks.

use std::net::SocketAddr;

use base64ct::{Base64, Encoding};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};

use super::api::error;
use super::{Answer, Api};
use crate::io::Io;
use crate::server::auth::{ANONYMOUS_IDENTITY, Checked};

/// Every route, as `(method, path)`; `{name}` stands for a queue's name,
/// percent-encoded. `docs/openapi.yaml` must list exactly these (a test
/// checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/api/queues"),
    ("GET", "/api/queues/{name}"),
    ("GET", "/api/connections"),
    ("GET", "/api/cluster"),
];

/// The path prefix of one queue's resource.
const QUEUE_PREFIX: &str = "/api/queues/";

impl<I: Io> Api<I> {
    /// Answers `request`.
    pub(super) async fn answer(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let path = request.uri().path().to_owned();
        if request.method() != Method::GET {
            return match known_path(&path) {
                true => error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here"),
                false => error(StatusCode::NOT_FOUND, "no such resource"),
            };
        }
        match path.as_str() {
            "/metrics" => return self.metrics().await,
            "/health" => return self.health().await,
            "/ready" => return self.ready().await,
            _ => {}
        }
        if !path.starts_with("/api/") {
            return error(StatusCode::NOT_FOUND, "no such resource");
        }
        let user = match self.authenticate(&request, peer).await {
            Ok(user) => user,
            Err(answer) => return answer,
        };
        match path.as_str() {
            "/api/queues" => self.queues(&user).await,
            "/api/connections" => self.connections(&user),
            "/api/cluster" => self.cluster(&user).await,
            _ => match path.strip_prefix(QUEUE_PREFIX).map(percent_decode) {
                Some(Some(name)) if !name.is_empty() => self.queue(&user, &name).await,
                Some(_) => error(StatusCode::BAD_REQUEST, "the queue name is not valid"),
                None => error(StatusCode::NOT_FOUND, "no such resource"),
            },
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
            return Err(unauthorized());
        };
        let checked = self
            .auth
            .check_password(&self.io, peer.ip(), &name, password.as_bytes())
            .await;
        match checked {
            Checked::Valid => Ok(name),
            Checked::Invalid => Err(unauthorized()),
            Checked::Busy => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once: try again later",
            )),
        }
    }
}

/// Whether some route has `path`, whatever its method.
fn known_path(path: &str) -> bool {
    ROUTES.iter().any(|&(_, route)| {
        route == path || (path.starts_with(QUEUE_PREFIX) && route.ends_with("{name}"))
    })
}

/// 401, asking for Basic credentials.
fn unauthorized() -> Answer {
    let mut answer = error(StatusCode::UNAUTHORIZED, "credentials required");
    answer.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
    );
    answer
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
        assert!(!known_path("/"));
    }
}
