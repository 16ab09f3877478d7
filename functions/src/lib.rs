//! Paid compute-to-data over HTTP: handlers, job queue, catalogue, and the embedded dev server
pub mod catalogue;
pub mod error;
pub mod queue;
