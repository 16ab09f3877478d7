//! The training step's forward and backward on the CPU without a graph.
//!
//! [`Gpt2::loss`] builds a candle graph out of the fused ops, and `backward()` walks it. On
//! the CPU that walk costs more than the arithmetic it schedules: every residual add and every
//! gradient sum is a candle elementwise op on a second, spin-waiting thread pool, every node
//! allocates, and the lm-head gradients wait in the graph for their turn. Here the same fused
//! kernels run in a fixed order over flat slices: the forward keeps exactly what backward
//! needs, backward consumes it layer by layer, and the gradients come out by parameter name.
//!
//! The arithmetic is the graph path's, operation for operation (same kernels, same dropout
//! seeds in the same order, and every gradient that sums two contributions adds the same two
//! values), so loss and gradients are bit-identical to `loss()` + `backward()`; a test holds
//! this. Other devices and dtypes take the graph path.

use crate::ops::attention::{Dropout, attention_bwd, causal_dims, causal_fwd};
use crate::ops::linear::{Activation, linear_bwd, linear_fwd};
use crate::ops::loss::{embed_bwd, embed_fwd, lm_head_mean, lm_head_nll};
use crate::ops::norm::{ln_bwd, ln_fwd};
use crate::ops::scratch;
use crate::rng::keep;
use crate::{DropoutRng, Gpt2, param_shapes};
use candle_core::{DType, Result, Storage, Tensor, bail};
use rayon::prelude::*;

/// Gradients by HF parameter name, in [`param_shapes`] order.
pub type NamedGrads = Vec<(String, Vec<f32>)>;

/// What one block's backward needs from its forward.
struct Saved {
    x_in: Vec<f32>,
    h1: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<Vec<f32>>,
    attn_drop: Option<Dropout>,
    a: Vec<f32>,
    resid_attn: Option<(f32, u64)>,
    x_mid: Vec<f32>,
    h2: Vec<f32>,
    pre: Vec<f32>,
    act: Vec<f32>,
    resid_mlp: Option<(f32, u64)>,
}

/// The blocks' forward result.
struct Forward {
    /// The residual stream after the last block, (B·T, C).
    x: Vec<f32>,
    /// Per block, for backward (empty without `save`).
    saved: Vec<Saved>,
    embd_drop: Option<(f32, u64)>,
}

/// x ← x · mask, the inverted-dropout mask of [`crate::ops::reference::dropout_mask`].
fn apply_mask(x: &mut [f32], (p, seed): (f32, u64)) {
    let s = 1.0 / (1.0 - p);
    const CH: usize = 1 << 14;
    x.par_chunks_mut(CH).enumerate().for_each(|(ci, xs)| {
        let base = (ci * CH) as u64;
        for (i, v) in xs.iter_mut().enumerate() {
            *v *= if keep(seed, base + i as u64, p) { s } else { 0.0 };
        }
    });
}

/// a ← a + b, elementwise on rayon's threads.
fn add_into(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(1 << 14).zip(b.par_chunks(1 << 14)).for_each(|(a, b)| {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    });
}

/// b ← a + b (the graph's `a + b` with the result in b's buffer; IEEE addition commutes, so
/// the bits are the graph's).
fn add_from(a: &[f32], b: &mut [f32]) {
    add_into(b, a);
}

impl Gpt2 {
    /// Mean cross-entropy over `targets` (B, T) u32 and its gradient for every parameter, by
    /// HF name in [`param_shapes`] order. Equal to [`Gpt2::loss`] followed by `backward()`,
    /// bit for bit; on CPU f32 it runs without a graph (see the module docs). A model with
    /// LoRA branches ([`Gpt2::with_lora`]) takes the graph and returns the gradients of the
    /// adapter's A and B instead, by PEFT name (the base is frozen).
    pub fn loss_and_grads(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<(f32, NamedGrads)> {
        let wte = self.param_tensors()[0];
        let cpu = wte.device().is_cpu() && wte.dtype() == DType::F32;
        if !self.lora_branches().is_empty() {
            return self.lora_loss_and_grads(input_ids, targets, dropout);
        }
        if !cpu {
            return self.graph_loss_and_grads(input_ids, targets, dropout);
        }
        if targets.dims() != input_ids.dims() || targets.dtype() != DType::U32 {
            bail!(
                "targets {:?} must be u32 shaped like the inputs {:?}",
                targets.dims(),
                input_ids.dims()
            );
        }
        let (b, t) = input_ids.dims2()?;
        if b == 0 || t == 0 || t > self.config().n_positions || input_ids.dtype() != DType::U32 {
            bail!(
                "input ids must be u32 (B, T) with 0 < T ≤ n_positions, got {:?}",
                input_ids.dims()
            );
        }
        let ids = input_ids.flatten_all()?.to_vec1::<u32>()?;
        let tg = targets.flatten_all()?.to_vec1::<u32>()?;
        let (loss, grads) =
            self.with_param_slices(|w| self.cpu_step(w, &ids, &tg, b, t, dropout))?;
        let names = param_shapes(self.config()).into_iter().map(|(n, _)| n);
        Ok((loss, names.zip(grads).collect()))
    }

    /// Per-token NLL (B·T) of a no-grad forward on CPU f32 (evaluation), the same arithmetic
    /// as the graph path's `token_nll`; `None` on other devices or dtypes.
    pub(crate) fn cpu_token_nll(
        &self,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
    ) -> Result<Option<Vec<f32>>> {
        let wte = self.param_tensors()[0];
        // LoRA branches run on the graph path only.
        let fused = wte.device().is_cpu() && wte.dtype() == DType::F32;
        if !fused || !self.lora_branches().is_empty() {
            return Ok(None);
        }
        let cfg = self.config();
        let (c, nl) = (cfg.n_embd, cfg.n_layer);
        let nll = self.with_param_slices(|w| {
            let fwd = self.cpu_forward(w, ids, b, t, None, false)?;
            let hf = ln_fwd(&fwd.x, w[2 + 12 * nl], w[3 + 12 * nl], cfg.layer_norm_epsilon as f32);
            let nll = lm_head_nll(&hf, w[0], targets, c, w[0].len() / c, false)?.0;
            scratch::give([fwd.x, hf]);
            Ok(nll)
        })?;
        Ok(Some(nll))
    }

    /// Runs `f` on every parameter's CPU f32 data, in [`param_shapes`] order, read in place
    /// (the storages stay read-locked meanwhile).
    fn with_param_slices<R>(&self, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
        let tensors = self.param_tensors();
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = guards
            .iter()
            .map(|(st, l)| match &**st {
                Storage::Cpu(s) => crate::ops::kernels::cpu_slice::<f32>(s, l),
                _ => bail!("parameter is not on the CPU"),
            })
            .collect::<Result<Vec<&[f32]>>>()?;
        f(&slices)
    }

    /// The graph path (any device): `loss()` then `backward()`, gradients read by name.
    fn graph_loss_and_grads(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<(f32, NamedGrads)> {
        let names = param_shapes(self.config()).into_iter().map(|(name, _)| name);
        self.backward_named(input_ids, targets, dropout, names.zip(self.param_tensors()))
    }

    /// With LoRA branches ([`Gpt2::with_lora`]): loss and backward on the graph, the
    /// gradients of the adapter's A and B under PEFT's names (the base is frozen).
    fn lora_loss_and_grads(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<(f32, NamedGrads)> {
        let branches = self.lora_branches();
        let params =
            branches.iter().flat_map(|br| [(br.a_name.clone(), &br.a), (br.b_name.clone(), &br.b)]);
        let (loss, mut out) = self.backward_named(input_ids, targets, dropout, params)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((loss, out))
    }

    /// `loss()` then `backward()`, and the f32 gradient of each named tensor in `params`
    /// (zeros for one the loss does not reach).
    fn backward_named<'a>(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
        params: impl IntoIterator<Item = (String, &'a Tensor)>,
    ) -> Result<(f32, NamedGrads)> {
        let loss = self.loss(input_ids, targets, dropout)?;
        let store = loss.backward()?;
        let mut out = Vec::new();
        for (name, t) in params {
            let g = match store.get(t) {
                Some(g) => g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0f32; t.elem_count()],
            };
            out.push((name, g));
        }
        Ok((loss.to_dtype(DType::F32)?.to_scalar::<f32>()?, out))
    }

    /// The blocks' forward over parameter slices in [`param_shapes`] order: the residual
    /// stream after the last block, and (when `save`) what each block's backward needs.
    #[allow(clippy::too_many_arguments)]
    fn cpu_forward(
        &self,
        w: &[&[f32]],
        ids: &[u32],
        b: usize,
        t: usize,
        mut dropout: Option<&mut DropoutRng>,
        save: bool,
    ) -> Result<Forward> {
        let cfg = self.config();
        let (c, f, nl) = (cfg.n_embd, cfg.inner_dim(), cfg.n_layer);
        let eps = cfg.layer_norm_epsilon as f32;
        if w.len() != 2 + 12 * nl + 2 {
            bail!("expected {} parameter tensors, got {}", 2 + 12 * nl + 2, w.len());
        }
        let mut seed = |p: f64| match dropout.as_deref_mut() {
            Some(rng) if p > 0.0 => Some((p as f32, rng.next_seed())),
            _ => None,
        };
        let dims = causal_dims(b, t, cfg.n_head, c / cfg.n_head);
        let blk = |l: usize, i: usize| w[2 + 12 * l + i];

        let mut x = embed_fwd(ids, w[0], w[1], t, c, 0)?;
        let embd_drop = seed(cfg.embd_pdrop);
        if let Some(d) = embd_drop {
            apply_mask(&mut x, d);
        }
        let mut saved = Vec::with_capacity(if save { nl } else { 0 });
        for l in 0..nl {
            let h1 = ln_fwd(&x, blk(l, 0), blk(l, 1), eps);
            let (qkv, _) =
                linear_fwd(&h1, blk(l, 2), blk(l, 3), c, 3 * c, Activation::Identity, false)?;
            let attn_drop =
                seed(cfg.attn_pdrop).filter(|d| d.0 > 0.0).map(|(p, seed)| Dropout { p, seed });
            let (a, probs) = causal_fwd(&qkv, dims, attn_drop)?;
            let (mut x_mid, _) =
                linear_fwd(&a, blk(l, 4), blk(l, 5), c, c, Activation::Identity, false)?;
            let resid_attn = seed(cfg.resid_pdrop);
            if let Some(d) = resid_attn {
                apply_mask(&mut x_mid, d);
            }
            add_from(&x, &mut x_mid);
            let h2 = ln_fwd(&x_mid, blk(l, 6), blk(l, 7), eps);
            let (act, pre) =
                linear_fwd(&h2, blk(l, 8), blk(l, 9), c, f, Activation::GeluNew, save)?;
            let (mut x_out, _) =
                linear_fwd(&act, blk(l, 10), blk(l, 11), f, c, Activation::Identity, false)?;
            let resid_mlp = seed(cfg.resid_pdrop);
            if let Some(d) = resid_mlp {
                apply_mask(&mut x_out, d);
            }
            add_from(&x_mid, &mut x_out);
            let x_in = std::mem::replace(&mut x, x_out);
            if !save {
                scratch::give([x_in, h1, qkv, a, x_mid, h2, act]);
                scratch::give(probs);
                scratch::give(pre);
            } else {
                let Some(pre) = pre else { bail!("linear did not keep the GELU pre-activation") };
                saved.push(Saved {
                    x_in,
                    h1,
                    qkv,
                    probs,
                    attn_drop,
                    a,
                    resid_attn,
                    x_mid,
                    h2,
                    pre,
                    act,
                    resid_mlp,
                });
            }
        }
        Ok(Forward { x, saved, embd_drop })
    }

    /// Forward and backward over parameter slices in [`param_shapes`] order.
    fn cpu_step(
        &self,
        w: &[&[f32]],
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<(f32, Vec<Vec<f32>>)> {
        let cfg = self.config();
        let (c, f, nl) = (cfg.n_embd, cfg.inner_dim(), cfg.n_layer);
        let eps = cfg.layer_norm_epsilon as f32;
        let dims = causal_dims(b, t, cfg.n_head, c / cfg.n_head);
        let blk = |l: usize, i: usize| w[2 + 12 * l + i];
        let Forward { x, mut saved, embd_drop } = self.cpu_forward(w, ids, b, t, dropout, true)?;
        let (lnf_w, lnf_b) = (w[2 + 12 * nl], w[3 + 12 * nl]);
        let hf = ln_fwd(&x, lnf_w, lnf_b, eps);
        let v = w[0].len() / c;
        let (loss, g) = lm_head_mean(&hf, w[0], targets, c, v, true)?;
        let Some((dh, dwte_head)) = g else { bail!("lm head returned no gradients") };

        // Backward. Activations and intermediate gradients go back to the scratch pool as soon
        // as they are consumed; the parameter gradients leave the step.
        let mut grads: Vec<Vec<f32>> = vec![Vec::new(); w.len()];
        let (mut dx, dlnf_w, dlnf_b) = ln_bwd(&x, lnf_w, &dh, eps);
        scratch::give([hf, dh, x]);
        grads[2 + 12 * nl] = dlnf_w;
        grads[3 + 12 * nl] = dlnf_b;
        for l in (0..nl).rev() {
            let Some(s) = saved.pop() else { bail!("missing saved activations") };
            let g = |i: usize| 2 + 12 * l + i;
            // x_out = x_mid + drop(act · W_proj + b)
            let mut d_out = scratch::copy(&dx);
            if let Some(d) = s.resid_mlp {
                apply_mask(&mut d_out, d);
            }
            let (d_act, dw, db) = linear_bwd(
                &s.act,
                blk(l, 10),
                blk(l, 11),
                d_out,
                None,
                f,
                c,
                Activation::Identity,
            )?;
            (grads[g(10)], grads[g(11)]) = (dw, db);
            let (d_h2, dw, db) = linear_bwd(
                &s.h2,
                blk(l, 8),
                blk(l, 9),
                d_act,
                Some(&s.pre),
                c,
                f,
                Activation::GeluNew,
            )?;
            (grads[g(8)], grads[g(9)]) = (dw, db);
            let (d_ln2, dw, db) = ln_bwd(&s.x_mid, blk(l, 6), &d_h2, eps);
            (grads[g(6)], grads[g(7)]) = (dw, db);
            add_into(&mut dx, &d_ln2);
            scratch::give([d_h2, d_ln2]);
            // x_mid = x_in + drop(a · W_proj + b)
            let mut d_proj = scratch::copy(&dx);
            if let Some(d) = s.resid_attn {
                apply_mask(&mut d_proj, d);
            }
            let (d_a, dw, db) =
                linear_bwd(&s.a, blk(l, 4), blk(l, 5), d_proj, None, c, c, Activation::Identity)?;
            (grads[g(4)], grads[g(5)]) = (dw, db);
            let d_qkv = attention_bwd(&s.qkv, &d_a, &s.probs, dims, s.attn_drop)?;
            scratch::give([d_a]);
            let (d_h1, dw, db) = linear_bwd(
                &s.h1,
                blk(l, 2),
                blk(l, 3),
                d_qkv,
                None,
                c,
                3 * c,
                Activation::Identity,
            )?;
            (grads[g(2)], grads[g(3)]) = (dw, db);
            let (d_ln1, dw, db) = ln_bwd(&s.x_in, blk(l, 0), &d_h1, eps);
            (grads[g(0)], grads[g(1)]) = (dw, db);
            add_into(&mut dx, &d_ln1);
            scratch::give([d_h1, d_ln1, s.x_in, s.h1, s.qkv, s.a, s.x_mid, s.h2, s.pre, s.act]);
            scratch::give(s.probs);
        }
        if let Some(d) = embd_drop {
            apply_mask(&mut dx, d);
        }
        let mut dwte = scratch::zeroed(w[0].len());
        let mut dwpe = scratch::zeroed(w[1].len());
        embed_bwd(ids, &dx, t, c, 0, &mut dwte, &mut dwpe);
        scratch::give([dx]);
        // The tied embedding's two contributions, summed as the graph sums them.
        add_from(&dwte_head, &mut dwte);
        grads[0] = dwte;
        grads[1] = dwpe;
        Ok((loss, grads))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{Config, DropoutRng, Gpt2, SeededRng, init_weights, param_shapes};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    fn batch(rng: &mut SeededRng, b: usize, t: usize, v: usize) -> Tensor {
        let ids: Vec<u32> = (0..b * t).map(|_| (rng.next_u64() % v as u64) as u32).collect();
        Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
    }

    fn check(dropout: f64) {
        let mut cfg = Config::new(97, 24, 32, 2, 4);
        cfg.embd_pdrop = dropout;
        cfg.attn_pdrop = dropout;
        cfg.resid_pdrop = dropout;
        let vm = init_weights(&cfg, 11).unwrap();
        let model =
            Gpt2::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut rng = SeededRng::new(5);
        let (x, y) = (batch(&mut rng, 3, 24, 97), batch(&mut rng, 3, 24, 97));

        let mut d1 = DropoutRng::new(9);
        let (loss, grads) = model.loss_and_grads(&x, &y, Some(&mut d1)).unwrap();
        let mut d2 = DropoutRng::new(9);
        let (gloss, ggrads) = model.graph_loss_and_grads(&x, &y, Some(&mut d2)).unwrap();

        assert_eq!(loss.to_bits(), gloss.to_bits(), "loss {loss} vs graph {gloss}");
        let names: Vec<String> = param_shapes(&cfg).into_iter().map(|(n, _)| n).collect();
        assert_eq!(grads.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), names);
        for ((name, g), (_, gg)) in grads.iter().zip(&ggrads) {
            assert_eq!(g.len(), gg.len(), "{name}");
            let same = g.iter().zip(gg).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: gradients differ from the graph path");
            assert!(g.iter().any(|&v| v != 0.0), "{name}: all-zero gradient");
        }
    }

    #[test]
    fn matches_the_graph_path_bit_for_bit() {
        check(0.0);
    }

    #[test]
    fn matches_the_graph_path_bit_for_bit_with_dropout() {
        check(0.1);
    }

    #[test]
    fn evaluation_matches_the_graph_path_bit_for_bit() {
        let cfg = Config::new(97, 24, 32, 2, 4);
        let vm = init_weights(&cfg, 12).unwrap();
        let model =
            Gpt2::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut rng = SeededRng::new(6);
        let (x, y) = (batch(&mut rng, 2, 20, 97), batch(&mut rng, 2, 20, 97));
        let fast =
            model.token_nll(&x, &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let graph =
            model.graph_token_nll(&x, &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(fast.len(), 40);
        assert!(fast.iter().zip(&graph).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = Config::new(50, 8, 16, 1, 2);
        let vm = init_weights(&cfg, 1).unwrap();
        let model =
            Gpt2::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let ok = Tensor::from_vec(vec![1u32; 8], (1, 8), &Device::Cpu).unwrap();
        let long = Tensor::from_vec(vec![1u32; 9], (1, 9), &Device::Cpu).unwrap();
        let oov = Tensor::from_vec(vec![50u32; 8], (1, 8), &Device::Cpu).unwrap();
        assert!(model.loss_and_grads(&long, &long, None).is_err());
        assert!(model.loss_and_grads(&oov, &ok, None).is_err());
        assert!(model.loss_and_grads(&ok, &oov, None).is_err());
        assert!(model.loss_and_grads(&ok, &long, None).is_err());
    }
}
