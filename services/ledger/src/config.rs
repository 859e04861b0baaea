//! The ledger service's configuration: TOML plus `CBDC_LEDGER_*` environment variables
//! (see `cbdc_runtime::config`). Unknown keys are refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use cbdc_core::{Amount, TierLimits, TierTable};
use serde::{Deserialize, Serialize};

/// The environment prefix of ledger settings.
pub const ENV_PREFIX: &str = "CBDC_LEDGER_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// This bank ledger's id in the network (addresses carry it).
    pub ledger_id: u32,
    /// The network's name: every signed order and read grant must name it.
    pub network: String,
    /// The bank's authority public key (hex): it signs freezes, tier changes, exchanges and
    /// redemptions, and may read any wallet. Its secret stays off this server.
    pub authority_public_key: String,
    /// The bank's secret for keyed phone-number hashes: a file holding 32 bytes in hex,
    /// created with mode 0600 if absent.
    pub phone_key_file: PathBuf,
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
    /// The operator (vault) key: a file holding the 32-byte Ed25519 seed in hex. Created with
    /// mode 0600 if it does not exist.
    pub operator_key_file: PathBuf,
    /// The central bank's public key (hex), which countersigns issuance and inbound moves.
    #[serde(default)]
    pub central_bank_public_key: Option<String>,
    /// The central bank's gRPC endpoint (e.g. `http://127.0.0.1:50051`): where the outbox
    /// settles and checkpoints go. Without it, outbound transfers wait in the outbox.
    #[serde(default)]
    pub central_bank_endpoint: Option<String>,
    /// How often the audit-log sequencer looks for new commits, in milliseconds.
    #[serde(default = "default_sequencer_interval")]
    pub sequencer_interval_ms: u64,
    /// How often the outbox is delivered, in milliseconds.
    #[serde(default = "default_outbox_interval")]
    pub outbox_interval_ms: u64,
    /// How often the latest checkpoint is submitted to the central bank, in milliseconds.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// The local day for daily caps starts at midnight at this offset from UTC, in minutes.
    /// China Standard Time (UTC+8, no daylight saving) by default.
    #[serde(default = "default_offset")]
    pub utc_offset_minutes: i32,
    /// Faults a test plants to show that the audits catch them; never read from a file.
    #[serde(skip)]
    pub faults: crate::ledger::Faults,
    /// Transfers per `SubmitTransfers` request, at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Open client connections, at most (default: 10,000, or fewer when the descriptor
    /// limit is lower), a quarter of them from one source address; one more is closed on
    /// arrival.
    #[serde(default)]
    pub connections_max: Option<usize>,
    /// Entries per history page, at most.
    #[serde(default = "default_page_max")]
    pub page_size_max: u32,
    /// Validity given to bodies made by `BuildTransfer` when the request does not say.
    #[serde(default = "default_valid_for")]
    pub default_valid_for_s: u64,
    /// The largest amount accepted at the boundary, in yuan.
    #[serde(default)]
    pub amount_max: Option<String>,
    /// Tier limits, overriding the 2021 defaults per class.
    #[serde(default)]
    pub tiers: TiersConfig,
    /// One JSON object per log line.
    #[serde(default)]
    pub log_json: bool,
    /// Transport security: this ledger's certificate (`bank-<ledger_id>`), its key and the
    /// network's CA; wallets are served TLS, the central bank must present its certificate.
    #[serde(default)]
    pub tls: cbdc_runtime::tls::TlsConfig,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    pub class1: Option<LimitsConfig>,
    pub class2: Option<LimitsConfig>,
    pub class3: Option<LimitsConfig>,
    pub class4_anonymous: Option<LimitsConfig>,
}

/// Caps in yuan (decimal strings); an absent cap is unlimited.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub balance_cap: Option<String>,
    pub per_payment_cap: Option<String>,
    pub daily_outgoing_cap: Option<String>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:50061".parse().expect("address")
}
fn default_metrics() -> SocketAddr {
    "127.0.0.1:9461".parse().expect("address")
}
fn default_sequencer_interval() -> u64 {
    100
}
fn default_outbox_interval() -> u64 {
    100
}
fn default_checkpoint_interval() -> u64 {
    1000
}
fn default_offset() -> i32 {
    8 * 60
}
/// Transfers per `SubmitTransfers` request, at most, unless configured.
pub const MAX_BATCH_DEFAULT: usize = 1024;

fn default_max_batch() -> usize {
    MAX_BATCH_DEFAULT
}
fn default_page_max() -> u32 {
    1000
}
fn default_valid_for() -> u64 {
    600
}

impl LedgerConfig {
    /// A configuration for tests and devnets: loopback, ephemeral ports, files under `dir`,
    /// orders from `authority` in `network`; plaintext until `tls` is set.
    pub fn local(
        ledger_id: u32,
        dir: &std::path::Path,
        network: &str,
        authority: &cbdc_core::PublicKey,
    ) -> LedgerConfig {
        LedgerConfig {
            faults: Default::default(),
            ledger_id,
            network: network.to_string(),
            authority_public_key: hex::encode(authority.as_bytes()),
            phone_key_file: dir.join("phone.key"),
            listen: "127.0.0.1:0".parse().expect("address"),
            metrics_listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.join("store"),
            fdb_cluster_file: None,
            operator_key_file: dir.join("operator.key"),
            central_bank_public_key: None,
            central_bank_endpoint: None,
            sequencer_interval_ms: default_sequencer_interval(),
            outbox_interval_ms: default_outbox_interval(),
            checkpoint_interval_ms: default_checkpoint_interval(),
            utc_offset_minutes: default_offset(),
            max_batch: default_max_batch(),
            connections_max: None,
            page_size_max: default_page_max(),
            default_valid_for_s: default_valid_for(),
            amount_max: None,
            tiers: TiersConfig::default(),
            log_json: false,
            tls: cbdc_runtime::tls::TlsConfig {
                insecure: true,
                ..Default::default()
            },
        }
    }

    pub fn amount_max(&self) -> Result<Amount, String> {
        match &self.amount_max {
            None => Ok(Amount::DEFAULT_MAX),
            Some(s) => Amount::parse(s).map_err(|e| format!("amount_max: {e}")),
        }
    }

    pub fn tier_table(&self) -> Result<TierTable, String> {
        let mut table = TierTable::default();
        let parse = |field: &str, v: &Option<String>| -> Result<Option<Amount>, String> {
            v.as_deref()
                .map(|s| Amount::parse(s).map_err(|e| format!("tiers.{field}: {e}")))
                .transpose()
        };
        let apply = |name: &str, slot: &mut TierLimits, c: &Option<LimitsConfig>| {
            if let Some(c) = c {
                *slot = TierLimits {
                    balance_cap: parse(&format!("{name}.balance_cap"), &c.balance_cap)?,
                    per_payment_cap: parse(&format!("{name}.per_payment_cap"), &c.per_payment_cap)?,
                    daily_outgoing_cap: parse(
                        &format!("{name}.daily_outgoing_cap"),
                        &c.daily_outgoing_cap,
                    )?,
                };
            }
            Ok::<(), String>(())
        };
        apply("class1", &mut table.class1, &self.tiers.class1)?;
        apply("class2", &mut table.class2, &self.tiers.class2)?;
        apply("class3", &mut table.class3, &self.tiers.class3)?;
        apply(
            "class4_anonymous",
            &mut table.class4_anonymous,
            &self.tiers.class4_anonymous,
        )?;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ledger.toml");
        let config: LedgerConfig =
            cbdc_runtime::config::load(Some(&path), "CBDC_LEDGER_TEST_UNSET_").expect("loads");
        assert_eq!(config.ledger_id, 1);
        assert_eq!(config.utc_offset_minutes, 480);
        assert_eq!(config.tier_table().unwrap(), TierTable::default());
    }

    #[test]
    fn unknown_keys_and_bad_caps_are_named() {
        let err = cbdc_runtime::config::from_toml_str::<LedgerConfig>(
            "ledger_id = 1\ndata_dir = \"d\"\noperator_key_file = \"k\"\nlisten_port = 9",
            "CBDC_LEDGER_TEST_UNSET_",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let config = cbdc_runtime::config::from_toml_str::<LedgerConfig>(
            "ledger_id = 1\nnetwork = \"n\"\nauthority_public_key = \"\"\nphone_key_file = \"p\"\ndata_dir = \"d\"\noperator_key_file = \"k\"\n[tiers.class2]\nbalance_cap = \"1.234\"",
            "CBDC_LEDGER_TEST_UNSET_",
        )
        .unwrap();
        let err = config.tier_table().unwrap_err();
        assert!(err.starts_with("tiers.class2.balance_cap:"), "{err}");
    }
}
