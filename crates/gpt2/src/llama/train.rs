//! The graph-free training step of the Llama family's decoder layers on the CPU in f32
//! (Llama/Mistral, Qwen2's q/k/v biases, Qwen3's q/k norm and explicit head_dim, GQA; a full
//! fine-tune or a LoRA adapter on any of the seven projections, with or without dropout).
//!
//! [`Step::forward`] runs one layer on plain slices and, when asked, keeps exactly what
//! [`Step::backward`] needs: the normed inputs, q/k (after the per-head norm and RoPE) and v,
//! the attention probabilities, the attention output, the residual stream between the two
//! halves, gate/up pre-activations and their product, and each LoRA branch's x·Aᵀ. The
//! backward takes dY to dX and writes every tracked parameter's gradient (a full fine-tune:
//! the weights, biases and norms; LoRA: only A and B) into its own buffer.
//!
//! Why: through candle's autograd, every node input got a zeroed gradient that the node's
//! gradient was then added into, on the calling thread while the rayon pool idled (~55% of a
//! full fine-tune's main-thread samples). Here every product goes to gemm on the pool, and every
//! row-wise pass ([`crate::ops::rows`], RMSNorm, the SwiGLU gate, attention) runs over
//! fixed-size chunks, so no value depends on the thread count. The forward computes each value
//! as the graph's ops compute it, so the loss is the same bits as [`Llama::loss`]'s.
//!
//! Not covered (the caller, [`Llama::loss_and_grads_layerwise`], falls back to the candle
//! graph): tensors off the CPU or in another dtype than f32.

use super::decode::{View, view};
use super::{KeptLayers, Layer, Llama, Proj};
use crate::DropoutRng;
use crate::ops::attention::{self as att, Dims, Qkv};
use crate::ops::kernels::{Mat, Out, col_sums, matmul, matmul_many, with_slice};
use crate::ops::{dense, loss, rms_norm, rows, scratch};
use crate::optim::{ParamGrad, StepGrads};
use candle_core::{DType, Result, Tensor, bail};

/// Whether the hand-written step covers `m` on ids on `ids_cpu`: every tensor CPU f32 and
/// contiguous (as `VarBuilder` and the weight loaders make them).
pub(super) fn applies(m: &Llama, ids_cpu: bool) -> bool {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    ids_cpu
        && f32_cpu(&m.embed)
        && f32_cpu(&m.rope.cos)
        && m.layers.iter().all(|l| {
            [&l.ln_1, &l.ln_2]
                .into_iter()
                .chain(l.q_norm.iter())
                .chain(l.k_norm.iter())
                .all(f32_cpu)
                && [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().all(|p| {
                    f32_cpu(&p.w)
                        && p.b.iter().all(f32_cpu)
                        && p.lora.iter().all(|br| f32_cpu(&br.a) && f32_cpu(&br.b))
                })
        })
}

/// A LoRA branch's A (r, in), B (out, r), its scale and dropout probability.
struct LoraView<'a> {
    a: View<'a>,
    b: View<'a>,
    r: usize,
    scale: f32,
    p: f32,
}

/// One projection's weight (out, in), bias and LoRA branch.
struct ProjView<'a> {
    p: &'a Proj,
    w: View<'a>,
    b: Option<View<'a>>,
    lora: Option<LoraView<'a>>,
    out: usize,
    inp: usize,
}

impl<'a> ProjView<'a> {
    fn new(p: &'a Proj) -> Result<Self> {
        let (out, inp) = p.w.dims2()?;
        let lora = match &p.lora {
            Some(br) => Some(LoraView {
                a: view(&br.a)?,
                b: view(&br.b)?,
                r: br.a.dim(0)?,
                scale: br.scale as f32,
                p: br.dropout,
            }),
            None => None,
        };
        Ok(Self { p, w: view(&p.w)?, b: p.b.as_ref().map(view).transpose()?, lora, out, inp })
    }

    /// The dropout seed this projection draws from `rng` in the graph's forward: one per
    /// LoRA branch with p > 0, none otherwise.
    fn draw(&self, rng: &mut Option<&mut DropoutRng>) -> Option<u64> {
        match (&self.lora, rng.as_deref_mut()) {
            (Some(lo), Some(r)) if lo.p > 0.0 => Some(r.next_seed()),
            _ => None,
        }
    }

    /// y = x·Wᵀ (+ b) (+ s·(drop(x)·Aᵀ)·Bᵀ), as `Proj::fwd` computes it; with a LoRA branch
    /// also x·Aᵀ (of the dropped x), which the backward needs for B's gradient.
    fn forward(
        &self,
        x: &[f32],
        n: usize,
        seed: Option<u64>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let [y] = forward_many([self], x, n, [seed])?;
        Ok(y)
    }

    /// xᵀ's operand of the product x·Wᵀ: W (out, in) read as (in, out).
    fn wt(&self) -> Mat<'_> {
        Mat::t(self.w.s(), self.inp, self.out, self.inp)
    }

    /// The rest of [`ProjView::forward`] after y = x·Wᵀ: the bias, and the LoRA branch.
    fn finish(
        &self,
        x: &[f32],
        n: usize,
        seed: Option<u64>,
        mut y: Vec<f32>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (out, inp) = (self.out, self.inp);
        if let Some(b) = &self.b {
            rows::add_bias(&mut y, b.s());
        }
        let Some(lo) = &self.lora else { return Ok((y, None)) };
        let dropped = seed.map(|s| rows::dropout(x, lo.p, s));
        let xin = Mat::rows(dropped.as_deref().unwrap_or(x), n, inp, inp);
        let mut xa = scratch::take(n * lo.r);
        matmul(&mut xa, lo.r, xin, Mat::t(lo.a.s(), inp, lo.r, inp), false, true)?;
        let mut t = scratch::take(n * out);
        matmul(
            &mut t,
            out,
            Mat::rows(&xa, n, lo.r, lo.r),
            Mat::t(lo.b.s(), lo.r, out, lo.r),
            false,
            true,
        )?;
        rows::add_scaled(&mut y, &t, lo.scale);
        scratch::give(dropped.into_iter().chain([t]));
        Ok((y, Some(xa)))
    }

    /// Whether [`ProjView::backward`] reads its input x (for W's gradient or the LoRA branch's).
    fn reads_input(&self) -> bool {
        self.p.w.track_op() || self.lora.is_some()
    }

    /// From dy (n, out): dx = dy·W (+ ((s·dy)·B·A) ⊙ mask), written or, with `acc`, added
    /// into `dx`; the gradients of the tracked parameters but W pushed onto `grads` (db = Σ dy,
    /// dA = (s·dy·B)ᵀ·drop(x), dB = (s·dy)ᵀ·(drop(x)·Aᵀ)). W's, dW = dyᵀ·x, is
    /// [`backward_many`]'s, which calls this.
    #[allow(clippy::too_many_arguments)]
    fn backward_rest(
        &self,
        x: &[f32],
        n: usize,
        xa: Option<&[f32]>,
        seed: Option<u64>,
        dy: &[f32],
        dx: Option<(&mut [f32], bool)>,
        grads: &mut Vec<ParamGrad>,
    ) -> Result<()> {
        let (out, inp) = (self.out, self.inp);
        let dym = Mat::rows(dy, n, out, out);
        let mut dx = dx;
        if let Some((dx, acc)) = dx.as_mut() {
            matmul(dx, inp, dym, Mat::rows(self.w.s(), out, inp, inp), *acc, true)?;
        }
        if let Some(b) = &self.p.b
            && b.track_op()
        {
            grads.push((b.clone(), col_sums(dy, n, out)));
        }
        let (Some(lo), Some(br)) = (&self.lora, &self.p.lora) else { return Ok(()) };
        let r = lo.r;
        let gs = rows::scaled(dy, lo.scale);
        let mut d = scratch::take(n * r);
        matmul(
            &mut d,
            r,
            Mat::rows(&gs, n, out, out),
            Mat::rows(lo.b.s(), out, r, r),
            false,
            true,
        )?;
        if br.b.track_op() {
            let Some(xa) = xa else { bail!("layer step: no x·Aᵀ kept for a LoRA branch") };
            let mut db = scratch::take(out * r);
            matmul(&mut db, r, Mat::t(&gs, out, n, out), Mat::rows(xa, n, r, r), false, true)?;
            grads.push((br.b.clone(), db));
        }
        let dropped = seed.map(|s| rows::dropout(x, lo.p, s));
        if br.a.track_op() {
            let xin = Mat::rows(dropped.as_deref().unwrap_or(x), n, inp, inp);
            let mut da = scratch::take(r * inp);
            matmul(&mut da, inp, Mat::t(&d, r, n, r), xin, false, true)?;
            grads.push((br.a.clone(), da));
        }
        if let Some((dx, _)) = dx {
            let (dm, am) = (Mat::rows(&d, n, r, r), Mat::rows(lo.a.s(), r, inp, inp));
            match seed {
                None => matmul(dx, inp, dm, am, true, true)?,
                Some(s) => {
                    let mut t = scratch::take(n * inp);
                    matmul(&mut t, inp, dm, am, false, true)?;
                    rows::add_masked(dx, &t, lo.p, s);
                    scratch::give([t]);
                }
            }
        }
        scratch::give(dropped.into_iter().chain([gs, d]));
        Ok(())
    }
}

/// A projection's output and, with a LoRA branch, its x·Aᵀ ([`ProjView::forward`]).
type Projected = (Vec<f32>, Option<Vec<f32>>);

/// [`ProjView::forward`] of projections that all read `x`: their products x·Wᵀ run as one
/// `matmul_many`, so x is packed once for all of them (q, k and v; gate and up), each with
/// the bits its own product gives; then each its bias and LoRA branch.
fn forward_many<const N: usize>(
    ps: [&ProjView; N],
    x: &[f32],
    n: usize,
    seeds: [Option<u64>; N],
) -> Result<[Projected; N]> {
    let mut ys = ps.map(|p| scratch::take(n * p.out));
    let inp = ps.first().map_or(0, |p| p.inp);
    let wts = ps.map(|p| p.wt());
    let mut outs: Vec<Out> = ys
        .iter_mut()
        .zip(&ps)
        .enumerate()
        .map(|(i, (y, p))| Out { dst: y, rs: p.out, a: 0, b: i })
        .collect();
    matmul_many(&[Mat::rows(x, n, inp, inp)], &wts, &mut outs, false, true)?;
    drop(outs);
    let mut done = Vec::with_capacity(N);
    for ((p, y), seed) in ps.iter().zip(ys).zip(seeds) {
        done.push(p.finish(x, n, seed, y)?);
    }
    match done.try_into() {
        Ok(a) => Ok(a),
        Err(_) => bail!("layer step: a projection gave no output"),
    }
}

/// The backward of projections that all read `x`, from their output gradients `dys`:
/// the weights' gradients dW = dyᵀ·x first, as one `matmul_many` that packs x once; then
/// each projection's dx (written or added into `dx` as its flag says for the first, added
/// for the rest, in order) and the rest of its gradients.
#[allow(clippy::too_many_arguments)]
fn backward_many<const N: usize>(
    ps: [&ProjView; N],
    x: &[f32],
    n: usize,
    xas: [Option<&[f32]>; N],
    seeds: [Option<u64>; N],
    dys: [&[f32]; N],
    mut dx: Option<(&mut [f32], bool)>,
    grads: &mut Vec<ParamGrad>,
) -> Result<()> {
    let tracked: Vec<usize> = (0..N).filter(|&i| ps[i].p.w.track_op()).collect();
    if let Some(inp) = tracked.first().map(|&i| ps[i].inp) {
        let mut dws: Vec<Vec<f32>> =
            tracked.iter().map(|&i| scratch::take(ps[i].out * inp)).collect();
        let dyts: Vec<Mat> =
            tracked.iter().map(|&i| Mat::t(dys[i], ps[i].out, n, ps[i].out)).collect();
        let mut outs: Vec<Out> = dws
            .iter_mut()
            .enumerate()
            .map(|(j, dw)| Out { dst: dw, rs: inp, a: j, b: 0 })
            .collect();
        matmul_many(&dyts, &[Mat::rows(x, n, inp, inp)], &mut outs, false, true)?;
        drop(outs);
        grads.extend(tracked.iter().zip(dws).map(|(&i, dw)| (ps[i].p.w.clone(), dw)));
    }
    for i in 0..N {
        let into = dx.as_mut().map(|(d, acc)| (&mut **d, *acc || i > 0));
        ps[i].backward_rest(x, n, xas[i], seeds[i], dys[i], into, grads)?;
    }
    Ok(())
}

/// Indices of the projections in module order (the order dropout seeds are drawn in).
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Everything [`Step::backward`] reads, from [`Step::forward`].
pub(super) struct Saved {
    xn1: Vec<f32>,
    /// q and k before the per-head norm (Qwen3 only).
    qk_pre: Option<(Vec<f32>, Vec<f32>)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<Vec<f32>>,
    a: Vec<f32>,
    x1: Vec<f32>,
    xn2: Vec<f32>,
    /// The gate's inputs; its output silu(g)⊙u is recomputed by the backward when `down`
    /// needs it (cheaper than keeping it: one pass against 4·n·I bytes per kept layer).
    g: Vec<f32>,
    u: Vec<f32>,
    xa: [Option<Vec<f32>>; 7],
}

impl Saved {
    fn give(self) {
        let Saved { xn1, qk_pre, q, k, v, probs, a, x1, xn2, g, u, xa } = self;
        let pre = qk_pre.into_iter().flat_map(|(q, k)| [q, k]);
        scratch::give([xn1, q, k, v, a, x1, xn2, g, u].into_iter().chain(pre));
        scratch::give(probs.into_iter().chain(xa.into_iter().flatten()));
    }
}

/// One decoder layer's parameters, borrowed for a step over a batch of (b, t) rows.
pub(super) struct Step<'a> {
    layer: &'a Layer,
    projs: [ProjView<'a>; 7],
    ln_1: View<'a>,
    ln_2: View<'a>,
    q_norm: Option<View<'a>>,
    k_norm: Option<View<'a>>,
    cos: &'a [f32],
    sin: &'a [f32],
    dims: Dims,
    eps: f32,
    /// The LoRA dropout seeds of this layer's projections (module order).
    pub seeds: [Option<u64>; 7],
}

impl<'a> Step<'a> {
    /// The step of `layer` over (b, t) rows, with the rope tables' values `cos`, `sin`.
    pub(super) fn new(
        m: &Llama,
        layer: &'a Layer,
        (b, t): (usize, usize),
        (cos, sin): (&'a [f32], &'a [f32]),
    ) -> Result<Self> {
        let cfg = &m.cfg;
        let d = cfg.head_dim;
        let half = d / 2;
        if cos.len() < t * half || sin.len() < t * half {
            bail!("layer step: the rope table has no room for {t} positions");
        }
        let l = layer;
        Ok(Self {
            layer,
            projs: [
                ProjView::new(&l.q)?,
                ProjView::new(&l.k)?,
                ProjView::new(&l.v)?,
                ProjView::new(&l.o)?,
                ProjView::new(&l.gate)?,
                ProjView::new(&l.up)?,
                ProjView::new(&l.down)?,
            ],
            ln_1: view(&l.ln_1)?,
            ln_2: view(&l.ln_2)?,
            q_norm: l.q_norm.as_ref().map(view).transpose()?,
            k_norm: l.k_norm.as_ref().map(view).transpose()?,
            cos: &cos[..t * half],
            sin: &sin[..t * half],
            dims: Dims {
                b,
                tq: t,
                tk: t,
                h: cfg.num_attention_heads,
                hkv: cfg.num_key_value_heads,
                d,
            },
            eps: cfg.rms_norm_eps as f32,
            seeds: [None; 7],
        })
    }

    /// Draws this layer's dropout seeds from `rng` as the graph's forward does (module order).
    pub(super) fn draw_seeds(&mut self, rng: &mut Option<&mut DropoutRng>) {
        for (s, p) in self.seeds.iter_mut().zip(&self.projs) {
            *s = p.draw(rng);
        }
    }

    fn rows(&self) -> usize {
        self.dims.b * self.dims.tq
    }

    /// How many f32 values [`Step::forward`] keeps for the backward ([`Saved`]).
    fn saved_values(&self) -> usize {
        let (n, dm, p) = (self.rows(), self.dims, &self.projs);
        let (c, cq, ckv, i) = (p[O].out, p[O].inp, p[K].out, p[DOWN].inp);
        let probs = dm.b * dm.h * dm.tq * dm.tk;
        // xn1, q, k, v, a, x1, xn2, g, u; Qwen3's q and k before their norm; LoRA's x·Aᵀ.
        let qk_pre = if self.q_norm.is_some() { cq + ckv } else { 0 };
        let lora: usize = p.iter().filter_map(|p| p.lora.as_ref()).map(|lo| lo.r).sum();
        n * (3 * c + 2 * cq + 2 * ckv + 2 * i + qk_pre + lora) + probs
    }

    fn rope(&self, x: &[f32], heads: usize, sign: f32) -> Vec<f32> {
        let dm = self.dims;
        rows::rope(x, dm.tq, heads, dm.d, self.cos, self.sin, sign)
    }

    fn qkv<'s>(&self, s: &'s Saved) -> Qkv<'s> {
        let dm = self.dims;
        let (c, ckv) = (dm.h * dm.d, dm.hkv * dm.d);
        Qkv { q: &s.q, qs: c, k: &s.k, ks: ckv, v: &s.v, vs: ckv }
    }

    /// The layer's output for input rows `x` (n, C), and with `keep` what the backward needs.
    pub(super) fn forward(&self, x: &[f32], keep: bool) -> Result<(Vec<f32>, Option<Saved>)> {
        match self.run(x, keep, true)? {
            (Some(y), s) => Ok((y, s)),
            _ => bail!("layer step: the forward gave no output"),
        }
    }

    /// The forward again from the layer's input `x`, keeping what the backward needs (and
    /// skipping the output itself where no LoRA branch on `down` needs its products).
    pub(super) fn saving(&self, x: &[f32]) -> Result<Saved> {
        match self.run(x, true, false)? {
            (y, Some(s)) => {
                scratch::give(y);
                Ok(s)
            }
            _ => bail!("layer step: the forward kept nothing"),
        }
    }

    fn run(&self, x: &[f32], keep: bool, out: bool) -> Result<(Option<Vec<f32>>, Option<Saved>)> {
        let (n, eps, dm, sd) = (self.rows(), self.eps, self.dims, &self.seeds);
        let p = &self.projs;
        let xn1 = rms_norm::fwd(x, self.ln_1.s(), eps);
        let [(q0, xa_q), (k0, xa_k), (v, xa_v)] =
            forward_many([&p[Q], &p[K], &p[V]], &xn1, n, [sd[Q], sd[K], sd[V]])?;
        // Qwen3: the per-head RMSNorm (over head_dim) before RoPE.
        let norm = |y: &[f32], w: &Option<View>| w.as_ref().map(|w| rms_norm::fwd(y, w.s(), eps));
        let (qn, kn) = (norm(&q0, &self.q_norm), norm(&k0, &self.k_norm));
        let q = self.rope(qn.as_deref().unwrap_or(&q0), dm.h, 1.0);
        let k = self.rope(kn.as_deref().unwrap_or(&k0), dm.hkv, 1.0);
        scratch::give(qn.into_iter().chain(kn));
        let qk_pre = if self.q_norm.is_some() && keep {
            Some((q0, k0))
        } else {
            scratch::give([q0, k0]);
            None
        };
        let (c, ckv) = (dm.h * dm.d, dm.hkv * dm.d);
        let (a, probs) =
            att::attention_fwd(&Qkv { q: &q, qs: c, k: &k, ks: ckv, v: &v, vs: ckv }, dm, None)?;
        let (o, xa_o) = p[O].forward(&a, n, sd[O])?;
        let x1 = rows::add(x, &o);
        scratch::give([o]);
        let xn2 = rms_norm::fwd(&x1, self.ln_2.s(), eps);
        let [(g, xa_g), (u, xa_u)] = forward_many([&p[GATE], &p[UP]], &xn2, n, [sd[GATE], sd[UP]])?;
        let h = dense::silu_mul_values(&g, &u)?;
        let (y, xa_d) = if !out && p[DOWN].lora.is_none() {
            (None, None)
        } else {
            let (mlp, xa_d) = p[DOWN].forward(&h, n, sd[DOWN])?;
            let y = rows::add(&x1, &mlp);
            scratch::give([mlp]);
            (Some(y), xa_d)
        };
        scratch::give([h]);
        let saved = Saved {
            xn1,
            qk_pre,
            q,
            k,
            v,
            probs,
            a,
            x1,
            xn2,
            g,
            u,
            xa: [xa_q, xa_k, xa_v, xa_o, xa_g, xa_u, xa_d],
        };
        if keep {
            return Ok((y, Some(saved)));
        }
        saved.give();
        Ok((y, None))
    }

    /// From dY (n, C) and the forward's `saved` for input `x`: dX (when `need_dx`), with each
    /// tracked parameter's gradient pushed onto `grads`.
    pub(super) fn backward(
        &self,
        x: &[f32],
        s: Saved,
        dy: &[f32],
        need_dx: bool,
        grads: &mut Vec<ParamGrad>,
    ) -> Result<Option<Vec<f32>>> {
        let (n, eps, dm, sd) = (self.rows(), self.eps, self.dims, &self.seeds);
        let (p, l) = (&self.projs, self.layer);
        let (c, cq, i) = (p[O].out, p[O].inp, p[DOWN].inp);
        let xa = |j: usize| s.xa[j].as_deref();
        // The MLP: down, the gate, then gate and up back to the normed input.
        let mut dh = scratch::take(n * i);
        let h = match p[DOWN].reads_input() {
            true => dense::silu_mul_values(&s.g, &s.u)?,
            false => Vec::new(),
        };
        let into = Some((&mut dh[..], false));
        backward_many([&p[DOWN]], &h, n, [xa(DOWN)], [sd[DOWN]], [dy], into, grads)?;
        scratch::give([h]);
        let (dg, du) = dense::silu_mul_grads(&s.g, &s.u, &dh)?;
        scratch::give([dh]);
        let mut dxn2 = scratch::take(n * c);
        backward_many(
            [&p[GATE], &p[UP]],
            &s.xn2,
            n,
            [xa(GATE), xa(UP)],
            [sd[GATE], sd[UP]],
            [&dg, &du],
            Some((&mut dxn2, false)),
            grads,
        )?;
        scratch::give([dg, du]);
        let (dn2, dln2) = rms_norm::bwd(&s.x1, self.ln_2.s(), &dxn2, eps);
        scratch::give([dxn2]);
        push_if_tracked(grads, &l.ln_2, dln2);
        let dx1 = rows::add(dy, &dn2);
        scratch::give([dn2]);
        // Attention: o, the heads, RoPE's transpose, the per-head norm, then q, k, v.
        let mut da = scratch::take(n * cq);
        let into = Some((&mut da[..], false));
        backward_many([&p[O]], &s.a, n, [xa(O)], [sd[O]], [&dx1], into, grads)?;
        let [dq, dk, dv] = att::gqa_bwd(&self.qkv(&s), &da, &s.probs, dm)?;
        scratch::give([da]);
        let (mut dq, mut dk) = (self.rope(&dq, dm.h, -1.0), self.rope(&dk, dm.hkv, -1.0));
        if let (Some((q0, k0)), Some(qw), Some(kw)) = (&s.qk_pre, &self.q_norm, &self.k_norm) {
            let (dq0, dqw) = rms_norm::bwd(q0, qw.s(), &dq, eps);
            let (dk0, dkw) = rms_norm::bwd(k0, kw.s(), &dk, eps);
            scratch::give([std::mem::replace(&mut dq, dq0), std::mem::replace(&mut dk, dk0)]);
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                push_if_tracked(grads, qn, dqw);
                push_if_tracked(grads, kn, dkw);
            }
        }
        // The normed input's gradient only when something reads it (not for the first layer
        // of a LoRA step, whose input and first norm are frozen).
        let mut dxn1 = (need_dx || l.ln_1.track_op()).then(|| scratch::take(n * c));
        backward_many(
            [&p[Q], &p[K], &p[V]],
            &s.xn1,
            n,
            [xa(Q), xa(K), xa(V)],
            [sd[Q], sd[K], sd[V]],
            [&dq, &dk, &dv],
            dxn1.as_deref_mut().map(|d| (d, false)),
            grads,
        )?;
        scratch::give([dq, dk, dv]);
        s.give();
        let mut dx = None;
        if let Some(dxn1) = dxn1 {
            let (dn1, dln1) = rms_norm::bwd(x, self.ln_1.s(), &dxn1, eps);
            push_if_tracked(grads, &l.ln_1, dln1);
            if need_dx {
                dx = Some(rows::add(&dx1, &dn1));
            }
            scratch::give([dxn1, dn1]);
        }
        scratch::give([dx1]);
        Ok(dx)
    }
}

/// How many layers, from the last, keep their forward activations ([`KeptLayers`]) when each
/// keeps `per_layer` values.
///
/// Why the parameter state as the bound: at llama30m's batch 4×256 a full fine-tune holds
/// 514 MiB of weights, gradients and moments, and all eight layers' activations are 270 MiB;
/// keeping them all instead of only the last ran the step 17% faster (1,290 against 1,100
/// tok/s, one run), at a peak of 990 MiB, 0.47× PyTorch's 2,100 (which keeps them all too).
/// Long contexts are what the bound is for: each layer's attention probabilities grow with
/// the square of the context (1 GiB a layer at 8×2048 there), and those layers are recomputed
/// instead. A LoRA step keeps every layer (its base holds no gradients or moments; measured:
/// 578 MiB = 0.34× of peft's, and recomputing cost it 25% of its tok/cpu-s).
fn kept_layers(m: &Llama, per_layer: usize) -> usize {
    let nl = m.layers.len();
    let fit = match m.kept {
        KeptLayers::AtMost(k) => k,
        KeptLayers::Auto if m.has_lora() => nl,
        KeptLayers::Auto => 16 * trained_values(m) / (4 * per_layer).max(1),
    };
    fit.clamp(1.min(nl), nl)
}

/// How many values of `m`'s parameters are trained (tracked by the graph).
fn trained_values(m: &Llama) -> usize {
    let mut ts: Vec<&Tensor> = vec![&m.embed, &m.norm];
    if !m.cfg.tie_word_embeddings {
        ts.push(&m.lm_head);
    }
    for l in &m.layers {
        ts.extend([&l.ln_1, &l.ln_2].into_iter().chain(l.q_norm.iter()).chain(l.k_norm.iter()));
        for p in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
            ts.extend(std::iter::once(&p.w).chain(p.b.iter()));
            ts.extend(p.lora.iter().flat_map(|br| [&br.a, &br.b]));
        }
    }
    ts.iter().filter(|t| t.track_op()).map(|t| t.elem_count()).sum()
}

fn push_if_tracked(grads: &mut Vec<ParamGrad>, p: &Tensor, g: Vec<f32>) {
    if p.track_op() {
        grads.push((p.clone(), g));
    }
}

/// A training step's loss, its gradients handed to `sink` stage by stage: the head (the
/// final norm and the lm head), then each layer from the last, its activations kept from the
/// forward or recomputed from its input by [`Step::saving`] ([`KeptLayers`]), differentiated
/// by [`Step::backward`], then the embedding (when it is trained), all as
/// [`StepGrads::Params`]. LoRA dropout seeds are drawn in the first forward, in the graph's
/// order, and replayed by a recomputation.
pub(super) fn loss_and_grads(
    m: &Llama,
    ids: &Tensor,
    targets: &Tensor,
    mut dropout: Option<&mut DropoutRng>,
    sink: &mut dyn FnMut(StepGrads<'_>) -> Result<()>,
) -> Result<f32> {
    let (b, t) = m.check_ids(ids, 0)?;
    if targets.dims() != [b, t] {
        bail!("targets {:?} must match ids ({b}, {t})", targets.dims());
    }
    let c = m.cfg.hidden_size;
    let (cos, sin) = (view(&m.rope.cos)?, view(&m.rope.sin)?);
    let rope = (cos.s(), sin.s());
    let mut x = with_slice::<f32, _>(&m.embed_ids(&m.embed.detach(), ids, b, t)?, |s| {
        Ok(scratch::copy(s))
    })?;
    let mut inputs = Vec::with_capacity(m.layers.len());
    let mut seeds = Vec::with_capacity(m.layers.len());
    let nl = m.layers.len();
    let keep_n = match m.layers.first() {
        Some(l) => kept_layers(m, Step::new(m, l, (b, t), rope)?.saved_values()),
        None => 0,
    };
    let mut kept: Vec<Option<Saved>> = Vec::with_capacity(nl);
    for (li, l) in m.layers.iter().enumerate() {
        let mut step = Step::new(m, l, (b, t), rope)?;
        step.draw_seeds(&mut dropout);
        let (y, saved) = step.forward(&x, li + keep_n >= nl)?;
        kept.push(saved);
        seeds.push(step.seeds);
        inputs.push(std::mem::replace(&mut x, y));
    }
    // The head by hand too: the final RMSNorm and the fused lm-head loss forward and back, as
    // the graph computes them (the same loss bits), their gradients in pooled buffers: through
    // the graph, candle's fresh tensors for dW of the head were ~7k page faults a step.
    let eps = m.cfg.rms_norm_eps as f32;
    let (norm_w, head_w) = (view(&m.norm)?, view(&m.lm_head)?);
    let (v, _) = m.lm_head.dims2()?;
    let hn = rms_norm::fwd(&x, norm_w.s(), eps);
    let (loss, head_grads) = with_slice::<u32, _>(&targets.flatten_all()?, |tg| {
        loss::head_mean(&hn, head_w.s(), tg, (c, v), true, m.lm_head.track_op())
    })?;
    let Some((dh, dhead)) = head_grads else { bail!("the lm head gave no gradient") };
    let (mut g, dnorm) = rms_norm::bwd(&x, norm_w.s(), &dh, eps);
    let mut grads = Vec::new();
    if !dhead.is_empty() {
        grads.push((m.lm_head.clone(), dhead));
    }
    push_if_tracked(&mut grads, &m.norm, dnorm);
    sink(StepGrads::Params(&grads))?;
    scratch::give(grads.into_iter().map(|(_, g)| g).chain([hn, dh, x]));
    let train_embed = m.embed.track_op();
    for (li, l) in m.layers.iter().enumerate().rev() {
        let Some(x_in) = inputs.pop() else { bail!("no input kept for layer {li}") };
        let mut step = Step::new(m, l, (b, t), rope)?;
        step.seeds = seeds[li];
        let saved = match kept.pop().flatten() {
            Some(s) => s,
            None => step.saving(&x_in)?,
        };
        let mut grads = Vec::new();
        let dx = step.backward(&x_in, saved, &g, li > 0 || train_embed, &mut grads)?;
        drop(step);
        sink(StepGrads::Params(&grads))?;
        // The gradients are freed, not pooled: pooled, their sizes sat beside the activations'
        // for the rest of the step (measured +12 MiB peak, no faster).
        drop(grads);
        scratch::give([x_in]);
        let Some(dx) = dx else { return Ok(loss) };
        scratch::give([std::mem::replace(&mut g, dx)]);
    }
    // The embedding's gradient: each position's row added into its token's, in position order
    // (as candle's index_add does), in a pooled buffer (the graph's fresh ones were another
    // ~8k page faults a step).
    let (v, _) = m.embed.dims2()?;
    let mut de = scratch::zeroed(v * c);
    with_slice::<u32, _>(&ids.flatten_all()?, |ids| {
        for (row, &id) in g.chunks_exact(c).zip(ids) {
            let Some(d) = de.get_mut(id as usize * c..(id as usize + 1) * c) else {
                bail!("token id {id} is outside the vocabulary of {v}")
            };
            for (a, &x) in d.iter_mut().zip(row) {
                *a += x;
            }
        }
        Ok(())
    })?;
    let grads = [(m.embed.clone(), de)];
    sink(StepGrads::Params(&grads))?;
    scratch::give(grads.into_iter().map(|(_, d)| d).chain([g]));
    Ok(loss)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use crate::llama::{Config, init_weights};
    use candle_core::Device;
    use candle_nn::VarBuilder;

    #[test]
    fn auto_keeps_what_fits_in_the_parameter_state() {
        let mut cfg = Config::tiny(61, 32, 4, 4, 2);
        cfg.intermediate_size = 40;
        cfg.max_position_embeddings = 512;
        let vm = init_weights(&cfg, 1).unwrap();
        let mut m =
            Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let per_layer = |m: &Llama, t: usize| {
            let (cos, sin) = (view(&m.rope.cos).unwrap(), view(&m.rope.sin).unwrap());
            Step::new(m, &m.layers[0], (1, t), (cos.s(), sin.s())).unwrap().saved_values()
        };
        // 8 tokens: a layer keeps ~2.4k values against ~32k trained (×4 for their state).
        assert_eq!(kept_layers(&m, per_layer(&m, 8)), 4);
        // 512 tokens: the 4×512² attention probabilities alone outgrow the state; the last
        // layer is still kept.
        assert_eq!(kept_layers(&m, per_layer(&m, 512)), 1);
        m.set_kept_layers(KeptLayers::AtMost(2));
        assert_eq!(kept_layers(&m, per_layer(&m, 8)), 2);
        m.set_kept_layers(KeptLayers::AtMost(0));
        assert_eq!(kept_layers(&m, per_layer(&m, 8)), 1);
    }
}
