//! Signed job receipts (EIP-712), checkpoint Merkle proofs, and their verification.
