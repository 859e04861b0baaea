//! One transfer's validation against the ledger's state and its writes, inside a store
//! transaction: [`prefetch`](super::plan::prefetch) reads, [`plan`](super::plan::plan)
//! decides, and the plan is written.

use super::plan::{PlanContext, Prefetched, plan, prefetch, write};
use super::*;

impl Ledger {
    /// What planning a transfer at `now_ms`, `order`-th in its commit, depends on.
    pub(super) fn plan_context(&self, now_ms: u64, order: u16) -> PlanContext<'_> {
        PlanContext {
            layout: self.layout(),
            ledger: self.id(),
            tiers: &self.inner.settings.tiers,
            now_ms,
            day: self.day(now_ms),
            order,
            faults: self.inner.settings.faults,
        }
    }

    /// Validates `t` against the ledger's state and writes its effects, inside `tx`.
    pub(super) async fn apply(
        &self,
        tx: &mut Transaction,
        t: &Transfer,
        now_ms: u64,
        order: u16,
    ) -> Result<Applied, TxError<ServiceError>> {
        let ctx = self.plan_context(now_ms, order);
        let snapshot = match prefetch(tx, &ctx, t).await? {
            Prefetched::Already(record) => return Ok(Applied::Already(record)),
            Prefetched::Ready(snapshot) => snapshot,
        };
        let planned = plan(&ctx, t, &snapshot).map_err(abort)?;
        write(tx, planned.writes)?;
        Ok(Applied::New(planned.lines, planned.delta))
    }

    /// Appends the transfers a store transaction commits (`logged`, in order, each with what
    /// it did to the unspent outputs) to the commit log: one entry per
    /// [`LOG_ENTRY_TXIDS_MAX`] of them, keyed by the position of its first, holding their
    /// deltas folded into one and then their txids, rather than one key per transfer.
    pub(super) fn write_log(
        &self,
        tx: &mut Transaction,
        logged: &[(Txid, Delta)],
    ) -> Result<(), StoreError> {
        for (i, chunk) in logged.chunks(LOG_ENTRY_TXIDS_MAX).enumerate() {
            // Orders are u16: one commit never holds more than 65,536 transfers.
            let first = (i * LOG_ENTRY_TXIDS_MAX) as u16;
            let mut lk = self.layout().log_prefix();
            let offset = lk.len() as u32;
            lk.extend_from_slice(&position([0; STAMP_LEN], first));
            let mut delta = Delta::default();
            for (_, d) in chunk {
                delta.combine(d);
            }
            let mut v = delta.encode();
            v.reserve(32 * chunk.len());
            for (txid, _) in chunk {
                v.extend_from_slice(&txid.0);
            }
            tx.set_versionstamped_key(lk, offset, v)?;
        }
        Ok(())
    }
}
