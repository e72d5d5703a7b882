//! SASL authentication of the broker's clients.
//!
//! With no accounts configured the broker is open: it offers ANONYMOUS and
//! admits clients that skip SASL. With accounts it offers only PLAIN and
//! checks each password against the account's argon2 hash.
//! [`authenticator`] picks between the two.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use argon2::password_hash::rand_core::CryptoRngCore;
use argon2::password_hash::{self, PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tracing::info;

use crate::amqp::engine::{AuthOutcome, Authenticator};
use crate::config::User;

/// The mechanism that asks for no credentials (RFC 4505).
pub const ANONYMOUS: &str = "ANONYMOUS";

/// The mechanism that sends a user name and password (RFC 4616).
pub const PLAIN: &str = "PLAIN";

/// The identity an anonymous client gets.
pub const ANONYMOUS_IDENTITY: &str = "anonymous";

/// The authenticator for the configured accounts: PLAIN against `users`,
/// or, when there are none, the open [`AnonymousAuthenticator`].
pub fn authenticator(users: &[User]) -> Arc<dyn Authenticator> {
    match PlainAuthenticator::new(users) {
        Some(plain) => Arc::new(plain),
        None => Arc::new(AnonymousAuthenticator),
    }
}

/// Admits every client that asks for ANONYMOUS or skips SASL, and no other
/// mechanism. This is the broker's authentication when it has no accounts.
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

/// Checks SASL PLAIN credentials against the configured accounts, and
/// refuses ANONYMOUS and clients that skip SASL.
///
/// Each check runs argon2, which is slow by design (tens of milliseconds
/// and about 19 MiB with the parameters `sluice passwd` uses). It runs on
/// the connection's task: that delays only the client logging in, and
/// happens once per connection.
pub struct PlainAuthenticator {
    users: HashMap<String, Argon2Hash>,
    /// Checked when the user name is unknown, so that a refusal takes as
    /// long whether or not the account exists and the timing does not tell
    /// which names are valid.
    decoy: Argon2Hash,
}

impl PlainAuthenticator {
    /// An authenticator for `users`, or `None` if there are none.
    ///
    /// Names are expected to be distinct ([`crate::config::Config::validate`]
    /// ensures it); with duplicates the last entry wins.
    pub fn new(users: &[User]) -> Option<Self> {
        let decoy = users.first()?.password_hash.clone();
        let users = users
            .iter()
            .map(|user| (user.name.clone(), user.password_hash.clone()))
            .collect();
        Some(Self { users, decoy })
    }

    /// Whether `password` is `name`'s. Unknown names cost a decoy check.
    fn check(&self, name: &str, password: &[u8]) -> bool {
        match self.users.get(name) {
            Some(hash) => hash.verify(password),
            None => {
                self.decoy.verify(password);
                false
            }
        }
    }
}

impl fmt::Debug for PlainAuthenticator {
    /// Lists the account names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainAuthenticator")
            .field("users", &self.users.keys())
            .finish_non_exhaustive()
    }
}

impl Authenticator for PlainAuthenticator {
    fn mechanisms(&self) -> Vec<String> {
        vec![PLAIN.to_owned()]
    }

    fn authenticate(
        &self,
        mechanism: &str,
        initial_response: &[u8],
        _hostname: Option<&str>,
    ) -> AuthOutcome {
        if mechanism != PLAIN {
            return AuthOutcome::Denied;
        }
        let Some(credentials) = PlainCredentials::parse(initial_response) else {
            info!("login refused: malformed PLAIN response");
            return AuthOutcome::Denied;
        };
        if self.check(credentials.authcid, credentials.password) {
            AuthOutcome::Ok {
                identity: credentials.authcid.to_owned(),
            }
        } else {
            info!(user = ?credentials.authcid, "login refused: bad user name or password");
            AuthOutcome::Denied
        }
    }
}

/// Whether `password` is the password of the account `name` among
/// `users`, for logins other than SASL (the management API's HTTP Basic
/// authentication). An unknown name costs a check against a decoy hash,
/// so that the time taken does not tell which names exist. Slow by design
/// (argon2): call it off the threads that serve connections.
pub fn check_password(users: &[User], name: &str, password: &[u8]) -> bool {
    let Some(decoy) = users.first() else {
        return false;
    };
    match users.iter().rev().find(|user| user.name == name) {
        Some(user) => user.password_hash.verify(password),
        None => {
            decoy.password_hash.verify(password);
            false
        }
    }
}

/// A PLAIN initial response, `[authzid] NUL authcid NUL passwd` (RFC 4616).
#[derive(Debug, PartialEq, Eq)]
struct PlainCredentials<'a> {
    /// The user name.
    authcid: &'a str,
    password: &'a [u8],
}

impl<'a> PlainCredentials<'a> {
    /// Splits a response, or `None` if it is malformed: not exactly three
    /// fields, an empty or non-UTF-8 user name, an empty password, or an
    /// authorization identity other than the user itself (the broker has
    /// no notion of acting for another user).
    ///
    /// The password is compared byte for byte, without RFC 4616's SASLprep
    /// normalization: `sluice passwd` hashes exactly the bytes it is given.
    fn parse(response: &'a [u8]) -> Option<Self> {
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

/// A password hash in PHC string format (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`),
/// checked when parsed to be one that [`Argon2Hash::verify`] can use.
#[derive(Clone, PartialEq, Eq)]
pub struct Argon2Hash(PasswordHashString);

/// Why a string is not a usable argon2 hash.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HashError(password_hash::Error);

impl Argon2Hash {
    /// Parses a PHC string and checks everything verification will need:
    /// an argon2 variant and version, valid parameters, a salt argon2
    /// accepts, and a hash output.
    ///
    /// # Errors
    ///
    /// [`HashError`] saying what is wrong.
    pub fn parse(phc: &str) -> Result<Self, HashError> {
        let owned = PasswordHashString::new(phc).map_err(HashError)?;
        let hash = owned.password_hash();
        Algorithm::try_from(hash.algorithm).map_err(HashError)?;
        if let Some(version) = hash.version {
            Version::try_from(version).map_err(|error| HashError(error.into()))?;
        }
        Params::try_from(&hash).map_err(HashError)?;
        let salt = hash
            .salt
            .ok_or(HashError(password_hash::Error::PhcStringField))?;
        let mut decoded = [0; password_hash::Salt::MAX_LENGTH];
        let salt_len = salt.decode_b64(&mut decoded).map_err(HashError)?.len();
        if salt_len < argon2::MIN_SALT_LEN {
            return Err(HashError(password_hash::Error::SaltInvalid(
                password_hash::errors::InvalidValue::TooShort,
            )));
        }
        if hash.hash.is_none() {
            return Err(HashError(password_hash::Error::PhcStringField));
        }
        Ok(Self(owned))
    }

    /// Whether `password` hashes to this. The final comparison is
    /// constant-time; the parameters are the hash's own.
    pub fn verify(&self, password: &[u8]) -> bool {
        Argon2::default()
            .verify_password(password, &self.0.password_hash())
            .is_ok()
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Argon2Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Argon2Hash {
    /// Shows the algorithm only: a hash in a log is an offline-cracking
    /// target, so `Debug` of a [`Config`](crate::config::Config) leaves it out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Argon2Hash(${}$…)", self.0.algorithm())
    }
}

/// Hashes `password` with argon2id and OWASP's recommended parameters
/// (m = 19456 KiB, t = 2, p = 1), salted from `rng`.
///
/// The broker itself never draws OS entropy, so the caller supplies the
/// generator: `sluice passwd` passes the operating system's.
///
/// # Errors
///
/// Only if argon2 rejects the input, which for these parameters means a
/// password longer than 4 GiB.
pub fn hash_password(
    password: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Argon2Hash, HashError> {
    let salt = SaltString::generate(rng);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
    let hash =
        argon2::PasswordHasher::hash_password(&argon2, password, &salt).map_err(HashError)?;
    Ok(Argon2Hash(hash.serialize()))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A cheap argon2id hash of `password` (m = 8 KiB, t = 1), so that tests
    /// do not pay for production parameters on every check.
    fn cheap_hash(password: &str) -> Argon2Hash {
        let salt = SaltString::encode_b64(b"sluice-test-salt").unwrap();
        let params = Params::new(8, 1, 1, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let hash = argon2::PasswordHasher::hash_password(&argon2, password.as_bytes(), &salt);
        Argon2Hash::parse(&hash.unwrap().to_string()).unwrap()
    }

    fn user(name: &str, password: &str) -> User {
        User {
            name: name.to_owned(),
            password_hash: cheap_hash(password),
        }
    }

    fn plain() -> PlainAuthenticator {
        PlainAuthenticator::new(&[user("alice", "wonderland"), user("bob", "builder")]).unwrap()
    }

    fn is_ok_as(outcome: &AuthOutcome, expected: &str) -> bool {
        matches!(outcome, AuthOutcome::Ok { identity } if identity == expected)
    }

    #[test]
    fn anonymous_offers_only_anonymous() {
        assert_eq!(AnonymousAuthenticator.mechanisms(), vec!["ANONYMOUS"]);
    }

    #[test]
    fn anonymous_admits_whatever_the_trace_information() {
        for initial_response in [&b""[..], b"someone@example.com", b"\xff\x00"] {
            let outcome =
                AnonymousAuthenticator.authenticate(ANONYMOUS, initial_response, Some("broker"));
            assert!(is_ok_as(&outcome, ANONYMOUS_IDENTITY));
        }
    }

    #[test]
    fn anonymous_admits_clients_without_sasl() {
        assert_eq!(
            AnonymousAuthenticator.unauthenticated_identity().as_deref(),
            Some(ANONYMOUS_IDENTITY)
        );
    }

    #[test]
    fn anonymous_denies_every_other_mechanism() {
        for mechanism in ["PLAIN", "anonymous", "EXTERNAL", ""] {
            let outcome = AnonymousAuthenticator.authenticate(mechanism, b"\0user\0pass", None);
            assert_eq!(outcome, AuthOutcome::Denied, "{mechanism}");
        }
    }

    #[test]
    fn no_users_means_anonymous_and_users_mean_plain_only() {
        let open = authenticator(&[]);
        assert_eq!(open.mechanisms(), vec!["ANONYMOUS"]);
        assert!(open.unauthenticated_identity().is_some());

        let closed = authenticator(&[user("alice", "wonderland")]);
        assert_eq!(closed.mechanisms(), vec!["PLAIN"]);
        assert_eq!(closed.unauthenticated_identity(), None);
        assert_eq!(
            closed.authenticate(ANONYMOUS, b"", None),
            AuthOutcome::Denied
        );
    }

    #[test]
    fn plain_admits_the_right_password_as_the_user() {
        let auth = plain();
        assert!(is_ok_as(
            &auth.authenticate(PLAIN, b"\0alice\0wonderland", None),
            "alice"
        ));
        assert!(is_ok_as(
            &auth.authenticate(PLAIN, b"bob\0bob\0builder", Some("broker")),
            "bob"
        ));
    }

    #[test]
    fn plain_denies_bad_credentials() {
        let auth = plain();
        for response in [
            &b"\0alice\0builder"[..], // another user's password
            b"\0alice\0wonderlan",    // a prefix
            b"\0carol\0wonderland",   // unknown user
            b"\0Alice\0wonderland",   // names are case-sensitive
        ] {
            assert_eq!(
                auth.authenticate(PLAIN, response, None),
                AuthOutcome::Denied,
                "{response:?}"
            );
        }
    }

    #[test]
    fn plain_denies_malformed_responses() {
        let auth = plain();
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
            assert_eq!(
                auth.authenticate(PLAIN, response, None),
                AuthOutcome::Denied,
                "{response:?}"
            );
        }
    }

    #[test]
    fn plain_denies_other_mechanisms_and_clients_without_sasl() {
        let auth = plain();
        assert_eq!(auth.authenticate(ANONYMOUS, b"", None), AuthOutcome::Denied);
        assert_eq!(
            auth.authenticate("plain", b"\0alice\0wonderland", None),
            AuthOutcome::Denied
        );
        assert_eq!(auth.unauthenticated_identity(), None);
    }

    #[test]
    fn hash_password_uses_argon2id_with_owasp_parameters_and_verifies() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let hash = hash_password(b"correct horse", &mut rng).unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hash.verify(b"correct horse"));
        assert!(!hash.verify(b"correct horse "));
        assert_eq!(Argon2Hash::parse(hash.as_str()).unwrap(), hash);
    }

    #[test]
    fn salts_come_from_the_rng() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let first = hash_password(b"pw", &mut rng).unwrap();
        let second = hash_password(b"pw", &mut rng).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn parse_rejects_unusable_hashes() {
        let good = cheap_hash("pw").to_string();
        let without_output = good.rsplit_once('$').unwrap().0.to_owned();
        for phc in [
            "",
            "hunter2",
            "$argon2id$v=19$m=19456,t=2,p=1", // no salt
            &without_output,                  // no hash
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            &good.replace("$v=19$", "$v=18$"), // unknown version
            &good.replace("m=8,", "m=1,"),     // memory below 8 p
            &good.replace("c2x1aWNlLXRlc3Qtc2FsdA", "c2x1aWNl"), // salt below 8 bytes
        ] {
            assert!(Argon2Hash::parse(phc).is_err(), "{phc:?}");
        }
        assert!(Argon2Hash::parse(&good).is_ok());
    }

    #[test]
    fn debug_leaves_the_hash_out() {
        let hash = cheap_hash("pw");
        let shown = format!("{hash:?} {:?}", plain());
        assert!(!shown.contains(hash.as_str()), "{shown}");
        assert!(shown.contains("argon2id"), "{shown}");
    }
}
