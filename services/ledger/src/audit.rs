//! The ledger's audit log: a sequencer that gives every committed transfer a dense leaf
//! index in an RFC 6962 Merkle tree, in commit order, and signs checkpoints over it; and the
//! receipts and consistency proofs built from the stored tree.
//!
//! The commit path writes only the commit log: one versionstamped key per store transaction,
//! `("l",) ‖ position`, holding the txids it committed in order (a commit of more than
//! [`crate::layout::LOG_ENTRY_TXIDS_MAX`] writes several entries). The sequencer follows that
//! log in its own store transactions: it reads the state key with a conflict (so two
//! sequencers, say on two replicas, never both advance), reads the log after the last
//! position it sequenced — a commit always gets a versionstamp above every version already
//! readable, so nothing can appear behind it — and gives each txid the next leaf. It stores,
//! per commit, the leaf of its first transfer (`("mx", stamp)`; the others follow in order),
//! and per chunk of up to [`crate::layout::NODE_CHUNK_LEAVES`] consecutive leaves one key
//! `("mn", first)` with every leaf's completed perfect-subtree hashes (its own hash first,
//! then one per level it closes). Keys per commit and per chunk rather than per transfer keep
//! the audit log's share of the writes small. It keeps the tree's right edge (one hash per set
//! bit of the size) in its state, so appending needs no reads of the tree and the root is a
//! fold of the edge.
//!
//! When the sequencer has caught up, it reads the running totals in the same transaction
//! and signs a checkpoint, so a checkpoint's figures are those of exactly the log it covers.

use cbdc_core::audit::{Checkpoint, Receipt};
use cbdc_core::merkle::{self, Hash};
use cbdc_core::unspent::{DELTA_BYTES, Delta};
use cbdc_core::{Amount, Transfer, Txid};
use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{RangeOptions, Transaction, TxError};
use std::collections::{BTreeMap, BTreeSet};

use crate::layout::{NODE_CHUNK_LEAVES, POSITION_LEN, STAMP_LEN};
use crate::ledger::{Ledger, ServiceError, position};
use crate::records::{Corrupt, TransferRecord, counter_amount};

/// Log entries (commits) read by one sequencer step, at most: each holds up to
/// [`crate::layout::LOG_ENTRY_TXIDS_MAX`] txids, so a step reads at most 16 MiB of log.
pub const SEQUENCE_BATCH_MAX: usize = 512;
/// Leaves one sequencer step appends before it stops taking more log entries (it finishes
/// the entry it is in, so a step appends fewer than this plus
/// [`crate::layout::LOG_ENTRY_TXIDS_MAX`]).
pub const SEQUENCE_LEAVES_MAX: u64 = 4096;

/// The sequencer's state: leaves so far, what their transfers did to the unspent outputs,
/// the last log position sequenced, the right edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequencerState {
    pub size: u64,
    /// The deltas of the first `size` leaves, folded: value created, value spent and the set
    /// hash of the unspent outputs.
    pub unspent: Delta,
    pub last: Option<[u8; POSITION_LEN]>,
    /// Hashes of the perfect subtrees making up the tree, largest first (one per set bit of
    /// `size`).
    pub edge: Vec<Hash>,
}

impl SequencerState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + DELTA_BYTES + 1 + POSITION_LEN + 32 * self.edge.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.unspent.encode());
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
        let unspent = b
            .get(8..8 + DELTA_BYTES)
            .and_then(Delta::decode)
            .ok_or(bad.clone())?;
        let b = &b[8 + DELTA_BYTES..];
        let (last, rest) = match b.first() {
            Some(0) => (None, &b[1..]),
            Some(1) => {
                let p = b.get(1..1 + POSITION_LEN).ok_or(bad.clone())?;
                (Some(p.try_into().expect("12")), &b[1 + POSITION_LEN..])
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
        Ok(SequencerState {
            size,
            unspent,
            last,
            edge,
        })
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
        let n = cbdc_core::audit::CHECKPOINT_MESSAGE_BYTES;
        if b.len() != n + 64 {
            return Err(bad);
        }
        let checkpoint = Checkpoint::from_message(&b[..n]).ok_or(bad)?;
        Ok(SignedCheckpoint {
            checkpoint,
            signature: b[n..].to_vec(),
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

fn tx_corrupt(e: Corrupt) -> TxError<ServiceError> {
    TxError::Abort(e.into())
}

/// Subtree hashes completed by leaves `0..n`: each leaf `i` completes
/// `trailing_ones(i) + 1` of them, which sum to `2n − popcount(n)`.
fn nodes_before(n: u64) -> u64 {
    2 * n - u64::from(n.count_ones())
}

/// Where, in the chunk starting at leaf `first` and `len` bytes long, the hash of the
/// level-`level` subtree completed by leaf `leaf` is; `None` if the chunk does not hold it.
fn node_offset(first: u64, leaf: u64, level: u32, len: usize) -> Option<(u64, usize)> {
    let hashes = nodes_before(leaf).checked_sub(nodes_before(first))? + u64::from(level);
    let at = usize::try_from(hashes.checked_mul(32)?.checked_add(8)?).ok()?;
    (leaf >= first && at.checked_add(32)? <= len).then_some((first, at))
}

impl Ledger {
    /// One sequencer step: appends the transfers of up to [`SEQUENCE_BATCH_MAX`] log entries
    /// (stopping after the entry that reaches [`SEQUENCE_LEAVES_MAX`] leaves) to the Merkle
    /// tree; if that reached the end of the log, signs a new checkpoint when the size or the
    /// totals changed.
    pub async fn sequence(&self) -> Result<Sequenced, ServiceError> {
        self.transact(move |me, tx| Box::pin(async move { me.sequence_in(tx).await }))
            .await
    }

    async fn sequence_in(&self, tx: &mut Transaction) -> Result<Sequenced, TxError<ServiceError>> {
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
        let log_entry = || tx_corrupt(Corrupt { what: "log entry" });
        let mut appended = 0u64;
        let mut read_all = true;
        // The tree's new leaves go into chunks of at most NODE_CHUNK_LEAVES leaves, one key
        // each: `first` then every leaf's completed-subtree hashes.
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_first = state.size;
        for (k, v) in &rows {
            if appended >= SEQUENCE_LEAVES_MAX {
                read_all = false;
                break;
            }
            let first: [u8; POSITION_LEN] =
                k.get(prefix.len()..)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| tx_corrupt(Corrupt { what: "log key" }))?;
            if v.len() <= DELTA_BYTES || !(v.len() - DELTA_BYTES).is_multiple_of(32) {
                return Err(log_entry());
            }
            let (delta, txids) = v.split_at(DELTA_BYTES);
            state
                .unspent
                .combine(&Delta::decode(delta).ok_or_else(log_entry)?);
            let stamp: [u8; STAMP_LEN] = first[..STAMP_LEN].try_into().expect("stamp");
            let first_order = u16::from_be_bytes(first[STAMP_LEN..].try_into().expect("order"));
            if first_order == 0 {
                // The commit's other transfers take the following leaves, in order.
                tx.set(l.first_leaf(&stamp), state.size.to_be_bytes())?;
            }
            for (i, txid) in txids.chunks_exact(32).enumerate() {
                let order = u16::try_from(i)
                    .ok()
                    .and_then(|i| first_order.checked_add(i))
                    .ok_or_else(log_entry)?;
                let txid: [u8; 32] = txid.try_into().expect("32 bytes");
                let leaf = merkle::leaf_hash(&cbdc_core::audit::leaf_data(
                    self.id(),
                    &position(stamp, order),
                    &txid,
                ));
                if chunk.is_empty() {
                    chunk_first = state.size;
                    chunk.extend_from_slice(&chunk_first.to_be_bytes());
                }
                for (_, _, h) in state.append(leaf) {
                    chunk.extend_from_slice(&h);
                }
                appended += 1;
                if state.size - chunk_first == NODE_CHUNK_LEAVES {
                    tx.set(l.node_chunk(chunk_first), std::mem::take(&mut chunk))?;
                }
            }
            state.last = Some(first);
        }
        if !chunk.is_empty() {
            tx.set(l.node_chunk(chunk_first), chunk)?;
        }
        if appended > 0 {
            tx.set(&sk, state.encode())?;
        }
        let caught_up = read_all && rows.len() < SEQUENCE_BATCH_MAX;
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
            let outbox = counter_amount(tx.get_snapshot(&l.outbox_total()).await?.as_deref())
                .map_err(tx_corrupt)?;
            let mut unspent = state
                .unspent
                .created
                .checked_sub(state.unspent.spent)
                .map(Amount::from_fen)
                .ok_or_else(|| {
                    tx_corrupt(Corrupt {
                        what: "unspent outputs (more spent than created)",
                    })
                })?;
            if self.settings().faults.checkpoint_sum_off_by_one {
                unspent = Amount::from_fen(unspent.fen() + 1); // planted
            }
            let unspent_set = state.unspent.set.digest();
            let changed = previous.as_ref().is_none_or(|p| {
                let c = &p.checkpoint;
                c.size != state.size
                    || c.inbound != inbound
                    || c.settled_out != settled_out
                    || c.unspent != unspent
                    || c.outbox != outbox
                    || c.unspent_set != unspent_set
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
                    unspent,
                    outbox,
                    unspent_set,
                };
                let signature = self.operator().sign(&checkpoint.message()).to_vec();
                let signed = SignedCheckpoint {
                    checkpoint,
                    signature,
                };
                // Every checkpoint is kept, for auditors replaying the log; the latest also
                // under its own key.
                tx.set(l.checkpoint_at(state.size), signed.encode())?;
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
    pub async fn sequence_all(&self) -> Result<Sequenced, ServiceError> {
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
        Err(ServiceError::Unavailable(
            "the audit log is far behind; still sequencing".into(),
        ))
    }

    /// The latest signed checkpoint, if the sequencer has signed one.
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, ServiceError> {
        let mut tx = self.db().create_transaction()?;
        Ok(match tx.get_snapshot(&self.layout().checkpoint()).await? {
            None => None,
            Some(v) => Some(SignedCheckpoint::decode(&v)?),
        })
    }

    /// The checkpoint signed at log size `size`, if one was.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, ServiceError> {
        let mut tx = self.db().create_transaction()?;
        Ok(
            match tx.get_snapshot(&self.layout().checkpoint_at(size)).await? {
                None => None,
                Some(v) => Some(SignedCheckpoint::decode(&v)?),
            },
        )
    }

    /// Reads the perfect-subtree hashes `want` in one snapshot. Subtree `(level, index)` was
    /// completed by its last leaf, `((index + 1) << level) - 1`, and is stored with that
    /// leaf's hashes in the chunk holding the leaf (the last chunk starting at or before it).
    async fn nodes(
        &self,
        want: BTreeSet<(u32, u64)>,
    ) -> Result<BTreeMap<(u32, u64), Hash>, ServiceError> {
        let missing = || Corrupt {
            what: "audit log (missing node)",
        };
        let mut tx = self.db().create_transaction()?;
        let mut out = BTreeMap::new();
        let mut chunks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (level, index) in want {
            // The subtree's last leaf; a level or index past the tree's size cannot exist.
            let leaf = index
                .checked_add(1)
                .filter(|n| level < 64 && n.leading_zeros() >= level)
                .map(|n| (n << level) - 1)
                .ok_or_else(missing)?;
            // A leaf completes subtrees of levels 0 to its number of trailing one bits.
            if level > leaf.trailing_ones() {
                return Err(missing().into());
            }
            let cached = chunks
                .range(..=leaf)
                .next_back()
                .and_then(|(first, bytes)| node_offset(*first, leaf, level, bytes.len()));
            let (first, at) = match cached {
                Some(found) => found,
                None => {
                    let (b, e) = self.layout().node_chunks_upto(leaf);
                    let options = RangeOptions {
                        limit: 1,
                        reverse: true,
                        snapshot: true,
                    };
                    let (_, bytes) = tx
                        .get_range(&b, &e, options)
                        .await?
                        .pop()
                        .ok_or_else(missing)?;
                    let first = bytes
                        .get(..8)
                        .map(|f| u64::from_be_bytes(f.try_into().expect("8")))
                        .ok_or_else(missing)?;
                    let found = node_offset(first, leaf, level, bytes.len()).ok_or_else(missing)?;
                    chunks.insert(first, bytes);
                    found
                }
            };
            let h: Hash = chunks[&first][at..at + 32]
                .try_into()
                .expect("node_offset checked the bounds");
            out.insert((level, index), h);
        }
        Ok(out)
    }

    /// Runs a proof builder twice: once to learn which nodes it needs (the set does not
    /// depend on their values), once over the nodes read from the store.
    async fn with_nodes<T>(
        &self,
        build: impl Fn(&mut dyn FnMut(u32, u64) -> Hash) -> Result<T, merkle::MerkleError>,
    ) -> Result<T, ServiceError> {
        let mut want = BTreeSet::new();
        build(&mut |level, index| {
            want.insert((level, index));
            [0; 32]
        })
        .map_err(|e| ServiceError::Internal(format!("audit log: {e}")))?;
        let nodes = self.nodes(want).await?;
        build(&mut |level, index| nodes[&(level, index)])
            .map_err(|e| ServiceError::Internal(format!("audit log: {e}")))
    }

    /// A receipt for `txid` against the latest checkpoint.
    pub async fn receipt(&self, txid: &Txid) -> Result<Receipt, ServiceError> {
        let mut tx = self.db().create_transaction()?;
        let record = tx
            .get_snapshot(&self.layout().transfer(txid))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("txid: {txid} is not committed here")))?;
        let record = TransferRecord::decode(&record)?;
        let not_yet = || {
            ServiceError::FailedPrecondition(format!(
                "txid: {txid} is committed but not yet in a signed checkpoint; try again shortly"
            ))
        };
        // The commit's first transfer has the leaf stored under its versionstamp; the others
        // follow in their order within the commit.
        let stamp: [u8; STAMP_LEN] = record.position[..STAMP_LEN]
            .try_into()
            .expect("a position starts with its stamp");
        let order = u16::from_be_bytes(
            record.position[STAMP_LEN..]
                .try_into()
                .expect("a position ends with its order"),
        );
        let index = match tx.get_snapshot(&self.layout().first_leaf(&stamp)).await? {
            None => return Err(not_yet()),
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Corrupt { what: "leaf index" })?,
            )
            .checked_add(u64::from(order))
            .ok_or(Corrupt { what: "leaf index" })?,
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
            txid: transfer.txid(),
            transfer: Some(transfer),
            position: record.position,
            index,
            proof,
            checkpoint: signed.checkpoint,
            checkpoint_signature: signed.signature,
        })
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new`.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, ServiceError> {
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

    /// Chunks laid out as the sequencer writes them (every leaf's completed-subtree hashes in
    /// order) are read back at the offsets `node_offset` computes, for chunks starting at
    /// any leaf; a leaf outside a chunk is not found in it.
    #[test]
    fn node_offsets_match_the_chunk_layout() {
        let mut state = SequencerState::default();
        let mut made = Vec::new();
        for i in 0u32..300 {
            made.push(state.append(merkle::leaf_hash(&i.to_be_bytes())));
        }
        for first in [0u64, 1, 2, 3, 7, 8, 100, 255, 256] {
            for end in [first + 1, first + 5, first + 44, 300] {
                let end = end.min(300);
                let mut chunk = first.to_be_bytes().to_vec();
                for m in &made[first as usize..end as usize] {
                    for (_, _, h) in m {
                        chunk.extend_from_slice(h);
                    }
                }
                for leaf in first..end {
                    for (level, _, h) in &made[leaf as usize] {
                        let (f, at) = node_offset(first, leaf, *level, chunk.len())
                            .expect("the chunk holds it");
                        assert_eq!(f, first);
                        assert_eq!(&chunk[at..at + 32], h, "leaf {leaf} level {level}");
                    }
                }
                assert_eq!(node_offset(first, end, 0, chunk.len()), None);
                if first > 0 {
                    assert_eq!(node_offset(first, first - 1, 0, chunk.len()), None);
                }
            }
        }
    }
}
