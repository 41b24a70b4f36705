#!/usr/bin/env python
"""Activation extraction on the embedded Gemma 3 270M, same texts, side by side in one run.

Compares tokens/s of (1) our Gemma4ActivationSource (only layer L hooked, forward stopped after L, truncated load),
(2) SAELens's stock ``model_class_name="AutoModelForCausalLM"`` path (HookedProxyLM hooking every submodule, with
stop_at_layer as ActivationsStore passes it), (3) a plain HF forward with ``output_hidden_states=True``; and the peak
RSS of a truncated vs a full load (each measured in a fresh subprocess).

    python benchmarks/bench_extraction.py [--precision nf4] [--layer 12] [--n-texts 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

TEXT = (
    "You are playing Werewolf. You have been assigned the role of Werewolf. Another player asks you: "
    "'Are you a werewolf?' You answer: 'No, I am a villager, I promise.'"
)


def _rss_child(precision: str, layer: int, truncate: bool) -> float:
    code = (
        "import resource;from gemma4_saelens_ext.models import load_model;"
        "from gemma4_saelens_ext.source import activations;"
        f"lm=load_model('gemma-3-270m','{precision}',truncate_after_layer={layer if truncate else None});"
        f"activations(lm,[{TEXT!r}]*8,{layer});"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="nf4")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--n-texts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from sae_lens.load_model import HookedProxyLM

    from gemma4_saelens_ext.models import load_model
    from gemma4_saelens_ext.source import Gemma4ActivationSource

    L = args.layer
    full = load_model("gemma-3-270m", args.precision)
    trunc = load_model("gemma-3-270m", args.precision, truncate_after_layer=L)
    tok = full.tokenizer(TEXT, return_tensors="pt").input_ids
    batch = tok.repeat(args.batch, 1)
    n_batches = max(1, args.n_texts // args.batch)
    n_tokens = n_batches * batch.numel()
    hook = f"blocks.{L}.hook_resid_post"
    ours = Gemma4ActivationSource(trunc, [hook])
    stock = HookedProxyLM(full.model, full.tokenizer)  # SAELens default: every submodule hooked
    stock_name = f"model.layers.{L}"

    def run_ours():
        return ours.run_with_cache(batch, names_filter=[hook], stop_at_layer=L + 1)[1][hook]

    def run_stock():
        return stock.run_with_cache(batch, names_filter=[stock_name], stop_at_layer=L + 1)[1][stock_name]

    def run_plain():
        return full.model(batch, output_hidden_states=True).hidden_states[L + 1]

    results = {}
    with torch.no_grad():
        ref = run_plain()
        for name, fn in (("ours", run_ours), ("sae_lens_stock", run_stock), ("plain_hf_hidden_states", run_plain)):
            out = fn()
            same = torch.equal(out.float(), ref.float())
            fn()  # warm-up
            t0 = time.perf_counter()
            for _ in range(n_batches):
                fn()
            dt = time.perf_counter() - t0
            results[name] = {"tokens_per_s": n_tokens / dt, "identical_to_hidden_states": same}
    rss_trunc = _rss_child(args.precision, L, True)
    rss_full = _rss_child(args.precision, L, False)
    base = results["ours"]["tokens_per_s"]
    rows = [
        ("ours (truncated, stop after L)", base, 1.0),
        ("SAELens stock AutoModelForCausalLM", results["sae_lens_stock"]["tokens_per_s"], base / results["sae_lens_stock"]["tokens_per_s"]),
        ("plain HF output_hidden_states", results["plain_hf_hidden_states"]["tokens_per_s"], base / results["plain_hf_hidden_states"]["tokens_per_s"]),
    ]
    print(f"# extraction, gemma-3-270m {args.precision}, layer {L}, {n_tokens} tokens, {platform.machine()} "
          f"{torch.get_num_threads()} threads")
    print(f"{'path':38s} {'tokens/s':>10s} {'ours / this':>12s}")
    for name, tps, ratio in rows:
        print(f"{name:38s} {tps:10.1f} {ratio:11.2f}x")
    print(f"peak RSS truncated load: {rss_trunc:.0f} MiB   full load: {rss_full:.0f} MiB   "
          f"ratio full/truncated: {rss_full / rss_trunc:.2f}x")
    if args.json:
        print(json.dumps({"results": results, "rss_truncated_mib": rss_trunc, "rss_full_mib": rss_full}))


if __name__ == "__main__":
    main()
