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
import subprocess
import sys
import time
from pathlib import Path

TEXT = (
    "You are playing Werewolf. You have been assigned the role of Werewolf. Another player asks you: "
    "'Are you a werewolf?' You answer: 'No, I am a villager, I promise.'"
)


def _rss_child(model: str, precision: str, layer: int, truncate: bool) -> tuple[float, float]:
    """(RSS after load, peak RSS after one extraction) in MiB, in a fresh process."""
    # peak = VmHWM, not ru_maxrss (which a child inherits from this parent: see benchmarks/_mem.py)
    code = (
        f"import sys;sys.path.insert(0,{str(Path(__file__).parent)!r});import _mem;"
        "from gemma4_saelens_ext.models.load import load_model;"
        "from gemma4_saelens_ext.activations.source import activations;"
        f"lm=load_model({model!r},{precision!r},truncate_after_layer={layer if truncate else None});"
        "cur=_mem.rss_mib();"
        f"activations(lm,[{TEXT!r}]*8,{layer});"
        "print(cur, _mem.peak_rss_mib())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cur, peak = out.stdout.strip().splitlines()[-1].split()
    return float(cur), float(peak)


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

    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import Gemma4ActivationSource

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
    base = results["ours"]["tokens_per_s"]
    rows = [
        ("ours (truncated, stop after L)", base),
        ("SAELens stock AutoModelForCausalLM", results["sae_lens_stock"]["tokens_per_s"]),
        ("plain HF output_hidden_states", results["plain_hf_hidden_states"]["tokens_per_s"]),
    ]
    print(f"# extraction, gemma-3-270m {args.precision}, layer {L}, {n_tokens} tokens, {platform.machine()} "
          f"{torch.get_num_threads()} threads")
    print(f"{'path':38s} {'tokens/s':>10s} {'ours / this':>12s} identical")
    for (name, tps), key in zip(rows, results):
        print(f"{name:38s} {tps:10.1f} {base / tps:11.2f}x {results[key]['identical_to_hidden_states']}")
    print(f"speed-up vs SAELens stock: {base / rows[1][1]:.2f}x; vs plain HF hidden_states: {base / rows[2][1]:.2f}x")
    mem = {}
    # Gemma 3 270M: the tied 262k x 640 embedding is most of the model, so truncation saves little; Gemma 4's
    # packed per-layer embedding table scales with depth, so truncation saves a share of it.
    for model, layer in (("gemma-3-270m", L), ("gemma-4-e2b-mini", 2)):
        t_cur, t_peak = _rss_child(model, args.precision, layer, True)
        f_cur, f_peak = _rss_child(model, args.precision, layer, False)
        mem[model] = {"layer": layer, "truncated": [t_cur, t_peak], "full": [f_cur, f_peak]}
        print(f"{model} L{layer} {args.precision}: RSS after load truncated {t_cur:.0f} MiB vs full {f_cur:.0f} MiB; "
              f"peak {t_peak:.0f} vs {f_peak:.0f} MiB; full/truncated peak ratio: {f_peak / t_peak:.2f}x")
    if args.json:
        print(json.dumps({"results": results, "memory_mib": mem}))


if __name__ == "__main__":
    main()
