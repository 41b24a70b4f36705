"""A generator of clustered behavior pools shaped like ours, for calibration tests (no model).

Each question has two role-swapped prompts (A, B) sharing two answer words; in A word 0 is the honest answer, in
B it is the deceptive one. Every (prompt, word) cell is a cluster of near-duplicate completions: its latent code is
a sparse non-negative cluster centre (``shared`` x (prompt part + word part) + a cell-specific part) plus small per-completion
noise. With ``planted=0`` nothing depends on the label itself; ``planted > 0`` adds that much to latent 0 in every
honest completion of every prompt (an effect consistent across groups).
"""

from __future__ import annotations

import numpy as np


def clustered_pool(seed: int, *, n_questions: int = 8, per_cell: int = 5, n_latents: int = 64,
                   planted: float = 0.0, density: float = 0.3, noise: float = 0.15, shared: float = 1.0):
    rng = np.random.default_rng(seed)

    def sparse(size, p=density):
        return np.where(rng.random(size) < p, rng.exponential(1.0, size), 0.0)

    rows, y, groups, texts = [], [], [], []
    for q in range(n_questions):
        words = [sparse(n_latents), sparse(n_latents)]
        for role in (0, 1):  # prompt A, its role-swapped twin B
            prompt = sparse(n_latents)
            for w in (0, 1):
                centre = shared * (prompt + words[w]) + sparse(n_latents)
                honest = int(w == role)
                for _ in range(per_cell):
                    v = centre * (1 + noise * rng.standard_normal(n_latents)) + noise * sparse(n_latents)
                    if planted and honest:
                        v[0] += planted
                    rows.append(np.maximum(v, 0.0))
                    y.append(honest)
                    groups.append(f"q{q}")
                    texts.append(f"I am a word{q}_{w}.")
    return np.asarray(rows, dtype=np.float32), np.asarray(y), np.asarray(groups), texts
