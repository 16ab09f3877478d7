//! The worker inside a container's memory limit: a job the preflight admits must not be
//! OOM-killed while it loads the model. The weights file used to be read onto the heap and
//! kept there beside its f32 conversion until the load ended, so an f32 checkpoint needed twice
//! its size in anonymous memory, half of it uncounted by the preflight; now it is spooled to a
//! temporary file and mapped, and its pages are ones the kernel can reclaim.
//!
//! The limit is a real one: a cgroup v1 memory controller group made for the test (root on
//! Linux with `/sys/fs/cgroup/memory` writable, as CI runs). Where that is not possible the
//! test says so and returns.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bin, run_ok};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A cgroup v1 memory group with a hard limit (no swap here: the machines have none, and
/// memsw is set too where the kernel has it), removed on drop.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn new(limit_bytes: u64) -> Option<Self> {
        let root = Path::new("/sys/fs/cgroup/memory");
        let dir = root.join(format!("posthuman-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let g = MemoryCgroup(dir);
        std::fs::write(g.0.join("memory.limit_in_bytes"), limit_bytes.to_string()).ok()?;
        let _ = std::fs::write(g.0.join("memory.memsw.limit_in_bytes"), limit_bytes.to_string());
        Some(g)
    }

    /// Runs `cmd` inside the group: a shell puts itself in, then execs the command.
    fn output(&self, cmd: &Command) -> std::process::Output {
        let mut argv = vec![cmd.get_program().to_string_lossy().into_owned()];
        argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.0.join("cgroup.procs"))
            .args(argv)
            .output()
            .unwrap()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn an_evaluation_fits_a_limit_its_weights_fit_once_but_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tok = common::cli_tokenizer(root);
    // 8 layers, 1024 wide: 101 M parameters, a 405 MB f32 model.safetensors.
    let store = root.join("store");
    run_ok(
        bin()
            .args(["init-model", "--n-layer", "8", "--n-embd", "1024", "--n-head", "8"])
            .args(["--n-positions", "64", "--seed", "3", "--tokenizer"])
            .arg(&tok)
            .arg("--out")
            .arg(store.join("models/base")),
    );
    let weights = std::fs::metadata(store.join("models/base/model.safetensors")).unwrap().len();
    assert!(weights > 400_000_000, "{weights}");
    std::fs::create_dir_all(store.join("datasets")).unwrap();
    std::fs::write(store.join("datasets/d.txt"), common::corpus()).unwrap();
    let mut spec = common::spec("mem", posthuman_types::JobParams::Evaluate(common::eval_params()));
    spec.dataset_key = Some("datasets/d.txt".into());
    spec.model_prefix = "models/base".into();
    let spec_path = root.join("spec.json");
    std::fs::write(&spec_path, common::spec_bytes(&spec)).unwrap();

    // The weights once plus 300 MB for the process, the tokens and the activations: enough
    // for the weights converted, not for the file's bytes on the heap beside them.
    let limit = weights + 300_000_000;
    let Some(group) = MemoryCgroup::new(limit) else {
        eprintln!("skipped: cannot make a cgroup v1 memory group here (needs root)");
        return;
    };
    let mut cmd = bin();
    cmd.args(["--threads", "2", "run", "--spec"]).arg(&spec_path).arg("--store").arg(&store);
    let out = group.output(&cmd);
    assert!(
        out.status.success(),
        "the job failed under a {limit}-byte limit ({}; signal 9 = OOM-killed): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(store.join("jobs/mem/public/report.json")).unwrap();
    assert!(report.contains("perplexity"), "{report}");
}
