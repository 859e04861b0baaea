//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification: the audit log of a
//! ledger and the receipts any holder can check offline with only public keys.
//!
//! - Hashes: `leaf = SHA-256(0x00 ‖ data)`, `node = SHA-256(0x01 ‖ left ‖ right)`, and the
//!   root of an empty tree is `SHA-256("")` (RFC 9162 §2.1.1).
//! - Proofs are generated from the hashes of *perfect* subtrees — node `(level, index)`
//!   covers leaves `[index·2^level, (index+1)·2^level)` — which a log stores as it grows, so
//!   no proof needs the whole tree in memory. The right edge of a tree that is not a power of
//!   two is recomputed from the perfect subtrees under it.
//! - Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// Why a proof does not verify (or cannot be made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the older tree size {old} is larger than the newer {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has {got} hashes, which does not fit these tree sizes")]
    ProofShape { got: usize },
    #[error("the proof does not lead to the given root")]
    RootMismatch,
    #[error("a consistency proof from an empty tree or to the same size must be empty")]
    NonEmptyTrivialProof,
}

/// The hash of a leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of an empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of the `len` leaves starting at `start`, from perfect-subtree hashes:
/// `node(level, index)` must return the hash of the perfect subtree covering leaves
/// `[index·2^level, (index+1)·2^level)` (level 0: the leaf hash).
pub fn subtree_root(start: u64, len: u64, node: &mut impl FnMut(u32, u64) -> Hash) -> Hash {
    if len == 0 {
        return empty_root();
    }
    if len.is_power_of_two() && start.is_multiple_of(len) {
        let level = len.trailing_zeros();
        return node(level, start >> level);
    }
    let k = split(len);
    let left = subtree_root(start, k, node);
    let right = subtree_root(start + k, len - k, node);
    node_hash(&left, &right)
}

/// The root of a tree of `size` leaves.
pub fn root(size: u64, node: &mut impl FnMut(u32, u64) -> Hash) -> Hash {
    subtree_root(0, size, node)
}

/// The inclusion proof of leaf `index` in a tree of `size` leaves (RFC 9162 §2.1.3.1), leaf
/// side first.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    node: &mut impl FnMut(u32, u64) -> Hash,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    // Walk down from the whole tree, remembering the sibling at each split.
    let (mut start, mut len, mut at) = (0u64, size, index);
    while len > 1 {
        let k = split(len);
        if at < k {
            proof.push(subtree_root(start + k, len - k, node));
            len = k;
        } else {
            proof.push(subtree_root(start, k, node));
            start += k;
            at -= k;
            len -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the tree of `old` leaves and the tree of `new` leaves
/// (RFC 9162 §2.1.4.1).
pub fn consistency_proof(
    old: u64,
    new: u64,
    node: &mut impl FnMut(u32, u64) -> Hash,
) -> Result<Vec<Hash>, MerkleError> {
    if old > new {
        return Err(MerkleError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    subproof(old, 0, new, true, node, &mut proof);
    Ok(proof)
}

/// SUBPROOF(m, D[start : start + len], b) of RFC 9162 §2.1.4.1.
fn subproof(
    m: u64,
    start: u64,
    len: u64,
    complete: bool,
    node: &mut impl FnMut(u32, u64) -> Hash,
    proof: &mut Vec<Hash>,
) {
    if m == len {
        if !complete {
            proof.push(subtree_root(start, len, node));
        }
        return;
    }
    let k = split(len);
    if m <= k {
        subproof(m, start, k, complete, node, proof);
        proof.push(subtree_root(start + k, len - k, node));
    } else {
        subproof(m - k, start + k, len - k, false, node, proof);
        proof.push(subtree_root(start, k, node));
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::ProofShape { got: proof.len() });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::ProofShape { got: proof.len() });
    }
    if &r != root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    if old > new {
        return Err(MerkleError::SizesOutOfOrder { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(MerkleError::NonEmptyTrivialProof);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::NonEmptyTrivialProof)
        };
    }
    if proof.is_empty() {
        return Err(MerkleError::ProofShape { got: 0 });
    }
    // If old is a power of two, the old root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(MerkleError::ProofShape { got: proof.len() });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::ProofShape { got: proof.len() });
    }
    if &fr != old_root || &sr != new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH straight from RFC 9162 §2.1.1, over the leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Perfect-subtree hashes computed from the leaves, as a log would store them.
    fn nodes(leaves: &[Hash]) -> impl FnMut(u32, u64) -> Hash + '_ {
        |level, index| {
            let width = 1usize << level;
            let start = index as usize * width;
            mth(&leaves[start..start + width])
        }
    }

    #[test]
    fn roots_match_the_rfc_definition() {
        for n in 0..70u64 {
            let l = leaves(n);
            assert_eq!(root(n, &mut nodes(&l)), mth(&l), "size {n}");
        }
        // RFC 9162: the empty tree's root is the hash of the empty string.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..40u64 {
            let l = leaves(n);
            let r = mth(&l);
            for i in 0..n {
                let proof = inclusion_proof(i, n, &mut nodes(&l)).unwrap();
                assert_eq!(
                    verify_inclusion(&l[i as usize], i, n, &proof, &r),
                    Ok(()),
                    "{i}/{n}"
                );
                let other = leaf_hash(b"not in the log");
                assert_eq!(
                    verify_inclusion(&other, i, n, &proof, &r),
                    Err(MerkleError::RootMismatch)
                );
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(&l[i as usize], i, n, &bad, &r).is_err());
                    let short = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(&l[i as usize], i, n, short, &r).is_err());
                }
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(verify_inclusion(&l[i as usize], j, n, &proof, &r).is_err());
                }
            }
            assert_eq!(
                verify_inclusion(&l[0], n, n, &[], &r),
                Err(MerkleError::IndexOutOfRange { index: n, size: n })
            );
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_rewritten_history_fails() {
        for new in 0..34u64 {
            let l = leaves(new);
            let new_root = mth(&l);
            for old in 0..=new {
                let old_root = mth(&l[..old as usize]);
                let proof = consistency_proof(old, new, &mut nodes(&l)).unwrap();
                assert_eq!(
                    verify_consistency(old, new, &proof, &old_root, &new_root),
                    Ok(()),
                    "{old} -> {new}"
                );
                if old > 0 && old < new {
                    // A log that changed an old entry cannot prove it only appended.
                    let mut forked = l.clone();
                    forked[0] = leaf_hash(b"rewritten");
                    assert_eq!(
                        verify_consistency(
                            old,
                            new,
                            &proof,
                            &mth(&forked[..old as usize]),
                            &new_root
                        ),
                        Err(MerkleError::RootMismatch)
                    );
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last][5] ^= 0x80;
                    assert!(verify_consistency(old, new, &bad, &old_root, &new_root).is_err());
                }
            }
            if new > 0 {
                // A log may not shrink.
                assert_eq!(
                    consistency_proof(new, new - 1, &mut nodes(&l)),
                    Err(MerkleError::SizesOutOfOrder {
                        old: new,
                        new: new - 1
                    })
                );
            }
        }
    }
}

#[cfg(test)]
mod vectors {
    use super::*;

    /// The eight leaves of Certificate Transparency's reference test data.
    fn reference_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn reference_roots() {
        let l = reference_leaves();
        let mut node = |level: u32, index: u64| {
            let width = 1u64 << level;
            root_of(&l[(index * width) as usize..((index + 1) * width) as usize])
        };
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (size, want) in (1..=8u64).zip(expected) {
            assert_eq!(hex::encode(root(size, &mut node)), want, "size {size}");
        }
    }

    fn root_of(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            1 => leaves[0],
            n => node_hash(&root_of(&leaves[..n / 2]), &root_of(&leaves[n / 2..])),
        }
    }
}
