//! The `amqps` listener's TLS: the broker's certificate and key, read
//! through the I/O seam when the server starts, and the handshake each
//! accepted socket goes through before it speaks AMQP.
//!
//! rustls, on its default provider (aws-lc-rs): no OpenSSL, and the
//! post-quantum hybrid key exchange X25519MLKEM768 preferred where the
//! client offers it. Its randomness is the operating system's, as a TLS
//! handshake's must be; it never reaches the broker's seeded generator.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Shutdown;
use crate::config::{TlsConfig, TlsVersion};
use crate::io::Io;

/// How long a client has to finish the TLS handshake: a socket that goes
/// silent half-way is dropped, not held until the idle timeout.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS listener's certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not PEM, or holds none of what it should.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificate and key (a key that does not match
    /// the certificate, an unsupported key type).
    #[error("the certificate and key cannot be used: {0}")]
    Unusable(#[from] rustls::Error),
}

/// Loads `config`'s certificate chain and key and builds the acceptor
/// every TLS connection is handshaken with.
///
/// # Errors
///
/// [`TlsError`], naming the file at fault.
pub(super) async fn acceptor<I: Io>(io: &I, config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        // `Config::validate` refuses a listener without both.
        return Err(TlsError::Pem {
            path: PathBuf::from("[tls]"),
            what: "cert_file and key_file must both be set".to_owned(),
        });
    };
    let certs = certificates(cert_file, &read(io, cert_file).await?)?;
    let key = private_key(key_file, &read(io, key_file).await?)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Runs the server side of the handshake on `stream`, within
/// [`HANDSHAKE_TIMEOUT`] and until shutdown; `None` (logged) if it fails.
pub(super) async fn handshake<S>(
    acceptor: TlsAcceptor,
    stream: S,
    mut shutdown: Shutdown,
) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        handshaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => {
            match handshaken {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(error)) => {
                    tracing::info!(%error, "connection ended: TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::info!(
                        timeout = ?HANDSHAKE_TIMEOUT,
                        "connection ended: TLS handshake not finished in time"
                    );
                    None
                }
            }
        }
        () = shutdown.wait() => None,
    }
}

async fn read<I: Io>(io: &I, path: &Path) -> Result<Vec<u8>, TlsError> {
    io.read_file(path).await.map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `pem`, in order: the broker's own first, then the
/// chain that links it to what clients trust.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(format!("not a PEM certificate chain: {error}")))?;
    if certs.is_empty() {
        return Err(pem_error("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The one private key in `pem`.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| TlsError::Pem {
        path: path.to_owned(),
        what: format!("holds no usable PEM private key: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_with_its_name() {
        let path = Path::new("/etc/sluice/broker.pem");
        let error = certificates(path, b"not pem at all\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/sluice/broker.pem: holds no PEM certificate"
        );
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            certificates(path, key_only),
            Err(TlsError::Pem { .. })
        ));
    }

    #[test]
    fn a_file_without_a_key_is_refused_with_its_name() {
        let path = Path::new("key.pem");
        let error = private_key(path, b"").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("key.pem: holds no usable PEM private key"),
            "{error}"
        );
    }
}
