#!/usr/bin/env python
"""Generation costs the eval pays, before and after issue 18, side by side on the interleaved harness (``_harness.py``).

Arms (embedded Gemma 3 270M at ``--precision``, default the demo's ``nf4``, CPU):
  steer-batched      ``evals.steering.steered_completions``: every direction and alpha of a prompt in one batch, the
                     prompt run once to the hooked layer and branched there
  steer-per-call     the previous design: one ``generate_completions`` call per (direction, alpha) over the prompts,
                     steered by ``steering_hook`` (alpha = 0 once)
  generate-contiguous / generate-strided
                     ``generate_completions`` of ``--prompts`` prompts, 1 new token, with and without the contiguous
                     unembedding input (the strided last-token view runs as a batched matmul)
Steering uses the full demo suite's shape by default: 10 directions (SAE-like, mean difference, 8 random) x 7 alphas,
``--steer-prompts`` prompts, 8 new tokens. Units are tokens through the model (prompt + new tokens per row).

    python benchmarks/bench_generate.py [--rounds 5] [--arms steer-batched,steer-per-call,...]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALPHAS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
ARMS = ("steer-batched", "steer-per-call", "generate-contiguous", "generate-strided")


class GenArm:
    def __init__(self, kind: str, precision: str = "nf4", prompts: int = 8, steer_prompts: int = 2,
                 directions: int = 10, max_new_tokens: int = 8, layer: int = 6):
        import numpy as np

        from gemma4_saelens_ext.behavior.scenarios import load_scenarios
        from gemma4_saelens_ext.evals.steering import random_directions
        from gemma4_saelens_ext.models.load import load_model

        self.kind, self.layer, self.max_new_tokens = kind, layer, max_new_tokens
        self.lm = load_model("gemma-3-270m", precision)
        ps = [p for p in load_scenarios() if p.kind == "role_play"]
        n = steer_prompts if kind.startswith("steer") else prompts
        self.rows = [{"prompt": p.text, "prompt_id": p.id} for p in ps[:n]]
        self.dirs = {f"d{i}": v for i, v in enumerate(random_directions(self.lm.d_model, directions, 0))}
        self.scale = 0.5 * float(np.linalg.norm(np.ones(self.lm.d_model)))
        n_tok = sum(len(self.lm.tokenizer(r["prompt"])["input_ids"]) for r in self.rows)
        rows_per_prompt = 1 + directions * (len(ALPHAS) - 1) if kind.startswith("steer") else 1
        new = max_new_tokens if kind.startswith("steer") else 1
        self.units = rows_per_prompt * (n_tok + new * len(self.rows))
        if kind == "generate-strided":  # the sampler without the fix
            import gemma4_saelens_ext.behavior.sampling as S

            S.contiguous_unembedding = lambda model: contextlib.nullcontext()

    def step(self) -> int:
        import torch

        from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests

        lm = self.lm
        reqs = make_requests([(f"{i}:{r['prompt_id']}", r["prompt"]) for i, r in enumerate(self.rows)], 1, 0)
        if self.kind == "steer-batched":
            from gemma4_saelens_ext.evals.steering import steered_completions

            steered_completions(lm, self.layer, self.dirs, self.rows, scale=self.scale, alphas=ALPHAS,
                                max_new_tokens=self.max_new_tokens)  # fmt: skip
        elif self.kind == "steer-per-call":
            from gemma4_saelens_ext.activations.source import steering_hook

            kw = dict(max_new_tokens=self.max_new_tokens, batch_size=len(reqs), progress=False)
            generate_completions(lm.model, lm.tokenizer, reqs, **kw)  # alpha = 0, once
            for u in self.dirs.values():
                for a in (a for a in ALPHAS if a != 0):
                    with steering_hook(lm, self.layer, torch.as_tensor(u, dtype=torch.float32) * self.scale, a):
                        generate_completions(lm.model, lm.tokenizer, reqs, **kw)
        else:
            generate_completions(lm.model, lm.tokenizer, reqs, max_new_tokens=1, batch_size=len(reqs), progress=False)
        return self.units


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-tokens", type=int, default=2048)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--precision", default="nf4")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per generate call (generate-* arms)")
    ap.add_argument("--steer-prompts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from _harness import Arm, header, run_rounds, summary

    kinds = a.arms.split(",")
    arms = [Arm(k, f"{__file__}:GenArm", {"kind": k, "precision": a.precision, "prompts": a.prompts,
                                          "steer_prompts": a.steer_prompts}) for k in kinds]  # fmt: skip
    res = run_rounds(arms, rounds=a.rounds, min_units=a.round_tokens, threads=a.threads,
                     log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    pairs = [(x, y) for x, y in (("steer-batched", "steer-per-call"), ("generate-contiguous", "generate-strided"))
             if x in kinds and y in kinds]
    print("\n".join(header(res, f"gemma-3-270m {a.precision}, steering 10 directions x 7 alphas x "
                                 f"{a.steer_prompts} prompts, generate {a.prompts} prompts x 1 token")
                    + summary(res, pairs)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
