#!/usr/bin/env python3
"""A TinyLlama-shape model (1.1B parameters, random init) side by side with PyTorch +
transformers: load time from disk, batch-1 greedy generation with the KV cache, peak RSS (the
model-families issue: "load time, generation tok/s and peak RSS on this 24 GB machine").

Run from the repository root, after `cargo build --release -p posthuman-gpt2 --bin llama-bench`:

    VENV=$(batch-worker/bench/setup-venv.sh)
    "$VENV/bin/python" crates/gpt2/bench/tinyllama.py [--prompt 16] [--new 32] [--threads 2]
        [--rounds 1] [--dir DIR]

The checkpoint is made once by transformers with TinyLlama-1.1B's config (22 layers, hidden
2048, GQA 32/4 heads, vocab 32000), random init, saved as TinyLlama ships: bf16 safetensors,
here in shards of at most 1 GB with `model.safetensors.index.json` (2.2 GB on disk). It lives in
DIR (default $POSTHUMAN_CACHE/bench/tinyllama-shape, outside the checkout) and is reused. Both
sides load that same directory into f32 (both compute in f32 on the CPU), so, unlike the other
scripts, the two sides' weights and tokens are the same. Each side runs in its own process;
load = from the first file read until the model is ready, generation timed after a 2-token
warm-up. The page cache is warm for both (the files were just written or read).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                 num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                 max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def make_checkpoint(d):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.isfile(os.path.join(d, "model.safetensors.index.json")):
        return
    torch.manual_seed(0)
    cfg = LlamaConfig(**TINYLLAMA)
    t0 = time.perf_counter()
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = d + ".part"
    model.save_pretrained(tmp, max_shard_size="1GB", safe_serialization=True)
    os.replace(tmp, d)
    print(f"made {d} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def torch_side(a):
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(a.dir, torch_dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    prompt = torch.tensor([prompt_ids(a.prompt)])

    def gen(n):
        return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0, eos_token_id=None)

    with torch.no_grad():
        gen(2)
        t0 = time.perf_counter()
        out = gen(a.new)
        secs = time.perf_counter() - t0
    print(json.dumps({
        "side": "torch", "load_s": load_s, "tok_per_s": a.new / secs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens": out[0, a.prompt:].tolist(),
    }))


def prompt_ids(n):
    # llama-bench --model uses the same formula: same weights, same prompt, so the greedy
    # tokens of the two sides can be compared.
    return [(i * 7919) % TINYLLAMA["vocab_size"] for i in range(1, n + 1)]


def main():
    p = argparse.ArgumentParser()
    for k, v in [("prompt", 16), ("new", 32), ("threads", 2), ("rounds", 1)]:
        p.add_argument(f"--{k}", type=int, default=v)
    cache = os.environ.get("POSTHUMAN_CACHE", os.path.expanduser("~/.cache/posthuman"))
    p.add_argument("--dir", default=os.path.join(cache, "bench", "tinyllama-shape"))
    p.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_only:
        return torch_side(a)
    os.makedirs(os.path.dirname(a.dir), exist_ok=True)
    make_checkpoint(a.dir)
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = os.environ.get("LLAMA_BENCH") or os.path.join(target, "release", "llama-bench")
    common = ["--prompt", str(a.prompt), "--new", str(a.new), "--threads", str(a.threads)]
    runs = {"torch": [], "candle": []}
    for _ in range(a.rounds):
        out = subprocess.check_output([sys.executable, __file__, "--torch-only", "--dir", a.dir] + common)
        runs["torch"].append(json.loads(out))
        out = subprocess.check_output([bench, "--mode", "gen", "--model", a.dir] + common)
        runs["candle"].append(json.loads(out))
    params = runs["candle"][0]["params"]
    print(f"TinyLlama shape ({params / 1e9:.2f} B params, bf16 shards on disk, f32 in memory), "
          f"{a.threads} threads: batch-1 greedy, {a.prompt}-token prompt, {a.new} new tokens; "
          f"median of {a.rounds} interleaved round(s)")
    print(f"{'side':<10}{'load s':>10}{'x torch':>9}{'tok/s':>10}{'x torch':>9}"
          f"{'peak RSS MiB':>14}{'x torch':>9}")
    t = runs["torch"]
    for side, rs in runs.items():
        load, tok, rss = (median(rs, k) for k in ("load_s", "tok_per_s", "peak_rss_mib"))
        tload, ttok, trss = (median(t, k) for k in ("load_s", "tok_per_s", "peak_rss_mib"))
        print(f"{side:<10}{load:>10.2f}{load / tload:>9.2f}{tok:>10.2f}{tok / ttok:>9.2f}"
              f"{rss:>14.0f}{rss / trss:>9.2f}")
    same = all(r["tokens"] == t[0]["tokens"] for r in runs["candle"] + t)
    print(f"greedy tokens identical on both sides: {'yes' if same else 'NO'} "
          f"({len(t[0]['tokens'])} tokens)")
    if not same:
        sys.exit(1)


def median(rows, key):
    v = sorted(r[key] for r in rows)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


if __name__ == "__main__":
    main()
