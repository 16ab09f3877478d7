//! A local anvil process: started on a free port, optionally persisted, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::ChainError;

/// Where `npm ci --prefix contracts` puts anvil, relative to the repository root.
pub const DEFAULT_ANVIL_REL: &str =
    "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// The well-known first anvil dev key (funded on every fresh anvil): the operator in tests
/// and demos. Never use it on a real network.
pub const ANVIL_DEV_KEY_0: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The id a local development chain gets: Ocean's `development` network (its barge and
/// ocean.js's `ConfigHelper` know 8996), so Ocean's own tools take the embedded default for
/// what it is without a custom network entry. anvil's own default, 31337, is still accepted
/// everywhere a local chain is recognised ([`crate::orders::LOCAL_DEV_CHAIN_IDS`]).
pub const DEV_CHAIN_ID: u64 = 8996;

/// How to start anvil.
#[derive(Clone, Debug)]
pub struct AnvilConfig {
    /// The anvil binary.
    pub binary: PathBuf,
    /// Persist chain state to this file (loaded at start if present, saved every few
    /// seconds and on stop).
    pub state: Option<PathBuf>,
    /// Seconds between state saves (with `state`).
    pub state_interval_s: u64,
    /// Keep only recent history so memory stays flat in long runs.
    pub prune_history: bool,
    /// Chain id ([`DEV_CHAIN_ID`] unless set).
    pub chain_id: u64,
}

impl Default for AnvilConfig {
    fn default() -> Self {
        AnvilConfig {
            binary: default_anvil_path(),
            state: None,
            state_interval_s: 5,
            prune_history: false,
            chain_id: DEV_CHAIN_ID,
        }
    }
}

/// `$POSTHUMAN_ANVIL` if set, else the npm-installed binary under the repository root
/// (found from this crate's manifest directory at build time).
pub fn default_anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("POSTHUMAN_ANVIL") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_ANVIL_REL)
}

/// A running anvil; stopped (SIGTERM, so `--state` is saved) when dropped.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Starts anvil on 127.0.0.1 with a free port and waits until it listens.
    pub fn start(cfg: &AnvilConfig) -> Result<Anvil, ChainError> {
        if !cfg.binary.is_file() {
            return Err(ChainError::AnvilMissing { path: cfg.binary.display().to_string() });
        }
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--chain-id"])
            .arg(cfg.chain_id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(state) = &cfg.state {
            cmd.arg("--state").arg(state);
            cmd.arg("--state-interval").arg(cfg.state_interval_s.to_string());
        }
        if cfg.prune_history {
            cmd.arg("--prune-history");
        }
        let mut child = cmd.spawn().map_err(|e| ChainError::AnvilStart(e.to_string()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(ChainError::AnvilStart("no stdout".into()));
        };
        // Read stdout on a thread (and keep draining it, so anvil never blocks on a full pipe).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.trim().strip_prefix("Listening on ") {
                    let port = rest.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => Ok(Anvil { child, port }),
            Ok(None) => {
                let _ = child.kill();
                Err(ChainError::AnvilStart("unreadable 'Listening on' line".into()))
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.try_wait().ok().flatten();
                Err(ChainError::AnvilStart(format!(
                    "no 'Listening on' line within 30 s (exit status {status:?})"
                )))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP RPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops anvil gracefully (saves `--state`), waiting up to 10 s before killing it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            for _ in 0..200 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.terminate();
    }
}
