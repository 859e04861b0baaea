//! What a bank-test run did and what its checker found, and how a test command keeps its
//! summary beside its history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What a run did and what the checker found.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub duration_s: u64,
    pub transfers_acknowledged: usize,
    pub cross_ledger_acknowledged: usize,
    /// Every move between ledgers in their logs, and how each ended.
    pub moves: super::moves::MovesFigures,
    pub transfers_refused: usize,
    pub indeterminate_calls: usize,
    pub double_spends_tried: usize,
    pub double_spends_refused: usize,
    pub exchanges_acknowledged: usize,
    pub redemptions_acknowledged: usize,
    /// What the acknowledged redemptions returned, and what the central bank counts as
    /// redeemed.
    pub redeemed_acknowledged: String,
    pub redeemed_at_central_bank: String,
    pub orders_refused: BTreeMap<String, usize>,
    /// Σ over the ledgers of the unspent value their logs give when replayed.
    pub replayed_unspent: String,
    pub faults: BTreeMap<String, usize>,
    pub crashes: usize,
    pub partitions: usize,
    pub pauses: usize,
    pub power_losses: usize,
    pub read_back_found: usize,
    /// What the checker found wrong (empty when every check passed).
    pub problems: Vec<String>,
    pub audit_balanced: bool,
    pub issued_minus_redeemed: String,
    pub sum_reported_by_ledgers: String,
    pub quiet_after_s: Option<f64>,
    pub exited_on_their_own: Vec<String>,
    pub refusals: BTreeMap<String, usize>,
    pub history: PathBuf,
    pub pass: bool,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "chaos: seed {}, {} s of faults: {} crashes, {} partitions, {} pauses, {} power losses {:?}",
                self.seed,
                self.duration_s,
                self.crashes,
                self.partitions,
                self.pauses,
                self.power_losses,
                self.faults
            ),
            format!(
                "  transfers: {} acknowledged ({} cross-ledger), {} refused {:?}, {} calls indeterminate and sent again",
                self.transfers_acknowledged,
                self.cross_ledger_acknowledged,
                self.transfers_refused,
                self.refusals,
                self.indeterminate_calls
            ),
            format!(
                "  moves between ledgers in their logs: {} between banks, {} credited once, {} reversed once; {} redemptions, {} reversed; {} of issues credited",
                self.moves.between_banks,
                self.moves.credited_once,
                self.moves.reversed_once,
                self.moves.to_central_bank,
                self.moves.to_central_bank_reversed,
                cbdc_core::Amount::from_fen(self.moves.issued_credited_fen)
            ),
            format!(
                "  double spends: {} tried, {} refused",
                self.double_spends_tried, self.double_spends_refused
            ),
            format!(
                "  orders: {} exchanges, {} redemptions acknowledged ({} redeemed; the central bank counts {}), refused {:?}",
                self.exchanges_acknowledged,
                self.redemptions_acknowledged,
                self.redeemed_acknowledged,
                self.redeemed_at_central_bank,
                self.orders_refused
            ),
            format!(
                "  read back: {} of {} acknowledged transfers and exchanges found at their position{}",
                self.read_back_found,
                self.transfers_acknowledged + self.exchanges_acknowledged,
                if self.problems.is_empty() {
                    String::new()
                } else {
                    format!("; problems: {:?}", self.problems)
                }
            ),
            format!(
                "  audit balanced: {} (issued − redeemed {}, the ledgers' checkpoints {}, their logs replayed {}), quiet {} s after the faults",
                self.audit_balanced,
                self.issued_minus_redeemed,
                self.sum_reported_by_ledgers,
                self.replayed_unspent,
                self.quiet_after_s
                    .map_or_else(|| "never".to_string(), |s| format!("{s:.1}"))
            ),
            format!(
                "  services that exited on their own: {:?}",
                self.exited_on_their_own
            ),
            format!(
                "  history: {}; checks: {}",
                self.history.display(),
                if self.pass { "pass" } else { "FAIL" }
            ),
        ]
    }
}

/// Writes `summary` as `summary.json` in `out`.
pub fn write_summary(out: &Path, summary: &impl Serialize) -> Result<(), String> {
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}
