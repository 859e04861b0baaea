//! The gateway's configuration: TOML plus `CBDC_MERCHANT_*` environment variables (see
//! `cbdc_runtime::config`). Unknown keys are refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use cbdc_core::PublicKey;
use serde::{Deserialize, Serialize};

/// The environment prefix of gateway settings.
pub const ENV_PREFIX: &str = "CBDC_MERCHANT_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// The network's name: payment URIs carry it.
    pub network: String,
    /// HTTP/JSON listen address; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// gRPC listen address (`cbdc.v1.MerchantGateway` and health); port 0 picks a free port.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Prometheus `/metrics` listen address; port 0 picks a free port.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// The embedded store's directory (ignored when `fdb_cluster_file` is set).
    pub data_dir: PathBuf,
    /// A FoundationDB cluster file; when set (and built with `fdb`), the store is FoundationDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb_cluster_file: Option<PathBuf>,
    /// The banks that onboard merchants: ledger id → the bank's authority public key (hex).
    #[serde(default)]
    pub banks: BTreeMap<String, String>,
    /// One JSON object per log line.
    #[serde(default)]
    pub log_json: bool,
    /// The gateway's secret seed (32 bytes in hex, mode 0600, made on first start): merchants'
    /// collection keys and the webhook signing key are derived from it.
    pub key_file: PathBuf,
    /// The bank ledgers the gateway pays through: ledger id → gRPC endpoint.
    #[serde(default)]
    pub ledgers: BTreeMap<String, String>,
    /// Mutual TLS to the ledgers (the gateway's certificate, the network's CA).
    #[serde(default)]
    pub tls: cbdc_runtime::tls::TlsConfig,
    /// How often each merchant's collection wallet is read for new credits.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Webhook retries: the first waits `webhook_retry_base_ms`, each further one twice as
    /// long up to `webhook_retry_max_ms`; after `webhook_attempts_max` attempts the event is
    /// given up (and may be redelivered by hand). The defaults span about a day.
    #[serde(default = "default_retry_base_ms")]
    pub webhook_retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub webhook_retry_max_ms: u64,
    #[serde(default = "default_attempts_max")]
    pub webhook_attempts_max: u32,
}

fn default_grpc_listen() -> SocketAddr {
    "127.0.0.1:8481".parse().expect("address")
}

fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9481".parse().expect("address")
}

fn default_poll_ms() -> u64 {
    250
}

fn default_retry_base_ms() -> u64 {
    15_000
}

fn default_retry_max_ms() -> u64 {
    4 * 3600 * 1000
}

fn default_attempts_max() -> u32 {
    16
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8480".parse().expect("address")
}

impl MerchantConfig {
    /// A configuration for tests and devnets: loopback, an ephemeral port, the store under
    /// `dir`.
    pub fn local(dir: &std::path::Path, network: &str) -> MerchantConfig {
        MerchantConfig {
            network: network.to_string(),
            listen: "127.0.0.1:0".parse().expect("address"),
            grpc_listen: "127.0.0.1:0".parse().expect("address"),
            metrics_listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.join("store"),
            fdb_cluster_file: None,
            banks: BTreeMap::new(),
            log_json: false,
            key_file: dir.join("gateway.key"),
            ledgers: BTreeMap::new(),
            tls: cbdc_runtime::tls::TlsConfig {
                insecure: true,
                ..Default::default()
            },
            poll_interval_ms: 50,
            webhook_retry_base_ms: 200,
            webhook_retry_max_ms: 2_000,
            webhook_attempts_max: default_attempts_max(),
        }
    }

    /// The ledgers' endpoints, each checked (errors name `ledgers.<id>`).
    pub fn ledger_endpoints(&self) -> Result<BTreeMap<u32, String>, String> {
        self.ledgers
            .iter()
            .map(|(id, url)| {
                let ledger: u32 = id
                    .parse()
                    .map_err(|_| format!("ledgers.{id}: the key must be a ledger id (a number)"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("ledgers.{id}: {url:?} is not an http(s) URL"));
                }
                Ok((ledger, url.clone()))
            })
            .collect()
    }

    /// The banks' authority keys, each checked (errors name `banks.<id>`).
    pub fn bank_keys(&self) -> Result<BTreeMap<u32, PublicKey>, String> {
        self.banks
            .iter()
            .map(|(id, key)| {
                let field = format!("banks.{id}");
                let ledger: u32 = id
                    .parse()
                    .map_err(|_| format!("{field}: the key must be a ledger id (a number)"))?;
                let key =
                    crate::parse_key(&field, key).map_err(|e| format!("{field}: {}", e.message))?;
                Ok((ledger, key))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads_and_its_placeholder_key_is_refused_by_name() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/merchant.toml");
        let config: MerchantConfig =
            cbdc_runtime::config::load(Some(&path), "CBDC_MERCHANT_TEST_UNSET_").expect("loads");
        assert_eq!(config.listen.port(), 8480);
        let err = config
            .bank_keys()
            .expect_err("the placeholder is not a usable key");
        assert!(err.starts_with("banks.1:"), "{err}");
    }
}
