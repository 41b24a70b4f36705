#!/usr/bin/env python
"""``nf4-fp32compute`` against the seed's ``nf4`` (fp16 compute) where it matters: through a trained SAE, and in speed.

On a finished quick demo (``--demo DIR``; default: ``$GEMMA4_SAE_CACHE/bench/demo-quick``, where a quick demo is run
the first time and reused afterwards, as ``gemma4-sae demo`` reuses finished stages): the demo's
labelled rows (train and eval splits) are run through the model at each precision (truncated after the SAE's layer)
and through the demo's SAE, per token, as the eval suite does. Reported: explained variance and L0 of the SAE on the
tokens (BOS excluded), per-latent Cohen's d (honest vs deceptive, latents per token mean-pooled over the completion),
``max |d(fp32compute) - d(nf4)|`` over latents, ``d_max`` at each precision, the top-10 latents' overlap; and the
extraction speed of the two presets on the same texts, interleaved in persistent workers (``_harness.py``).
``--emulate-avx2`` repeats it with this CPU capped to the kernels of an AVX2-only x86 (no fp16/bf16 arithmetic),
the machines the preset is for.

    python benchmarks/bench_fp32compute.py [--demo runs/demo] [--rounds 5] [--emulate-avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class SaeExtraction:
    """One arm: the demo's rows through the model at ``precision`` and the demo's SAE."""

    def __init__(self, demo: str, precision: str):
        import numpy as np
        import pyarrow.parquet as pq

        from gemma4_saelens_ext.evals.saeio import sae_from_entry as load_sae, sae_layer
        from gemma4_saelens_ext.models.load import load_model

        d = Path(demo)
        cfg = json.loads((d / "stages.json").read_text())["config"]
        self.sae = load_sae({"path": str(d / "sae")})
        rows = []
        for split in ("train", "eval"):
            f = d / "dataset" / "data" / f"{split}.parquet"
            rows += pq.read_table(f).to_pylist() if f.exists() else []
        self.rows = [r for r in rows if r["label"] in ("honest", "deceptive")]
        self.y = np.array([r["label"] == "honest" for r in self.rows], dtype=np.int64)
        self.lm = load_model(cfg["model"], precision, truncate_after_layer=sae_layer(self.sae))
        self.layer = self.lm.resolve_layer(sae_layer(self.sae))
        from _harness import bnb_generic_if_emulating

        bnb_generic_if_emulating(self.lm.model)
        self.n_tokens = sum(len(self.lm.tokenizer(r["text"])["input_ids"]) for r in self.rows)

    def _acts(self, token_fn=None, pooling="mean"):
        from gemma4_saelens_ext.activations.source import activations

        return activations(self.lm, [r["text"] for r in self.rows], self.layer, pooling=pooling, batch_size=16,
                           completion_start=[int(r["completion_start"]) for r in self.rows], token_fn=token_fn)

    def step(self) -> int:
        self._acts(pooling="none")
        return self.n_tokens

    def info(self) -> dict:
        import numpy as np
        import torch

        from gemma4_saelens_ext.evals.reconstruction import reconstruction_metrics
        from gemma4_saelens_ext.evals.saeio import encode_decode

        x = np.concatenate([t[1:].numpy() for t in self._acts(pooling="none")]).astype(np.float32)
        f, xh = encode_decode(self.sae, x)
        lat = self._acts(token_fn=lambda t: torch.as_tensor(encode_decode(self.sae, t)[0]))
        return {"metrics": reconstruction_metrics(x, xh, f), "latents": lat.numpy().tolist(), "y": self.y.tolist()}


def equivalence(a: dict, b: dict) -> list[str]:
    """SAE-level differences of arm ``a`` against arm ``b`` (EV, L0, per-latent d)."""
    import numpy as np

    from gemma4_saelens_ext.evals.stats import cohens_d

    y = np.asarray(b["y"])
    da, db = (np.nan_to_num(cohens_d(np.asarray(r["latents"]), y)) for r in (a, b))
    ta, tb = (set(np.argsort(-np.abs(d))[:10].tolist()) for d in (da, db))
    ma, mb = a["metrics"], b["metrics"]
    return [f"explained variance: {ma['explained_variance']:.5f} vs {mb['explained_variance']:.5f} "
            f"(diff {ma['explained_variance'] - mb['explained_variance']:+.2e}); L0 {ma['l0']:.3f} vs {mb['l0']:.3f}; "
            f"alive {ma['alive']} vs {mb['alive']}",
            f"per-latent d over {len(da)} latents, {len(y)} rows: max |diff| {np.abs(da - db).max():.3e}; d_max "
            f"{np.abs(da).max():.4f} vs {np.abs(db).max():.4f}; top-10 latents shared {len(ta & tb)}/10"]  # fmt: skip


def run(demo: str, rounds: int, emulate: bool, threads: int | None) -> list[str]:
    sys.path.insert(0, str(HERE))
    from _harness import EMULATE_AVX2, Arm, header, run_rounds, summary

    arms = [Arm(p, f"{__file__}:SaeExtraction", {"demo": demo, "precision": p}, EMULATE_AVX2 if emulate else {})
            for p in ("nf4", "nf4-fp32compute")]
    res = run_rounds(arms, rounds=rounds, min_units=2048, threads=threads,
                     log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    path = ("EMULATED AVX2-only CPU (torch/oneDNN/MKL capped at AVX2, bnb generic path)" if emulate else
            "this CPU's own kernels (nf4: bitsandbytes' default path)")
    return (header(res, f"demo SAE, {path}") + summary(res, [("nf4-fp32compute", "nf4")])
            + [f"nf4-fp32compute vs nf4 ({path}): " + x for x in equivalence(res.info["nf4-fp32compute"], res.info["nf4"])])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", help="a finished demo folder (default: a quick demo kept in the model cache)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--emulate-avx2", action="store_true", help="also measure as on an AVX2-only CPU (see _harness)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    demo = a.demo
    if demo is None:
        from gemma4_saelens_ext.models.embedded import cache_dir

        demo = str(cache_dir() / "bench" / "demo-quick")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
        subprocess.run([sys.executable, "-m", "gemma4_saelens_ext.cli", "demo", "--quick", "--out", demo,
                        "--no-progress"], check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    for emulate in ([False, True] if a.emulate_avx2 else [False]):
        print("\n".join(run(demo, a.rounds, emulate, a.threads)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
