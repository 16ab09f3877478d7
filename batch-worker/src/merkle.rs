//! The checkpoint Merkle tree that a train receipt commits to (proof of learning).
//!
//! Checkpoint `i` (0-based) is taken after optimizer step `s_i = min((i + 1) * k, steps)`
//! where `k = checkpoint_every`: every k-th step, plus the final step when `steps` is not a
//! multiple of k, so the last leaf always commits to the output weights. Its hash `h_i` is
//! the canonical weights hash of the model after that step. Definition (SHA-256, `||` is
//! concatenation, integers big-endian):
//!
//! ```text
//! leaf_i = SHA256(0x00 || "posthuman.ckpt.v1" || u64(s_i) || h_i)
//! node   = SHA256(0x01 || left || right)
//! ```
//! Levels are built left to right by pairing neighbours; an odd last node is carried up
//! unchanged (never duplicated, so no two leaf lists share a root). The root of one leaf is
//! that leaf. The 0x00/0x01 prefixes keep leaves and inner nodes from being confused; the
//! step number binds each hash to its position in the run.
//!
//! An auditor re-runs the segment from checkpoint `i - 1` (or the input weights for `i = 0`)
//! to `s_i` and must obtain `h_i` bit for bit; [`proof`] and [`verify`] check a single leaf
//! against the root.

use sha2::{Digest, Sha256};

use posthuman_types::Hash32;

const LEAF_TAG: &[u8] = b"posthuman.ckpt.v1";

/// Steps after which checkpoints are taken, in order.
pub fn checkpoint_steps(steps: u32, every: u32) -> Vec<u32> {
    let every = every.max(1);
    let mut v: Vec<u32> = (1..=steps / every).map(|i| i * every).collect();
    if !steps.is_multiple_of(every) {
        v.push(steps);
    }
    v
}

/// The leaf hash of the checkpoint after `step` with weights hash `h`.
pub fn leaf(step: u32, h: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update([0x00]);
    d.update(LEAF_TAG);
    d.update(u64::from(step).to_be_bytes());
    d.update(h.0);
    Hash32(d.finalize().into())
}

fn node(l: &Hash32, r: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update([0x01]);
    d.update(l.0);
    d.update(r.0);
    Hash32(d.finalize().into())
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level.chunks(2).map(|c| if c.len() == 2 { node(&c[0], &c[1]) } else { c[0] }).collect()
}

/// The root over `(step, weights hash)` leaves; `Hash32::ZERO` for no leaves.
pub fn root(leaves: &[(u32, Hash32)]) -> Hash32 {
    let mut level: Vec<Hash32> = leaves.iter().map(|(s, h)| leaf(*s, h)).collect();
    if level.is_empty() {
        return Hash32::ZERO;
    }
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// The sibling path of leaf `index`: `(sibling, sibling_is_left)` from the bottom up;
/// levels where the node is carried up contribute nothing.
pub fn proof(leaves: &[(u32, Hash32)], index: usize) -> Option<Vec<(Hash32, bool)>> {
    let mut level: Vec<Hash32> = leaves.iter().map(|(s, h)| leaf(*s, h)).collect();
    if index >= level.len() {
        return None;
    }
    let mut i = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        let sib = i ^ 1;
        if sib < level.len() {
            path.push((level[sib], sib < i));
        }
        level = next_level(&level);
        i /= 2;
    }
    Some(path)
}

/// Checks that checkpoint `(step, h)` is under `root` via `path`.
pub fn verify(root: &Hash32, step: u32, h: &Hash32, path: &[(Hash32, bool)]) -> bool {
    let acc =
        path.iter().fold(
            leaf(step, h),
            |acc, (sib, left)| if *left { node(sib, &acc) } else { node(&acc, sib) },
        );
    acc == *root
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn leaves(n: u32) -> Vec<(u32, Hash32)> {
        (0..n).map(|i| ((i + 1) * 10, Hash32([i as u8; 32]))).collect()
    }

    #[test]
    fn steps_include_the_last() {
        assert_eq!(checkpoint_steps(30, 10), vec![10, 20, 30]);
        assert_eq!(checkpoint_steps(25, 10), vec![10, 20, 25]);
        assert_eq!(checkpoint_steps(5, 10), vec![5]);
    }

    #[test]
    fn proofs_verify_for_every_leaf_and_size() {
        for n in 1..=9 {
            let l = leaves(n);
            let r = root(&l);
            for (i, (s, h)) in l.iter().enumerate() {
                let p = proof(&l, i).unwrap();
                assert!(verify(&r, *s, h, &p), "n={n} i={i}");
                assert!(!verify(&r, *s + 1, h, &p));
                assert!(!verify(&r, *s, &Hash32([0xee; 32]), &p));
            }
        }
    }

    #[test]
    fn root_is_pinned() {
        // Pins the definition: changing the tree breaks every stored receipt.
        assert_eq!(root(&leaves(1)), leaf(10, &Hash32([0; 32])));
        let l = leaves(3);
        let expect = node(&node(&leaf(10, &l[0].1), &leaf(20, &l[1].1)), &leaf(30, &l[2].1));
        assert_eq!(root(&l), expect);
        assert_ne!(root(&leaves(2)), root(&leaves(3)));
    }
}
