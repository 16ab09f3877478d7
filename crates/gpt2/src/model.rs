//! The GPT-2 network in HF tensor layout, with a KV cache for generation, a training loss and
//! a no-grad per-token NLL for evaluation.

use crate::lora::{LoraAdapter, LoraBase, LoraBranch, LoraError};
use crate::ops::{self, Activation};
use crate::{Config, DropoutRng};
use candle_core::{DType, Result, Tensor, bail};
use candle_nn::VarBuilder;

/// Every parameter of a config, with its HF name and shape, in HF module order.
pub fn param_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (c, f) = (cfg.n_embd, cfg.inner_dim());
    let mut out = vec![
        ("wte.weight".to_string(), vec![cfg.vocab_size, c]),
        ("wpe.weight".to_string(), vec![cfg.n_positions, c]),
    ];
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("h.{i}.{s}");
        out.extend([
            (p("ln_1.weight"), vec![c]),
            (p("ln_1.bias"), vec![c]),
            (p("attn.c_attn.weight"), vec![c, 3 * c]),
            (p("attn.c_attn.bias"), vec![3 * c]),
            (p("attn.c_proj.weight"), vec![c, c]),
            (p("attn.c_proj.bias"), vec![c]),
            (p("ln_2.weight"), vec![c]),
            (p("ln_2.bias"), vec![c]),
            (p("mlp.c_fc.weight"), vec![c, f]),
            (p("mlp.c_fc.bias"), vec![f]),
            (p("mlp.c_proj.weight"), vec![f, c]),
            (p("mlp.c_proj.bias"), vec![c]),
        ]);
    }
    out.push(("ln_f.weight".to_string(), vec![c]));
    out.push(("ln_f.bias".to_string(), vec![c]));
    out
}

#[derive(Clone, Debug)]
pub(crate) struct Ln {
    pub w: Tensor,
    pub b: Tensor,
}

#[derive(Clone, Debug)]
pub(crate) struct Lin {
    pub w: Tensor,
    pub b: Tensor,
    /// A LoRA branch added to the output ([`Gpt2::with_lora`]).
    pub lora: Option<LoraBranch>,
}

#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub ln_1: Ln,
    pub c_attn: Lin,
    pub attn_proj: Lin,
    pub ln_2: Ln,
    pub c_fc: Lin,
    pub mlp_proj: Lin,
}

/// Past keys and values per layer, (B, T_past, C) each, for incremental decoding.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    batch: usize,
    len: usize,
}

impl KvCache {
    pub fn new(cfg: &Config, batch: usize) -> Self {
        Self { layers: vec![None; cfg.n_layer], batch, len: 0 }
    }
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
    fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let Some(slot) = self.layers.get_mut(layer) else { bail!("kv cache has no layer {layer}") };
        let kv = match slot.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}

/// GPT-2 with the lm head tied to `wte`.
#[derive(Clone, Debug)]
pub struct Gpt2 {
    cfg: Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Ln,
}

/// Per-call switches of the shared body.
struct Mode<'a> {
    grad: bool,
    dropout: Option<&'a mut DropoutRng>,
}

impl Mode<'_> {
    fn seed(&mut self, p: f64) -> Option<(f32, u64)> {
        match &mut self.dropout {
            Some(rng) if p > 0.0 => Some((p as f32, rng.next_seed())),
            _ => None,
        }
    }
}

/// A linear layer with its LoRA branch, if any: act(x·W + b + lora(x)). With a branch the
/// activation runs after the sum, as candle's (tanh-approximated, differentiable) GELU.
fn lin_fwd(
    x: &Tensor,
    lin: &Lin,
    act: Activation,
    p: &dyn Fn(&Tensor) -> Tensor,
    mode: &mut Mode,
) -> Result<Tensor> {
    let Some(br) = &lin.lora else { return ops::linear(x, &p(&lin.w), &p(&lin.b), act) };
    let y = ops::linear(x, &p(&lin.w), &p(&lin.b), Activation::Identity)?;
    let seed = mode.seed(f64::from(br.dropout)).map(|(_, s)| s);
    let y = (y + br.apply(x, seed, mode.grad)?)?;
    match act {
        Activation::Identity => Ok(y),
        Activation::GeluNew => y.gelu(),
    }
}

fn maybe_dropout(x: Tensor, d: Option<(f32, u64)>) -> Result<Tensor> {
    match d {
        Some((p, seed)) => ops::dropout(&x, p, seed),
        None => Ok(x),
    }
}

impl Gpt2 {
    /// Builds the model from `vb` with HF names (`wte.weight`, `h.0.attn.c_attn.weight`, …).
    /// With a `VarBuilder` over a `VarMap` the parameters are trainable `Var`s.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = cfg.validate() {
            bail!("{e}");
        }
        let (c, f) = (cfg.n_embd, cfg.inner_dim());
        let ln = |vb: VarBuilder| -> Result<Ln> {
            Ok(Ln { w: vb.get(c, "weight")?, b: vb.get(c, "bias")? })
        };
        let lin = |vb: VarBuilder, i: usize, o: usize| -> Result<Lin> {
            Ok(Lin { w: vb.get((i, o), "weight")?, b: vb.get(o, "bias")?, lora: None })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let vb = vb.pp(format!("h.{i}"));
            blocks.push(Block {
                ln_1: ln(vb.pp("ln_1"))?,
                c_attn: lin(vb.pp("attn.c_attn"), c, 3 * c)?,
                attn_proj: lin(vb.pp("attn.c_proj"), c, c)?,
                ln_2: ln(vb.pp("ln_2"))?,
                c_fc: lin(vb.pp("mlp.c_fc"), c, f)?,
                mlp_proj: lin(vb.pp("mlp.c_proj"), f, c)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            wte: vb.get((cfg.vocab_size, c), "wte.weight")?,
            wpe: vb.get((cfg.n_positions, c), "wpe.weight")?,
            blocks,
            ln_f: ln(vb.pp("ln_f"))?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This model with `adapter`'s branches on the layers it targets and every base weight
    /// frozen (detached): the graph's only trainable leaves are the adapter's A and B, so
    /// `loss` + `backward` (or [`Gpt2::loss_and_grads`], which takes the graph path here)
    /// yields their gradients under PEFT's names. Inference through the result is the
    /// adapted model; [`LoraAdapter::merge`] gives the same function as plain weights.
    pub fn with_lora(&self, adapter: &LoraAdapter) -> std::result::Result<Self, LoraError> {
        adapter.check_base(&LoraBase::gpt2(&self.cfg))?;
        let mut m = self.clone();
        let frz = |t: &mut Tensor| *t = t.detach();
        frz(&mut m.wte);
        frz(&mut m.wpe);
        frz(&mut m.ln_f.w);
        frz(&mut m.ln_f.b);
        for (i, blk) in m.blocks.iter_mut().enumerate() {
            for ln in [&mut blk.ln_1, &mut blk.ln_2] {
                frz(&mut ln.w);
                frz(&mut ln.b);
            }
            for (lin, name) in [
                (&mut blk.c_attn, "attn.c_attn"),
                (&mut blk.attn_proj, "attn.c_proj"),
                (&mut blk.c_fc, "mlp.c_fc"),
                (&mut blk.mlp_proj, "mlp.c_proj"),
            ] {
                frz(&mut lin.w);
                frz(&mut lin.b);
                lin.lora = adapter.branch(&format!("transformer.h.{i}.{name}"))?;
            }
        }
        Ok(m)
    }

    /// The LoRA branches attached by [`Gpt2::with_lora`], in module order.
    pub(crate) fn lora_branches(&self) -> Vec<&LoraBranch> {
        let lins = self.blocks.iter().flat_map(|b| [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj]);
        lins.filter_map(|l| l.lora.as_ref()).collect()
    }

    /// Every parameter tensor, in [`param_shapes`] order.
    pub(crate) fn param_tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            v.extend([
                &b.ln_1.w,
                &b.ln_1.b,
                &b.c_attn.w,
                &b.c_attn.b,
                &b.attn_proj.w,
                &b.attn_proj.b,
                &b.ln_2.w,
                &b.ln_2.b,
                &b.c_fc.w,
                &b.c_fc.b,
                &b.mlp_proj.w,
                &b.mlp_proj.b,
            ]);
        }
        v.extend([&self.ln_f.w, &self.ln_f.b]);
        v
    }

    fn check_ids(&self, ids: &Tensor, offset: usize) -> Result<(usize, usize)> {
        if ids.dtype() != DType::U32 {
            bail!("input ids must be u32, got {:?}", ids.dtype());
        }
        let (b, t) = ids.dims2()?;
        if b == 0 || t == 0 || offset + t > self.cfg.n_positions {
            bail!(
                "{t} tokens after {offset} cached positions exceed n_positions {}",
                self.cfg.n_positions
            );
        }
        Ok((b, t))
    }

    /// Hidden states after `ln_f`, flattened to (B·T, C).
    fn body(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        mut mode: Mode,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let (b, t) = self.check_ids(ids, offset)?;
        if let Some(c) = cache.as_ref()
            && (c.batch != b || c.layers.len() != self.blocks.len())
        {
            bail!("kv cache was made for batch {} / {} layers", c.batch, c.layers.len());
        }
        let grad = mode.grad;
        let p = |x: &Tensor| if grad { x.clone() } else { x.detach() };
        let (cfg, c) = (&self.cfg, self.cfg.n_embd);
        let eps = cfg.layer_norm_epsilon;
        let wte = p(&self.wte);
        let x = ops::embed(ids, &wte, &p(&self.wpe), offset)?;
        let mut x = maybe_dropout(x, mode.seed(cfg.embd_pdrop))?;
        for (li, blk) in self.blocks.iter().enumerate() {
            let h = ops::layer_norm(&x, &p(&blk.ln_1.w), &p(&blk.ln_1.b), eps)?;
            let qkv = lin_fwd(&h, &blk.c_attn, Activation::Identity, &p, &mut mode)?;
            let a = match cache.as_deref_mut() {
                Some(kv) => {
                    let q = qkv.narrow(2, 0, c)?;
                    let k = qkv.narrow(2, c, c)?.contiguous()?;
                    let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
                    let (k, v) = kv.append(li, k, v)?;
                    ops::attention_cached(&q.contiguous()?, &k, &v, cfg.n_head)?
                }
                None => ops::causal_attention(&qkv, cfg.n_head, mode.seed(cfg.attn_pdrop))?,
            };
            let a = lin_fwd(&a, &blk.attn_proj, Activation::Identity, &p, &mut mode)?;
            x = (x + maybe_dropout(a, mode.seed(cfg.resid_pdrop))?)?;
            let h = ops::layer_norm(&x, &p(&blk.ln_2.w), &p(&blk.ln_2.b), eps)?;
            let m = lin_fwd(&h, &blk.c_fc, Activation::GeluNew, &p, &mut mode)?;
            let m = lin_fwd(&m, &blk.mlp_proj, Activation::Identity, &p, &mut mode)?;
            x = (x + maybe_dropout(m, mode.seed(cfg.resid_pdrop))?)?;
        }
        if let Some(kv) = cache {
            kv.len += t;
        }
        let x = ops::layer_norm(&x, &p(&self.ln_f.w), &p(&self.ln_f.b), eps)?;
        x.reshape((b * t, c))
    }

    /// Logits (B, T, vocab) for input ids (B, T) u32, without building a graph (inference).
    /// With a cache, continues from the cached positions and appends to it.
    pub fn forward(&self, input_ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let h = self.body(input_ids, cache, Mode { grad: false, dropout: None })?;
        h.matmul(&self.wte.detach().t()?)?.reshape((b, t, self.cfg.vocab_size))
    }

    /// Mean cross-entropy over targets (B, T) u32 ([`ops::IGNORE_INDEX`] skipped), as a graph
    /// node for `backward()`. Dropout (the config's p) applies only when `dropout` is given.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        if targets.dims() != input_ids.dims() || targets.dtype() != DType::U32 {
            bail!(
                "targets {:?} must be u32 shaped like the inputs {:?}",
                targets.dims(),
                input_ids.dims()
            );
        }
        let h = self.body(input_ids, None, Mode { grad: true, dropout })?;
        ops::lm_head_loss(&h, &self.wte, &targets.flatten_all()?)
    }

    /// Per-token NLL (B, T) f32 without building a graph (evaluation).
    pub fn token_nll(&self, input_ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if targets.dims() != input_ids.dims() || targets.dtype() != DType::U32 {
            bail!(
                "targets {:?} must be u32 shaped like the inputs {:?}",
                targets.dims(),
                input_ids.dims()
            );
        }
        let (b, t) = self.check_ids(input_ids, 0)?;
        let ids = input_ids.flatten_all()?.to_vec1::<u32>()?;
        let tg = targets.flatten_all()?.to_vec1::<u32>()?;
        if let Some(nll) = self.cpu_token_nll(&ids, &tg, b, t)? {
            // CPU f32: the graph-free forward (same arithmetic, no candle ops in between).
            return Tensor::from_vec(nll, (b, t), input_ids.device());
        }
        self.graph_token_nll(input_ids, targets)
    }

    /// [`Gpt2::token_nll`] through candle ops (any device).
    pub(crate) fn graph_token_nll(&self, input_ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let h = self.body(input_ids, None, Mode { grad: false, dropout: None })?;
        ops::lm_head_nll(&h, &self.wte.detach(), &targets.flatten_all()?)?.reshape(input_ids.dims())
    }
}
