//! Reads: a transfer's status, a wallet's history, and the audit figures.

use super::*;

/// Status reads that may be asking the central bank at once; one more answers SETTLING
/// without asking.
pub const DELIVERY_ASKS_MAX: usize = 16;

/// How long a status read waits for the central bank to say a move was delivered.
pub const DELIVERY_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Ledger {
    pub async fn transfer(&self, txid: &Txid) -> Result<Option<TransferInfo>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        let Some(bytes) = tx.get_snapshot(&self.layout().transfer(txid)).await? else {
            return Ok(None);
        };
        let record = TransferRecord::decode(&bytes)?;
        let (b, e) = self.layout().outbox_of(txid);
        let pending = tx.get_range(&b, &e, RangeOptions::snapshot(1)).await?;
        let (b, e) = self.layout().reversals(txid);
        let reversal = tx
            .get_range(&b, &e, RangeOptions::snapshot(1))
            .await?
            .pop()
            .map(|(_, v)| String::from_utf8_lossy(v.get(32..).unwrap_or_default()).into_owned());
        let delivered = tx
            .get_snapshot(&self.layout().delivered(txid))
            .await?
            .is_some();
        Ok(Some(TransferInfo {
            record,
            settling: !pending.is_empty(),
            reversal,
            delivered,
        }))
    }

    /// Asks the central bank whether every payee's ledger credited `txid`'s moves (it left
    /// the outbox: the central bank settled it) and keeps the answer once it is yes. No link,
    /// [`DELIVERY_ASKS_MAX`] asks already out, no answer in [`DELIVERY_ASK_TIMEOUT`] or not
    /// yet: `false`, and the transfer stays SETTLING.
    pub async fn confirm_delivery(&self, txid: &Txid) -> Result<bool, ServiceError> {
        let Some(link) = self.inner.registry_source.get() else {
            return Ok(false);
        };
        let Ok(_asking) = self.inner.delivery_asks.try_acquire() else {
            return Ok(false);
        };
        let asked = link.settlement_status(cbdc_proto::v1::GetSettlementStatusRequest {
            ledger_id: self.id().0,
            txids: vec![txid.0.to_vec()],
        });
        let states = match tokio::time::timeout(DELIVERY_ASK_TIMEOUT, asked).await {
            Ok(Ok(r)) => r.states,
            Ok(Err(s)) => {
                tracing::debug!(code = ?s.code(), "delivery not confirmed: {}", s.message());
                return Ok(false);
            }
            Err(_) => return Ok(false),
        };
        if states.first().copied() != Some(cbdc_proto::v1::SettlementState::Delivered as i32) {
            return Ok(false);
        }
        let key = self.layout().delivered(txid);
        self.inner
            .db
            .run(move |tx| {
                let key = key.clone();
                Box::pin(async move {
                    tx.set(&key, b"")?;
                    Ok::<_, TxError<ServiceError>>(())
                })
            })
            .await?;
        Ok(true)
    }

    /// A page of `key`'s history after `after` (a log position), oldest first.
    pub async fn history(
        &self,
        key: &PublicKey,
        after: Option<[u8; POSITION_LEN]>,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, ServiceError> {
        let prefix = self.layout().history_prefix(key);
        let mut begin = prefix.clone();
        if let Some(after) = after {
            begin.extend_from_slice(&after);
            begin.push(0);
        }
        let end = cbdc_store::keys::strinc(&prefix).expect("prefix has a non-0xff byte");
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(
                &begin,
                &end,
                RangeOptions {
                    limit,
                    snapshot: true,
                    ..RangeOptions::default()
                },
            )
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let position: [u8; POSITION_LEN] = k
                    .get(prefix.len()..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(Corrupt {
                        what: "history key",
                    })?;
                Ok(HistoryItem {
                    position,
                    record: HistoryRecord::decode(&v)?,
                })
            })
            .collect()
    }

    /// The running totals: value delivered in, and value out the central bank acknowledged
    /// (two counter reads; `totals` scans everything).
    pub async fn running_totals(&self) -> Result<(Amount, Amount), ServiceError> {
        let l = self.layout();
        let mut tx = self.inner.db.create_transaction()?;
        Ok((
            counter_amount(tx.get_snapshot(&l.inbound_total()).await?.as_deref())?,
            counter_amount(tx.get_snapshot(&l.settled_out_total()).await?.as_deref())?,
        ))
    }

    /// Decodes a stored transfer record back into its wire parts.
    pub fn record_witnesses(record: &TransferRecord) -> Vec<Witness> {
        record
            .witnesses
            .iter()
            .enumerate()
            .filter_map(|(i, (k, s))| Witness::new(i, PublicKey::from_bytes(*k), *s).ok())
            .collect()
    }

    /// Audit figures, computed independently: the sum of unspent outputs, the sum of wallet
    /// balances, the number of transfers in the commit log, the outbox, and the running totals in
    /// and out (an honest ledger has unspent + outbox = inbound − settled out). Each range is scanned in pages
    /// of `limits::RANGE_ROWS_MAX` rows; on a busy ledger the pages see different moments.
    pub async fn totals(&self) -> Result<Totals, ServiceError> {
        let l = self.layout();
        let mut totals = Totals::default();
        let mut set = cbdc_core::unspent::SetHash::default();
        let (b, e) = l.outputs();
        self.scan(&b, &e, |k, v| {
            if let OutputState::Unspent(o) = OutputState::decode(v)? {
                totals.unspent = totals.unspent.checked_add(o.value).ok_or(Corrupt {
                    what: "unspent total",
                })?;
                totals.unspent_outputs += 1;
                let outpoint = l.output_outpoint(k).ok_or(Corrupt { what: "output key" })?;
                set.insert(&outpoint, &o);
            }
            Ok(())
        })
        .await?;
        totals.unspent_set = set.digest();
        let (b, e) = l.balances();
        self.scan(&b, &e, |_, v| {
            totals.balances = totals
                .balances
                .checked_add(counter_amount(Some(v))?)
                .ok_or(Corrupt {
                    what: "balance total",
                })?;
            Ok(())
        })
        .await?;
        let b = l.log_prefix();
        let e = cbdc_store::keys::strinc(&b).expect("prefix has a non-0xff byte");
        self.scan(&b, &e, |_, v| {
            let delta = cbdc_core::unspent::DELTA_BYTES;
            if v.len() <= delta || !(v.len() - delta).is_multiple_of(32) {
                return Err(Corrupt { what: "log entry" });
            }
            totals.log_entries += ((v.len() - delta) / 32) as u64;
            Ok(())
        })
        .await?;
        let (b, e) = l.outbox_all();
        self.scan(&b, &e, |_, v| {
            let o = Output::decode(v).map_err(|_| Corrupt { what: "outbox" })?;
            totals.outbox = totals.outbox.checked_add(o.value).ok_or(Corrupt {
                what: "outbox total",
            })?;
            Ok(())
        })
        .await?;
        let mut tx = self.inner.db.create_transaction()?;
        totals.inbound = counter_amount(tx.get_snapshot(&l.inbound_total()).await?.as_deref())?;
        totals.settled_out =
            counter_amount(tx.get_snapshot(&l.settled_out_total()).await?.as_deref())?;
        Ok(totals)
    }

    async fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Corrupt>,
    ) -> Result<(), ServiceError> {
        let mut from = begin.to_vec();
        loop {
            let mut tx = self.inner.db.create_transaction()?;
            let limit = cbdc_store::limits::RANGE_ROWS_MAX;
            let rows = tx
                .get_range(
                    &from,
                    end,
                    RangeOptions {
                        limit,
                        snapshot: true,
                        ..RangeOptions::default()
                    },
                )
                .await?;
            for (k, v) in &rows {
                f(k, v)?;
            }
            match rows.last() {
                Some((k, _)) if rows.len() == limit => {
                    from = k.clone();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}
