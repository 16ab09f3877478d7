#!/usr/bin/env python3
"""Llama-shape training side by side: PyTorch + peft LoRA vs this crate's LoRA, and PyTorch's
full fine-tuning vs this crate's (the model-families issue's full fine-tune target).

Run from the repository root, after `cargo build --release -p posthuman-gpt2 --bin lora-bench`:

    VENV=$(batch-worker/bench/setup-venv.sh)
    "$VENV/bin/python" crates/gpt2/bench/lora_vs_peft.py [--shape llama30m|smollm135m]
        [--r 8] [--steps 5] [--batch 4] [--seq 256] [--threads 2] [--rounds 1]

Each side runs in its own process (peak RSS is per process). The same shape, random init,
LoRA r on q/k/v/o_proj (alpha 2r, dropout 0) or every weight, AdamW, one warm-up step then
`steps` timed. Prints a table with each candle row's ratios against the PyTorch row of the same
method. `--rounds N` repeats every side N times, interleaved, and reports the median (best):
on a shared host one run's ratio can be off by half.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

SHAPES = {
    "llama30m": dict(vocab_size=8192, hidden_size=512, intermediate_size=1376,
                     num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                     tie_word_embeddings=False),
    "smollm135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                       tie_word_embeddings=True),
}


def torch_side(a):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=2048, rms_norm_eps=1e-6, **SHAPES[a.shape])
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())
    if a.torch_only == "full":
        pm = model
    else:
        pm = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0,
                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                              task_type="CAUSAL_LM"))
    trainable = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, cfg.vocab_size, (2, a.batch, a.seq + 1), generator=g)

    def step(i):
        x, y = ids[i % 2, :, :-1], ids[i % 2, :, 1:]
        loss = F.cross_entropy(pm(input_ids=x).logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def cpu():
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    step(0)
    t0, c0 = time.perf_counter(), cpu()
    for i in range(a.steps):
        last = step(i + 1)
    secs, cpus = time.perf_counter() - t0, cpu() - c0
    n = sum(p.numel() for p in trainable)
    print(json.dumps({
        "side": "torch full" if a.torch_only == "full" else "torch+peft lora", "shape": a.shape, "params": params, "trainable": n,
        "tok_per_s": a.steps * a.batch * a.seq / secs,
        "tok_per_cpu_s": a.steps * a.batch * a.seq / cpus,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "checkpoint_bytes": 3 * 4 * n, "loss": last, "mode": a.torch_only,
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llama30m", choices=SHAPES)
    for k, v in [("r", 8), ("steps", 5), ("batch", 4), ("seq", 256), ("threads", 2)]:
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--torch-only", choices=["lora", "full"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_only:
        return torch_side(a)
    common = ["--shape", a.shape, "--r", str(a.r), "--steps", str(a.steps), "--batch",
              str(a.batch), "--seq", str(a.seq), "--threads", str(a.threads)]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = os.path.join(target, "release", "lora-bench")
    # Every side once per round, interleaved, so load from other processes hits all alike.
    runs = {}
    for _ in range(a.rounds):
        for mode in ("lora", "full"):
            out = subprocess.check_output([sys.executable, __file__, "--torch-only", mode] + common)
            runs.setdefault((mode, "torch"), []).append(json.loads(out))
            # The Rust side twice: on the gemm crate (AVX-512) and on AMX where the CPU has it.
            for amx in ("0", "1"):
                env = dict(os.environ, POSTHUMAN_AMX=amx)
                r = json.loads(subprocess.check_output([bench, "--mode", mode] + common, env=env))
                if amx == "1" and r.get("kernel") != "amx-bf16x3":
                    continue
                runs.setdefault((mode, "candle " + r.get("kernel", "gemm-f32")), []).append(r)
    first = runs[("lora", "torch")][0]
    print(f"{a.shape} ({first['params'] / 1e6:.1f}M params), LoRA r={a.r} on q/k/v/o or full, "
          f"batch {a.batch}x{a.seq}, {a.threads} threads, {a.steps} timed steps; "
          f"x torch = against the PyTorch row of the same method; median (best) of {a.rounds} "
          f"interleaved round(s)")
    print(f"{'side':<26}{'trainable':>11}{'tok/s':>12}{'x torch':>13}{'tok/cpu-s':>11}{'x torch':>8}"
          f"{'peak RSS MiB':>14}{'x torch':>8}{'ckpt MiB':>10}{'loss':>8}")
    for (mode, label), rs in runs.items():
        t = runs[(mode, "torch")]
        r = rs[0]
        med, best = median(rs, "tok_per_s"), max(x["tok_per_s"] for x in rs)
        tmed, tbest = median(t, "tok_per_s"), max(x["tok_per_s"] for x in t)
        cpu, tcpu = median(rs, "tok_per_cpu_s"), median(t, "tok_per_cpu_s")
        rss, trss = median(rs, "peak_rss_mib"), median(t, "peak_rss_mib")
        name = f"{mode} {label}" if label != "torch" else r["side"]
        print(f"{name:<26}{r['trainable']:>11}{f'{med:.0f} ({best:.0f})':>12}"
              f"{f'{med / tmed:.2f} ({best / tbest:.2f})':>13}{cpu:>11.0f}{cpu / tcpu:>8.2f}"
              f"{rss:>14.0f}{rss / trss:>8.2f}{r['checkpoint_bytes'] / 2**20:>10.2f}{r['loss']:>8.3f}")


def median(rows, key):
    v = sorted(r[key] for r in rows)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


if __name__ == "__main__":
    main()
