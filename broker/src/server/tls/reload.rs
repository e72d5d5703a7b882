//! The broker's certificate, replaceable while the listener runs: renewed
//! certificates take effect without a restart and without dropping a
//! connection (each keeps the session it handshook).
//!
//! The files are read again every `tls.reload_interval_ms` and on demand
//! ([`CertReload::now`], which the binary calls on SIGHUP). A new pair
//! that does not load (unreadable, not PEM, a key that does not match) is
//! logged and ignored: the broker goes on serving the old certificate,
//! rather than no certificate at all.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;
use tracing::{error, info};

use super::{TlsError, certificates, private_key, read};
use crate::io::Io;

/// The files, and what was last loaded from them.
#[derive(Debug)]
pub(in crate::server) struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The certificate handed to every new handshake.
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes when `current` was loaded: a reload that reads the
    /// same bytes changes nothing, and logs nothing.
    loaded_from: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reloaded {
    /// The files hold what is being served.
    Unchanged,
    /// New handshakes get the new certificate.
    Replaced,
}

impl CertStore {
    /// Loads the pair, or says which file is at fault.
    pub(super) async fn load<I: Io>(
        io: &I,
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = (read(io, cert_file).await?, read(io, key_file).await?);
        let current = certified_key(cert_file, &cert_pem, key_file, &key_pem, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(current),
            loaded_from: Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Reads the files again and, if they changed and load, serves them.
    pub(super) async fn reload<I: Io>(&self, io: &I) -> Result<Reloaded, TlsError> {
        let cert_pem = read(io, &self.cert_file).await?;
        let key_pem = read(io, &self.key_file).await?;
        let mut loaded_from = self
            .loaded_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if (&cert_pem, &key_pem) == (&loaded_from.0, &loaded_from.1) {
            return Ok(Reloaded::Unchanged);
        }
        let fresh = certified_key(
            &self.cert_file,
            &cert_pem,
            &self.key_file,
            &key_pem,
            &self.provider,
        )?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        *loaded_from = (cert_pem, key_pem);
        Ok(Reloaded::Replaced)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn certified_key(
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = certificates(cert_file, cert_pem)?;
    let key = private_key(key_file, key_pem)?;
    Ok(Arc::new(CertifiedKey::from_der(certs, key, provider)?))
}

/// Asks the reload task to read the files now (SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct CertReload(Arc<Notify>);

impl CertReload {
    /// Reads the certificate and key files again at once.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Reloads `store` every `interval` (never, if `None`) and whenever
/// `requests` asks, until dropped.
pub(in crate::server) async fn reload_loop<I: Io>(
    io: I,
    store: Arc<CertStore>,
    interval: Option<Duration>,
    requests: CertReload,
) {
    loop {
        let asked = requests.0.notified();
        match interval {
            Some(interval) => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = asked => {}
                }
            }
            None => asked.await,
        }
        match store.reload(&io).await {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Replaced) => info!("TLS certificate reloaded: new connections get it"),
            Err(error) => error!(%error, "TLS certificate not reloaded: still serving the old one"),
        }
    }
}
