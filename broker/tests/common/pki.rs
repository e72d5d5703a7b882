//! Certificates made for one test: a CA, and a certificate it signed for
//! the broker as `localhost` and `127.0.0.1`, written as PEM files for
//! `[tls]` and for clients to trust.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use sluice::config::{Config, TlsConfig, TlsVersion};
use tempfile::TempDir;

use super::{Broker, assert_client_passed, interop_script, run_client, test_config, user};

/// A CA and a broker certificate it signed, in a directory of their own.
pub struct Pki {
    pub dir: TempDir,
    ca: CertificateDer<'static>,
    /// The CA's certificate, PEM: what clients trust.
    pub ca_file: PathBuf,
    /// The broker's certificate, then the CA's.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Sluice test CA");
        let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let broker_key = KeyPair::generate().expect("a broker key");
        let broker = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("broker parameters")
            .signed_by(&broker_key, &ca, &ca_key)
            .expect("a broker certificate");
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("broker.pem");
        let key_file = dir.path().join("broker.key");
        write(&ca_file, &ca.pem());
        write(&cert_file, &(broker.pem() + &ca.pem()));
        write(&key_file, &broker_key.serialize_pem());
        Self {
            dir,
            ca: ca.der().clone(),
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// A test broker's configuration with a TLS listener on a free port.
    pub fn config(&self, min_version: TlsVersion) -> Config {
        Config {
            tls: TlsConfig {
                listen: Some("127.0.0.1:0".parse().expect("a socket address")),
                cert_file: Some(self.cert_file.clone()),
                key_file: Some(self.key_file.clone()),
                min_version,
            },
            ..test_config()
        }
    }

    /// A rustls client configuration that trusts this CA alone.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider's default versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth()
    }

    /// Roots that trust this CA alone.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("the CA is a usable root");
        roots
    }
}

/// Writes a fixture on the real disk, before any broker runs: the files
/// the broker (and the clients) then read, outside any simulation.
#[allow(clippy::disallowed_methods)]
fn write(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
}

/// Runs the TLS interop `script` with `program` (`scripts/interop/`):
/// against a broker with a TLS listener and one account, it must log in
/// with PLAIN inside TLS 1.3 and pass; trusting another CA, it must be
/// refused (`--expect-refused`). The URL names the broker `localhost`:
/// Proton checks a certificate's DNS names, never its IP addresses.
pub async fn tls_client_passes(program: &str, script: &str) {
    const ACCOUNT: (&str, &str) = ("tls", "tls-password");
    let pki = Pki::new();
    let config = Config {
        users: vec![user(ACCOUNT.0, ACCOUNT.1)],
        ..pki.config(TlsVersion::Tls12)
    };
    let broker = Broker::start_configured(config).await;
    let port = broker.tls_addr.expect("a TLS listener").port();
    let args = |ca: &Pki, extra: Option<&str>| {
        let mut args = vec![
            interop_script(script).display().to_string(),
            format!("amqps://localhost:{port}"),
            ca.ca_file.display().to_string(),
            ACCOUNT.0.to_owned(),
            ACCOUNT.1.to_owned(),
        ];
        args.extend(extra.map(str::to_owned));
        args
    };
    let output = run_client(program, &args(&pki, None)).await;
    let stdout = assert_client_passed(script, &output);
    assert!(
        stdout.contains("ok: the connection runs over TLS (TLSv1.3"),
        "{stdout}"
    );
    let stranger = Pki::new();
    let output = run_client(program, &args(&stranger, Some("--expect-refused"))).await;
    assert_client_passed(&format!("{script} --expect-refused"), &output);
    broker.stop().await;
}
