//! The checkpoint Merkle tree that a train receipt commits to (proof of learning).
//!
//! Checkpoint `i` (0-based) is taken after optimizer step `s_i = min((i + 1) * k, steps)`
//! where `k = checkpoint_every`: every k-th step, plus the final step when `steps` is not a
//! multiple of k, so the last leaf always commits to the output weights. It commits to the
//! training state after that step: `w_i`, the canonical weights hash, and `o_i`, the
//! canonical optimizer-state hash (AdamW's step counter and moments). Definition (SHA-256,
//! `||` is concatenation, integers big-endian):
//!
//! ```text
//! leaf_i = SHA256(0x00 || "posthuman.ckpt.v2" || u64(s_i) || w_i || o_i)
//! node   = SHA256(0x01 || left || right)
//! ```
//! Levels are built left to right by pairing neighbours; an odd last node is carried up
//! unchanged (never duplicated, so no two leaf lists share a root). The root of one leaf is
//! that leaf. The 0x00/0x01 prefixes keep leaves and inner nodes from being confused; the
//! step number binds each hash to its position in the run.
//!
//! An auditor re-runs the segment from checkpoint `i - 1` (or the input weights and a fresh
//! optimizer for `i = 0`) to `s_i` and must obtain `w_i` and `o_i` bit for bit; [`proof`] and
//! [`verify`] check a single leaf against the root. The optimizer state is committed because
//! a segment's start includes it: with only the weights bound, an operator could serve
//! fabricated moments at audit time and steer a re-run onto weights it never trained.

use sha2::{Digest, Sha256};

pub use posthuman_types::Checkpoint;
use posthuman_types::Hash32;

const LEAF_TAG: &[u8] = b"posthuman.ckpt.v2";

/// Steps after which checkpoints are taken, in order.
pub fn checkpoint_steps(steps: u32, every: u32) -> Vec<u32> {
    let every = every.max(1);
    let mut v: Vec<u32> = (1..=steps / every).map(|i| i * every).collect();
    if !steps.is_multiple_of(every) {
        v.push(steps);
    }
    v
}

/// The leaf hash of a checkpoint.
pub fn leaf(c: &Checkpoint) -> Hash32 {
    let mut d = Sha256::new();
    d.update([0x00]);
    d.update(LEAF_TAG);
    d.update(u64::from(c.step).to_be_bytes());
    d.update(c.weights.0);
    d.update(c.optimizer.0);
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

/// The root over the checkpoints' leaves; `Hash32::ZERO` for none.
pub fn root(leaves: &[Checkpoint]) -> Hash32 {
    let mut level: Vec<Hash32> = leaves.iter().map(leaf).collect();
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
pub fn proof(leaves: &[Checkpoint], index: usize) -> Option<Vec<(Hash32, bool)>> {
    let mut level: Vec<Hash32> = leaves.iter().map(leaf).collect();
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

/// Checks that checkpoint `c` is under `root` via `path`.
pub fn verify(root: &Hash32, c: &Checkpoint, path: &[(Hash32, bool)]) -> bool {
    let acc = path
        .iter()
        .fold(leaf(c), |acc, (sib, left)| if *left { node(sib, &acc) } else { node(&acc, sib) });
    acc == *root
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn leaves(n: u32) -> Vec<Checkpoint> {
        (0..n)
            .map(|i| Checkpoint {
                step: (i + 1) * 10,
                weights: Hash32([i as u8; 32]),
                optimizer: Hash32([0x80 | i as u8; 32]),
            })
            .collect()
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
            for (i, c) in l.iter().enumerate() {
                let p = proof(&l, i).unwrap();
                assert!(verify(&r, c, &p), "n={n} i={i}");
                assert!(!verify(&r, &Checkpoint { step: c.step + 1, ..*c }, &p));
                assert!(!verify(&r, &Checkpoint { weights: Hash32([0xee; 32]), ..*c }, &p));
                assert!(!verify(&r, &Checkpoint { optimizer: Hash32([0xee; 32]), ..*c }, &p));
            }
        }
    }

    #[test]
    fn root_is_pinned() {
        // Pins the definition: changing the tree breaks every stored receipt.
        let l = leaves(3);
        assert_eq!(root(&l[..1]), leaf(&l[0]));
        let expect = node(&node(&leaf(&l[0]), &leaf(&l[1])), &leaf(&l[2]));
        assert_eq!(root(&l), expect);
        assert_ne!(root(&leaves(2)), root(&leaves(3)));
        // The tag, the step and both hashes, byte for byte.
        let mut pre = vec![0x00];
        pre.extend_from_slice(b"posthuman.ckpt.v2");
        pre.extend_from_slice(&10u64.to_be_bytes());
        pre.extend_from_slice(&[0; 32]);
        pre.extend_from_slice(&[0x80; 32]);
        assert_eq!(leaf(&l[0]).0, <[u8; 32]>::from(Sha256::digest(&pre)));
    }
}
