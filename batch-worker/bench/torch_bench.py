"""PyTorch + transformers side of the worker benchmark (run by bench.sh in the bench venv).

Subcommands (each prints one JSON line; each runs in its own process for peak RSS):
  agree DIR       load OUR model (DIR/store/models/base) with transformers, replay the Rust
                  train job's exact batches and learning rates with torch.optim.AdamW, and
                  compute the HF sliding-window perplexity on the same token ids.
  hf-save DIR     save a transformers-initialised GPT-2 (safetensors, HF layout) into
                  DIR/store/models/hf for the Rust side to load, and its perplexity.
  train DIR N     training throughput over the same batches (N steps).
  eval DIR        evaluation throughput (windows batched as the worker does).
  gen DIR N       generation throughput with HF generate (greedy, KV cache).
"""

import json
import os
import resource
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
torch.set_num_threads(THREADS)
torch.manual_seed(0)
# BENCH_DEVICE=cuda runs the PyTorch side on the GPU (scripts/gpu-run.sh, against the worker's
# `cuda` build); default the CPU. Every figure ends in a host read (`.item()`, `.tolist()`),
# which waits for the GPU, so wall-clock timing stays honest.
DEVICE = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(d, name="base"):
    m = GPT2LMHeadModel.from_pretrained(
        os.path.join(d, "store", "models", name), attn_implementation="eager", torch_dtype=torch.float32
    )
    return m.to(DEVICE)


def agree_cfg(d):
    with open(os.path.join(d, "rust_agree.json")) as f:
        return json.load(f)


def batches(d, cfg, steps):
    raw = np.fromfile(os.path.join(d, "batches.bin"), dtype="<u4").astype(np.int64)
    w = raw.reshape(-1, cfg["batch"], cfg["ctx"] + 1)[:steps]
    return [torch.from_numpy(b).to(DEVICE) for b in w]


def optimizer(model, cfg):
    # Same rule as the worker's AdamW: rank >= 2 tensors decay, biases / LayerNorm do not.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lrs"][0],
        betas=(cfg["beta1"], cfg["beta2"]),
        eps=cfg["eps"],
    )


def train_steps(model, cfg, bs):
    model.train()
    opt = optimizer(model, cfg)
    losses = []
    for i, b in enumerate(bs):
        x, y = b[:, :-1], b[:, 1:]
        for g in opt.param_groups:
            g["lr"] = cfg["lrs"][i % len(cfg["lrs"])]
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        losses.append(loss.item())
    return losses


def perplexity(model, ids, ctx, stride, batch_windows=16):
    """HF sliding-window perplexity; windows of equal length are batched."""
    model.eval()
    n = len(ids)
    wins = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        trg = end - prev_end
        wins.append((begin, end, trg))
        prev_end = end
        if end == n:
            break
    nll, count = 0.0, 0
    with torch.no_grad():
        i = 0
        while i < len(wins):
            L = wins[i][1] - wins[i][0]
            j = i
            while j < len(wins) and j - i < batch_windows and wins[j][1] - wins[j][0] == L:
                j += 1
            x = torch.stack([ids[b:e] for b, e, _ in wins[i:j]])
            logits = model(input_ids=x).logits[:, :-1]
            tgt = x[:, 1:]
            tok_nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none").view(
                j - i, L - 1
            )
            for k, (b, e, trg) in enumerate(wins[i:j]):
                frm = max(L - min(trg, L) - 1, 0)
                nll += tok_nll[k, frm:].double().sum().item()
                count += L - 1 - frm
            i = j
    return float(np.exp(nll / count)), count


def eval_ids(d):
    ids = np.fromfile(os.path.join(d, "eval_ids.bin"), dtype="<u4").astype(np.int64)
    return torch.from_numpy(ids).to(DEVICE)


def main():
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "agree":
        cfg = agree_cfg(d)
        model = load(d)
        ids = eval_ids(d)
        ppl, count = perplexity(model, ids, cfg["ctx"], cfg["stride"])
        losses = train_steps(model, cfg, batches(d, cfg, len(cfg["lrs"])))
        print(json.dumps({"losses": losses, "perplexity": ppl, "tokens_scored": count}))
    elif cmd == "hf-save":
        base = os.path.join(d, "store", "models", "base")
        with open(os.path.join(base, "config.json")) as f:
            ours = json.load(f)
        conf = GPT2Config(
            vocab_size=ours["vocab_size"], n_positions=ours["n_positions"], n_embd=ours["n_embd"],
            n_layer=ours["n_layer"], n_head=ours["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=ours["bos_token_id"], eos_token_id=ours["eos_token_id"],
        )
        model = GPT2LMHeadModel(conf).to(DEVICE)
        out = os.path.join(d, "store", "models", "hf")
        model.save_pretrained(out, safe_serialization=True)
        shutil.copy(os.path.join(base, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
        cfg = agree_cfg(d)
        ppl, count = perplexity(model, eval_ids(d), cfg["ctx"], cfg["stride"])
        print(json.dumps({"perplexity": ppl, "tokens_scored": count}))
    elif cmd == "train":
        steps = int(sys.argv[3])
        cfg = agree_cfg(d)
        bs = batches(d, cfg, steps)
        model = load(d)
        t0 = time.perf_counter()
        losses = train_steps(model, cfg, bs)
        secs = time.perf_counter() - t0
        tokens = len(bs) * cfg["batch"] * cfg["ctx"]
        print(json.dumps({"train_tok_s": tokens / secs, "final_loss": losses[-1], "peak_rss_mib": peak_rss_mib()}))
    elif cmd == "eval":
        cfg = agree_cfg(d)
        model = load(d)
        ids = eval_ids(d)
        t0 = time.perf_counter()
        ppl, count = perplexity(model, ids, cfg["ctx"], cfg["stride"])
        secs = time.perf_counter() - t0
        print(json.dumps({"eval_tok_s": count / secs, "perplexity": ppl, "peak_rss_mib": peak_rss_mib()}))
    elif cmd == "gen":
        n = int(sys.argv[3])
        model = load(d)
        model.eval()
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "store", "models", "base", "tokenizer.json"))
        x = torch.tensor([tok.encode("The game 's")], device=DEVICE)
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                 pad_token_id=model.config.eos_token_id)
            secs = time.perf_counter() - t0
        made = out.shape[1] - x.shape[1]
        print(json.dumps({"gen_tok_s": made / secs, "tokens": int(made), "peak_rss_mib": peak_rss_mib()}))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
