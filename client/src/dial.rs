//! Reaching a service: plaintext for `http://` endpoints, TLS for `https://` ones (the
//! server's certificate checked against the network's CA under the service's name, and a
//! client certificate presented where the call needs one).

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

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
    /// How long one call may take.
    pub timeout: Duration,
}

impl Dial {
    pub fn new(url: impl Into<String>, peer: impl Into<String>) -> Dial {
        Dial {
            url: url.into(),
            peer: peer.into(),
            ca: None,
            identity: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Trusts the CA certificate `pem`.
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Dial {
        self.ca = Some(pem);
        self
    }

    /// Trusts the CA certificate in the file `path`.
    pub fn with_ca(self, path: &std::path::Path) -> Result<Dial, Error> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Connect(format!("CA certificate {}: {e}", path.display())))?;
        Ok(self.with_ca_pem(pem))
    }

    /// Presents the certificate and key in the files `cert` and `key`.
    pub fn with_identity(
        mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Dial, Error> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Connect(format!("{}: {e}", p.display())))
        };
        self.identity = Some((read(cert)?, read(key)?));
        Ok(self)
    }
}

/// A channel to the service `d` names (`what` names it in errors: "bank ledger").
pub async fn connect(d: &Dial, what: &str) -> Result<Channel, Error> {
    let url = &d.url;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| {
            Error::Connect(format!(
                "{what} endpoint {url:?}: {e} (expected e.g. https://127.0.0.1:50061)"
            ))
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(d.timeout)
        // A request written in two segments must not wait for the server's delayed ACK.
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let ca = d.ca.as_ref().ok_or_else(|| {
            Error::Connect(format!(
                "{what} at {url}: TLS needs the network's CA certificate (--ca, or a devnet's)"
            ))
        })?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(d.peer.clone());
        if let Some((cert, key)) = &d.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Error::Connect(format!("{what} at {url}: TLS: {e}")))?;
    }
    endpoint.connect().await.map_err(|e| {
        Error::Connect(format!(
            "cannot reach the {what} at {url}: {e}; is it running? (`cbdc devnet` prints the endpoints)"
        ))
    })
}
