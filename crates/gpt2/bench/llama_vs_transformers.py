#!/usr/bin/env python3
"""Llama-shape inference side by side: PyTorch + transformers vs this crate (the
model-families issue's targets: perplexity evaluation >= 1.5x, batch-1 generation >= 2x HF
`generate`, on 2 CPU threads). `--rounds N` repeats every side N times, interleaved, and
reports the median (best): on a shared host one run's ratio can be off by half.

Run from the repository root, after `cargo build --release -p posthuman-gpt2 --bin llama-bench`:

    VENV=$(batch-worker/bench/setup-venv.sh)
    "$VENV/bin/python" crates/gpt2/bench/llama_vs_transformers.py [--shape llama30m|smollm135m]
        [--steps 3] [--batch 4] [--seq 256] [--prompt 16] [--new 200] [--threads 2]
        [--rounds 1] [--modes eval,gen]

Each side runs in its own process (peak RSS is per process): the same shape with random init
(the two sides' weights differ: speed and memory do not depend on the values), the same
batch sizes; eval scores a batch without a graph, gen decodes greedily with the KV cache
(`min_new_tokens` keeps transformers from stopping early). One run: read small ratios with care.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

# The same shapes as the training side (and as posthuman_gpt2::bench::llama_shape).
from lora_vs_peft import SHAPES  # noqa: E402  (this script's directory is on sys.path)


def torch_side(a):
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=2048, rms_norm_eps=1e-6, **SHAPES[a.shape])
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        if a.torch_only == "eval":
            ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq + 1), generator=g)
            x, y = ids[:, :-1], ids[:, 1:]

            def nll():
                logits = model(input_ids=x).logits
                return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1)).item()

            nll()
            t0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(a.steps):
                last = nll()
            tokens, secs, check = a.steps * a.batch * a.seq, time.perf_counter() - t0, float(torch.tensor(last).exp())
        else:
            prompt = torch.randint(0, cfg.vocab_size, (1, a.prompt), generator=g)

            def gen(n):
                return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      pad_token_id=0, eos_token_id=None)

            gen(4)
            t0, cpu0 = time.perf_counter(), time.process_time()
            out = gen(a.new)
            tokens, secs, check = a.new, time.perf_counter() - t0, float(out.sum())
    print(json.dumps({
        "side": f"torch {a.torch_only}", "mode": a.torch_only, "shape": a.shape,
        "tok_per_s": tokens / secs,
        # CPU seconds of every thread of the process: less sensitive to other load than tok/s.
        "tok_per_cpu_s": tokens / (time.process_time() - cpu0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "check": check,
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llama30m", choices=SHAPES)
    for k, v in [("steps", 3), ("batch", 4), ("seq", 256), ("prompt", 16), ("new", 200), ("threads", 2)]:
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--modes", default="eval,gen", help="comma-separated: eval, gen (default both)")
    p.add_argument("--torch-only", choices=["eval", "gen"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_only:
        return torch_side(a)
    common = ["--shape", a.shape, "--steps", str(a.steps), "--batch", str(a.batch), "--seq",
              str(a.seq), "--prompt", str(a.prompt), "--new", str(a.new), "--threads", str(a.threads)]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = os.path.join(target, "release", "llama-bench")
    # Every side once per round, interleaved, so load from other processes hits all alike.
    runs = {}
    for _ in range(a.rounds):
        for mode in a.modes.split(","):
            out = subprocess.check_output([sys.executable, __file__, "--torch-only", mode] + common)
            runs.setdefault((mode, "torch"), []).append(json.loads(out))
            # The Rust side twice: on the gemm crate (AVX-512) and on AMX where the CPU has it
            # (batch-1 generation is matrix-vector work: AMX does not take it).
            for amx in ("0", "1"):
                env = dict(os.environ, POSTHUMAN_AMX=amx)
                r = json.loads(subprocess.check_output([bench, "--mode", mode] + common, env=env))
                if amx == "1" and (mode == "gen" or r.get("kernel") != "amx-bf16x3"):
                    continue
                runs.setdefault((mode, "candle " + r.get("kernel", "gemm-f32")), []).append(r)
    print(f"{a.shape}, {a.threads} threads: eval = perplexity of a {a.batch}x{a.seq} batch, "
          f"{a.steps} timed passes; gen = batch-1 greedy, {a.prompt}-token prompt, {a.new} new tokens; "
          f"median (best) of {a.rounds} interleaved round(s)")
    print(f"{'side':<26}{'tok/s':>14}{'x torch':>14}{'tok/cpu-s':>11}{'x torch':>9}"
          f"{'peak RSS MiB':>14}{'x torch':>9}")
    for (mode, label), rs in runs.items():
        t = runs[(mode, "torch")]
        med, best = median(rs, "tok_per_s"), max(r["tok_per_s"] for r in rs)
        tmed, tbest = median(t, "tok_per_s"), max(r["tok_per_s"] for r in t)
        rss, trss = median(rs, "peak_rss_mib"), median(t, "peak_rss_mib")
        cpu, tcpu = median(rs, "tok_per_cpu_s"), median(t, "tok_per_cpu_s")
        print(f"{mode + ' ' + label:<26}{f'{med:.0f} ({best:.0f})':>14}"
              f"{f'{med / tmed:.2f} ({best / tbest:.2f})':>14}{cpu:>11.0f}{cpu / tcpu:>9.2f}"
              f"{rss:>14.0f}{rss / trss:>9.2f}")


def median(rows, key):
    v = sorted(r[key] for r in rows)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


if __name__ == "__main__":
    main()
