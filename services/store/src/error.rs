//! Store errors: infrastructure failures, kept apart from a closure's business errors.

use crate::limits;

/// What can go wrong in the store. Retryable errors are retried by [`crate::Database::run`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key is {len} bytes; FoundationDB's limit is {max}", max = limits::KEY_BYTES_MAX)]
    KeyTooLarge { len: usize },
    #[error("value is {len} bytes; FoundationDB's limit is {max}", max = limits::VALUE_BYTES_MAX)]
    ValueTooLarge { len: usize },
    #[error("transaction writes {bytes} bytes; FoundationDB's limit is {max}", max = limits::TRANSACTION_BYTES_MAX)]
    TransactionTooLarge { bytes: usize },
    #[error("transaction is older than 5 seconds (transaction_too_old)")]
    TransactionTooOld,
    #[error("transaction conflicted with another that committed first (not_committed)")]
    NotCommitted,
    #[error("commit outcome unknown: it may or may not have been applied (commit_unknown_result)")]
    CommitUnknownResult,
    #[error("begin key sorts after end key in a range")]
    InvertedRange,
    #[error(
        "versionstamp offset {offset} does not leave 10 bytes inside a {len}-byte key or value"
    )]
    VersionstampOffset { offset: u32, len: usize },
    #[error("fdb_cluster_file: this build has no FoundationDB support (build with --features fdb)")]
    NoFdbSupport,
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetryLimit {
        attempts: u32,
        last: Box<StoreError>,
    },
    #[error("the transaction was already committed")]
    UsedAfterCommit,
    #[error("the store is shut down")]
    Closed,
    #[error(
        "the store stopped after a failed write or fsync ({0}); nothing more is committed until the service restarts and recovers from its journal"
    )]
    Failed(String),
    #[error("storage I/O: {0}")]
    Io(String),
    #[error("FoundationDB error {code}: {message}")]
    Fdb {
        code: i32,
        message: String,
        retryable: bool,
        maybe_committed: bool,
    },
}

impl StoreError {
    /// Whether running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::NotCommitted
            | StoreError::TransactionTooOld
            | StoreError::CommitUnknownResult => true,
            StoreError::Fdb { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the failed commit may nonetheless have been applied.
    pub fn is_maybe_committed(&self) -> bool {
        match self {
            StoreError::CommitUnknownResult => true,
            StoreError::Fdb {
                maybe_committed, ..
            } => *maybe_committed,
            _ => false,
        }
    }
}

/// A transaction closure's failure: its own business error (`Abort`, never retried, nothing
/// written) or a store error (retried when retryable).
#[derive(Debug, thiserror::Error)]
pub enum TxError<E> {
    #[error("aborted: {0}")]
    Abort(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}
