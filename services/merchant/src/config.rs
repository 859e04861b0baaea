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
            data_dir: dir.join("store"),
            fdb_cluster_file: None,
            banks: BTreeMap::new(),
            log_json: false,
        }
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
