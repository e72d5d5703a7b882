//! Certificates made for one test: a CA, and a certificate it signed for
//! the broker as `localhost` and `127.0.0.1`, written as PEM files for
//! `[tls]` and for clients to trust.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice::config::{Config, TlsConfig, TlsVersion, User, UserLimits};
use tempfile::TempDir;

use super::{Broker, assert_client_passed, interop_script, run_client, test_config, user};

/// A CA and a broker certificate it signed, in a directory of their own.
pub struct Pki {
    pub dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
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
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let ca_file = dir.path().join("ca.pem");
        write(&ca_file, &ca.pem());
        let pki = Self {
            ca,
            ca_key,
            ca_file,
            cert_file: dir.path().join("broker.pem"),
            key_file: dir.path().join("broker.key"),
            dir,
        };
        pki.renew_broker_certificate();
        pki
    }

    /// Writes a new certificate and key for the broker, over the old
    /// files; returns the certificate.
    pub fn renew_broker_certificate(&self) -> CertificateDer<'static> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (cert, key) = self.issue(CertificateParams::new(names).expect("broker parameters"));
        write(&self.cert_file, &(cert.pem() + &self.ca.pem()));
        write(&self.key_file, &key.serialize_pem());
        cert.der().clone()
    }

    /// A client certificate whose subject's common name is `name`, and its
    /// key, as a rustls client presents them.
    pub fn client_identity(
        &self,
        name: &str,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let (cert, key) = self.issue(params);
        let key = PrivateKeyDer::try_from(key.serialize_der()).expect("a PKCS#8 key");
        (vec![cert.der().clone()], key)
    }

    /// The same client certificate as files (PEM), for clients that read
    /// them: the certificate, then the key.
    pub fn client_identity_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let (cert, key) = self.issue(params);
        let cert_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}.key"));
        write(&cert_file, &cert.pem());
        write(&key_file, &key.serialize_pem());
        (cert_file, key_file)
    }

    /// A certificate for `params`, signed by this CA, with a fresh key.
    fn issue(&self, params: CertificateParams) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("a certificate signed by the CA");
        (cert, key)
    }

    /// A test broker's configuration with a TLS listener on a free port.
    pub fn config(&self, min_version: TlsVersion) -> Config {
        Config {
            tls: TlsConfig {
                listen: Some("127.0.0.1:0".parse().expect("a socket address")),
                cert_file: Some(self.cert_file.clone()),
                key_file: Some(self.key_file.clone()),
                min_version,
                ..TlsConfig::default()
            },
            ..test_config()
        }
    }

    /// A test broker's configuration that asks TLS clients for
    /// certificates this CA issued, with the account `carol`, which has no
    /// password: only a certificate logs it in.
    pub fn client_certificate_config(&self) -> Config {
        let mut config = self.config(TlsVersion::Tls12);
        config.tls.client_ca_file = Some(self.ca_file.clone());
        config.users = vec![User {
            name: "carol".to_owned(),
            password_hash: None,
            scram_sha256: None,
            limits: UserLimits::default(),
        }];
        config
    }

    /// A rustls client configuration that trusts this CA alone.
    pub fn client_config(&self) -> rustls::ClientConfig {
        self.client_config_builder().with_no_client_auth()
    }

    /// As [`Pki::client_config`], presenting a certificate for `name`.
    pub fn client_config_as(&self, name: &str) -> rustls::ClientConfig {
        let (chain, key) = self.client_identity(name);
        self.client_config_builder()
            .with_client_auth_cert(chain, key)
            .expect("a usable client certificate")
    }

    fn client_config_builder(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider's default versions")
            .with_root_certificates(self.roots())
    }

    /// Roots that trust this CA alone.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.der().clone())
            .expect("the CA is a usable root");
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

/// Runs the TLS interop `script` with `program` presenting a client
/// certificate for `carol`, an account without a password, against a
/// broker that trusts this CA for clients: it must log in with SASL
/// EXTERNAL and pass.
pub async fn tls_client_certificate_passes(program: &str, script: &str) {
    let pki = Pki::new();
    let broker = Broker::start_configured(pki.client_certificate_config()).await;
    let port = broker.tls_addr.expect("a TLS listener").port();
    let (cert_file, key_file) = pki.client_identity_files("carol");
    let args = [
        interop_script(script).display().to_string(),
        format!("amqps://localhost:{port}"),
        pki.ca_file.display().to_string(),
        "carol".to_owned(),
        "no-password".to_owned(),
        "--client-cert".to_owned(),
        cert_file.display().to_string(),
        "--client-key".to_owned(),
        key_file.display().to_string(),
    ];
    let output = run_client(program, &args).await;
    let stdout = assert_client_passed(script, &output);
    assert!(stdout.contains("EXTERNAL"), "{stdout}");
    broker.stop().await;
}
