//! Tuple-encoded keys shared by every backend: FoundationDB's tuple layer (the
//! `foundationdb-tuple` crate), so keys sort the same way on both backends and a FoundationDB
//! cluster's data can be read with any tuple-layer tool.

pub use foundationdb_tuple::{Element, Subspace, TuplePack, TupleUnpack, pack, pack_into, unpack};

/// The end of the range of all keys starting with `prefix`: `prefix` with its last non-0xff
/// byte incremented (FoundationDB's `strinc`). `None` if `prefix` is all 0xff.
pub fn strinc(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The top-level subspace of one bank ledger: `("ledger", id)`.
pub fn ledger_subspace(ledger_id: u32) -> Subspace {
    Subspace::from(("ledger", i64::from(ledger_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_keys_sort_like_their_elements() {
        let s = ledger_subspace(7);
        let a = s.pack(&("utxo", 1i64));
        let b = s.pack(&("utxo", 2i64));
        let c = s.pack(&("utxo", 10i64));
        assert!(a < b && b < c);
        assert!(a.starts_with(s.bytes()));
        let (name, n): (String, i64) = s.unpack(&c).expect("unpacks");
        assert_eq!((name.as_str(), n), ("utxo", 10));
        assert_eq!(strinc(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(strinc(b"\xff\xff"), None);
    }
}
