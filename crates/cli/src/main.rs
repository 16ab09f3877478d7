//! `posthuman`: parse the command line, run it, translate the error into its exit code.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = posthuman_cli::args::Cli::parse();
    if let Err(e) = posthuman_cli::run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
