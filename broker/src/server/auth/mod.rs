//! Who may log in, and how: the server's side of SASL.
//!
//! [`Authentication`] is built once from the configuration and shared by
//! every connection; each connection runs one [`Exchange`] with it. The
//! mechanisms on offer depend on the accounts and on the connection:
//!
//! - no accounts: an open broker, ANONYMOUS and clients that skip SASL;
//! - SCRAM-SHA-256 for accounts with a SCRAM credential;
//! - PLAIN for accounts with an argon2 hash, on TLS connections only
//!   unless `auth.allow_plain_without_tls`;
//! - ANONYMOUS beside accounts when `auth.anonymous`;
//! - EXTERNAL, first, on TLS connections whose client certificate
//!   `tls.client_ca_file` verified: the certificate's common name is the
//!   user, who must have an account (which then needs no password).
//!
//! PLAIN's argon2 check is slow by design (tens of milliseconds and 19 MiB
//! with `sluice passwd`'s parameters). It runs off the threads that serve
//! connections ([`crate::io::Io::run_blocking`]), a bounded number at a
//! time with a bounded queue behind them, so that a flood of logins cannot
//! stall established connections; past the queue a login is refused with
//! `sys-temp`, which tells the client to try again later. Failed logins
//! slow their source down ([`throttle`]) and are logged at a bounded rate,
//! with the peer's address, never with what it sent.

mod password;
mod throttle;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::amqp::codec::Symbol;
use crate::amqp::engine::{SaslVerdict, ServerSasl};
use crate::amqp::types::SaslCode;
use crate::config::Config;
use crate::io::{Io, SeededRng, secret_rng};
use crate::metrics::Metrics;
use crate::planted::Plants;
use crate::sasl::scram::{self, Lookup, ScramCredential, ScramServer};
use crate::sasl::{ANONYMOUS, EXTERNAL, PLAIN, PlainCredentials};

use crate::log_budget::{LogBudget, LogLine};
pub use password::{Argon2Hash, HashError, hash_password};
use throttle::{PASSWORD_CHECK_SPACING, Throttle, Turn};

/// The identity an anonymous client gets.
pub const ANONYMOUS_IDENTITY: &str = "anonymous";

/// Argon2 checks waiting for a thread, beyond those running: a login
/// past them is refused at once rather than queued for seconds.
const VERIFY_BACKLOG: usize = 32;

/// Bytes in a SCRAM server nonce, before base64.
const SCRAM_NONCE_BYTES: usize = 18;

/// One account's credentials.
#[derive(Clone)]
struct Account {
    password_hash: Option<Argon2Hash>,
    scram: Option<ScramCredential>,
}

/// How a connection reached the broker, as far as authentication cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// The connection is encrypted (TLS), so a password sent in it is not
    /// readable on the path.
    pub tls: bool,
    /// Where it comes from, for throttling failed logins.
    pub peer: IpAddr,
    /// The user its TLS client certificate names, verified against
    /// `tls.client_ca_file`: what SASL EXTERNAL logs it in as.
    pub certificate: Option<String>,
}

/// The broker's accounts and the machinery that checks them, shared by all
/// connections.
pub struct Authentication {
    accounts: BTreeMap<String, Account>,
    /// No accounts: every client is admitted as [`ANONYMOUS_IDENTITY`].
    open: bool,
    anonymous: bool,
    plain_without_tls: bool,
    /// Checked for an unknown name, so that a refusal takes as long
    /// whether or not the account exists.
    decoy_hash: Option<Argon2Hash>,
    /// Keys the decoy salts SCRAM shows for unknown names: stable for a
    /// name, unpredictable without the key.
    decoy_key: [u8; 32],
    /// Argon2 checks that may run at once.
    verifiers: Semaphore,
    /// Argon2 checks running or waiting; bounds the queue.
    verify_slots: Semaphore,
    throttle: Mutex<Throttle>,
    log_budget: Mutex<Option<LogBudget>>,
    /// Counts failed logins (`sluice_auth_failures_total`).
    metrics: Metrics,
    plants: Plants,
}

/// What a password check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The password is the account's.
    Valid,
    /// A wrong password or an unknown user (counted, throttled and logged).
    Invalid,
    /// Not checked: too many checks are waiting, or this source's turn is
    /// too far off. Try again later.
    Busy,
}

impl fmt::Debug for Authentication {
    /// Lists the account names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authentication")
            .field("accounts", &self.accounts.keys())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Authentication {
    /// The accounts and mechanisms of `config`, with argon2 checks spread
    /// over `verify_threads` threads, counting failures in `metrics`. `io`
    /// provides the decoy key's entropy.
    pub fn new<I: Io>(io: &I, config: &Config, verify_threads: usize, metrics: Metrics) -> Self {
        let accounts: BTreeMap<String, Account> = config
            .users
            .iter()
            .map(|user| {
                let account = Account {
                    password_hash: user.password_hash.clone(),
                    scram: user.scram_sha256.clone(),
                };
                (user.name.clone(), account)
            })
            .collect();
        let decoy_hash = accounts
            .values()
            .find_map(|account| account.password_hash.clone());
        let mut decoy_key = [0; 32];
        secret_rng(io, config.seed, b"scram decoy salts").fill_bytes(&mut decoy_key);
        let verify_threads = verify_threads.max(1);
        Self {
            open: accounts.is_empty(),
            accounts,
            anonymous: config.auth.anonymous,
            plain_without_tls: config.auth.allow_plain_without_tls,
            decoy_hash,
            decoy_key,
            verifiers: Semaphore::new(verify_threads),
            verify_slots: Semaphore::new(verify_threads + VERIFY_BACKLOG),
            throttle: Mutex::new(Throttle::default()),
            log_budget: Mutex::new(None),
            metrics,
            plants: config.plants,
        }
    }

    /// What a connection that arrived over `transport` is offered.
    pub fn offer(&self, transport: &Transport) -> ServerSasl {
        if self.open {
            return ServerSasl {
                mechanisms: vec![Symbol::from_static(ANONYMOUS)],
                unauthenticated: Some(ANONYMOUS_IDENTITY.to_owned()),
            };
        }
        let mut mechanisms = Vec::new();
        if transport.certificate.is_some() {
            mechanisms.push(Symbol::from_static(EXTERNAL));
        }
        if self
            .accounts
            .values()
            .any(|account| account.scram.is_some())
        {
            mechanisms.push(Symbol::from_static(scram::MECHANISM));
        }
        if self.plain_allowed(transport) {
            mechanisms.push(Symbol::from_static(PLAIN));
        }
        if self.anonymous {
            mechanisms.push(Symbol::from_static(ANONYMOUS));
        }
        ServerSasl {
            mechanisms,
            unauthenticated: None,
        }
    }

    /// Whether the broker is open: no accounts, anyone admitted.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks `name`'s `password`, given outside SASL PLAIN's framing (the
    /// management API's HTTP Basic) or inside it: against the account's
    /// argon2 hash, or else its SCRAM credential, off the serving threads,
    /// in `peer`'s turn. An unknown name costs as much as a known one.
    pub async fn check_password<I: Io>(
        &self,
        io: &I,
        peer: IpAddr,
        name: &str,
        password: &[u8],
    ) -> Checked {
        if !self.wait_turn(io, peer, PASSWORD_CHECK_SPACING).await {
            return Checked::Busy;
        }
        let account = self.accounts.get(name);
        let check = match account {
            Some(Account {
                password_hash: Some(hash),
                ..
            }) => Check::Argon2(hash.clone()),
            Some(Account {
                scram: Some(credential),
                ..
            }) => Check::Scram(credential.clone()),
            _ => match &self.decoy_hash {
                Some(decoy) => Check::Argon2(decoy.clone()),
                None => Check::Scram(ScramCredential::derive(
                    b"decoy",
                    &self.decoy_salt(name),
                    scram::DEFAULT_ITERATIONS,
                )),
            },
        };
        let password = password.to_vec();
        let Some(matches) = self.verify(io, move || check.matches(&password)).await else {
            self.busy(io, peer, "too many password checks waiting");
            return Checked::Busy;
        };
        if matches && account.is_some() {
            self.throttle().succeeded(peer);
            Checked::Valid
        } else {
            self.refused(io, peer, Some(name), "bad user name or password");
            Checked::Invalid
        }
    }

    /// Waits for `peer`'s turn to have a login checked, whose check keeps
    /// the next one `spacing` away; false if the turn is too far off. A
    /// turn that comes after the source failed again is void, and booked
    /// again behind the failure's penalty.
    async fn wait_turn<I: Io>(&self, io: &I, peer: IpAddr, spacing: Duration) -> bool {
        let arrived = io.now();
        loop {
            let turn = self.throttle().book(peer, arrived, io.now(), spacing);
            match turn {
                Turn::Now => return true,
                Turn::At { at, failures } => {
                    crate::io::sleep_until(at).await;
                    if !self.throttle().failed_since(peer, failures) {
                        return true;
                    }
                }
                Turn::Refused => {
                    self.busy(io, peer, "this address's turn is too far off");
                    return false;
                }
            }
        }
    }

    /// Runs one slow check off the serving threads; `None` if too many are
    /// already queued.
    async fn verify<I: Io>(
        &self,
        io: &I,
        check: impl FnOnce() -> bool + Send + 'static,
    ) -> Option<bool> {
        let _slot = self.verify_slots.try_acquire().ok()?;
        let _thread = self.verifiers.acquire().await.ok()?;
        Some(io.run_blocking(check).await)
    }

    /// Whether a client without TLS is offered any mechanism; the broker
    /// warns at start if not.
    pub fn offers_without_tls(&self) -> bool {
        let plain_tcp = Transport {
            tls: false,
            peer: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            certificate: None,
        };
        !self.offer(&plain_tcp).mechanisms.is_empty()
    }

    fn plain_allowed(&self, transport: &Transport) -> bool {
        (transport.tls || self.plain_without_tls)
            && self
                .accounts
                .values()
                .any(|account| account.password_hash.is_some())
    }

    fn scram_credential(&self, user: &str) -> Option<ScramCredential> {
        self.accounts.get(user)?.scram.clone()
    }

    fn decoy_salt(&self, user: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.decoy_key).expect("HMAC takes any key length");
        mac.update(user.as_bytes());
        mac.finalize().into_bytes()[..scram::SALT_BYTES].to_vec()
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a refused login: counted, throttled and logged at a bounded
    /// rate, naming the source and, if it gave one, the user.
    fn refused<I: Io>(&self, io: &I, peer: IpAddr, user: Option<&str>, why: &str) {
        self.throttle().failed(peer, io.now());
        self.count_and_log(io, peer, user, why);
    }

    /// Records a login refused unchecked (`sys-temp`): counted and logged
    /// like a failure, not held against the source, which may not be the
    /// one that filled the queue.
    fn busy<I: Io>(&self, io: &I, peer: IpAddr, why: &str) {
        self.count_and_log(io, peer, None, why);
    }

    fn count_and_log<I: Io>(&self, io: &I, peer: IpAddr, user: Option<&str>, why: &str) {
        let now = io.now();
        self.metrics.auth_failed();
        let line = self
            .log_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| LogBudget::new(now))
            .spend(now);
        if let LogLine::Write { suppressed } = line {
            if suppressed > 0 {
                warn!(suppressed, "failed logins not logged, to bound the log");
            }
            info!(%peer, user, "login refused: {why}");
        }
    }
}

/// A password check, to run off the serving threads.
enum Check {
    Argon2(Argon2Hash),
    Scram(ScramCredential),
}

impl Check {
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Check::Argon2(hash) => hash.verify(password),
            Check::Scram(credential) => credential.verifies(password),
        }
    }
}

/// One connection's SASL exchange with [`Authentication`]: the driver
/// hands it what the engine reports and passes its verdicts back.
pub struct Exchange<I> {
    auth: Arc<Authentication>,
    io: I,
    transport: Transport,
    /// A SCRAM exchange waiting for the client's final message.
    scram: Option<ScramServer>,
    rng: SeededRng,
}

impl<I: Io> Exchange<I> {
    /// An exchange for a connection that arrived over `transport`; `rng`
    /// makes SCRAM's nonces and must be unguessable
    /// ([`crate::io::secret_rng`]).
    pub fn new(auth: Arc<Authentication>, io: I, transport: Transport, rng: SeededRng) -> Self {
        Self {
            auth,
            io,
            transport,
            scram: None,
            rng,
        }
    }

    /// The verdict on a `sasl-init` for `mechanism`, one the engine checked
    /// was offered.
    pub async fn init(&mut self, mechanism: &str, response: &[u8]) -> SaslVerdict {
        if mechanism == ANONYMOUS {
            return SaslVerdict::Accept {
                identity: ANONYMOUS_IDENTITY.to_owned(),
                additional_data: None,
            };
        }
        match mechanism {
            EXTERNAL => self.external(response),
            PLAIN => self.plain(response).await,
            scram::MECHANISM => self.scram_start(response).await,
            _ => self.refuse(None, "unsupported mechanism"),
        }
    }

    /// The verdict on the client's answer to our challenge.
    pub fn response(&mut self, response: &[u8]) -> SaslVerdict {
        let Some(scram) = self.scram.take() else {
            return self.refuse(None, "a response nobody asked for");
        };
        let user = scram.user().to_owned();
        match scram.finish_planted(response, self.auth.plants) {
            Ok((identity, server_final)) => self.accept(identity, Some(server_final.into())),
            Err(error) => self.refuse(Some(&user), &error.to_string()),
        }
    }

    /// EXTERNAL: the user the client certificate names, if it has an
    /// account. The response may ask for that same identity (RFC 4422
    /// appendix A's authorization identity), or be empty; never another.
    fn external(&mut self, response: &[u8]) -> SaslVerdict {
        let Some(user) = self.transport.certificate.clone() else {
            return self.refuse(None, "EXTERNAL without a client certificate");
        };
        if !response.is_empty() && response != user.as_bytes() {
            return self.refuse(Some(&user), "EXTERNAL asked for another identity");
        }
        if !self.auth.accounts.contains_key(&user) {
            return self.refuse(Some(&user), "the client certificate names no account");
        }
        self.accept(user, None)
    }

    async fn plain(&mut self, response: &[u8]) -> SaslVerdict {
        let Some(credentials) = PlainCredentials::parse(response) else {
            return self.refuse(None, "malformed PLAIN response");
        };
        let checked = self
            .auth
            .check_password(
                &self.io,
                self.transport.peer,
                credentials.authcid,
                credentials.password,
            )
            .await;
        match checked {
            Checked::Valid => SaslVerdict::Accept {
                identity: credentials.authcid.to_owned(),
                additional_data: None,
            },
            Checked::Invalid => SaslVerdict::Refuse(SaslCode::Auth),
            Checked::Busy => SaslVerdict::Refuse(SaslCode::SysTemp),
        }
    }

    async fn scram_start(&mut self, client_first: &[u8]) -> SaslVerdict {
        if !self
            .auth
            .wait_turn(&self.io, self.transport.peer, Duration::ZERO)
            .await
        {
            return SaslVerdict::Refuse(SaslCode::SysTemp);
        }
        let mut nonce = [0; SCRAM_NONCE_BYTES];
        self.rng.fill_bytes(&mut nonce);
        let nonce = Base64::encode_string(&nonce);
        let auth = Arc::clone(&self.auth);
        let credential = |user: &str| auth.scram_credential(user);
        let decoy_salt = |user: &str| auth.decoy_salt(user);
        let lookup = Lookup {
            credential: &credential,
            decoy_salt: &decoy_salt,
        };
        match ScramServer::start(client_first, &nonce, &lookup) {
            Ok((server, server_first)) => {
                self.scram = Some(server);
                SaslVerdict::Challenge(Bytes::from(server_first))
            }
            Err(error) => self.refuse(None, &error.to_string()),
        }
    }

    fn accept(&self, identity: String, additional_data: Option<Bytes>) -> SaslVerdict {
        self.auth.throttle().succeeded(self.transport.peer);
        SaslVerdict::Accept {
            identity,
            additional_data,
        }
    }

    fn refuse(&self, user: Option<&str>, why: &str) -> SaslVerdict {
        self.auth.refused(&self.io, self.transport.peer, user, why);
        SaslVerdict::Refuse(SaslCode::Auth)
    }
}

/// A SCRAM-SHA-256 credential for `password`, with a fresh salt from `rng`
/// and [`scram::DEFAULT_ITERATIONS`]: what `sluice passwd --scram` prints.
pub fn scram_credential(password: &[u8], rng: &mut impl RngCore) -> ScramCredential {
    let mut salt = [0; scram::SALT_BYTES];
    rng.fill_bytes(&mut salt);
    ScramCredential::derive(password, &salt, scram::DEFAULT_ITERATIONS)
}

#[cfg(test)]
mod tests;
