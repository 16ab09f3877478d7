//! The train job.
pub mod schedule;
