//! A tiny strict reader for the canonical transfer encoding.
//!
//! Fixed-width big-endian integers, counted lists, no optional fields, no trailing bytes: every
//! byte string decodes to at most one value and every value encodes to exactly one byte string.
//! That is what lets a ledger keep the exact bytes it verified and never re-encode.

/// Where and why decoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body ends early at byte {at}: {what} needs {needed} more bytes")]
    UnexpectedEnd {
        at: usize,
        what: &'static str,
        needed: usize,
    },
    #[error("body has {count} trailing bytes after the memo")]
    TrailingBytes { count: usize },
    #[error("body version {0} is unknown; this ledger speaks version 1")]
    UnknownVersion(u8),
    #[error("output {output}: unknown lock tag {tag}")]
    UnknownLockTag { output: usize, tag: u8 },
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.bytes.len() - self.at;
        if rest < n {
            return Err(DecodeError::UnexpectedEnd {
                at: self.at,
                what,
                needed: n - rest,
            });
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        let count = self.bytes.len() - self.at;
        if count != 0 {
            return Err(DecodeError::TrailingBytes { count });
        }
        Ok(())
    }
}
