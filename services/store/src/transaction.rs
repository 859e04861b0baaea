//! The transaction handle: one API, limits checked here for every backend.

use std::sync::Arc;
use std::time::Instant;

use crate::embedded::EmbeddedTx;
use crate::error::StoreError;
use crate::{Backend, limits};

/// Bytes a write takes: borrowed (copied by the embedded backend) or an owned buffer (kept
/// as is, so a key built for one write is not copied again on the hot path).
pub trait Bytes: AsRef<[u8]> {
    /// The bytes as an owned buffer: free for a `Vec`, a copy for borrowed bytes.
    fn into_vec(self) -> Vec<u8>;
}

impl Bytes for Vec<u8> {
    fn into_vec(self) -> Vec<u8> {
        self
    }
}

impl Bytes for &Vec<u8> {
    fn into_vec(self) -> Vec<u8> {
        self.clone()
    }
}

impl Bytes for &[u8] {
    fn into_vec(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<const N: usize> Bytes for &[u8; N] {
    fn into_vec(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<const N: usize> Bytes for [u8; N] {
    fn into_vec(self) -> Vec<u8> {
        self.to_vec()
    }
}

/// FoundationDB's 10-byte versionstamp: the 8-byte commit version and a 2-byte order within
/// the commit batch, big-endian. Strictly increasing in commit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Versionstamp(pub [u8; 10]);

impl Versionstamp {
    pub const PLACEHOLDER: [u8; 10] = [0xff; 10];

    pub fn from_parts(version: u64, order: u16) -> Versionstamp {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&version.to_be_bytes());
        b[8..].copy_from_slice(&order.to_be_bytes());
        Versionstamp(b)
    }

    pub fn version(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(v)
    }
}

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeOptions {
    /// At most this many rows (0 means [`limits::RANGE_ROWS_MAX`]; larger is capped to it).
    pub limit: usize,
    /// Newest (highest) keys first.
    pub reverse: bool,
    /// A snapshot read: sees the same data but adds no read conflict.
    pub snapshot: bool,
}

impl RangeOptions {
    /// A snapshot read of at most `limit` rows, in key order.
    pub fn snapshot(limit: usize) -> RangeOptions {
        RangeOptions {
            limit,
            snapshot: true,
            ..RangeOptions::default()
        }
    }
}

/// A transaction. Reads see a consistent snapshot plus this transaction's own writes; commit
/// succeeds only if nothing it read (non-snapshot) was overwritten since its read version.
pub struct Transaction {
    inner: Inner,
    backend: Arc<Backend>,
    started: Instant,
    bytes: usize,
    committed: bool,
}

#[allow(clippy::large_enum_variant)] // the embedded variant is the common one; boxing it costs an allocation per transaction
pub(crate) enum Inner {
    Embedded(EmbeddedTx),
    #[cfg(feature = "fdb")]
    Fdb(crate::fdb::FdbTx),
}

macro_rules! dispatch {
    ($self:ident, $tx:ident => $e:expr) => {
        match &mut $self.inner {
            Inner::Embedded($tx) => $e,
            #[cfg(feature = "fdb")]
            Inner::Fdb($tx) => $e,
        }
    };
}

impl Transaction {
    pub(crate) fn begin(backend: &Arc<Backend>) -> Result<Transaction, StoreError> {
        Ok(Transaction {
            inner: Self::new_inner(backend)?,
            backend: Arc::clone(backend),
            started: Instant::now(),
            bytes: 0,
            committed: false,
        })
    }

    fn new_inner(backend: &Backend) -> Result<Inner, StoreError> {
        Ok(match backend {
            Backend::Embedded(engine) => Inner::Embedded(engine.begin()?),
            #[cfg(feature = "fdb")]
            Backend::Fdb(db) => Inner::Fdb(db.begin()?),
        })
    }

    /// Reads `key`, adding it to the read conflict set.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_read(key.len())?;
        dispatch!(self, tx => tx.get(key, false).await)
    }

    /// Reads `key` without a read conflict.
    pub async fn get_snapshot(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_read(key.len())?;
        dispatch!(self, tx => tx.get(key, true).await)
    }

    /// Reads keys in `[begin, end)`, in order (or reverse order), at most `options.limit` rows.
    pub async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.check_read(begin.len().max(end.len()))?;
        if begin > end {
            return Err(StoreError::InvertedRange);
        }
        self.bytes += begin.len() + end.len();
        let limit = match options.limit {
            0 => limits::RANGE_ROWS_MAX,
            n => n.min(limits::RANGE_ROWS_MAX),
        };
        let options = RangeOptions { limit, ..options };
        dispatch!(self, tx => tx.get_range(begin, end, options).await)
    }

    pub fn set(&mut self, key: impl Bytes, value: impl Bytes) -> Result<(), StoreError> {
        let (k, v) = (key.as_ref(), value.as_ref());
        self.check_write(k, v.len(), k.len() + v.len())?;
        match &mut self.inner {
            Inner::Embedded(tx) => tx.set(key.into_vec(), value.into_vec()),
            #[cfg(feature = "fdb")]
            Inner::Fdb(tx) => tx.set(key.as_ref(), value.as_ref()),
        }
        Ok(())
    }

    pub fn clear(&mut self, key: impl Bytes) -> Result<(), StoreError> {
        let k = key.as_ref();
        self.check_write(k, 0, k.len())?;
        match &mut self.inner {
            Inner::Embedded(tx) => tx.clear(key.into_vec()),
            #[cfg(feature = "fdb")]
            Inner::Fdb(tx) => tx.clear(key.as_ref()),
        }
        Ok(())
    }

    pub fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> Result<(), StoreError> {
        self.check_write(begin, 0, begin.len() + end.len())?;
        if end.len() > limits::KEY_BYTES_MAX + 1 {
            return Err(StoreError::KeyTooLarge { len: end.len() });
        }
        if begin > end {
            return Err(StoreError::InvertedRange);
        }
        dispatch!(self, tx => tx.clear_range(begin, end));
        Ok(())
    }

    /// Adds `delta` to the little-endian 64-bit integer at `key` (missing counts as 0), without
    /// reading it: concurrent adds to one key never conflict.
    pub fn atomic_add(&mut self, key: impl Bytes, delta: i64) -> Result<(), StoreError> {
        let k = key.as_ref();
        self.check_write(k, 8, k.len() + 8)?;
        match &mut self.inner {
            Inner::Embedded(tx) => tx.atomic_add(key.into_vec(), delta),
            #[cfg(feature = "fdb")]
            Inner::Fdb(tx) => tx.atomic_add(key.as_ref(), delta),
        }
        Ok(())
    }

    /// Sets a key whose bytes `offset..offset + 10` are replaced at commit by the commit's
    /// versionstamp (write [`Versionstamp::PLACEHOLDER`] there).
    pub fn set_versionstamped_key(
        &mut self,
        key: impl Bytes,
        offset: u32,
        value: impl Bytes,
    ) -> Result<(), StoreError> {
        let (k, v) = (key.as_ref(), value.as_ref());
        check_offset(offset, k.len())?;
        self.check_write(k, v.len(), k.len() + v.len())?;
        self.set_versionstamped(key, value, offset, true);
        Ok(())
    }

    /// Sets a value whose bytes `offset..offset + 10` are replaced at commit by the versionstamp.
    pub fn set_versionstamped_value(
        &mut self,
        key: impl Bytes,
        value: impl Bytes,
        offset: u32,
    ) -> Result<(), StoreError> {
        let (k, v) = (key.as_ref(), value.as_ref());
        check_offset(offset, v.len())?;
        self.check_write(k, v.len(), k.len() + v.len())?;
        self.set_versionstamped(key, value, offset, false);
        Ok(())
    }

    fn set_versionstamped(
        &mut self,
        key: impl Bytes,
        value: impl Bytes,
        offset: u32,
        in_key: bool,
    ) {
        match &mut self.inner {
            Inner::Embedded(tx) => {
                tx.set_versionstamped(key.into_vec(), value.into_vec(), offset, in_key)
            }
            #[cfg(feature = "fdb")]
            Inner::Fdb(tx) => tx.set_versionstamped(key.as_ref(), value.as_ref(), offset, in_key),
        }
    }

    /// Commits; returns the commit's versionstamp.
    pub async fn commit(mut self) -> Result<Versionstamp, StoreError> {
        self.commit_in_place().await
    }

    pub(crate) async fn commit_in_place(&mut self) -> Result<Versionstamp, StoreError> {
        if self.committed {
            return Err(StoreError::UsedAfterCommit);
        }
        self.check_age()?;
        let result = dispatch!(self, tx => tx.commit().await);
        if result.is_ok() {
            self.committed = true;
        }
        result
    }

    /// Prepares the transaction for another attempt after a retryable `error`: backs off and
    /// starts over at a new read version with nothing read or written.
    pub(crate) async fn on_error(
        &mut self,
        error: StoreError,
        attempt: u32,
    ) -> Result<(), StoreError> {
        match &mut self.inner {
            #[cfg(feature = "fdb")]
            Inner::Fdb(tx) => tx.on_error(error).await?,
            Inner::Embedded(_) => {
                let _ = error;
                tokio::time::sleep(crate::embedded::backoff(attempt)).await;
                self.inner = Self::new_inner(&self.backend)?;
            }
        }
        self.started = Instant::now();
        self.bytes = 0;
        self.committed = false;
        Ok(())
    }

    fn check_age(&self) -> Result<(), StoreError> {
        if self.started.elapsed() > limits::TRANSACTION_DURATION_MAX {
            return Err(StoreError::TransactionTooOld);
        }
        Ok(())
    }

    fn check_read(&mut self, key_len: usize) -> Result<(), StoreError> {
        if self.committed {
            return Err(StoreError::UsedAfterCommit);
        }
        self.check_age()?;
        if key_len > limits::KEY_BYTES_MAX {
            return Err(StoreError::KeyTooLarge { len: key_len });
        }
        self.bytes += key_len;
        self.check_bytes()
    }

    fn check_write(
        &mut self,
        key: &[u8],
        value_len: usize,
        bytes: usize,
    ) -> Result<(), StoreError> {
        // Only reads and the commit check the transaction's age: a write is buffered locally
        // and never fails for age on its own, and skipping the clock keeps writes cheap.
        if self.committed {
            return Err(StoreError::UsedAfterCommit);
        }
        if key.len() > limits::KEY_BYTES_MAX {
            return Err(StoreError::KeyTooLarge { len: key.len() });
        }
        if value_len > limits::VALUE_BYTES_MAX {
            return Err(StoreError::ValueTooLarge { len: value_len });
        }
        self.bytes += bytes;
        self.check_bytes()
    }

    fn check_bytes(&self) -> Result<(), StoreError> {
        if self.bytes > limits::TRANSACTION_BYTES_MAX {
            return Err(StoreError::TransactionTooLarge { bytes: self.bytes });
        }
        Ok(())
    }
}

fn check_offset(offset: u32, len: usize) -> Result<(), StoreError> {
    if (offset as usize)
        .checked_add(10)
        .is_none_or(|end| end > len)
    {
        return Err(StoreError::VersionstampOffset { offset, len });
    }
    Ok(())
}
