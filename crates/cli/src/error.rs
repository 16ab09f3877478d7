//! The CLI's errors: one clear sentence each, saying what to do next, and a documented exit
//! code per class (README "Exit codes"). Translated once, in `main`.

/// Everything the CLI can fail with, by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong flags, missing wallet or password, bad file: fix the command. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The API refused the request (4xx): its reason says what to change. Exit 3.
    #[error("the API refused: {0}")]
    Rejected(String),
    /// The API, the chain or the network is unreachable or failing (5xx): retry later. Exit 4.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A chain transaction reverted or could not be sent. Exit 5.
    #[error("chain: {0}")]
    Chain(String),
    /// A job ran and failed; its sanitized reason is shown. Exit 6.
    #[error("the job failed: {0}")]
    JobFailed(String),
    /// A receipt, lineage or audit check did not pass. Exit 7.
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// A local file could not be read or written. Exit 8.
    #[error("{0}")]
    Io(String),
    /// A model directory's weights are not a usable checkpoint (a sharded one's index and
    /// shards disagree, a shard is missing or unnamed, a file is damaged): fix the files the
    /// message names. Nothing was uploaded. Exit 9.
    #[error("{0}")]
    Checkpoint(String),
    /// A bug or an unexpected answer. Exit 1.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CliError {
    /// The process exit code for this error (0 is success).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Internal(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Rejected(_) => 3,
            CliError::Unavailable(_) => 4,
            CliError::Chain(_) => 5,
            CliError::JobFailed(_) => 6,
            CliError::VerificationFailed(_) => 7,
            CliError::Io(_) => 8,
            CliError::Checkpoint(_) => 9,
        }
    }
}

impl From<posthuman_chain::ChainError> for CliError {
    fn from(e: posthuman_chain::ChainError) -> Self {
        match e {
            posthuman_chain::ChainError::Rpc(m) => CliError::Unavailable(format!("chain RPC: {m}")),
            other => CliError::Chain(other.to_string()),
        }
    }
}
