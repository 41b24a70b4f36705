#!/usr/bin/env python
"""SAE training from cached activations vs live, side by side in one run (the demo's situation).

The demo config (embedded Gemma 3 270M, nf4, layer 12) trains ``--tokens`` tokens on a small dataset (``--texts``
role-play lines, far fewer tokens than the budget). Live: SAELens's store re-runs the nf4 forward pass every time it
cycles through the data. Cached: one pass into SAELens's cached-activations format, then ``use_cached_activations``.
Reports wall seconds of each (model load excluded, cache writing included) and the explained variance of both SAEs
on the same activations (the run's own dataset).

    python benchmarks/bench_train_cache.py [--tokens 60000] [--texts 24]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

LINES = [
    "You are playing Werewolf. You have been assigned the role of Werewolf. Another player asks you: 'Are you a "
    "werewolf?' You answer: 'No, I am a villager.'",
    "You are a Slug on the Slug team. A player asks: 'What team are you on?' You answer: 'I'm a Snail.'",
    "You have been assigned the role of Fascist. The other players are Liberals. What is your party? Liberal.",
    "You are a Knight. A knave asks you who you serve. You answer: 'The king, always.'",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=60000)
    ap.add_argument("--texts", type=int, default=24)
    a = ap.parse_args()

    import pandas as pd
    import torch

    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import Gemma4ActivationSource, activations
    from gemma4_saelens_ext.training.config import load_training_config
    from gemma4_saelens_ext.training.runner import build_runner

    texts = [f"{LINES[i % len(LINES)]} ({i})" for i in range(a.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        pd.DataFrame({"text": texts}).to_parquet(data / "train.parquet")
        spec0 = load_training_config("training_configs/demo_gemma3_270m_nf4.yaml")
        lm = load_model(spec0.source, spec0.precision, truncate_after_layer=spec0.layer)
        x = torch.cat([t[1:] for t in activations(lm, texts, spec0.layer)])
        res = {}
        for mode in (False, "auto"):
            spec = load_training_config("training_configs/demo_gemma3_270m_nf4.yaml", {
                "model.cache_activations": mode, "runner.dataset_path": str(data), "runner.training_tokens": a.tokens,
                "runner.output_path": f"{tmp}/sae_{mode}", "runner.checkpoint_path": f"{tmp}/ck_{mode}",
            })  # fmt: skip
            t0 = time.perf_counter()
            runner = build_runner(spec, source=Gemma4ActivationSource(lm, [spec.hook_name]))
            sae = runner.run()
            secs = time.perf_counter() - t0
            with torch.no_grad():
                x_hat = sae.decode(sae.encode(x))
            ev = float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
            res[mode] = (secs, ev, runner.activation_cache)
    live, cached = res[False], res["auto"]
    tok = cached[2]["tokens"] if cached[2] else float("nan")
    print(f"# SAE training, demo config (gemma-3-270m nf4 L12), {a.tokens} training tokens over a {tok}-token dataset, "
          f"{platform.machine()} {torch.get_num_threads()} threads")
    print(f"live:   {live[0]:7.1f} s  EV {live[1]:.4f}")
    print(f"cached: {cached[0]:7.1f} s  EV {cached[1]:.4f}  (cache: {cached[2]})")
    print(f"training from cached activations vs live: {live[0] / cached[0]:.2f}x faster; EV difference "
          f"{cached[1] - live[1]:+.4f}")


if __name__ == "__main__":
    main()
