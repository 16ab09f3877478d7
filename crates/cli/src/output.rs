//! Printing: human text with progress bars, or one JSON document per command (`--json`).

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Where results and progress go.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
    /// Quiet: print nothing (the demo drives commands and prints its own summary).
    pub quiet: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json, quiet: false }
    }

    pub fn quiet() -> Self {
        Out { json: false, quiet: true }
    }

    /// Prints a command's outcome: JSON, or the human rendering.
    pub fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.quiet {
            return;
        }
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: cannot render JSON: {e}"),
            }
        } else {
            println!("{}", human());
        }
    }

    /// A line of human narration (suppressed in JSON and quiet modes).
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.json && !self.quiet {
            println!("{}", line.as_ref());
        }
    }

    /// A progress bar over `total` units, hidden in JSON and quiet modes.
    pub fn bar(&self, total: u64, what: &str) -> ProgressBar {
        if self.json || self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total.max(1));
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:<10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        pb.set_style(style);
        pb.set_prefix(what.to_string());
        pb
    }

    /// A progress bar over bytes sent (an upload), hidden in JSON and quiet modes; its
    /// length is set once the total is known.
    pub fn bytes_bar(&self, what: &str) -> ProgressBar {
        let pb = self.bar(0, what);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {prefix:<10} [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    }

    /// A spinner for work of unknown length.
    pub fn spinner(&self, what: &str) -> ProgressBar {
        if self.json || self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_message(what.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }
}
