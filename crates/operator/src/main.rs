//! `posthuman-operator`: parse the command line, run it, translate the error into its exit
//! code.

use clap::Parser;

fn main() {
    let cli = posthuman_operator::args::Cli::parse();
    // SAFETY: single-threaded here, before the runtime and any compute pool start (the audit
    // re-runs training segments in this process).
    unsafe { posthuman_gpt2::configure_threads(None) };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(posthuman_operator::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
