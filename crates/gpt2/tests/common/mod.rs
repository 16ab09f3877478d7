//! Shared test helpers: seeded random tensors and gradient checks.
#![allow(dead_code, clippy::unwrap_used)]

use posthuman_gpt2::candle_core::{DType, Device, Result, Tensor, Var};
use posthuman_gpt2::{Config, SeededRng};

pub fn rand_t(rng: &mut SeededRng, shape: &[usize], scale: f64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

pub fn ids(rng: &mut SeededRng, shape: &[usize], vocab: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<u32> = (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

pub fn tiny_config() -> Config {
    Config::new(37, 16, 16, 2, 2)
}

/// Analytic gradients of scalar `f` at `inputs` (all made Vars).
pub fn grads(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> (f64, Vec<Vec<f64>>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts).unwrap();
    let g = out.backward().unwrap();
    let value = vals(&out)[0];
    let gs = ts
        .iter()
        .map(|t| g.get(t).map(vals).unwrap_or_else(|| vec![0.0; t.elem_count()]))
        .collect();
    (value, gs)
}

/// Central finite differences of scalar `f` (f64 inputs) against its analytic gradient.
pub fn check_fd(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], h: f64, tol: f64) {
    let (_, analytic) = grads(f, inputs);
    for (i, inp) in inputs.iter().enumerate() {
        let base = vals(inp);
        for j in 0..base.len() {
            let eval = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let mut ins = inputs.to_vec();
                ins[i] = Tensor::from_vec(v, inp.shape(), &Device::Cpu).unwrap();
                vals(&f(&ins).unwrap())[0]
            };
            let num = (eval(h) - eval(-h)) / (2.0 * h);
            let a = analytic[i][j];
            assert!(
                (a - num).abs() <= tol * (1.0 + num.abs()),
                "input {i} elem {j}: analytic {a} vs numeric {num}"
            );
        }
    }
}

/// Max |a-b| relative to max |b| (at least 1).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// Reduces an op's output to a scalar with fixed random weights, so every output element
/// contributes a distinct gradient.
pub fn weighted(out: Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let w = rand_t(&mut rng, out.dims(), 1.0, out.dtype());
    (out * w)?.sum_all()
}

/// FD-checks `op` in f64 (the reference path), then compares its f32 (fused) path with
/// it in value and in every input's gradient, which must be finite and nonzero.
pub fn check(op: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs64: Vec<Tensor>) {
    check_fd(op, &inputs64, 1e-6, 1e-6);
    let inputs32: Vec<Tensor> = inputs64.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
    let (v64, g64) = grads(op, &inputs64);
    let (v32, g32) = grads(op, &inputs32);
    assert!((v64 - v32).abs() <= 1e-4 * (1.0 + v64.abs()), "value {v32} vs f64 reference {v64}");
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        let e = rel_err(a, b);
        assert!(e < 2e-4, "input {i}: f32 gradient differs from the f64 reference by {e}");
        assert!(b.iter().all(|x| x.is_finite()), "input {i}: non-finite gradient");
        assert!(b.iter().any(|x| *x != 0.0), "input {i}: zero reference gradient");
    }
}

/// Runs this test binary's `test` alone in a child process with `env` set and `threads`
/// threads (rayon's and candle's pool sizes are fixed per process), and returns the
/// weights hash it prints as `HASH=...`.
pub fn child_hash(test: &str, env: &str, threads: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(env, "1")
        .env("RAYON_NUM_THREADS", threads)
        .env("CANDLE_NUM_THREADS", threads)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let h = stdout.lines().find_map(|l| l.split("HASH=").nth(1));
    h.unwrap_or_else(|| panic!("child: {stdout}")).to_string()
}
