//! SASL authentication of the broker's clients.

use crate::amqp::engine::{AuthOutcome, Authenticator};

/// The mechanism that asks for no credentials (RFC 4505).
pub const ANONYMOUS: &str = "ANONYMOUS";

/// The identity an anonymous client gets.
pub const ANONYMOUS_IDENTITY: &str = "anonymous";

/// Admits every client that asks for ANONYMOUS or skips SASL, and no other
/// mechanism.
///
/// The broker has no accounts yet, so this is its whole authentication; an
/// authenticator for PLAIN against hashed users will sit beside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnonymousAuthenticator;

impl Authenticator for AnonymousAuthenticator {
    fn mechanisms(&self) -> Vec<String> {
        vec![ANONYMOUS.to_owned()]
    }

    fn authenticate(
        &self,
        mechanism: &str,
        _initial_response: &[u8],
        _hostname: Option<&str>,
    ) -> AuthOutcome {
        // ANONYMOUS's initial response is optional trace information (an
        // email address or a token), never a credential: nothing to check.
        if mechanism == ANONYMOUS {
            AuthOutcome::Ok {
                identity: ANONYMOUS_IDENTITY.to_owned(),
            }
        } else {
            AuthOutcome::Denied
        }
    }

    /// A client that skips SASL gets what ANONYMOUS would give it: turning
    /// it away would protect nothing.
    fn unauthenticated_identity(&self) -> Option<String> {
        Some(ANONYMOUS_IDENTITY.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_only_anonymous() {
        assert_eq!(AnonymousAuthenticator.mechanisms(), vec!["ANONYMOUS"]);
    }

    #[test]
    fn admits_anonymous_whatever_the_trace_information() {
        for initial_response in [&b""[..], b"someone@example.com", b"\xff\x00"] {
            let outcome =
                AnonymousAuthenticator.authenticate(ANONYMOUS, initial_response, Some("broker"));
            assert!(
                matches!(&outcome, AuthOutcome::Ok { identity } if identity == ANONYMOUS_IDENTITY)
            );
        }
    }

    #[test]
    fn admits_clients_without_sasl_as_anonymous() {
        assert_eq!(
            AnonymousAuthenticator.unauthenticated_identity().as_deref(),
            Some(ANONYMOUS_IDENTITY)
        );
    }

    #[test]
    fn denies_every_other_mechanism() {
        for mechanism in ["PLAIN", "anonymous", "EXTERNAL", ""] {
            let outcome = AnonymousAuthenticator.authenticate(mechanism, b"\0user\0pass", None);
            assert!(matches!(outcome, AuthOutcome::Denied), "{mechanism}");
        }
    }
}
