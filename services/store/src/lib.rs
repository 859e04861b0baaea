//! `cbdc-store`: the only crate that knows a storage backend exists.
//!
//! The API has FoundationDB's semantics: ordered byte keys, serialisable optimistic
//! transactions driven by a bounded retry loop ([`Database::run`]), snapshot and conflicting
//! reads, range reads, atomic add, versionstamped keys and values, read-your-writes, and
//! FoundationDB's size and time limits, enforced with the same errors on every backend.
//!
//! Backends:
//! - [`Database::open_embedded`]: a durable single-machine store (fjall underneath) with a
//!   FoundationDB-style resolver for conflicts and group commit (one fsync per batch).
//! - `Database::open_fdb` (feature `fdb`): FoundationDB itself, through the `foundationdb` crate.

mod embedded;
mod error;
#[cfg(feature = "fdb")]
mod fdb;
pub mod keys;
mod metrics;
mod transaction;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use embedded::{EmbeddedOptions, StoreStats};
pub use error::{StoreError, TxError};
pub use metrics::StoreCollector;

/// The value of a counter written by [`Transaction::atomic_add`]: a 64-bit little-endian
/// integer, shorter values zero-extended, an absent key 0 (FoundationDB's `ADD` semantics).
pub fn counter(value: Option<&[u8]>) -> i64 {
    let mut le = [0u8; 8];
    if let Some(v) = value {
        let n = v.len().min(8);
        le[..n].copy_from_slice(&v[..n]);
    }
    i64::from_le_bytes(le)
}
pub use transaction::{Bytes, RangeOptions, Transaction, Versionstamp};

/// FoundationDB's limits, enforced on every backend.
pub mod limits {
    use std::time::Duration;
    pub const KEY_BYTES_MAX: usize = 10_000;
    pub const VALUE_BYTES_MAX: usize = 100_000;
    pub const TRANSACTION_BYTES_MAX: usize = 10_000_000;
    pub const TRANSACTION_DURATION_MAX: Duration = Duration::from_secs(5);
    /// Rows one range read returns at most, whatever limit the caller asks for.
    pub const RANGE_ROWS_MAX: usize = 10_000;
}

/// A boxed future, as closures given to [`Database::run`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Bounds of the retry loop of [`Database::run`].
#[derive(Clone, Copy, Debug)]
pub struct RetryOptions {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Total time across attempts.
    pub timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 100,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A handle to a store. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    backend: Arc<Backend>,
    retry: RetryOptions,
}

pub(crate) enum Backend {
    Embedded(embedded::Engine),
    #[cfg(feature = "fdb")]
    Fdb(fdb::FdbBackend),
}

impl Database {
    /// Opens (creating if needed) the embedded durable store in directory `dir`.
    pub fn open_embedded(dir: &Path, options: EmbeddedOptions) -> Result<Database, StoreError> {
        Ok(Database {
            backend: Arc::new(Backend::Embedded(embedded::Engine::open(dir, options)?)),
            retry: RetryOptions::default(),
        })
    }

    /// Connects to FoundationDB through `cluster_file`.
    ///
    /// The FoundationDB client network is started once per process and stays up until exit.
    #[cfg(feature = "fdb")]
    pub fn open_fdb(cluster_file: &Path) -> Result<Database, StoreError> {
        Ok(Database {
            backend: Arc::new(Backend::Fdb(fdb::FdbBackend::open(cluster_file)?)),
            retry: RetryOptions::default(),
        })
    }

    /// What a service's configuration asks for: FoundationDB through `fdb_cluster_file` if
    /// one is given (an error naming the setting if this build lacks the `fdb` feature),
    /// else the embedded store in `data_dir` with default options.
    pub fn open_configured(
        data_dir: &Path,
        fdb_cluster_file: Option<&Path>,
    ) -> Result<Database, StoreError> {
        Database::open_configured_with(data_dir, fdb_cluster_file, EmbeddedOptions::default())
    }

    /// [`Database::open_configured`], with the embedded store's `options` (FoundationDB
    /// batches commits at its own proxies).
    pub fn open_configured_with(
        data_dir: &Path,
        fdb_cluster_file: Option<&Path>,
        options: EmbeddedOptions,
    ) -> Result<Database, StoreError> {
        match fdb_cluster_file {
            #[cfg(feature = "fdb")]
            Some(cluster) => {
                let _ = options;
                Database::open_fdb(cluster)
            }
            #[cfg(not(feature = "fdb"))]
            Some(_) => Err(StoreError::NoFdbSupport),
            None => Database::open_embedded(data_dir, options),
        }
    }

    pub fn with_retry(mut self, retry: RetryOptions) -> Database {
        self.retry = retry;
        self
    }

    /// Which backend this is: "embedded" or "foundationdb".
    pub fn backend_name(&self) -> &'static str {
        match &*self.backend {
            Backend::Embedded(_) => "embedded",
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => "foundationdb",
        }
    }

    /// Committer counters (embedded backend only).
    pub fn stats(&self) -> Option<StoreStats> {
        match &*self.backend {
            Backend::Embedded(engine) => Some(engine.stats()),
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => None,
        }
    }

    /// A new transaction at the latest committed version.
    pub fn create_transaction(&self) -> Result<Transaction, StoreError> {
        Transaction::begin(&self.backend)
    }

    /// Runs `f` in a transaction and commits it, retrying on conflicts and other retryable
    /// errors up to [`RetryOptions`]. `f` may run more than once, and a commit may have
    /// succeeded even when it reports [`StoreError::CommitUnknownResult`]: write `f` so that
    /// running it twice is safe (see [`Database::run_idempotent`]).
    /// A closure returning [`TxError::Abort`] ends the loop and writes nothing.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, TxError<E>>
    where
        F: for<'t> FnMut(&'t mut Transaction) -> BoxFuture<'t, Result<T, TxError<E>>>,
    {
        self.run_stamped(f).await.map(|(value, _)| value)
    }

    /// [`Database::run`], also returning the commit's versionstamp (for a transaction that
    /// wrote nothing, a stamp at its read version).
    pub async fn run_stamped<T, E, F>(&self, mut f: F) -> Result<(T, Versionstamp), TxError<E>>
    where
        F: for<'t> FnMut(&'t mut Transaction) -> BoxFuture<'t, Result<T, TxError<E>>>,
    {
        let started = Instant::now();
        let mut tx = self.create_transaction().map_err(TxError::Store)?;
        let mut attempt = 0u32;
        loop {
            let outcome = f(&mut tx).await;
            if let Some(done) = self
                .conclude(&mut tx, outcome, &mut attempt, started)
                .await?
            {
                return Ok(done);
            }
        }
    }

    /// Like [`Database::run`], but the work is done at most once per `id_key`, even across
    /// "maybe committed" retries: inside each attempt it reads `id_key`; if present, the stored
    /// result is returned without running `f`; otherwise `f` runs and its result bytes are
    /// written at `id_key` in the same commit. Returns `(result, first_time)`.
    pub async fn run_idempotent<E, F>(
        &self,
        id_key: &[u8],
        mut f: F,
    ) -> Result<(Vec<u8>, bool), TxError<E>>
    where
        F: for<'t> FnMut(&'t mut Transaction) -> BoxFuture<'t, Result<Vec<u8>, TxError<E>>>,
    {
        let started = Instant::now();
        let mut tx = self.create_transaction().map_err(TxError::Store)?;
        let mut attempt = 0u32;
        loop {
            let outcome = match tx.get(id_key).await {
                Err(e) => Err(TxError::Store(e)),
                Ok(Some(stored)) => return Ok((stored, false)),
                Ok(None) => match f(&mut tx).await {
                    Ok(result) => tx
                        .set(id_key, &result)
                        .map(|()| result)
                        .map_err(TxError::Store),
                    Err(e) => Err(e),
                },
            };
            if let Some((result, _)) = self
                .conclude(&mut tx, outcome, &mut attempt, started)
                .await?
            {
                return Ok((result, true));
            }
        }
    }

    /// Ends one attempt of a retry loop: commits its value (`Some`, with the commit's
    /// versionstamp), or, after a retryable error, resets `tx` for the next attempt (`None`);
    /// an abort, a permanent error or the last attempt's error is returned.
    async fn conclude<T, E>(
        &self,
        tx: &mut Transaction,
        outcome: Result<T, TxError<E>>,
        attempt: &mut u32,
        started: Instant,
    ) -> Result<Option<(T, Versionstamp)>, TxError<E>> {
        let error = match outcome {
            Ok(value) => match tx.commit_in_place().await {
                Ok(stamp) => return Ok(Some((value, stamp))),
                Err(e) => e,
            },
            Err(TxError::Abort(e)) => return Err(TxError::Abort(e)),
            Err(TxError::Store(e)) => e,
        };
        self.retry_or_fail(tx, error, attempt, started)
            .await
            .map_err(TxError::Store)?;
        Ok(None)
    }

    /// Decides whether to retry after `error`; if so, resets `tx` (with backoff).
    async fn retry_or_fail(
        &self,
        tx: &mut Transaction,
        error: StoreError,
        attempt: &mut u32,
        started: Instant,
    ) -> Result<(), StoreError> {
        if !error.is_retryable() {
            return Err(error);
        }
        if *attempt >= self.retry.max_retries || started.elapsed() >= self.retry.timeout {
            return Err(StoreError::RetryLimit {
                attempts: *attempt + 1,
                last: Box::new(error),
            });
        }
        *attempt += 1;
        tx.on_error(error, *attempt).await
    }
}
