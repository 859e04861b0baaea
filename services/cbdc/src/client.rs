//! gRPC clients with errors a person can act on: plaintext for `http://` endpoints, TLS
//! for `https://` ones (the server's certificate checked against the network's CA under the
//! service's name, and a client certificate presented where the call needs one).

use std::path::Path;
use std::time::Duration;

use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How to reach a service.
#[derive(Clone, Debug)]
pub struct Dial {
    pub url: String,
    /// The name in the service's certificate (`central-bank`, `bank-N`).
    pub peer: String,
    /// The network's CA certificate (PEM), for `https://`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and key (PEM), for calls only a service may make.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Dial {
    pub fn new(url: String, peer: String) -> Dial {
        Dial {
            url,
            peer,
            ca: None,
            identity: None,
        }
    }

    /// Trusts the CA certificate in `path`.
    pub fn with_ca(mut self, path: &Path) -> Result<Dial, String> {
        self.ca = Some(
            std::fs::read(path).map_err(|e| format!("CA certificate {}: {e}", path.display()))?,
        );
        Ok(self)
    }

    /// Presents the certificate and key in `cert` and `key`.
    pub fn with_identity(mut self, cert: &Path, key: &Path) -> Result<Dial, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        self.identity = Some((read(cert)?, read(key)?));
        Ok(self)
    }
}

async fn channel(d: &Dial, what: &str) -> Result<Channel, String> {
    let url = &d.url;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| {
            format!("{what} endpoint {url:?}: {e} (expected e.g. https://127.0.0.1:50061)")
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    if url.starts_with("https://") {
        let ca = d.ca.as_ref().ok_or_else(|| {
            format!("{what} at {url}: TLS needs the network's CA certificate (--ca, or a devnet's)")
        })?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(d.peer.clone());
        if let Some((cert, key)) = &d.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("{what} at {url}: TLS: {e}"))?;
    }
    endpoint.connect().await.map_err(|e| {
        format!("cannot reach the {what} at {url}: {e}; is it running? (`cbdc devnet` prints the endpoints)")
    })
}

pub async fn ledger(d: &Dial) -> Result<LedgerServiceClient<Channel>, String> {
    Ok(LedgerServiceClient::new(channel(d, "bank ledger").await?))
}

pub async fn issuance(d: &Dial) -> Result<IssuanceServiceClient<Channel>, String> {
    Ok(IssuanceServiceClient::new(
        channel(d, "central bank").await?,
    ))
}

/// A gRPC status as a line a person reads: the code, then the service's message.
pub fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}
