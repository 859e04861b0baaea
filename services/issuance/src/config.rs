//! The central bank's configuration: TOML plus `CBDC_ISSUANCE_*` environment variables (see
//! `cbdc_runtime::config`). Unknown keys are refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The environment prefix of issuance settings.
pub const ENV_PREFIX: &str = "CBDC_ISSUANCE_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceConfig {
    /// The network's name: every signed order must name it.
    pub network: String,
    /// gRPC listen address; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address; port 0 picks a free port.
    #[serde(default = "default_metrics")]
    pub metrics_listen: SocketAddr,
    /// The embedded store's directory (ignored when `fdb_cluster_file` is set).
    pub data_dir: PathBuf,
    /// A FoundationDB cluster file; when set (and built with `fdb`), the store is FoundationDB.
    #[serde(default)]
    pub fdb_cluster_file: Option<PathBuf>,
    /// The central bank's signing key (issues and countersignatures): a file holding the
    /// 32-byte Ed25519 seed in hex, created with mode 0600 if absent.
    pub signing_key_file: PathBuf,
    /// The administrator's public key (hex), which signs registrations, status changes and
    /// issues.
    pub admin_public_key: String,
    /// How often queued settlements are delivered, in milliseconds.
    #[serde(default = "default_delivery_interval")]
    pub delivery_interval_ms: u64,
    /// How often the audit runs for the metrics (supply, each ledger's figures, whether
    /// they balance), in milliseconds.
    #[serde(default = "default_audit_interval")]
    pub audit_interval_ms: u64,
    /// One JSON object per log line.
    #[serde(default)]
    pub log_json: bool,
    /// Transport security: the central bank's certificate (`central-bank`), its key and the
    /// network's CA; banks and the administrator must present theirs.
    #[serde(default)]
    pub tls: cbdc_runtime::tls::TlsConfig,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("address")
}
fn default_metrics() -> SocketAddr {
    "127.0.0.1:9451".parse().expect("address")
}
fn default_delivery_interval() -> u64 {
    100
}
fn default_audit_interval() -> u64 {
    15_000
}

impl IssuanceConfig {
    /// A configuration for tests and devnets: loopback, ephemeral ports, files under `dir`.
    pub fn local(
        dir: &std::path::Path,
        network: &str,
        admin_public_key: &cbdc_core::PublicKey,
    ) -> IssuanceConfig {
        IssuanceConfig {
            network: network.to_string(),
            listen: "127.0.0.1:0".parse().expect("address"),
            metrics_listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.join("store"),
            fdb_cluster_file: None,
            signing_key_file: dir.join("signing.key"),
            admin_public_key: hex::encode(admin_public_key.as_bytes()),
            delivery_interval_ms: default_delivery_interval(),
            audit_interval_ms: default_audit_interval(),
            log_json: false,
            tls: cbdc_runtime::tls::TlsConfig {
                insecure: true,
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads_and_its_placeholder_key_is_refused_by_name() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/issuance.toml");
        let config: IssuanceConfig =
            cbdc_runtime::config::load(Some(&path), "CBDC_ISSUANCE_TEST_UNSET_").expect("loads");
        assert_eq!(config.listen.port(), 50051);
        let err = crate::parse_public_key("admin_public_key", &config.admin_public_key)
            .expect_err("the placeholder is not a usable key");
        assert!(err.starts_with("admin_public_key:"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = cbdc_runtime::config::from_toml_str::<IssuanceConfig>(
            "data_dir = \"d\"\nsigning_key_file = \"k\"\nadmin_public_key = \"00\"\nlisten_port = 9",
            "CBDC_ISSUANCE_TEST_UNSET_",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }
}
