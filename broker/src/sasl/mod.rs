//! SASL mechanisms (RFC 4422), as pure functions and state machines: what
//! the client sends and what the server checks. The engine carries their
//! messages; [`crate::server::auth`] decides who may log in.

pub mod scram;

use bytes::Bytes;

/// The mechanism that asks for no credentials (RFC 4505).
pub const ANONYMOUS: &str = "ANONYMOUS";

/// The mechanism that sends a user name and password (RFC 4616).
pub const PLAIN: &str = "PLAIN";

/// The mechanism that takes the identity established outside SASL: here,
/// the client's TLS certificate (RFC 4422 appendix A).
pub const EXTERNAL: &str = "EXTERNAL";

/// PLAIN's initial response for `username` and `password`:
/// `NUL username NUL password` (no authorization identity).
pub fn plain_response(username: &str, password: &str) -> Bytes {
    let mut response = Vec::with_capacity(username.len() + password.len() + 2);
    response.push(0);
    response.extend_from_slice(username.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    Bytes::from(response)
}

/// A PLAIN initial response, `[authzid] NUL authcid NUL passwd` (RFC 4616).
#[derive(Debug, PartialEq, Eq)]
pub struct PlainCredentials<'a> {
    /// The user name.
    pub authcid: &'a str,
    /// The password, as sent.
    pub password: &'a [u8],
}

impl<'a> PlainCredentials<'a> {
    /// Splits a response, or `None` if it is malformed: not exactly three
    /// fields, an empty or non-UTF-8 user name, an empty password, or an
    /// authorization identity other than the user itself (the broker has
    /// no notion of acting for another user).
    ///
    /// The password is compared byte for byte, without RFC 4616's SASLprep
    /// normalization: `sluice passwd` hashes exactly the bytes it is given.
    pub fn parse(response: &'a [u8]) -> Option<Self> {
        let mut fields = response.split(|&byte| byte == 0);
        let (authzid, authcid, password) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || authcid.is_empty() || password.is_empty() {
            return None;
        }
        if !authzid.is_empty() && authzid != authcid {
            return None;
        }
        Some(Self {
            authcid: std::str::from_utf8(authcid).ok()?,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trips_and_refuses_malformed_responses() {
        let response = plain_response("alice", "wonderland");
        assert_eq!(&response[..], b"\0alice\0wonderland");
        assert_eq!(
            PlainCredentials::parse(&response),
            Some(PlainCredentials {
                authcid: "alice",
                password: b"wonderland"
            })
        );
        assert!(PlainCredentials::parse(b"alice\0alice\0pw").is_some());
        for response in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0",               // empty password
            b"\0\0wonderland",          // empty user name
            b"\0alice\0wonder\0land",   // a fourth field
            b"bob\0alice\0wonderland",  // acting for another user
            b"\0\xffalice\0wonderland", // not UTF-8
        ] {
            assert_eq!(PlainCredentials::parse(response), None, "{response:?}");
        }
    }
}
