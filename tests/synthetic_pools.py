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


def layout_pool(seed, *, layout="constant", n_groups=24, sizes=(2, 20), honest_share=0.5, n_latents=64,
                planted=0.0, within="exchangeable", n_families=None, topk=None, density=0.3, group_scale=1.0):
    """A pool with a chosen label layout and no honesty signal unless ``planted`` (added to latent 0 of every
    honest row). Returns ``(x [n, k] float32, y, groups, families)``.

    ``layout``: ``constant`` (one label per group; ``round(share * G)`` groups honest), ``balanced`` (both labels
    1:1 in every group), ``mixed`` (both labels in every group, the honest count ~ Binomial(size, share), at least
    one of each), ``combination`` (the first half of the groups constant, the rest mixed).
    ``within``: ``exchangeable`` (a sparse group effect + sparse row noise: rows of a group are exchangeable) or
    ``words`` (a group's honest rows share one answer word's code and its deceptive rows another's: the label
    follows the word, as in role-play pools).
    ``n_families``: groups nested in families with a family effect; with ``layout="constant"`` every group of a
    family carries the family's label (labels constant within a coarser level).
    ``topk``: keep each row's ``topk`` largest latents only (SAE-like sparse codes)."""
    rng = np.random.default_rng(seed)
    k = n_latents

    def sparse(size, p=density):
        return np.where(rng.random(size) < p, rng.exponential(1.0, size), 0.0)

    fam_of = np.arange(n_groups) % n_families if n_families else np.zeros(n_groups, dtype=int)
    fam_eff = [sparse(k) * 1.5 for _ in range(n_families or 1)]
    if n_families and layout == "constant":
        fam_lab = np.zeros(n_families, dtype=int)
        fam_lab[rng.permutation(n_families)[: int(round(honest_share * n_families))]] = 1
        const_lab = fam_lab[fam_of]
    else:
        const_lab = np.zeros(n_groups, dtype=int)
        const_lab[rng.permutation(n_groups)[: int(round(honest_share * n_groups))]] = 1
    X, y, g, f = [], [], [], []
    for q in range(n_groups):
        kind = layout if layout != "combination" else ("constant" if q < n_groups // 2 else "mixed")
        lo = sizes[0] if kind == "constant" else max(2, sizes[0])
        n = int(rng.integers(lo, sizes[1] + 1))
        if kind == "constant":
            lab = np.full(n, const_lab[q])
        elif kind == "balanced":
            n += n % 2
            lab = np.repeat([1, 0], n // 2)
        else:
            n1 = int(np.clip(rng.binomial(n, honest_share), 1, n - 1))
            lab = np.r_[np.ones(n1, dtype=int), np.zeros(n - n1, dtype=int)]
        base = group_scale * sparse(k) + (fam_eff[fam_of[q]] if n_families else 0.0)
        if within == "words":
            words = np.stack([sparse(k), sparse(k)])[lab]
            v = base + words * (1 + 0.15 * rng.standard_normal((n, k))) + 0.15 * sparse((n, k))
        else:
            v = base + sparse((n, k))
        X.append(np.maximum(v, 0.0))
        y.append(lab)
        g += [f"q{q}"] * n
        f += [f"fam{fam_of[q]}"] * n
    X, y = np.concatenate(X), np.concatenate(y)
    if planted:
        X[:, 0] += planted * y
    if topk:
        cut = -np.sort(-X, axis=1)[:, topk - 1 : topk]
        X = np.where(X >= cut, X, 0.0)
    return X.astype(np.float32), y, np.asarray(g), np.asarray(f)


def twin_pool(seed, sample_seed=0, *, n_questions=10, per_cell=4, n_latents=64, planted=0.0, density=0.6,
              shared=0.3, noise=0.15):
    """:func:`clustered_pool`'s design with the structure (questions, role-swapped prompts, answer words, cluster
    centres) drawn from ``seed`` and the completions from ``sample_seed``: ``twin_pool(seed, s2)`` re-generates
    the same prompts' completions, as the stability family does at seeds 101, 107, 113."""
    srng, crng = np.random.default_rng(seed), np.random.default_rng([seed, sample_seed])

    def sparse(rng, size):
        return np.where(rng.random(size) < density, rng.exponential(1.0, size), 0.0)

    rows, y, groups = [], [], []
    for q in range(n_questions):
        words = [sparse(srng, n_latents), sparse(srng, n_latents)]
        for role in (0, 1):
            prompt = sparse(srng, n_latents)
            for w in (0, 1):
                centre = shared * (prompt + words[w]) + sparse(srng, n_latents)
                honest = int(w == role)
                v = centre * (1 + noise * crng.standard_normal((per_cell, n_latents)))
                v = np.maximum(v + noise * sparse(crng, (per_cell, n_latents)), 0.0)
                v[:, 0] += planted * honest
                rows.append(v)
                y += [honest] * per_cell
                groups += [f"q{q}"] * per_cell
    return np.concatenate(rows).astype(np.float32), np.asarray(y), np.asarray(groups)
