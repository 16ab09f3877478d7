//! Interim main command: a local chain, the Ocean stack, a published model, an order and
//! its verification, and a derivation paying rewards — printed step by step.

use posthuman_chain::story::{StoryConfig, story};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut cfg = StoryConfig::default();
    if let Some(path) = std::env::args().nth(1) {
        cfg.address_book = Some(path.into());
    }
    match story(&cfg).await {
        Ok(summary) => {
            print!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chain demo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
