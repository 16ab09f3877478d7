//! Training: bit-identical weights across runs and across 1 vs 2 threads, resume from
//! weights + optimizer state, gradient accumulation, clipping, and that loss goes down.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{Device, Tensor};
use posthuman_gpt2::candle_nn::{VarBuilder, VarMap};
use posthuman_gpt2::{
    AdamW, AdamWConfig, Config, DropoutRng, Gpt2, Grads, SeededRng, Weights, clip_grad_norm,
    init_weights,
};

fn cfg() -> Config {
    let mut c = Config::new(50, 32, 32, 2, 4);
    c.resid_pdrop = 0.1;
    c.attn_pdrop = 0.1;
    c.embd_pdrop = 0.1;
    c
}

fn model(cfg: &Config, vm: &VarMap) -> Gpt2 {
    Gpt2::new(
        cfg,
        VarBuilder::from_varmap(vm, posthuman_gpt2::candle_core::DType::F32, &Device::Cpu),
    )
    .unwrap()
}

/// Trains `steps` steps from `start` (step index), two micro-batches per step, and returns
/// the final losses.
fn train(
    cfg: &Config,
    vm: &VarMap,
    opt: &mut AdamW,
    start: u64,
    steps: u64,
    (b, t): (usize, usize),
) -> Vec<f32> {
    let m = model(cfg, vm);
    let mut losses = Vec::new();
    for step in start..start + steps {
        let mut grads = Grads::zeros(opt);
        for micro in 0..2 {
            let mut rng = SeededRng::new(step * 10 + micro);
            let (x, y) =
                (ids(&mut rng, &[b, t], cfg.vocab_size), ids(&mut rng, &[b, t], cfg.vocab_size));
            let mut drop = DropoutRng::new(step * 10 + micro + 1000);
            let loss = m.loss(&x, &y, Some(&mut drop)).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            grads.accumulate(opt, &loss.backward().unwrap()).unwrap();
        }
        grads.scale(0.5);
        clip_grad_norm(&mut grads, 1.0);
        opt.step(&grads, 1e-3).unwrap();
    }
    losses
}

fn hash(cfg: &Config, vm: &VarMap) -> String {
    Weights::from_var_map(cfg, vm).unwrap().hash().unwrap().to_string()
}

/// Large enough that gemm really splits work across threads.
fn run_once() -> String {
    let mut c = Config::new(512, 64, 128, 2, 4);
    (c.resid_pdrop, c.attn_pdrop, c.embd_pdrop) = (0.1, 0.1, 0.1);
    let vm = init_weights(&c, 42).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    train(&c, &vm, &mut opt, 0, 2, (4, 64));
    hash(&c, &vm)
}

/// Entry point for the child processes of `bit_identical_across_thread_counts`.
#[test]
fn child_print_hash() {
    if std::env::var("GPT2_CHILD").is_ok() {
        println!("HASH={}", run_once());
    }
}

#[test]
fn bit_identical_across_runs_and_thread_counts() {
    let a = run_once();
    assert_eq!(a, run_once());
    // Separate processes, since rayon's global pool size is fixed per process.
    for threads in ["1", "2"] {
        let h = child_hash("child_print_hash", "GPT2_CHILD", threads);
        assert_eq!(h, a, "{threads} thread(s) gave different weights");
    }
}

#[test]
fn resume_from_checkpoint_reaches_the_same_weights() {
    let c = cfg();
    let vm = init_weights(&c, 7).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    train(&c, &vm, &mut opt, 0, 4, (2, 24));
    let straight = hash(&c, &vm);

    let vm = init_weights(&c, 7).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    train(&c, &vm, &mut opt, 0, 2, (2, 24));
    let dir = tempfile::tempdir().unwrap();
    let (wp, op) = (dir.path().join("w.safetensors"), dir.path().join("opt.safetensors"));
    posthuman_gpt2::save_safetensors(&Weights::from_var_map(&c, &vm).unwrap(), &wp).unwrap();
    opt.save_state(&op).unwrap();
    // The canonical state hash: the same from the optimizer and from its file, and it moves
    // with the moments and the step counter.
    let saved_hash = opt.state_hash();
    // A checkpoint's two commitments, computed side by side, are the sequential ones.
    let snap = Weights::from_var_map(&c, &vm).unwrap();
    assert_eq!(opt.checkpoint_hashes(&snap).unwrap(), (snap.hash().unwrap(), saved_hash));
    let image = std::fs::read(&op).unwrap();
    assert_eq!(posthuman_gpt2::optimizer_state_hash(&image).unwrap(), saved_hash);
    assert!(posthuman_gpt2::optimizer_state_hash(&image[..image.len() - 4]).is_err());
    assert!(posthuman_gpt2::optimizer_state_hash(b"garbage").is_err());
    drop((vm, opt));

    let vm = posthuman_gpt2::load_safetensors(&wp, &c).unwrap().to_var_map(&Device::Cpu).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    opt.load_state(&op).unwrap();
    assert_eq!(opt.step_count(), 2);
    assert_eq!(opt.state_hash(), saved_hash);
    train(&c, &vm, &mut opt, 2, 2, (2, 24));
    assert_eq!(hash(&c, &vm), straight);
    assert_ne!(opt.state_hash(), saved_hash);
    // State of another model is refused.
    let other = init_weights(&Config::new(50, 32, 32, 1, 4), 1).unwrap();
    let mut wrong = AdamW::new(&other, AdamWConfig::default()).unwrap();
    assert!(wrong.load_state(&op).is_err());
    assert!(wrong.load_state_bytes(b"garbage").is_err());
}

#[test]
fn accumulation_equals_the_big_batch() {
    let mut c = cfg();
    (c.resid_pdrop, c.attn_pdrop, c.embd_pdrop) = (0.0, 0.0, 0.0);
    let vm = init_weights(&c, 3).unwrap();
    let m = model(&c, &vm);
    let opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    let mut rng = SeededRng::new(5);
    let (x, y) = (ids(&mut rng, &[4, 16], 50), ids(&mut rng, &[4, 16], 50));
    let big = Grads::from_store(&opt, &m.loss(&x, &y, None).unwrap().backward().unwrap()).unwrap();
    let mut acc = Grads::zeros(&opt);
    for h in 0..2 {
        let (xs, ys) = (x.narrow(0, 2 * h, 2).unwrap(), y.narrow(0, 2 * h, 2).unwrap());
        acc.accumulate(&opt, &m.loss(&xs, &ys, None).unwrap().backward().unwrap()).unwrap();
    }
    acc.scale(0.5);
    for i in 0..opt.params().len() {
        let (a, b) = (acc.get(i).unwrap(), big.get(i).unwrap());
        let (a, b): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
        assert!(rel_err(&a, &b) < 1e-4, "{}", opt.params()[i].name);
    }
    // Clipping: returns the pre-clip norm and leaves norm ≤ max.
    let n = big.norm();
    let mut clipped = big.clone();
    assert_eq!(clip_grad_norm(&mut clipped, n / 4.0), n);
    assert!((clipped.norm() - n / 4.0).abs() < 1e-3 * n);
}

#[test]
fn loss_decreases_and_decay_skips_rank_one() {
    let mut c = cfg();
    (c.resid_pdrop, c.attn_pdrop, c.embd_pdrop) = (0.0, 0.0, 0.0);
    let vm = init_weights(&c, 11).unwrap();
    let m = model(&c, &vm);
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    for p in opt.params() {
        assert_eq!(p.decay, p.var.rank() >= 2, "{}", p.name);
    }
    let pattern: Vec<u32> = (0..64).map(|i| (i * 7 % 50) as u32).collect();
    let x = Tensor::from_vec(pattern[..63].to_vec(), (1, 63), &Device::Cpu)
        .unwrap()
        .narrow(1, 0, 32)
        .unwrap();
    let y = Tensor::from_vec(pattern[1..].to_vec(), (1, 63), &Device::Cpu)
        .unwrap()
        .narrow(1, 0, 32)
        .unwrap();
    let first = m.loss(&x, &y, None).unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..30 {
        let g =
            Grads::from_store(&opt, &m.loss(&x, &y, None).unwrap().backward().unwrap()).unwrap();
        opt.step(&g, 3e-3).unwrap();
    }
    let last = m.loss(&x, &y, None).unwrap().to_scalar::<f32>().unwrap();
    assert!(last < first * 0.5, "loss {first} -> {last}");
}
