//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), both ends, sans-IO.
//!
//! The server keeps, per account, only what RFC 5802 §3 calls the stored
//! key and the server key ([`ScramCredential`]): a stolen configuration
//! lets nobody log in as the user without first guessing the password
//! offline, and the password itself never crosses the wire. The expensive
//! part, PBKDF2, runs on the client at each login and at `sluice passwd
//! --scram`; the server's check is a few hashes.
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: a client that
//! asks for it (`p=` in its GS2 header) is refused.
//!
//! Names and passwords are used byte for byte, without RFC 4013's SASLprep:
//! for ASCII they are the same, and `sluice passwd` derives the credential
//! from exactly the bytes it is given.

use std::fmt;
use std::str::FromStr;

use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::planted::Plants;

type HmacSha256 = Hmac<Sha256>;

/// The mechanism's name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PBKDF2's iteration count for new credentials: RFC 7677 §4's minimum,
/// which every client library accepts.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Fewer iterations than this are refused, in a credential or from a server.
const MIN_ITERATIONS: u32 = 4096;

/// More than this, from a server, is refused: a client would spend minutes.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Bytes of salt in new credentials (and in the decoy salts of unknown
/// users): RFC 5802 leaves the length open; 16 is what PostgreSQL uses.
pub const SALT_BYTES: usize = 16;

const KEY_BYTES: usize = 32;

/// The GS2 header of a client without channel binding that does not act
/// for another user (RFC 5802 §7): `n,,`.
const GS2_NO_BINDING: &[u8] = b"n,,";

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message did not follow RFC 5802's syntax.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which is not offered.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The client asked to act as another user.
    #[error("SCRAM authorization identity differs from the user")]
    Authzid,
    /// The client's final message does not continue this exchange (its
    /// nonce or GS2 header changed).
    #[error("SCRAM message does not match the exchange")]
    Mismatch,
    /// The proof is wrong: bad password, or no such user.
    #[error("SCRAM proof is invalid")]
    InvalidProof,
    /// The server's signature is wrong: it does not know the password.
    #[error("the server's SCRAM signature is invalid")]
    ServerSignature,
    /// The server sent an error (`e=`) or an unusable iteration count.
    #[error("the server refused SCRAM: {0}")]
    Server(String),
}

/// What the server stores for a user: salt, iterations, stored key and
/// server key. Written `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`
/// with base64 fields, PostgreSQL's format, so that tools for one work for
/// the other.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

impl ScramCredential {
    /// Derives the credential of `password` (RFC 5802 §3).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let keys = Keys::derive(password, salt, iterations);
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: keys.stored_key(),
            server_key: keys.server_key,
        }
    }
}

impl ScramCredential {
    /// Whether `password` is the one this credential was derived from: for
    /// logins that send the password itself (HTTP Basic, PLAIN) to an
    /// account that has only a SCRAM credential. Costs the PBKDF2 a
    /// client pays.
    pub fn verifies(&self, password: &[u8]) -> bool {
        let keys = Keys::derive(password, &self.salt, self.iterations);
        bool::from(keys.stored_key().ct_eq(&self.stored_key))
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            Base64::encode_string(&self.salt),
            Base64::encode_string(&self.stored_key),
            Base64::encode_string(&self.server_key),
        )
    }
}

impl fmt::Debug for ScramCredential {
    /// Shows the parameters, not the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a stored credential cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SCRAM-SHA-256 credential ({0}); make one with `sluice passwd --scram`")]
pub struct CredentialError(&'static str);

impl FromStr for ScramCredential {
    type Err = CredentialError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix(MECHANISM)
            .and_then(|rest| rest.strip_prefix('$'))
            .ok_or(CredentialError("it must start with `SCRAM-SHA-256$`"))?;
        let (parameters, keys) = rest
            .split_once('$')
            .ok_or(CredentialError("expected `$` before the keys"))?;
        let (iterations, salt) = parameters
            .split_once(':')
            .ok_or(CredentialError("expected `iterations:salt`"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(CredentialError("expected `stored key:server key`"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| CredentialError("the iteration count is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(CredentialError("fewer than 4096 iterations"));
        }
        let salt =
            Base64::decode_vec(salt).map_err(|_| CredentialError("the salt is not base64"))?;
        if salt.is_empty() {
            return Err(CredentialError("the salt is empty"));
        }
        Ok(Self {
            salt,
            iterations,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }
}

fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], CredentialError> {
    let mut key = [0; KEY_BYTES];
    match Base64::decode(text, &mut key) {
        Ok(decoded) if decoded.len() == KEY_BYTES => Ok(key),
        _ => Err(CredentialError("a key is not 32 bytes of base64")),
    }
}

/// The keys a password and salt give (RFC 5802 §3).
struct Keys {
    client_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        Self::of_salted(&salt_password(password, salt, iterations))
    }

    fn of_salted(salted: &[u8; KEY_BYTES]) -> Self {
        Self {
            client_key: hmac(salted, b"Client Key"),
            server_key: hmac(salted, b"Server Key"),
        }
    }

    fn stored_key(&self) -> [u8; KEY_BYTES] {
        Sha256::digest(self.client_key).into()
    }
}

/// RFC 5802's SaltedPassword: the slow part of a login, by design.
fn salt_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_BYTES] {
    let mut salted = [0; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    salted
}

/// A password salted for one credential's salt and iteration count (RFC
/// 5802's SaltedPassword), which a client may keep instead of the password
/// (RFC 5802 §5.1) so that it pays for the iterations once, not at every
/// login: a client that opens many connections, such as the simulator's.
#[derive(Clone, PartialEq, Eq)]
pub struct SaltedPassword {
    salt: Vec<u8>,
    iterations: u32,
    salted: [u8; KEY_BYTES],
}

impl SaltedPassword {
    /// `password` salted with `salt` over `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        Self {
            salt: salt.to_vec(),
            iterations,
            salted: salt_password(password, salt, iterations),
        }
    }
}

impl fmt::Debug for SaltedPassword {
    /// Everything but the salted password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltedPassword")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// What a client proves it knows.
enum Secret {
    Password(Vec<u8>),
    Salted(SaltedPassword),
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; KEY_BYTES] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; KEY_BYTES], b: &[u8; KEY_BYTES]) -> [u8; KEY_BYTES] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The server's side of one exchange, after the client's first message.
#[derive(Debug)]
pub struct ScramServer {
    user: String,
    /// `None` for an unknown user: the exchange goes on, with a decoy
    /// salt, and fails at the proof, so that nobody learns which names
    /// exist.
    credential: Option<ScramCredential>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// How the server looks up the user a client names.
pub struct Lookup<'a> {
    /// The user's credential, if the user exists and has one.
    pub credential: &'a dyn Fn(&str) -> Option<ScramCredential>,
    /// The salt to show for a user without a credential: it must be the
    /// same at every attempt for the same name, or a second attempt would
    /// tell that the name is unknown.
    pub decoy_salt: &'a dyn Fn(&str) -> Vec<u8>,
}

impl ScramServer {
    /// Reads the client's first message and answers it: the user it names,
    /// and the server-first message with `server_nonce` (printable, no
    /// commas) appended to the client's.
    ///
    /// # Errors
    ///
    /// [`ScramError`] for a malformed message, channel binding, or an
    /// authorization identity other than the user.
    pub fn start(
        client_first: &[u8],
        server_nonce: &str,
        lookup: &Lookup<'_>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2, bare) = split_gs2(text)?;
        let mut fields = bare.split(',');
        let user = attribute(fields.next(), 'n')?;
        let client_nonce = attribute(fields.next(), 'r')?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_nonce_char) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        // Extensions (RFC 5802 §5.1) may follow, each `letter=value`; none
        // is mandatory to us.
        if !fields.all(is_extension) {
            return Err(ScramError::Malformed("bad extension"));
        }
        let user = unescape_name(user)?;
        if let Some(authzid) = gs2.authzid
            && unescape_name(authzid)? != user
        {
            return Err(ScramError::Authzid);
        }
        let credential = (lookup.credential)(&user);
        let (salt, iterations) = match &credential {
            Some(credential) => (credential.salt.clone(), credential.iterations),
            None => ((lookup.decoy_salt)(&user), DEFAULT_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={iterations}",
            Base64::encode_string(&salt)
        );
        let server = Self {
            user,
            credential,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// The user the client names.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message: the authenticated user and the
    /// server-final message (`v=` signature) to send with the outcome.
    ///
    /// # Errors
    ///
    /// [`ScramError::InvalidProof`] for a wrong password or unknown user;
    /// others for a malformed or mismatched message.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        self.finish_planted(client_final, Plants::NONE)
    }

    /// As [`ScramServer::finish`], in a broker with `plants`.
    ///
    /// # Errors
    ///
    /// As [`ScramServer::finish`].
    pub fn finish_planted(
        self,
        client_final: &[u8],
        plants: Plants,
    ) -> Result<(String, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = attribute(fields.next(), 'c')?;
        let nonce = attribute(fields.next(), 'r')?;
        // Only `n,,` or `y,,` (with or without an authzid) can have
        // started this exchange; what was sent must come back.
        let binding = Base64::decode_vec(binding).map_err(|_| ScramError::Malformed("c="))?;
        if !binding.starts_with(b"n,") && !binding.starts_with(b"y,") {
            return Err(ScramError::Mismatch);
        }
        if nonce != self.nonce {
            return Err(ScramError::Mismatch);
        }
        let mut proof_bytes = [0; KEY_BYTES];
        match Base64::decode(proof, &mut proof_bytes) {
            Ok(decoded) if decoded.len() == KEY_BYTES => {}
            _ => return Err(ScramError::Malformed("p=")),
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let Some(credential) = self.credential else {
            return Err(ScramError::InvalidProof);
        };
        let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof_bytes, &client_signature);
        let stored_key: [u8; KEY_BYTES] = Sha256::digest(client_key).into();
        // PLANTED BUG (`scram-accepts-any-proof`): a known user's wrong
        // password is admitted.
        if !bool::from(stored_key.ct_eq(&credential.stored_key))
            && !plants.scram_accepts_any_proof()
        {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", Base64::encode_string(&server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// The client's side of one exchange.
pub struct ScramClient {
    secret: Secret,
    client_first_bare: String,
    nonce: String,
    /// Set once the server's first message is answered.
    expected_server_signature: Option<[u8; KEY_BYTES]>,
}

impl fmt::Debug for ScramClient {
    /// Everything but the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange for `user` with a fresh `nonce` (printable, no
    /// commas): the client and its first message.
    pub fn start(user: &str, password: &[u8], nonce: &str) -> (Self, Vec<u8>) {
        Self::start_with(user, Secret::Password(password.to_vec()), nonce)
    }

    /// As [`ScramClient::start`], with the password salted already: the
    /// exchange fails if the server's salt or iteration count differs.
    pub fn start_salted(user: &str, salted: SaltedPassword, nonce: &str) -> (Self, Vec<u8>) {
        Self::start_with(user, Secret::Salted(salted), nonce)
    }

    fn start_with(user: &str, secret: Secret, nonce: &str) -> (Self, Vec<u8>) {
        let client_first_bare = format!("n={},r={nonce}", escape_name(user));
        let mut first = GS2_NO_BINDING.to_vec();
        first.extend_from_slice(client_first_bare.as_bytes());
        let client = Self {
            secret,
            client_first_bare,
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        };
        (client, first)
    }

    /// Answers the server's first message with the proof.
    ///
    /// # Errors
    ///
    /// [`ScramError`] if the server's message is malformed, does not extend
    /// our nonce, or asks for too few or too many iterations.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::Server(error.to_owned()));
        }
        let mut fields = text.split(',');
        let nonce = attribute(fields.next(), 'r')?;
        let salt = attribute(fields.next(), 's')?;
        let iterations = attribute(fields.next(), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Mismatch);
        }
        let salt = Base64::decode_vec(salt).map_err(|_| ScramError::Malformed("s="))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("i="))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Server(format!("{iterations} iterations")));
        }
        let keys = match &self.secret {
            Secret::Password(password) => Keys::derive(password, &salt, iterations),
            Secret::Salted(salted) if salted.salt == salt && salted.iterations == iterations => {
                Keys::of_salted(&salted.salted)
            }
            Secret::Salted(_) => {
                return Err(ScramError::Server(
                    "a salt or iteration count other than the salted password's".to_owned(),
                ));
            }
        };
        let without_proof = format!("c={},r={nonce}", Base64::encode_string(GS2_NO_BINDING));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&keys.stored_key(), auth_message.as_bytes());
        let proof = xor(&keys.client_key, &client_signature);
        self.expected_server_signature = Some(hmac(&keys.server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", Base64::encode_string(&proof)).into_bytes())
    }

    /// Checks the server's final message: it proves the server knew the
    /// credential.
    ///
    /// # Errors
    ///
    /// [`ScramError::ServerSignature`] if it does not, or the server's
    /// error if it sent one.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::Server(error.to_owned()));
        }
        let signature = attribute(Some(text), 'v')?;
        let signature = Base64::decode_vec(signature).map_err(|_| ScramError::Malformed("v="))?;
        match &self.expected_server_signature {
            Some(expected) if bool::from(expected.as_slice().ct_eq(&signature)) => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

/// The GS2 header's authorization identity, if any.
struct Gs2<'a> {
    authzid: Option<&'a str>,
}

/// Splits `gs2-header client-first-bare`, refusing channel binding.
fn split_gs2(text: &str) -> Result<(Gs2<'_>, &str), ScramError> {
    let mut parts = text.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ScramError::Malformed("GS2 header"));
    };
    match flag {
        // `y`: the client could bind but thinks we cannot; we cannot.
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("GS2 flag")),
    }
    let authzid = match authzid {
        "" => None,
        authzid => Some(
            authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("authzid"))?,
        ),
    };
    Ok((Gs2 { authzid }, bare))
}

/// The value of `key=value`, if `field` is that.
fn attribute(field: Option<&str>, key: char) -> Result<&str, ScramError> {
    field
        .and_then(|field| field.strip_prefix(key))
        .and_then(|field| field.strip_prefix('='))
        .ok_or(ScramError::Malformed("missing attribute"))
}

/// Whether `field` has an extension's shape, `letter=value`.
fn is_extension(field: &str) -> bool {
    let bytes = field.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'='
}

/// RFC 5802's printable characters, less the comma.
fn is_nonce_char(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && byte != b','
}

/// A user name with `,` and `=` written `=2C` and `=3D` (RFC 5802 §5.1).
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_name(escaped: &str) -> Result<String, ScramError> {
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3);
        name.push(match code {
            Some("2C") => ',',
            Some("3D") => '=',
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        });
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    if name.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests;
