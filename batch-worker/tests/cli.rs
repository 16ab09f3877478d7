//! The binary end to end: tokenizer training, model init, jobs with 1 and 2 threads
//! (bit-identical), a SIGKILL mid-training followed by a resume that ends on the same
//! weights, and exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use posthuman_types::{JobParams, JobSpec, TrainMetrics};
use posthuman_worker::exit;

use common::{bin, run_ok};

/// A store root with a tokenizer-trained, CLI-initialised base model and a dataset.
fn setup(root: &Path) {
    let tok = common::cli_tokenizer(root);
    let store = root.join("store");
    run_ok(
        bin()
            .args([
                "init-model",
                "--n-layer",
                "2",
                "--n-embd",
                "32",
                "--n-head",
                "2",
                "--n-positions",
                "64",
                "--seed",
                "7",
            ])
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(store.join("models/base")),
    );
    std::fs::create_dir_all(store.join("datasets")).unwrap();
    std::fs::write(store.join("datasets/d.txt"), common::corpus()).unwrap();
}

fn write_spec(root: &Path, spec: &JobSpec) -> std::path::PathBuf {
    let p = root.join(format!("{}.json", spec.job_id));
    std::fs::write(&p, serde_json::to_vec(spec).unwrap()).unwrap();
    p
}

fn job(root: &Path, spec: &JobSpec, threads: &str) -> Command {
    let mut c = bin();
    c.args(["--threads", threads, "run", "--progress-secs", "0", "--spec"])
        .arg(write_spec(root, spec))
        .arg("--store")
        .arg(root.join("store"));
    c
}

fn metrics(root: &Path, spec: &JobSpec) -> TrainMetrics {
    let p = root.join("store").join(&spec.public_prefix).join("metrics.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn long_spec(id: &str) -> JobSpec {
    let mut s = common::train_spec(id);
    if let JobParams::Train(p) = &mut s.params {
        p.steps = 160;
        p.checkpoint_every = 10;
        p.dropout = 0.1;
    }
    s
}

#[test]
fn one_and_two_threads_give_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (a, b) = (common::train_spec("job-t1"), common::train_spec("job-t2"));
    run_ok(&mut job(dir.path(), &a, "1"));
    run_ok(&mut job(dir.path(), &b, "2"));
    let (ma, mb) = (metrics(dir.path(), &a), metrics(dir.path(), &b));
    assert_eq!(ma.output_weights_hash, mb.output_weights_hash);
    assert_eq!(ma.checkpoint_root, mb.checkpoint_root);
    assert!(ma.final_loss < ma.loss_curve[0].1);
}

#[test]
fn sigkill_then_resume_ends_on_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    let killed = long_spec("job-k");
    let mut child =
        job(root, &killed, "2").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let marker = root.join("store/models/job-k/checkpoints/step-000030/state.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "worker exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !root.join("store/models/job-k/_COMPLETE").exists(),
        "the run finished before the kill"
    );
    assert!(!root.join("store/jobs/job-k/public/metrics.json").exists());

    run_ok(&mut job(root, &killed, "2"));
    let uninterrupted = long_spec("job-u");
    run_ok(&mut job(root, &uninterrupted, "2"));
    let (mk, mu) = (metrics(root, &killed), metrics(root, &uninterrupted));
    assert_eq!(mk.output_weights_hash, mu.output_weights_hash);
    assert_eq!(mk.checkpoint_hashes, mu.checkpoint_hashes);
    assert_eq!(mk.checkpoint_root, mu.checkpoint_root);
}

#[test]
fn exit_codes_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    std::fs::write(root.join("bad.json"), b"{").unwrap();
    let st = bin()
        .args(["run", "--spec"])
        .arg(root.join("bad.json"))
        .arg("--store")
        .arg(root.join("store"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(exit::BAD_SPEC));
    assert!(String::from_utf8_lossy(&st.stderr).contains("invalid job spec"));

    let s = common::train_spec("job-s");
    let st = job(root, &s, "1").args(["--stop-after-checkpoint", "8"]).output().unwrap();
    assert_eq!(st.status.code(), Some(exit::INTERRUPTED));
    let st = job(root, &s, "1").args(["--memory-limit-mib", "1"]).output().unwrap();
    assert_eq!(st.status.code(), Some(exit::MEMORY_REFUSED));
    let st = bin().args(["run", "--spec", "x.json"]).output().unwrap();
    assert_eq!(st.status.code(), Some(2), "no store is a usage error");
}

/// The GPU queue's job definition (infra/lib/posthuman-stack.ts) switches the GPU requirement on
/// with `POSTHUMAN_REQUIRE_GPU=1`: the environment's usual spellings of a boolean all work, and
/// anything else is a usage error rather than a silent "no".
#[test]
fn the_gpu_requirement_is_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    // On a GPU host (scripts/gpu-run.sh runs these tests with the cuda build) the GPU opens.
    let gpu = posthuman_worker::device::compute().is_cuda();
    for (i, (value, required)) in
        [("1", true), ("true", true), ("yes", true), ("0", false), ("false", false)]
            .into_iter()
            .enumerate()
    {
        let s = common::train_spec(&format!("job-env-{i}"));
        let out = job(root, &s, "1").env("POSTHUMAN_REQUIRE_GPU", value).output().unwrap();
        let want = if required && !gpu { exit::NO_GPU } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(want),
            "POSTHUMAN_REQUIRE_GPU={value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = common::train_spec("job-env-bad");
    let out = job(root, &s, "1").env("POSTHUMAN_REQUIRE_GPU", "maybe").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--require-gpu"));
}
