//! The FoundationDB backend: the same API on a FoundationDB cluster, via the `foundationdb`
//! crate (client API 7.3). Conflict detection, durability, versionstamps and read-your-writes
//! are FoundationDB's own; this module maps types and errors.

use std::path::Path;
use std::sync::OnceLock;

use foundationdb::options::{MutationType, StreamingMode};
use foundationdb::{FdbError, KeySelector, RangeOption, TransactionCommitError};

use crate::error::StoreError;
use crate::transaction::{RangeOptions, Versionstamp};

/// The client network thread: started once per process, on first use, and never stopped
/// (FoundationDB cannot restart it within a process).
static NETWORK: OnceLock<Result<foundationdb::api::NetworkAutoStop, StoreError>> = OnceLock::new();

fn fdb_error(e: FdbError) -> StoreError {
    StoreError::Fdb {
        code: e.code(),
        message: e.message().to_owned(),
        retryable: e.is_retryable(),
        maybe_committed: e.is_maybe_committed(),
    }
}

pub(crate) struct FdbBackend {
    db: foundationdb::Database,
}

impl FdbBackend {
    pub(crate) fn open(cluster_file: &Path) -> Result<FdbBackend, StoreError> {
        let network = NETWORK.get_or_init(|| {
            let builder = foundationdb::api::FdbApiBuilder::default()
                .build()
                .map_err(fdb_error)?;
            // SAFETY: called once per process (guarded by the OnceLock), as the crate requires.
            unsafe { builder.boot() }.map_err(fdb_error)
        });
        if let Err(e) = network {
            return Err(e.clone());
        }
        let path = cluster_file.to_str().ok_or_else(|| {
            StoreError::Io(format!("cluster file path {cluster_file:?} is not UTF-8"))
        })?;
        let db = foundationdb::Database::from_path(path).map_err(fdb_error)?;
        Ok(FdbBackend { db })
    }

    pub(crate) fn begin(&self) -> Result<FdbTx, StoreError> {
        Ok(FdbTx {
            trx: Some(self.db.create_trx().map_err(fdb_error)?),
            failed_commit: None,
            wrote: false,
        })
    }
}

pub(crate) struct FdbTx {
    trx: Option<foundationdb::Transaction>,
    /// A commit that failed, kept so `on_error` can run FoundationDB's backoff on it.
    failed_commit: Option<TransactionCommitError>,
    wrote: bool,
}

impl FdbTx {
    fn trx(&self) -> Result<&foundationdb::Transaction, StoreError> {
        self.trx.as_ref().ok_or(StoreError::UsedAfterCommit)
    }

    pub(crate) async fn get(
        &mut self,
        key: &[u8],
        snapshot: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.trx()?.get(key, snapshot).await.map_err(fdb_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    pub(crate) async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let trx = self.trx()?;
        let mut range = RangeOption {
            begin: KeySelector::first_greater_or_equal(begin.to_vec()),
            end: KeySelector::first_greater_or_equal(end.to_vec()),
            limit: Some(options.limit),
            reverse: options.reverse,
            mode: StreamingMode::WantAll,
            ..RangeOption::default()
        };
        let mut out = Vec::new();
        let mut iteration = 1;
        loop {
            let values = trx
                .get_range(&range, iteration, options.snapshot)
                .await
                .map_err(fdb_error)?;
            out.extend(
                values
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
            );
            match range.next_range(&values) {
                Some(next) if out.len() < options.limit => range = next,
                _ => break,
            }
            iteration += 1;
        }
        out.truncate(options.limit);
        Ok(out)
    }

    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        if let Some(trx) = &self.trx {
            trx.set(key, value);
            self.wrote = true;
        }
    }

    pub(crate) fn clear(&mut self, key: &[u8]) {
        if let Some(trx) = &self.trx {
            trx.clear(key);
            self.wrote = true;
        }
    }

    pub(crate) fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if let Some(trx) = &self.trx {
            trx.clear_range(begin, end);
            self.wrote = true;
        }
    }

    pub(crate) fn atomic_add(&mut self, key: &[u8], delta: i64) {
        if let Some(trx) = &self.trx {
            trx.atomic_op(key, &delta.to_le_bytes(), MutationType::Add);
            self.wrote = true;
        }
    }

    pub(crate) fn set_versionstamped(
        &mut self,
        key: &[u8],
        value: &[u8],
        offset: u32,
        in_key: bool,
    ) {
        let Some(trx) = &self.trx else { return };
        // API 520+: the 4-byte little-endian offset of the placeholder follows the operand.
        let with_offset = |bytes: &[u8]| {
            let mut b = bytes.to_vec();
            b.extend_from_slice(&offset.to_le_bytes());
            b
        };
        if in_key {
            trx.atomic_op(&with_offset(key), value, MutationType::SetVersionstampedKey);
        } else {
            trx.atomic_op(
                key,
                &with_offset(value),
                MutationType::SetVersionstampedValue,
            );
        }
        self.wrote = true;
    }

    pub(crate) async fn commit(&mut self) -> Result<Versionstamp, StoreError> {
        let trx = self.trx.take().ok_or(StoreError::UsedAfterCommit)?;
        if !self.wrote {
            let version = trx.get_read_version().await.map_err(fdb_error)?;
            self.trx = Some(trx);
            return Ok(Versionstamp::from_parts(version as u64, 0));
        }
        let stamp = trx.get_versionstamp();
        match trx.commit().await {
            Ok(committed) => {
                let bytes = stamp.await.map_err(fdb_error)?;
                self.trx = Some(committed.reset());
                let bytes: [u8; 10] = bytes[..].try_into().map_err(|_| {
                    StoreError::Io("FoundationDB returned a malformed versionstamp".into())
                })?;
                Ok(Versionstamp(bytes))
            }
            Err(failed) => {
                let error = fdb_error(*failed);
                self.failed_commit = Some(failed);
                Err(match error {
                    StoreError::Fdb { code: 1020, .. } => StoreError::NotCommitted,
                    StoreError::Fdb { code: 1021, .. } => StoreError::CommitUnknownResult,
                    StoreError::Fdb { code: 1007, .. } => StoreError::TransactionTooOld,
                    other => other,
                })
            }
        }
    }

    /// FoundationDB's own retry handling: backoff, then a reset transaction.
    pub(crate) async fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        if let Some(failed) = self.failed_commit.take() {
            self.trx = Some(failed.on_error().await.map_err(fdb_error)?);
        } else {
            let trx = self.trx.take().ok_or(StoreError::UsedAfterCommit)?;
            let code = match error {
                StoreError::Fdb { code, .. } => code,
                StoreError::NotCommitted => 1020,
                StoreError::CommitUnknownResult => 1021,
                _ => 1007, // transaction_too_old: retryable, resets the transaction
            };
            self.trx = Some(
                trx.on_error(FdbError::from_code(code))
                    .await
                    .map_err(fdb_error)?,
            );
        }
        self.wrote = false;
        Ok(())
    }
}
