//! Paid compute-to-data over HTTP: handlers, job queue, catalogue, and the embedded dev server
