//! `posthuman-demo`: parse the flags, play the story, translate the error into the CLI's exit
//! code for its class.

use clap::Parser;

fn main() {
    let args = posthuman_demo::args::DemoArgs::parse();
    // SAFETY: single-threaded here, before the runtime and any compute pool start (Alice's
    // base training and the operator's audit run in this process).
    unsafe { posthuman_gpt2::configure_threads(None) };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(posthuman_demo::run(args)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
