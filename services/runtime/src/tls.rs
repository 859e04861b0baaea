//! Transport security: every service listens with TLS and every service-to-service call
//! presents and checks certificates from the network's own CA (mutual TLS, rustls).
//!
//! - A server presents its certificate; a client that presents one must chain to the
//!   configured CA or the handshake fails. Wallets connect without a certificate; the calls
//!   only another service may make check the caller's certificate names that service
//!   ([`require_peer`]): `central-bank` for deliveries to a ledger, `bank-N` for a ledger's
//!   settlements and checkpoints, `admin` for the administrator's orders.
//! - A client checks the server's certificate against the CA under the name it expects
//!   (`central-bank`, `bank-N`), whatever address it dialled.
//! - `insecure = true` turns all of it off (plaintext): for local experiments only, and the
//!   service says so in its log at start.
//!
//! Files are read at start; rotating a certificate is replacing the files and restarting
//! the service (a graceful stop drains in-flight calls; peers reconnect on their own).
//! [`DevCa`] makes a CA and certificates for a devnet or a test.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The service name in a central bank's certificate.
pub const CENTRAL_BANK_NAME: &str = "central-bank";
/// The name in the administrator's client certificate.
pub const ADMIN_NAME: &str = "admin";

/// The name in bank `ledger`'s certificate.
pub fn bank_name(ledger: u32) -> String {
    format!("bank-{ledger}")
}

/// Transport security settings (a `[tls]` table in a service's configuration).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This service's certificate (PEM), issued by the network's CA.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The network's CA certificate (PEM): peers' certificates must chain to it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plaintext, no certificates: local experiments only (logged loudly at start).
    #[serde(default)]
    pub insecure: bool,
}

/// Loaded certificates: this service's identity and the CA it trusts.
#[derive(Clone, Debug)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
    /// When this service's certificate and the CA's stop being valid (Unix seconds).
    expiry: Expiry,
}

/// When certificates stop being valid (`notAfter`, Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub service: i64,
    pub ca: i64,
}

impl Expiry {
    /// Registers `tls_certificate_expiry_timestamp_seconds{certificate="service"|"ca"}` in
    /// `registry`: an alert can then warn weeks before a certificate lapses.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let g = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "tls_certificate_expiry_timestamp_seconds",
                "When a certificate this service presents or trusts stops being valid (notAfter)",
            ),
            &["certificate"],
        )?;
        g.with_label_values(&["service"]).set(self.service);
        g.with_label_values(&["ca"]).set(self.ca);
        registry.register(Box::new(g))
    }
}

/// The `notAfter` of the first certificate in `pem` (Unix seconds), naming `field`.
pub fn not_after(field: &str, pem: &[u8]) -> Result<i64, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| format!("tls.{field}: not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("tls.{field}: the certificate does not parse: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

fn read(field: &str, path: &Option<PathBuf>) -> Result<Vec<u8>, String> {
    let path = path.as_ref().ok_or_else(|| {
        format!("tls.{field}: required (or set tls.insecure = true for plaintext)")
    })?;
    std::fs::read(path).map_err(|e| format!("tls.{field} {}: {e}", path.display()))
}

impl TlsConfig {
    /// The certificates, or `None` when insecure (which is logged as a warning).
    pub fn load(&self, service: &str) -> Result<Option<Tls>, String> {
        if self.insecure {
            tracing::warn!(
                "{service}: tls.insecure is set: PLAINTEXT, no certificates, no peer checks; never use this outside a local experiment"
            );
            return Ok(None);
        }
        let cert = read("cert_file", &self.cert_file)?;
        let key = read("key_file", &self.key_file)?;
        if let Some(path) = &self.key_file {
            crate::secret::check_private(path).map_err(|e| format!("tls.key_file: {e}"))?;
        }
        let ca = read("ca_file", &self.ca_file)?;
        for (field, pem, what) in [
            ("cert_file", &cert, "CERTIFICATE"),
            ("key_file", &key, "PRIVATE KEY"),
            ("ca_file", &ca, "CERTIFICATE"),
        ] {
            if !String::from_utf8_lossy(pem).contains(what) {
                return Err(format!("tls.{field}: not a PEM file holding a {what}"));
            }
        }
        let expiry = Expiry {
            service: not_after("cert_file", &cert)?,
            ca: not_after("ca_file", &ca)?,
        };
        Ok(Some(Tls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            expiry,
        }))
    }

    /// When the configured certificate and CA expire (`None` when insecure), read from
    /// their files; for a client that does not load a [`Tls`] of its own.
    pub fn expiry(&self) -> Result<Option<Expiry>, String> {
        if self.insecure {
            return Ok(None);
        }
        Ok(Some(Expiry {
            service: not_after("cert_file", &read("cert_file", &self.cert_file)?)?,
            ca: not_after("ca_file", &read("ca_file", &self.ca_file)?)?,
        }))
    }

    /// Files under `dir` as [`DevCa::write`] names them for `name`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsConfig {
        TlsConfig {
            cert_file: Some(dir.join(format!("{name}.crt"))),
            key_file: Some(dir.join(format!("{name}.key"))),
            ca_file: Some(dir.join("ca.crt")),
            insecure: false,
        }
    }
}

impl Tls {
    /// When this service's certificate and the CA's expire.
    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Registers the certificates' expiry in `registry` ([`Expiry::register`]).
    pub fn register_expiry(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.expiry.register(registry)
    }

    /// Server settings: present this identity; accept client certificates from the CA
    /// only (a client without one is let in, and refused by [`require_peer`] where a
    /// service must call).
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
    }

    /// Client settings for calling the service named `peer`: its certificate must chain to
    /// the CA and name it; this service's certificate is presented.
    pub fn client(&self, peer: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(peer)
    }
}

/// The caller of `request` presented a certificate from the network's CA naming `name`
/// (the handshake checked the chain; this checks the name). Without TLS (`tls` is `None`,
/// an insecure service) there is nothing to check.
pub fn require_peer<T>(
    tls: Option<&Tls>,
    request: &tonic::Request<T>,
    name: &str,
) -> Result<(), tonic::Status> {
    if tls.is_none() {
        return Ok(());
    }
    let certs = request.peer_certs().unwrap_or_default();
    let Some(leaf) = certs.first() else {
        return Err(crate::error::unauthenticated(format!(
            "this call is for the {name} service only: present its client certificate from the network's CA"
        )));
    };
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        crate::error::unauthenticated(format!("the client certificate does not parse: {e}"))
    })?;
    let expected = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| crate::error::internal(format!("service name {name:?}: {e}")))?;
    cert.verify_is_valid_for_subject_name(&expected)
        .map_err(|_| {
            crate::error::denied(format!(
                "this call is for the {name} service only; the client certificate names another"
            ))
        })
}

/// A certificate authority for a devnet or a test: a self-signed CA (ECDSA P-256) that
/// issues service certificates naming the service, `localhost` and 127.0.0.1.
pub struct DevCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    pub fn new(common_name: &str) -> Result<DevCa, String> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| format!("CA parameters: {e}"))?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key)
            .map_err(|e| format!("CA certificate: {e}"))?;
        Ok(DevCa { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for service `name`, for serving and for calling other services.
    pub fn issue(&self, name: &str) -> Result<Issued, String> {
        let mut params = rcgen::CertificateParams::new(vec![
            name.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .map_err(|e| format!("certificate for {name}: {e}"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(|e| format!("key for {name}: {e}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("certificate for {name}: {e}"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.crt` and, for each name, `<name>.crt` and `<name>.key` (mode 0600) in
    /// `dir`, each whole and synced (a power cut leaves no empty certificate).
    pub fn write(&self, dir: &Path, names: &[&str]) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = dir.join("ca.crt");
        crate::secret::write_public(&ca, self.cert_pem().as_bytes())
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        for name in names {
            let issued = self.issue(name)?;
            let cert = dir.join(format!("{name}.crt"));
            crate::secret::write_public(&cert, issued.cert_pem.as_bytes())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            crate::secret::write_private(
                &dir.join(format!("{name}.key")),
                issued.key_pem.as_bytes(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_expiry_is_read_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        DevCa::new("test CA")
            .unwrap()
            .write(dir.path(), &["bank-1"])
            .unwrap();
        let config = TlsConfig::in_dir(dir.path(), "bank-1");
        // What the certificates were issued with (rcgen's default validity).
        let issued = rcgen::CertificateParams::default()
            .not_after
            .unix_timestamp();
        let expiry = config.expiry().unwrap().unwrap();
        assert_eq!(
            expiry,
            Expiry {
                service: issued,
                ca: issued
            }
        );
        assert_eq!(config.load("ledger").unwrap().unwrap().expiry(), expiry);
        let registry = prometheus::Registry::new();
        expiry.register(&registry).unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        for certificate in ["service", "ca"] {
            let line = format!(
                "tls_certificate_expiry_timestamp_seconds{{certificate=\"{certificate}\"}} {issued}"
            );
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
        let e = not_after("cert_file", b"not a certificate").unwrap_err();
        assert!(e.starts_with("tls.cert_file: not a PEM certificate"), "{e}");
        let insecure = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert_eq!(insecure.expiry().unwrap(), None);
    }

    #[test]
    fn settings_load_from_a_devnet_ca_and_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        DevCa::new("test CA")
            .unwrap()
            .write(dir.path(), &["bank-1"])
            .unwrap();
        let config = TlsConfig::in_dir(dir.path(), "bank-1");
        assert!(config.load("ledger").unwrap().is_some());
        let insecure = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert!(insecure.load("ledger").unwrap().is_none());
        let e = TlsConfig::default().load("ledger").unwrap_err();
        assert!(e.starts_with("tls.cert_file: required"), "{e}");
        let swapped = TlsConfig {
            cert_file: config.key_file.clone(),
            ..config.clone()
        };
        let e = swapped.load("ledger").unwrap_err();
        assert_eq!(e, "tls.cert_file: not a PEM file holding a CERTIFICATE");
        let readable = TlsConfig {
            key_file: config.cert_file.clone(),
            ..config.clone()
        };
        let e = readable.load("ledger").unwrap_err();
        assert!(e.contains("is open to group or others"), "{e}");
        let not_a_key = dir.path().join("not-a-key.pem");
        crate::secret::write_private(
            &not_a_key,
            &std::fs::read(config.cert_file.as_ref().unwrap()).unwrap(),
        )
        .unwrap();
        let no_key = TlsConfig {
            key_file: Some(not_a_key),
            ..config.clone()
        };
        let e = no_key.load("ledger").unwrap_err();
        assert_eq!(e, "tls.key_file: not a PEM file holding a PRIVATE KEY");
        let missing = TlsConfig {
            ca_file: Some(dir.path().join("nope.crt")),
            ..config
        };
        let e = missing.load("ledger").unwrap_err();
        assert!(e.starts_with("tls.ca_file "), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("bank-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "private keys are private");
        }
    }

    #[test]
    fn a_call_that_needs_a_peer_is_refused_without_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        DevCa::new("test CA")
            .unwrap()
            .write(dir.path(), &["bank-1"])
            .unwrap();
        let tls = TlsConfig::in_dir(dir.path(), "bank-1")
            .load("ledger")
            .unwrap();
        let request = tonic::Request::new(());
        let e = require_peer(tls.as_ref(), &request, CENTRAL_BANK_NAME).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("central-bank"), "{e:?}");
        // Without TLS there is no certificate to check.
        assert!(require_peer(None, &request, CENTRAL_BANK_NAME).is_ok());
        assert_eq!(bank_name(7), "bank-7");
    }
}
