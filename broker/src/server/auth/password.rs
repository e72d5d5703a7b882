//! Password hashes for SASL PLAIN: argon2id, in PHC string format.

use std::fmt;

use argon2::password_hash::rand_core::CryptoRngCore;
use argon2::password_hash::{self, PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

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
