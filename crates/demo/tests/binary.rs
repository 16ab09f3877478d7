//! The `posthuman-demo` binary's flags — the ones `posthuman demo` took, `--json` its own now —
//! and its refusals, with the CLI's exit codes. The story itself runs in the workspace's demo
//! test (`tests/tests/demo.rs`, the library) and, as this binary, in the storefront's and
//! ocean.js's tests (`web/tests/browser.mjs`, `tests/ocean/compute.mjs`).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns may unwrap too

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_posthuman-demo");

fn demo(args: &[&str]) -> Output {
    // A worker program that exists, wherever cargo put (or did not put) posthuman-worker: these
    // refusals come before any job.
    Command::new(BIN)
        .args(args)
        .env("POSTHUMAN_WORKER", "/bin/true")
        .output()
        .expect("run posthuman-demo")
}

#[test]
fn it_takes_the_demos_flags() {
    let o = demo(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in ["--data-dir", "--size", "--wikitext", "--lora-rank", "--family", "--json"] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
    let o = demo(&["--size", "huge"]);
    assert_eq!(o.status.code(), Some(2), "an unknown size is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("tiny"), "names the sizes");
}

/// A data dir that already holds a deployment is refused before anything starts.
#[test]
fn a_used_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("operator")).unwrap();
    let o = demo(&["--size", "tiny", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not fresh"), "{o:?}");
}

/// A WikiText directory without the demo's files, or with too little text, is refused before
/// anything starts (it used to be read after the chain was up and five accounts funded, and a
/// short `valid.txt` ended in the API's refusal of an empty dataset, exit 3).
#[test]
fn a_wrong_wikitext_dir_is_refused_before_anything_starts() {
    let line =
        "The tower is 324 metres tall , about the same height as an 81 @-@ storey building .\n";
    for (valid_bytes, named) in [(100, "valid.txt"), (70_000, "test.txt")] {
        let data = tempfile::tempdir().unwrap();
        let wikitext = tempfile::tempdir().unwrap();
        let text = line.repeat(valid_bytes / line.len() + 1);
        std::fs::write(wikitext.path().join("valid.txt"), text).unwrap();
        let o = demo(&[
            "--size",
            "tiny",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--wikitext",
            wikitext.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(named) && err.contains("--wikitext"), "{named}: {err}");
        let left: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing may start: the data dir holds {left:?}");
    }
}
