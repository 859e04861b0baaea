//! Auditing a ledger without trusting it: its log read back in leaf order
//! ([`Ledger::log_page`], served as `StreamLog`), and a [`Replayer`] that rebuilds from the
//! transfers alone the Merkle tree, the unspent outputs, their sum and their set hash, and
//! checks every signed checkpoint against them.

use std::collections::HashMap;

use cbdc_core::audit::Checkpoint;
use cbdc_core::unspent::{DELTA_BYTES, SetHash};
use cbdc_core::{Amount, LedgerId, OutPoint, Output, PublicKey, Transfer, Txid};
use cbdc_runtime::ServiceError;
use cbdc_store::RangeOptions;

use crate::audit::{SequencerState, SignedCheckpoint};
use crate::layout::POSITION_LEN;
use crate::ledger::Ledger;
use crate::records::{Corrupt, TransferKind, TransferRecord};

/// Commit-log entries read by one page, at most (each up to 1,024 transfers).
pub const LOG_PAGE_ENTRIES: usize = 8;

/// One item of the log as an auditor reads it.
#[derive(Clone, Debug)]
pub enum LogItem {
    Transfer {
        leaf: u64,
        position: [u8; POSITION_LEN],
        kind: TransferKind,
        transfer: Transfer,
    },
    /// A signed checkpoint, after the leaf that completes it.
    Checkpoint(SignedCheckpoint),
}

/// Where a reading of the log is.
#[derive(Clone, Debug)]
pub struct LogCursor {
    after: Option<Vec<u8>>,
    leaf: u64,
    /// The log is read up to this many leaves (the latest checkpoint's size when reading began).
    until: u64,
}

impl LogCursor {
    pub fn done(&self) -> bool {
        self.leaf >= self.until
    }
}

impl Ledger {
    /// A cursor at the log's start, reading up to the latest signed checkpoint.
    pub async fn log_cursor(&self) -> Result<LogCursor, ServiceError> {
        let until = self.checkpoint().await?.map_or(0, |c| c.checkpoint.size);
        Ok(LogCursor {
            after: None,
            leaf: 0,
            until,
        })
    }

    /// The next page of the log: the transfers of up to [`LOG_PAGE_ENTRIES`] commit-log
    /// entries, each followed by the checkpoint its last leaf completes, if one was signed.
    pub async fn log_page(&self, cursor: &mut LogCursor) -> Result<Vec<LogItem>, ServiceError> {
        let mut items = Vec::new();
        if cursor.done() {
            return Ok(items);
        }
        let l = self.layout();
        let prefix = l.log_prefix();
        let end = cbdc_store::keys::strinc(&prefix).expect("prefix has a non-0xff byte");
        let begin = match &cursor.after {
            None => prefix.clone(),
            Some(k) => {
                let mut k = k.clone();
                k.push(0);
                k
            }
        };
        let mut tx = self.db().create_transaction()?;
        let rows = tx
            .get_range(&begin, &end, RangeOptions::snapshot(LOG_PAGE_ENTRIES))
            .await?;
        let log_entry = || Corrupt { what: "log entry" };
        for (k, v) in rows {
            if cursor.done() {
                break;
            }
            let txids = v.get(DELTA_BYTES..).ok_or_else(log_entry)?;
            for txid in txids.chunks_exact(32) {
                let txid = Txid(txid.try_into().expect("32 bytes"));
                let record = tx.get_snapshot(&l.transfer(&txid)).await?.ok_or(Corrupt {
                    what: "logged transfer",
                })?;
                let record = TransferRecord::decode(&record)?;
                let transfer =
                    Transfer::decode(record.body.clone(), Ledger::record_witnesses(&record))?;
                items.push(LogItem::Transfer {
                    leaf: cursor.leaf,
                    position: record.position,
                    kind: record.kind,
                    transfer,
                });
                cursor.leaf += 1;
            }
            if let Some(v) = tx.get_snapshot(&l.checkpoint_at(cursor.leaf)).await? {
                items.push(LogItem::Checkpoint(SignedCheckpoint::decode(&v)?));
            }
            cursor.after = Some(k);
        }
        if items.is_empty() {
            // The log ends before the checkpoint said it would: nothing more to read.
            cursor.until = cursor.leaf;
        }
        Ok(items)
    }
}

/// What a replay found wrong: where, and what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledger {ledger}, {at}: {what}")]
pub struct ReplayFault {
    pub ledger: u32,
    /// "leaf N" or "checkpoint at log size N".
    pub at: String,
    pub what: String,
    /// The checkpoint at fault, if the fault is a checkpoint's.
    pub checkpoint_size: Option<u64>,
}

/// Rebuilds a ledger's state from its log and checks its checkpoints against it.
pub struct Replayer {
    ledger: LedgerId,
    operator: PublicKey,
    tree: SequencerState,
    unspent: HashMap<OutPoint, Output>,
    sum: u64,
    set: SetHash,
    /// Checkpoints checked so far.
    pub checkpoints: u64,
}

impl Replayer {
    pub fn new(ledger: LedgerId, operator: PublicKey) -> Replayer {
        Replayer {
            ledger,
            operator,
            tree: SequencerState::default(),
            unspent: HashMap::new(),
            sum: 0,
            set: SetHash::default(),
            checkpoints: 0,
        }
    }

    /// Leaves replayed.
    pub fn leaves(&self) -> u64 {
        self.tree.size
    }

    /// The sum of the unspent outputs replayed.
    pub fn unspent(&self) -> Amount {
        Amount::from_fen(self.sum)
    }

    fn fault(&self, at: String, what: String, checkpoint_size: Option<u64>) -> ReplayFault {
        ReplayFault {
            ledger: self.ledger.0,
            at,
            what,
            checkpoint_size,
        }
    }

    /// Applies one logged transfer: a local one spends its inputs and creates this ledger's
    /// outputs (others go to the outbox); an inbound one, or a reversal (signed by the
    /// operator), only creates this ledger's outputs.
    pub fn transfer(
        &mut self,
        leaf: u64,
        position: &[u8; POSITION_LEN],
        kind: TransferKind,
        t: &Transfer,
    ) -> Result<(), ReplayFault> {
        let inbound = kind != TransferKind::Local;
        let at = format!("leaf {leaf} (txid {})", t.txid());
        if leaf != self.tree.size {
            return Err(self.fault(
                at,
                format!("out of order: {} leaves replayed", self.tree.size),
                None,
            ));
        }
        if let Err(e) = cbdc_core::validate::check_committed_batch([t]).remove(0) {
            return Err(self.fault(at, format!("the transfer is invalid: {e}"), None));
        }
        if kind == TransferKind::Reversal
            && (t.witnesses().len() != 1 || t.witnesses()[0].key != self.operator)
        {
            return Err(self.fault(at, "a reversal not signed by the operator".into(), None));
        }
        let leaf_hash = cbdc_core::merkle::leaf_hash(&cbdc_core::audit::leaf_data(
            self.ledger,
            position,
            &t.txid().0,
        ));
        self.tree.append(leaf_hash);
        if !inbound {
            for input in &t.body().inputs {
                let Some(output) = self.unspent.remove(&input.outpoint) else {
                    return Err(self.fault(
                        at,
                        format!(
                            "spends {}, which is not an unspent output of the ledger",
                            input.outpoint
                        ),
                        None,
                    ));
                };
                if output.value != input.value {
                    return Err(self.fault(
                        at,
                        format!(
                            "input {} says {}, the output holds {}",
                            input.outpoint, input.value, output.value
                        ),
                        None,
                    ));
                }
                self.set.remove(&input.outpoint, &output);
                self.sum -= output.value.fen();
            }
        }
        for (i, output) in t.body().outputs.iter().enumerate() {
            if output.ledger != self.ledger {
                continue;
            }
            let outpoint = t.outpoint(i as u16);
            self.set.insert(&outpoint, output);
            self.sum += output.value.fen();
            self.unspent.insert(outpoint, *output);
        }
        Ok(())
    }

    /// Checks a signed checkpoint against the state replayed so far.
    pub fn checkpoint(&mut self, cp: &Checkpoint, signature: &[u8]) -> Result<(), ReplayFault> {
        let at = format!("checkpoint at log size {}", cp.size);
        let size = Some(cp.size);
        let mut wrong = Vec::new();
        if let Err(e) = cp.verify_signature(&self.operator, signature) {
            wrong.push(e.to_string());
        }
        if cp.ledger != self.ledger {
            wrong.push(format!("it is ledger {}'s", cp.ledger.0));
        }
        if cp.size != self.tree.size {
            wrong.push(format!("{} leaves replayed", self.tree.size));
        } else if cp.root != self.tree.root() {
            wrong.push("its root is not the replayed tree's".into());
        }
        if cp.unspent.fen() != self.sum {
            wrong.push(format!(
                "it states unspent {}, the log gives {}",
                cp.unspent,
                self.unspent()
            ));
        }
        if cp.unspent_set != self.set.digest() {
            wrong.push("its unspent-set hash is not that of the outputs the log leaves".into());
        }
        if let Err(e) = cp.check_figures() {
            wrong.push(e.to_string());
        }
        if !wrong.is_empty() {
            return Err(self.fault(at, wrong.join("; "), size));
        }
        self.checkpoints += 1;
        Ok(())
    }
}

/// What a replay of a whole log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub leaves: u64,
    pub checkpoints: u64,
    pub unspent: Amount,
}

/// Why a replay over the wire stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Fault(#[from] ReplayFault),
    #[error("the log stream: {0}")]
    Stream(String),
}

/// Replays the log `StreamLog` sends: every transfer, every checkpoint checked. Stops at the
/// first fault.
pub async fn replay_stream(
    stream: tonic::Streaming<cbdc_proto::v1::LogItem>,
    ledger: LedgerId,
    operator: PublicKey,
) -> Result<Replayed, ReplayError> {
    replay_stream_with(stream, ledger, operator, |_, _| {}).await
}

/// [`replay_stream`], showing `observe` every transfer once it is replayed.
pub async fn replay_stream_with(
    mut stream: tonic::Streaming<cbdc_proto::v1::LogItem>,
    ledger: LedgerId,
    operator: PublicKey,
    mut observe: impl FnMut(TransferKind, &Transfer),
) -> Result<Replayed, ReplayError> {
    use cbdc_proto::{convert, v1};
    let mut replayer = Replayer::new(ledger, operator);
    let stream_error = |e: String| ReplayError::Stream(e);
    while let Some(item) = stream
        .message()
        .await
        .map_err(|s| stream_error(format!("{}: {}", s.code(), s.message())))?
    {
        match item.item {
            Some(v1::log_item::Item::Transfer(t)) => {
                let position: [u8; POSITION_LEN] = t
                    .position
                    .as_slice()
                    .try_into()
                    .map_err(|_| stream_error(format!("leaf {}: position", t.leaf)))?;
                let transfer = convert::signed_transfer("transfer", t.transfer.as_ref())
                    .map_err(|e| stream_error(format!("leaf {}: {e}", t.leaf)))?;
                let kind = match (t.inbound, t.reversal) {
                    (_, true) => TransferKind::Reversal,
                    (true, false) => TransferKind::Inbound,
                    (false, false) => TransferKind::Local,
                };
                replayer.transfer(t.leaf, &position, kind, &transfer)?;
                observe(kind, &transfer);
            }
            Some(v1::log_item::Item::Checkpoint(c)) => {
                let (cp, signature) = convert::checkpoint(&c)
                    .map_err(|e| stream_error(format!("checkpoint: {e}")))?;
                replayer.checkpoint(&cp, &signature)?;
            }
            None => return Err(stream_error("an empty item".into())),
        }
    }
    Ok(Replayed {
        leaves: replayer.leaves(),
        checkpoints: replayer.checkpoints,
        unspent: replayer.unspent(),
    })
}
