//! The bank ledgers the gateway pays through: one client per ledger over mutual TLS, made on
//! first use and shared (a tonic channel multiplexes calls).

use std::collections::BTreeMap;
use std::sync::Arc;

use cbdc_client::{Dial, Ledger};
use cbdc_core::LedgerId;
use tokio::sync::Mutex;

use crate::error::ApiError;

#[derive(Clone)]
pub struct Ledgers {
    network: String,
    dials: Arc<BTreeMap<u32, Dial>>,
    clients: Arc<Mutex<BTreeMap<u32, Ledger>>>,
}

impl Ledgers {
    /// `endpoints`: ledger id → URL; `tls`: the gateway's certificate and the network's CA
    /// (`None` for plaintext, local experiments only).
    pub fn new(
        network: &str,
        endpoints: &BTreeMap<u32, String>,
        tls: Option<&cbdc_runtime::tls::TlsConfig>,
    ) -> Result<Ledgers, String> {
        let mut dials = BTreeMap::new();
        for (&id, url) in endpoints {
            let mut dial = Dial::new(url.clone(), cbdc_runtime::tls::bank_name(id));
            if let Some(tls) = tls.filter(|t| !t.insecure) {
                let need = |f: &Option<std::path::PathBuf>, name: &str| {
                    f.clone()
                        .ok_or_else(|| format!("tls.{name}: required to call the ledgers"))
                };
                dial = dial
                    .with_ca(&need(&tls.ca_file, "ca_file")?)
                    .map_err(|e| format!("tls.ca_file: {e}"))?
                    .with_identity(
                        &need(&tls.cert_file, "cert_file")?,
                        &need(&tls.key_file, "key_file")?,
                    )
                    .map_err(|e| format!("tls: {e}"))?;
            }
            dials.insert(id, dial);
        }
        Ok(Ledgers {
            network: network.to_string(),
            dials: Arc::new(dials),
            clients: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    pub fn knows(&self, ledger: u32) -> bool {
        self.dials.contains_key(&ledger)
    }

    /// A client of `ledger` (field names the request field that chose it, for errors).
    pub async fn get(&self, field: &str, ledger: u32) -> Result<Ledger, ApiError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&ledger) {
            return Ok(c.clone());
        }
        let dial = self.dials.get(&ledger).ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("ledger {ledger}: this gateway does not serve it"),
            )
        })?;
        let client = Ledger::connect(dial, LedgerId(ledger), &self.network)
            .await
            .map_err(|e| ApiError::unavailable(format!("ledger {ledger}: {e}")))?;
        clients.insert(ledger, client.clone());
        Ok(client)
    }
}
