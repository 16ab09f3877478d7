"""Prints the benchmark's agreement checks and ratio table from bench.sh's JSON files."""

import json
import os
import statistics
import sys

d, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def load(name):
    with open(os.path.join(d, name)) as f:
        text = f.read().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # a JSON line after other output
        return json.loads(text.splitlines()[-1])


ra, ta = load("rust_agree.json"), load("torch_agree.json")
diffs = [abs(a - b) for a, b in zip(ra["losses"], ta["losses"])]
rel_ppl = abs(ra["perplexity"] - ta["perplexity"]) / ta["perplexity"]
print()
print(f"Numerical agreement (same initial weights, same {len(diffs)} batches):")
print(f"  max |loss diff| over {len(diffs)} steps: {max(diffs):.3e}  ({'OK' if max(diffs) <= 1e-4 else 'FAIL'} at 1e-4)")
print(f"  first/last loss ours {ra['losses'][0]:.6f} / {ra['losses'][-1]:.6f}, torch {ta['losses'][0]:.6f} / {ta['losses'][-1]:.6f}")
print(f"  perplexity ours {ra['perplexity']:.6f} torch {ta['perplexity']:.6f} rel diff {rel_ppl:.3e} "
      f"({'OK' if rel_ppl <= 1e-4 else 'FAIL'} at 1e-4; {ra['tokens_scored']} vs {ta['tokens_scored']} tokens)")
hf, rhf = load("hf_ppl.json"), load("rust_hf.json")
rel_hf = abs(hf["perplexity"] - rhf["perplexity"]) / hf["perplexity"]
print(f"  transformers-saved model in the worker: ppl torch {hf['perplexity']:.6f} ours {rhf['perplexity']:.6f} "
      f"rel diff {rel_hf:.3e} ({'OK' if rel_hf <= 1e-4 else 'FAIL'})")


def med(prefix, kind, key):
    return statistics.median(load(f"{prefix}_{kind}_{r}.json")[key] for r in range(1, rounds + 1))


rows = [
    ("train tok/s", "train", "train_tok_s", True),
    ("eval tok/s (ppl)", "eval", "eval_tok_s", True),
    ("generation tok/s", "gen", "gen_tok_s", True),
    ("peak RSS MiB (train)", "train", "peak_rss_mib", False),
    ("peak RSS MiB (eval)", "eval", "peak_rss_mib", False),
    ("peak RSS MiB (gen)", "gen", "peak_rss_mib", False),
]
print()
print(f"Throughput, {threads} threads, median of {rounds} interleaved rounds (ratio = ours / PyTorch):")
print(f"  {'metric':<24}{'ours':>12}{'PyTorch':>12}{'ratio':>9}")
for label, kind, key, _ in rows:
    ours, theirs = med("r", kind, key), med("t", kind, key)
    print(f"  {label:<24}{ours:>12.1f}{theirs:>12.1f}{ours / theirs:>8.2f}x")

# Per round: the two sides ran back to back, so each round's ratio is a paired sample of the
# machine's state at that moment; the spread says how much to trust the median.
print()
print("Per-round ratios (ours / PyTorch, rounds in order):")
for label, kind, key, _ in rows[:3]:
    ratios = [load(f"r_{kind}_{r}.json")[key] / load(f"t_{kind}_{r}.json")[key] for r in range(1, rounds + 1)]
    print(f"  {label:<24}" + " ".join(f"{x:.2f}" for x in ratios) + f"   (median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f})")
