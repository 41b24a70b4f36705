"""Stability of d_max under re-sampling of the behavior pool (the seed's T9 at seeds 101, 107, 113).

For each seed the pool is re-sampled (a class-stratified subsample of ``fraction`` of each class drawn with that
seed, or, when the dataset holds rows generated with that ``sample_seed``, exactly those rows), d is recomputed
through the same SAE, and we report d_max, ``|d_max(seed) - d_max(reference)|``, the top-5 latent overlap with
the reference, and ``stable`` when the delta is below ``threshold`` (default 0.3). The verdict is about d_max's
magnitude only: feature identities can churn (low overlap) while d_max is stable, which is what chance d_max
over thousands of latents looks like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import stats as S

__all__ = ["DEFAULT_SEEDS", "stratified_subsample", "stability_report"]

DEFAULT_SEEDS: tuple[int, ...] = (101, 107, 113)


def stratified_subsample(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified subsample without replacement (>= 2 per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    idx = []
    for cls in (0, 1):
        members = np.flatnonzero(np.asarray(y) == cls)
        k = max(2, int(round(fraction * len(members))))
        idx.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(idx))


def stability_report(
    feats: np.ndarray,
    y: np.ndarray,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    threshold: float = 0.3,
    top_n: int = 5,
    fraction: float = 0.8,
    reference_d: np.ndarray | None = None,
    seed_index: dict[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Pure: d_max per re-sample vs the reference (full pool unless ``reference_d`` is given)."""
    y = np.asarray(y).astype(np.int64)
    ref = S.cohens_d(feats, y) if reference_d is None else np.asarray(reference_d)
    ref_s = S.d_summary(ref, top_n=top_n)
    rows = []
    for s in seeds:
        if seed_index and s in seed_index:
            idx, how = seed_index[s], "sample_seed rows"
        else:
            idx, how = stratified_subsample(y, fraction, s), f"stratified {fraction:.0%} subsample"
        d = S.cohens_d(feats[idx], y[idx])
        sm = S.d_summary(d, top_n=top_n)
        delta = abs(sm["d_max"] - ref_s["d_max"])
        overlap = len(set(sm["top_latents"]) & set(ref_s["top_latents"]))
        rows.append({"seed": int(s), "resample": how, "n_pos": int(y[idx].sum()), "n_neg": int((1 - y[idx]).sum()),
                     "d_max": sm["d_max"], "abs_delta": float(delta), "top_overlap": overlap, "top_n": top_n,
                     "top_latents": sm["top_latents"], "verdict": "STABLE" if delta < threshold else "UNSTABLE"})
    dm = np.array([r["d_max"] for r in rows])
    all_stable = all(r["verdict"] == "STABLE" for r in rows)
    return {
        "reference_d_max": ref_s["d_max"],
        "reference_top_latents": ref_s["top_latents"],
        "threshold": threshold,
        "rows": rows,
        "mean_d_max": float(dm.mean()) if len(dm) else float("nan"),
        "std_d_max": float(dm.std(ddof=1)) if len(dm) > 1 else float("nan"),
        "verdict": (f"d_max {'stable' if all_stable else 'NOT stable'} across {len(rows)} re-samples "
                    f"(|delta| {'<' if all_stable else 'not all <'} {threshold}); mean top-{top_n} overlap "
                    f"{np.mean([r['top_overlap'] for r in rows]) if rows else float('nan'):.1f}/{top_n}"),
    }
