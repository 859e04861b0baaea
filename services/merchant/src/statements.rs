//! Daily statements: every movement of a merchant's collection wallet is a line, written in
//! the same store transaction as the state change it comes from, keyed by the UTC day the
//! ledger committed it. A statement is those lines in CSV or JSON; reconciliation reads the
//! collection wallet's history from the ledger itself and says where the two differ.
//!
//! Keys: `s\0<merchant>\0<YYYY-MM-DD>\0<committed at, ms, 8 bytes big-endian><txid>`.

use std::collections::BTreeMap;

use cbdc_core::Amount;
use cbdc_store::TxError;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{Gateway, key, prefix_end, put_json};

/// Lines of one day, at most (a statement larger than this is refused, not cut short).
pub const LINES_MAX: usize = 100_000;
/// Lines read per store read.
const PAGE: usize = 5_000;
/// History entries reconciliation reads from the ledger, at most.
const HISTORY_MAX: usize = 200_000;
const HISTORY_PAGE: u32 = 500;

/// One movement of the collection wallet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Line {
    pub at_unix_ms: u64,
    pub txid: String,
    /// `payment`, `refund`, `automatic_refund`, `capture`, `mandate_charge`, `unmatched`.
    pub kind: String,
    /// The order, hold or mandate it belongs to (the memo for an unmatched receipt).
    pub reference: String,
    pub amount: String,
    /// Into the collection wallet (else out of it).
    pub incoming: bool,
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time in milliseconds.
pub fn day(ms: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn check_date(date: &str) -> Result<(), ApiError> {
    let b = date.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !ok {
        return Err(ApiError::invalid("date", "YYYY-MM-DD (UTC)"));
    }
    Ok(())
}

fn day_prefix(merchant: &str, date: &str) -> Vec<u8> {
    let mut k = key(&[b"s", merchant.as_bytes(), date.as_bytes()]);
    k.push(0);
    k
}

/// Writes a line (inside the transaction of the change it records).
pub(crate) fn record(
    tx: &mut cbdc_store::Transaction,
    merchant: &str,
    line: &Line,
) -> Result<(), TxError<ApiError>> {
    let mut k = day_prefix(merchant, &day(line.at_unix_ms));
    k.extend_from_slice(&line.at_unix_ms.to_be_bytes());
    k.extend_from_slice(line.txid.as_bytes());
    put_json(tx, k, line)
}

/// A day's statement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Statement {
    pub merchant_id: String,
    pub date: String,
    pub lines: Vec<Line>,
    pub total_in: String,
    pub total_out: String,
    /// `total_in − total_out`, signed.
    pub net: String,
}

impl Statement {
    pub fn csv(&self) -> String {
        let mut out = String::from("date,at_unix_ms,kind,reference,direction,amount,txid\n");
        for l in &self.lines {
            // References are identifiers or memos; quote them (doubling quotes) all the same.
            out.push_str(&format!(
                "{},{},{},\"{}\",{},{},{}\n",
                self.date,
                l.at_unix_ms,
                l.kind,
                l.reference.replace('"', "\"\""),
                if l.incoming { "in" } else { "out" },
                l.amount,
                l.txid
            ));
        }
        out
    }
}

/// A movement of the collection wallet as the ledger's history shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub txid: String,
    pub amount: String,
    pub incoming: bool,
}

/// A movement on both sides with another signed amount (`+` in, `-` out).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Difference {
    pub txid: String,
    pub statement: String,
    pub ledger: String,
}

/// Where a day's statement and the ledger's history of the collection wallet differ.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Reconciliation {
    pub merchant_id: String,
    pub date: String,
    pub statement_lines: usize,
    pub ledger_entries: usize,
    /// On the ledger that day, not on the statement.
    pub missing_from_statement: Vec<LedgerEntry>,
    /// On the statement, not on the ledger that day.
    pub missing_from_ledger: Vec<Line>,
    /// On both with another amount or direction.
    pub differing: Vec<Difference>,
    pub reconciled: bool,
}

fn signed(amount: &str, incoming: bool) -> String {
    format!("{}{amount}", if incoming { "+" } else { "-" })
}

impl Gateway {
    /// The statement of `merchant_id` for `date`.
    pub async fn statement_of(&self, merchant_id: &str, date: &str) -> Result<Statement, ApiError> {
        check_date(date)?;
        let prefix = day_prefix(merchant_id, date);
        let end = prefix_end(&prefix);
        // Read in pages of what one range read may return (a store bounds every read).
        let mut rows = Vec::new();
        let mut begin = prefix.clone();
        loop {
            let page = self
                .scan(
                    begin.clone(),
                    end.clone(),
                    cbdc_store::RangeOptions::snapshot(PAGE),
                )
                .await?;
            let full = page.len() == PAGE;
            if let Some((last, _)) = page.last() {
                begin = last.clone();
                begin.push(0);
            }
            rows.extend(page);
            if !full || rows.len() > LINES_MAX {
                break;
            }
        }
        if rows.len() > LINES_MAX {
            return Err(ApiError::precondition(
                "date",
                format!("more than {LINES_MAX} lines that day: ask for the JSON pages"),
            ));
        }
        let lines: Vec<Line> = rows
            .iter()
            .map(|(_, v)| serde_json::from_slice(v))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(format!("a statement line: {e}")))?;
        let sum = |incoming: bool| {
            Amount::checked_sum(
                lines
                    .iter()
                    .filter(|l| l.incoming == incoming)
                    .filter_map(|l| Amount::parse(&l.amount).ok()),
            )
            .ok_or_else(|| ApiError::internal("statement totals overflow"))
        };
        let (total_in, total_out) = (sum(true)?, sum(false)?);
        let net = if total_in >= total_out {
            total_in.saturating_sub(total_out).to_string()
        } else {
            format!("-{}", total_out.saturating_sub(total_in))
        };
        Ok(Statement {
            merchant_id: merchant_id.to_string(),
            date: date.to_string(),
            lines,
            total_in: total_in.to_string(),
            total_out: total_out.to_string(),
            net,
        })
    }

    /// A merchant reads its statement.
    pub async fn statement(
        &self,
        credentials: &Credentials,
        date: &str,
    ) -> Result<Statement, ApiError> {
        let m = self.merchant_signer(credentials)?;
        self.statement_of(&m, date).await
    }

    /// Compares the statement of `date` with the collection wallet's history on the ledger,
    /// line by line, by txid, amount and direction.
    pub async fn reconcile_of(
        &self,
        merchant_id: &str,
        date: &str,
    ) -> Result<Reconciliation, ApiError> {
        let statement = self.statement_of(merchant_id, date).await?;
        let merchant = self
            .merchant(merchant_id)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))?;
        let collection = self.custody.collection(merchant_id);
        let mut ledger = self.ledgers.get("merchant_id", merchant.bank).await?;
        let mut entries: BTreeMap<String, (String, bool)> = BTreeMap::new();
        let (mut cursor, mut read) = (String::new(), 0usize);
        loop {
            let page = ledger
                .history(&collection, &cursor, HISTORY_PAGE)
                .await
                .map_err(|e| crate::payments::ledger_error("merchant_id", e))?;
            read += page.entries.len();
            for e in &page.entries {
                if e.txid.is_empty() || day(e.committed_at_unix_ms) != date {
                    continue;
                }
                entries.insert(hex::encode(&e.txid), (e.amount.clone(), e.incoming));
            }
            cursor = page.page.map(|p| p.next_cursor).unwrap_or_default();
            if cursor.is_empty() {
                break;
            }
            if read >= HISTORY_MAX {
                return Err(ApiError::precondition(
                    "date",
                    format!("the wallet's history is longer than {HISTORY_MAX} entries"),
                ));
            }
        }
        let mut r = Reconciliation {
            merchant_id: merchant_id.to_string(),
            date: date.to_string(),
            statement_lines: statement.lines.len(),
            ledger_entries: entries.len(),
            missing_from_statement: Vec::new(),
            missing_from_ledger: Vec::new(),
            differing: Vec::new(),
            reconciled: false,
        };
        let mut on_statement = std::collections::BTreeSet::new();
        for line in statement.lines {
            on_statement.insert(line.txid.clone());
            match entries.get(&line.txid) {
                None => r.missing_from_ledger.push(line),
                Some((amount, incoming)) => {
                    let (ours, theirs) = (
                        signed(&line.amount, line.incoming),
                        signed(amount, *incoming),
                    );
                    if ours != theirs {
                        r.differing.push(Difference {
                            txid: line.txid,
                            statement: ours,
                            ledger: theirs,
                        });
                    }
                }
            }
        }
        for (txid, (amount, incoming)) in entries {
            if !on_statement.contains(&txid) {
                r.missing_from_statement.push(LedgerEntry {
                    txid,
                    amount,
                    incoming,
                });
            }
        }
        r.reconciled = r.missing_from_ledger.is_empty()
            && r.missing_from_statement.is_empty()
            && r.differing.is_empty();
        Ok(r)
    }

    /// A merchant reconciles a day.
    pub async fn reconcile(
        &self,
        credentials: &Credentials,
        date: &str,
    ) -> Result<Reconciliation, ApiError> {
        let m = self.merchant_signer(credentials)?;
        self.reconcile_of(&m, date).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(86_399_999), "1970-01-01");
        assert_eq!(day(86_400_000), "1970-01-02");
        assert_eq!(day(951_782_400_000), "2000-02-29");
        assert_eq!(day(1_796_083_200_000), "2026-12-01");
        assert_eq!(day(1_796_083_199_999), "2026-11-30");
    }

    /// A day of more lines than one store read returns is read whole (it was once cut off at
    /// the store's range limit of 10,000 rows).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_of_more_lines_than_one_read_returns_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = cbdc_store::Database::open_embedded(
            dir.path(),
            cbdc_store::EmbeddedOptions {
                fsync: false,
                ..Default::default()
            },
        )
        .unwrap();
        let gateway = Gateway::new(
            db,
            "t".into(),
            Default::default(),
            crate::custody::Custody::new(cbdc_runtime::secret::Seed::new([7; 32])),
            crate::ledgers::Ledgers::new("t", &Default::default(), None).unwrap(),
        );
        let at = 1_796_083_200_000u64; // 2026-12-01
        let lines = 12_345u64;
        for chunk in (0..lines).collect::<Vec<_>>().chunks(2_000) {
            let chunk = chunk.to_vec();
            gateway
                .tx(move |tx| {
                    let chunk = chunk.clone();
                    Box::pin(async move {
                        for i in chunk {
                            record(
                                tx,
                                "m-1",
                                &Line {
                                    at_unix_ms: at + i,
                                    txid: format!("{i:064x}"),
                                    kind: "payment".into(),
                                    reference: "o".into(),
                                    amount: "0.01".into(),
                                    incoming: true,
                                },
                            )?;
                        }
                        Ok(())
                    })
                })
                .await
                .unwrap();
        }
        let st = gateway.statement_of("m-1", "2026-12-01").await.unwrap();
        assert_eq!(st.lines.len() as u64, lines);
        assert_eq!(st.total_in, "123.45");
        assert!(
            st.lines
                .windows(2)
                .all(|w| w[0].at_unix_ms < w[1].at_unix_ms)
        );
        assert!(
            gateway
                .statement_of("m-1", "2026-12-02")
                .await
                .unwrap()
                .lines
                .is_empty()
        );
    }

    #[test]
    fn dates_are_checked() {
        check_date("2026-11-30").unwrap();
        for bad in ["2026-1-30", "2026/11/30", "20261130", "2026-11-3x", ""] {
            assert!(check_date(bad).is_err(), "{bad}");
        }
    }
}
