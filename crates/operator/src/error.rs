//! What operator tooling can fail with, by what the operator can do about it. The exit codes
//! are the CLI's documented ones for the same classes (README "Exit codes"), so scripts that
//! ran the audit as `posthuman verify --audit` read the same codes.

use posthuman_functions::prune::PrunedMarker;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Wrong flags or data dir: fix the command. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The job is an infer or evaluate job: there is no training to replay. Exit 2.
    #[error("job {0} is not a train job: nothing to audit")]
    NotATrainJob(String),
    /// Past the operator's audit window the checkpoints are gone; the receipt still verifies
    /// (`posthuman verify`), but no segment can be replayed. Exit 4.
    #[error(
        "job {}'s checkpoints were pruned at {} (unix s), past the operator's audit window of \
         {} s after the job finished at {}; the receipt still verifies, but no segment can be \
         replayed",
        .0.job_id, .0.pruned_at, .0.audit_window_secs, .0.finished_at
    )]
    Pruned(PrunedMarker),
    /// The API that says where the chain is could not be reached or answered badly: retry,
    /// or pass `--rpc` and the right `--api`. Exit 4.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The chain could not be read. Exit 4 (RPC), 5 otherwise.
    #[error("chain: {0}")]
    Chain(#[from] posthuman_chain::ChainError),
    /// What the store holds disagrees with the receipt or the chain, or a sampled segment did
    /// not reproduce: the operator's training is not what it committed to. Exit 7.
    #[error("verification failed: {0}")]
    Failed(String),
    /// The operator's store could not be read or written (replays write a scratch prefix).
    /// Exit 8.
    #[error("the operator's store: {0}")]
    Store(String),
}

impl AuditError {
    /// The process exit code for this error (0 is success).
    pub fn exit_code(&self) -> i32 {
        match self {
            AuditError::Usage(_) | AuditError::NotATrainJob(_) => 2,
            AuditError::Pruned(_) | AuditError::Unavailable(_) => 4,
            AuditError::Chain(posthuman_chain::ChainError::Rpc(_)) => 4,
            AuditError::Chain(_) => 5,
            AuditError::Failed(_) => 7,
            AuditError::Store(_) => 8,
        }
    }
}
