//! TLS for clients: the broker's certificate and key, read through the I/O
//! seam when the server starts, and how a connection opens once the broker
//! serves TLS: straight into TLS on the TLS port, or after AMQP's TLS
//! header on either port (AMQP 1.0 §5.2.1).
//!
//! rustls, on its default provider (aws-lc-rs): no OpenSSL, and the
//! post-quantum hybrid key exchange X25519MLKEM768 preferred where the
//! client offers it. Its randomness is the operating system's, as a TLS
//! handshake's must be; it never reaches the broker's seeded generator.
//!
//! With `tls.client_ca_file`, clients may present a certificate that CA
//! vouches for, and log in with SASL EXTERNAL as the user its subject's
//! common name names ([`identity`]). The broker's certificate can be
//! replaced while it runs ([`reload`]).

mod identity;
mod reload;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Shutdown;
use super::connection::sleep_until_due;
use crate::config::{TlsConfig, TlsVersion};
use crate::io::Io;
pub use reload::CertReload;
pub(super) use reload::{CertStore, reload_loop};

/// Why the TLS listener's certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The listener has no certificate or key to serve
    /// ([`crate::config::Config::validate`] refuses that configuration).
    #[error("a TLS listener needs tls.cert_file and tls.key_file")]
    Unconfigured,
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

/// Loads `config`'s certificate chain and key (and client CA, if any) and
/// builds the acceptor every TLS connection is handshaken with, and the
/// store its certificate can be reloaded into.
///
/// # Errors
///
/// [`TlsError`], naming the file at fault.
pub(super) async fn acceptor<I: Io>(
    io: &I,
    config: &TlsConfig,
) -> Result<(TlsAcceptor, Arc<CertStore>), TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Unconfigured);
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let store = Arc::new(CertStore::load(io, cert_file, key_file, Arc::clone(&provider)).await?);
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            builder.with_client_cert_verifier(client_verifier(io, ca_file, provider).await?)
        }
    };
    let server = builder.with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
    Ok((TlsAcceptor::from(Arc::new(server)), store))
}

/// Checks client certificates against the CAs in `ca_file`. A client may
/// also present none, and log in with SASL as usual: a certificate is one
/// way in (SASL EXTERNAL), not a requirement.
async fn client_verifier<I: Io>(
    io: &I,
    ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(ca_file, &read(io, ca_file).await?)? {
        roots.add(ca).map_err(|error| TlsError::Pem {
            path: ca_file.to_owned(),
            what: format!("not a usable CA certificate: {error}"),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|error| TlsError::Pem {
            path: ca_file.to_owned(),
            what: format!("cannot verify clients with it: {error}"),
        })
}

/// The user a TLS client's verified certificate names (its subject's
/// common name), if it presented one.
pub(super) fn client_identity<S>(stream: &TlsStream<S>) -> Option<String> {
    let (_, connection) = stream.get_ref();
    identity::common_name(connection.peer_certificates()?.first()?)
}

/// AMQP's TLS protocol header (AMQP 1.0 §5.2.1): a client that sends it
/// asks for TLS next, once the broker has answered with the same header.
const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";

/// The first byte of a TLS record that carries a handshake message: a
/// client that starts TLS at once (§5.2.1's alternative establishment).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The listener a client came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    /// The plain one (`listen`).
    Amqp,
    /// The TLS one (`tls.listen`).
    Amqps,
}

/// How a client opened its connection to a broker that serves TLS.
pub(super) enum Opened<S> {
    /// With TLS, now handshaken (boxed: rustls' state is large, and
    /// `Plain` small).
    Tls(Box<TlsStream<Prefixed<S>>>),
    /// Without: plain AMQP, what was read to find out handed on first.
    Plain(Prefixed<S>),
}

/// Finds out how the client opens, and runs the TLS handshake if it asks
/// for TLS, before `deadline` (the connection's handshake deadline: a
/// socket that goes silent half-way is dropped, not held until the idle
/// timeout) and until shutdown:
/// - AMQP's TLS header, on either port: the same header back, then TLS
///   (fe2o3-amqp sends it unless told otherwise);
/// - a TLS handshake at once, on the TLS port;
/// - anything else, on the plain port: plain AMQP.
///
/// `None` (logged) if the client did none of these in time.
pub(super) async fn open<S>(
    acceptor: TlsAcceptor,
    stream: S,
    port: Port,
    deadline: Option<Instant>,
    mut shutdown: Shutdown,
) -> Option<Opened<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        opened = opening(acceptor, stream, port) => match opened {
            Ok(opened) => Some(opened),
            Err(error) => {
                tracing::info!(%error, "connection ended: TLS handshake failed");
                None
            }
        },
        () = sleep_until_due(deadline) => {
            tracing::info!("connection ended: TLS handshake not finished in time");
            None
        }
        () = shutdown.wait() => None,
    }
}

async fn opening<S>(acceptor: TlsAcceptor, mut stream: S, port: Port) -> io::Result<Opened<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0; TLS_HEADER.len()];
    stream.read_exact(&mut header[..1]).await?;
    if port == Port::Amqps && header[0] == TLS_HANDSHAKE_RECORD {
        let stream = Prefixed::new(header[..1].to_vec(), stream);
        return Ok(Opened::Tls(Box::new(acceptor.accept(stream).await?)));
    }
    stream.read_exact(&mut header[1..]).await?;
    if header == TLS_HEADER {
        stream.write_all(&TLS_HEADER).await?;
        stream.flush().await?;
        let stream = Prefixed::new(Vec::new(), stream);
        return Ok(Opened::Tls(Box::new(acceptor.accept(stream).await?)));
    }
    match port {
        Port::Amqp => Ok(Opened::Plain(Prefixed::new(header.to_vec(), stream))),
        Port::Amqps => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client sent neither TLS nor AMQP's TLS header",
        )),
    }
}

/// A stream whose first bytes were already read: reads give them back
/// first, then the stream's own; writes go straight to the stream.
pub(super) struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read back.
    returned: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            returned: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &self.prefix[self.returned..];
        if rest.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.returned += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
