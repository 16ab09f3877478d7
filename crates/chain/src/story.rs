//! The end-to-end walk-through (filled in below).
