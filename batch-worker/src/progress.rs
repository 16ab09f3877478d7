//! Live progress: `<public_prefix>/progress.json`, rewritten at most every few seconds.
//!
//! Progress is advisory: a failed progress write is logged and the job goes on (the store's
//! real failures surface on the outputs, which are not advisory).

use std::time::Instant;

use bytes::Bytes;
use posthuman_store::ObjectStore;
use posthuman_types::{JobKind, JobProgress};

use crate::model_io::join;

pub const PROGRESS: &str = "progress.json";

/// Throttled writer of [`JobProgress`].
#[derive(Debug)]
pub struct Progress<'a> {
    store: &'a dyn ObjectStore,
    key: String,
    kind: JobKind,
    start: Instant,
    last: Option<Instant>,
    interval: f64,
}

impl<'a> Progress<'a> {
    pub fn new(
        store: &'a dyn ObjectStore,
        public_prefix: &str,
        kind: JobKind,
        interval: f64,
    ) -> Self {
        Progress {
            store,
            key: join(public_prefix, PROGRESS),
            kind,
            start: Instant::now(),
            last: None,
            interval,
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records `done` of `total` units; writes if `force` or the interval has passed.
    /// `rate` is units per second for the ETA; `tokens_per_sec` is reported as is.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &mut self,
        phase: &str,
        done: u64,
        total: u64,
        loss: Option<f64>,
        tokens_per_sec: f64,
        rate: Option<f64>,
        force: bool,
    ) {
        let now = Instant::now();
        let due = self.last.is_none_or(|t| now.duration_since(t).as_secs_f64() >= self.interval);
        if !force && !due {
            return;
        }
        self.last = Some(now);
        let eta_secs = rate
            .filter(|r| *r > 0.0 && r.is_finite())
            .map(|r| total.saturating_sub(done) as f64 / r);
        let p = JobProgress {
            kind: self.kind,
            phase: phase.to_string(),
            done,
            total,
            loss: loss.filter(|l| l.is_finite()),
            tokens_per_sec: if tokens_per_sec.is_finite() { tokens_per_sec } else { 0.0 },
            elapsed_secs: self.elapsed(),
            eta_secs,
        };
        match serde_json::to_vec(&p) {
            Ok(body) => {
                if let Err(e) = self.store.put(&self.key, Bytes::from(body)).await {
                    tracing::warn!(error = %e, "progress write failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "progress serialisation failed"),
        }
    }
}
