//! The ledger's audit log: a sequencer that gives every committed transfer a dense leaf
//! index in an RFC 6962 Merkle tree, in commit order, and signs checkpoints over it; and the
//! receipts and consistency proofs built from the stored tree.
//!
//! The commit path writes only `("l",) ‖ position → txid` (a versionstamped key). The
//! sequencer follows that log in its own store transactions: it reads the state key with a
//! conflict (so two sequencers, say on two replicas, never both advance), reads the log after
//! the last position it sequenced — a commit always gets a versionstamp above every version
//! already readable, so nothing can appear behind it — and for each entry writes the leaf
//! index `("mx", txid)` and, in one key `("mn", leaf)`, the hashes of the perfect subtrees
//! the leaf completes (its own hash first, then one per level it closes). It keeps the tree's right edge (one hash per set bit of the size)
//! in its state, so appending needs no reads of the tree and the root is a fold of the edge.
//!
//! When the sequencer has caught up, it reads the running totals in the same transaction
//! and signs a checkpoint, so a checkpoint's figures are those of exactly the log it covers.

use cbdc_core::audit::{Checkpoint, Receipt};
use cbdc_core::merkle::{self, Hash};
use cbdc_core::{Amount, Transfer, Txid};
use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{RangeOptions, Transaction, TxError};
use std::collections::{BTreeMap, BTreeSet};

use crate::layout::POSITION_LEN;
use crate::ledger::{Ledger, LedgerError};
use crate::records::{Corrupt, TransferRecord, counter_amount};

/// Log entries sequenced in one store transaction, at most.
pub const SEQUENCE_BATCH_MAX: usize = 2048;

/// The sequencer's state: leaves so far, the last log position sequenced, the right edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequencerState {
    pub size: u64,
    pub last: Option<[u8; POSITION_LEN]>,
    /// Hashes of the perfect subtrees making up the tree, largest first (one per set bit of
    /// `size`).
    pub edge: Vec<Hash>,
}

impl SequencerState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 1 + POSITION_LEN + 32 * self.edge.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        match &self.last {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p);
            }
            None => out.push(0),
        }
        for h in &self.edge {
            out.extend_from_slice(h);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<SequencerState, Corrupt> {
        let bad = Corrupt { what: "sequencer" };
        let size = u64::from_be_bytes(b.get(..8).ok_or(bad.clone())?.try_into().expect("8"));
        let (last, rest) = match b.get(8) {
            Some(0) => (None, &b[9..]),
            Some(1) => {
                let p = b.get(9..9 + POSITION_LEN).ok_or(bad.clone())?;
                (Some(p.try_into().expect("12")), &b[9 + POSITION_LEN..])
            }
            _ => return Err(bad),
        };
        if rest.len() != 32 * size.count_ones() as usize {
            return Err(bad);
        }
        let edge = rest
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32"))
            .collect();
        Ok(SequencerState { size, last, edge })
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some(last) = it.next() else {
            return merkle::empty_root();
        };
        it.fold(*last, |right, left| merkle::node_hash(left, &right))
    }

    /// Appends a leaf; returns the perfect-subtree hashes it completes, `(level, index,
    /// hash)`, the leaf itself first.
    pub fn append(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let index = self.size;
        let mut made = vec![(0, index, leaf)];
        let mut h = leaf;
        let mut level = 0u32;
        let mut at = index;
        while at & 1 == 1 {
            let left = self.edge.pop().expect("a set bit has its subtree");
            h = merkle::node_hash(&left, &h);
            level += 1;
            at >>= 1;
            made.push((level, at, h));
        }
        self.edge.push(h);
        self.size += 1;
        made
    }
}

/// A checkpoint and the operator's signature, as stored and served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signature: Vec<u8>,
}

impl SignedCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let m = self.checkpoint.message();
        let mut out = Vec::with_capacity(m.len() + 64);
        out.extend_from_slice(&m);
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(b: &[u8]) -> Result<SignedCheckpoint, Corrupt> {
        let bad = Corrupt { what: "checkpoint" };
        let tag = cbdc_core::audit::CHECKPOINT_TAG.len();
        if b.len() != tag + 4 + 8 + 32 + 32 + 64 || &b[..tag] != cbdc_core::audit::CHECKPOINT_TAG {
            return Err(bad);
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8"));
        let mut at = tag;
        let ledger = cbdc_core::LedgerId(u32::from_be_bytes(b[at..at + 4].try_into().expect("4")));
        at += 4;
        let size = u64_at(at);
        at += 8;
        let root: Hash = b[at..at + 32].try_into().expect("32");
        at += 32;
        let checkpoint = Checkpoint {
            ledger,
            size,
            root,
            outstanding: Amount::from_fen(u64_at(at)),
            inbound: Amount::from_fen(u64_at(at + 8)),
            settled_out: Amount::from_fen(u64_at(at + 16)),
            timestamp_ms: u64_at(at + 24),
        };
        Ok(SignedCheckpoint {
            checkpoint,
            signature: b[at + 32..].to_vec(),
        })
    }
}

/// What one sequencer step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequenced {
    /// Leaves appended.
    pub appended: u64,
    /// The log's size afterwards.
    pub size: u64,
    /// The log was caught up, so a checkpoint was signed (if anything changed).
    pub caught_up: bool,
}

fn tx_corrupt(e: Corrupt) -> TxError<LedgerError> {
    TxError::Abort(e.into())
}

impl Ledger {
    /// One sequencer step: appends up to [`SEQUENCE_BATCH_MAX`] log entries to the Merkle
    /// tree; if that reached the end of the log, signs a new checkpoint when the size or the
    /// totals changed.
    pub async fn sequence(&self) -> Result<Sequenced, LedgerError> {
        let me = self.clone();
        let out = self
            .db()
            .run(move |tx| {
                let me = me.clone();
                Box::pin(async move { me.sequence_in(tx).await })
            })
            .await?;
        Ok(out)
    }

    async fn sequence_in(&self, tx: &mut Transaction) -> Result<Sequenced, TxError<LedgerError>> {
        let l = self.layout();
        let sk = l.sequencer();
        let mut state = match tx.get(&sk).await? {
            None => SequencerState::default(),
            Some(v) => SequencerState::decode(&v).map_err(tx_corrupt)?,
        };
        let prefix = l.log_prefix();
        let end = cbdc_store::keys::strinc(&prefix).expect("prefix has a non-0xff byte");
        let begin = match &state.last {
            None => prefix.clone(),
            Some(p) => {
                let mut k = prefix.clone();
                k.extend_from_slice(p);
                k.push(0);
                k
            }
        };
        let rows = tx
            .get_range(&begin, &end, RangeOptions::snapshot(SEQUENCE_BATCH_MAX))
            .await?;
        let appended = rows.len() as u64;
        for (k, v) in &rows {
            let position: [u8; POSITION_LEN] = k
                .get(prefix.len()..)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| tx_corrupt(Corrupt { what: "log key" }))?;
            let txid: [u8; 32] = v
                .as_slice()
                .try_into()
                .map_err(|_| tx_corrupt(Corrupt { what: "log entry" }))?;
            let leaf = merkle::leaf_hash(&cbdc_core::audit::leaf_data(self.id(), &position, &txid));
            let index = state.size;
            tx.set(l.leaf_index(&Txid(txid)), index.to_be_bytes())?;
            let made = state.append(leaf);
            let mut hashes = Vec::with_capacity(32 * made.len());
            for (_, _, h) in made {
                hashes.extend_from_slice(&h);
            }
            tx.set(l.nodes_of_leaf(index), hashes)?;
            state.last = Some(position);
        }
        if appended > 0 {
            tx.set(&sk, state.encode())?;
        }
        let caught_up = rows.len() < SEQUENCE_BATCH_MAX;
        if caught_up {
            let inbound = counter_amount(tx.get_snapshot(&l.inbound_total()).await?.as_deref())
                .map_err(tx_corrupt)?;
            let settled_out =
                counter_amount(tx.get_snapshot(&l.settled_out_total()).await?.as_deref())
                    .map_err(tx_corrupt)?;
            let previous = match tx.get(&l.checkpoint()).await? {
                None => None,
                Some(v) => Some(SignedCheckpoint::decode(&v).map_err(tx_corrupt)?),
            };
            let changed = previous.as_ref().is_none_or(|p| {
                p.checkpoint.size != state.size
                    || p.checkpoint.inbound != inbound
                    || p.checkpoint.settled_out != settled_out
            });
            if changed {
                let outstanding = inbound.checked_sub(settled_out).ok_or_else(|| {
                    tx_corrupt(Corrupt {
                        what: "totals (settled out exceeds inbound)",
                    })
                })?;
                let checkpoint = Checkpoint {
                    ledger: self.id(),
                    size: state.size,
                    root: state.root(),
                    outstanding,
                    inbound,
                    settled_out,
                    timestamp_ms: self.now_ms(),
                };
                let signature = self.operator().sign(&checkpoint.message()).to_vec();
                let signed = SignedCheckpoint {
                    checkpoint,
                    signature,
                };
                tx.set(l.checkpoint(), signed.encode())?;
            }
        }
        Ok(Sequenced {
            appended,
            size: state.size,
            caught_up,
        })
    }

    /// Sequences until the log is caught up (a bounded number of steps).
    pub async fn sequence_all(&self) -> Result<Sequenced, LedgerError> {
        let mut total = 0;
        for _ in 0..1024 {
            let s = self.sequence().await?;
            total += s.appended;
            if s.caught_up {
                return Ok(Sequenced {
                    appended: total,
                    ..s
                });
            }
        }
        Err(LedgerError::Unavailable(
            "the audit log is far behind; still sequencing".into(),
        ))
    }

    /// The latest signed checkpoint, if the sequencer has signed one.
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        let mut tx = self.db().create_transaction()?;
        Ok(match tx.get_snapshot(&self.layout().checkpoint()).await? {
            None => None,
            Some(v) => Some(SignedCheckpoint::decode(&v)?),
        })
    }

    /// Reads the perfect-subtree hashes `want` in one snapshot. Subtree `(level, index)` was
    /// completed by its last leaf, `((index + 1) << level) - 1`, and is stored with that
    /// leaf's hashes at position `level`.
    async fn nodes(
        &self,
        want: BTreeSet<(u32, u64)>,
    ) -> Result<BTreeMap<(u32, u64), Hash>, LedgerError> {
        let missing = || Corrupt {
            what: "audit log (missing node)",
        };
        let mut tx = self.db().create_transaction()?;
        let mut out = BTreeMap::new();
        let mut by_leaf: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (level, index) in want {
            // The subtree's last leaf; a level or index past the tree's size cannot exist.
            let leaf = index
                .checked_add(1)
                .filter(|n| level < 64 && n.leading_zeros() >= level)
                .map(|n| (n << level) - 1)
                .ok_or_else(missing)?;
            let hashes = match by_leaf.entry(leaf) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(
                    tx.get_snapshot(&self.layout().nodes_of_leaf(leaf))
                        .await?
                        .ok_or_else(missing)?,
                ),
            };
            let at = 32 * level as usize;
            let h: Hash = hashes
                .get(at..at + 32)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(missing)?;
            out.insert((level, index), h);
        }
        Ok(out)
    }

    /// Runs a proof builder twice: once to learn which nodes it needs (the set does not
    /// depend on their values), once over the nodes read from the store.
    async fn with_nodes<T>(
        &self,
        build: impl Fn(&mut dyn FnMut(u32, u64) -> Hash) -> Result<T, merkle::MerkleError>,
    ) -> Result<T, LedgerError> {
        let mut want = BTreeSet::new();
        build(&mut |level, index| {
            want.insert((level, index));
            [0; 32]
        })
        .map_err(|e| LedgerError::Internal(format!("audit log: {e}")))?;
        let nodes = self.nodes(want).await?;
        build(&mut |level, index| nodes[&(level, index)])
            .map_err(|e| LedgerError::Internal(format!("audit log: {e}")))
    }

    /// A receipt for `txid` against the latest checkpoint.
    pub async fn receipt(&self, txid: &Txid) -> Result<Receipt, LedgerError> {
        let mut tx = self.db().create_transaction()?;
        let record = tx
            .get_snapshot(&self.layout().transfer(txid))
            .await?
            .ok_or_else(|| LedgerError::NotFound(format!("txid: {txid} is not committed here")))?;
        let record = TransferRecord::decode(&record)?;
        let not_yet = || {
            LedgerError::FailedPrecondition(format!(
                "txid: {txid} is committed but not yet in a signed checkpoint; try again shortly"
            ))
        };
        let index = match tx.get_snapshot(&self.layout().leaf_index(txid)).await? {
            None => return Err(not_yet()),
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Corrupt { what: "leaf index" })?,
            ),
        };
        let signed = self.checkpoint().await?.ok_or_else(not_yet)?;
        if index >= signed.checkpoint.size {
            return Err(not_yet());
        }
        let size = signed.checkpoint.size;
        let proof = self
            .with_nodes(|node| merkle::inclusion_proof(index, size, &mut |l, i| node(l, i)))
            .await?;
        let transfer = Transfer::decode(record.body.clone(), Ledger::record_witnesses(&record))?;
        Ok(Receipt {
            transfer,
            position: record.position,
            index,
            proof,
            checkpoint: signed.checkpoint,
            checkpoint_signature: signed.signature,
        })
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new`.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, LedgerError> {
        self.with_nodes(|node| merkle::consistency_proof(old, new, &mut |l, i| node(l, i)))
            .await
    }
}

/// Keeps the sequencer running: a step whenever commits happened, at most every `interval`.
pub async fn run_sequencer(ledger: Ledger, interval: std::time::Duration, shutdown: Shutdown) {
    loop {
        match ledger.sequence().await {
            Ok(s) if !s.caught_up => continue,
            Ok(s) => ledger.metrics().audit_log_size.set(s.size as i64),
            Err(e) => tracing::warn!(error = %e, "audit-log sequencer step failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => merkle::empty_root(),
            1 => leaves[0],
            n => {
                let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
                merkle::node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_right_edge_gives_the_rfc_root_and_every_stored_node() {
        let leaves: Vec<Hash> = (0u32..70)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut state = SequencerState::default();
        let mut nodes = BTreeMap::new();
        for (n, leaf) in leaves.iter().enumerate() {
            for (level, index, h) in state.append(*leaf) {
                nodes.insert((level, index), h);
            }
            let size = n as u64 + 1;
            let want = mth(&leaves[..n + 1]);
            assert_eq!(state.root(), want, "size {size}");
            let from_nodes = merkle::root(size, &mut |level, index| nodes[&(level, index)]);
            assert_eq!(state.root(), from_nodes, "size {size}");
            let decoded = SequencerState::decode(&state.encode()).expect("decodes");
            assert_eq!(decoded, state);
        }
    }
}
