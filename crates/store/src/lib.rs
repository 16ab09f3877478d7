//! The ObjectStore boundary: one trait, a filesystem and an S3 implementation
