"""Stability of d_max (the seed's T9 at seeds 101, 107, 113), built so that it can fail.

Two ways to get a re-sample of the behavior pool, and the report says which one was used:

* ``regenerate`` (with the model): new completions for the same train prompts, sampled with the dataset
  builder's per-row seeded sampler at base seed 101/107/113, judged by the same judge and re-balanced per group;
  then the same pooling and SAE. New text, same prompts: the question is whether the effect belongs to the
  behavior or to the particular completions that were sampled.
* ``group bootstrap`` (without a model): the train split's groups resampled with replacement, one resample per
  seed. Weaker (the same completions come back), labelled as such.

For each re-sample: d_max, ``|d_max - d_max(reference)|``, the top-``n`` latent overlap with the reference and
``STABLE`` when the delta is below ``threshold`` (0.3, the seed card's rule). A d_max that is chance over
thousands of latents moves by more than that between independent pools, so the verdict is informative only next
to the d-value p-values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SEEDS", "Resample", "group_bootstrap_resamples", "regenerate_rows", "stability_report"]

DEFAULT_SEEDS: tuple[int, ...] = (101, 107, 113)


@dataclass
class Resample:
    """One re-sampled pool: latents ``feats`` [n, d_sae], labels ``y`` and how it was made."""

    seed: int
    how: str
    feats: np.ndarray
    y: np.ndarray
    n_groups: int


def group_bootstrap_resamples(feats: np.ndarray, y: np.ndarray, groups: Any, seeds: Sequence[int]) -> list[Resample]:
    """Whole groups drawn with replacement, one resample per seed (no model needed)."""
    codes = G.group_codes(groups, len(y))
    n_groups = int(codes.max()) + 1
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    out = []
    for s in seeds:
        pick = np.random.default_rng(s).integers(0, n_groups, size=n_groups)
        idx = np.concatenate([members[i] for i in pick])
        out.append(Resample(int(s), "group bootstrap (same completions; no regeneration)", feats[idx], y[idx],
                            len(set(pick.tolist()))))
    return out


def regenerate_rows(
    lm: Any,
    rows: Sequence[dict],
    seed: int,
    judge: Callable[[Sequence[dict], Sequence[str]], list[str]],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 16,
    balance: bool = True,
) -> list[dict]:
    """New completions for the distinct prompts of ``rows`` at base seed ``seed`` (the dataset builder's sampler:
    one seed per row, so results do not depend on batch size), judged, then balanced per group (``balance``)."""
    from gemma4_saelens_ext.behavior.pools import balance_same_prompt
    from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests

    prompts: dict[str, dict] = {}
    for r in rows:
        prompts.setdefault(str(r["prompt_id"]), r)
    reqs = make_requests([(pid, r["prompt"]) for pid, r in prompts.items()], samples_per_prompt, seed)
    comps = generate_completions(lm.model, lm.tokenizer, reqs, max_new_tokens=max_new_tokens,
                                 temperature=temperature, batch_size=batch_size, progress=False)
    base = [prompts[c.prompt_id] for c in comps]
    labels = judge(base, [c.completion for c in comps])
    new = [{**b, "completion": c.completion, "text": b["prompt"] + c.completion, "completion_start": len(b["prompt"]),
            "label": lab, "key": c.key, "sample_seed": c.sample_seed}
           for b, c, lab in zip(base, comps, labels)]
    if not balance:
        return new
    pool, _ = balance_same_prompt(new, seed=seed, min_per_class=0)
    return list(pool)


def stability_report(
    reference_d: np.ndarray,
    resamples: Sequence[Resample],
    *,
    threshold: float = 0.3,
    top_n: int = 5,
) -> dict[str, Any]:
    """d_max of each re-sample against the reference d (pure). A re-sample with fewer than 2 rows of a class is
    reported as ``INSUFFICIENT`` (counted as not stable)."""
    ref_s = S.d_summary(np.asarray(reference_d), top_n=top_n)
    rows = []
    for rs in resamples:
        y = np.asarray(rs.y).astype(np.int64)
        base = {"seed": rs.seed, "resample": rs.how, "n_pos": int(y.sum()), "n_neg": int((1 - y).sum()),
                "n_groups": rs.n_groups, "top_n": top_n}
        if min(base["n_pos"], base["n_neg"]) < 2:
            rows.append({**base, "d_max": float("nan"), "abs_delta": float("nan"), "top_overlap": 0,
                         "top_latents": [], "verdict": "INSUFFICIENT"})
            continue
        sm = S.d_summary(S.cohens_d(rs.feats, y), top_n=top_n)
        delta = abs(sm["d_max"] - ref_s["d_max"])
        overlap = len(set(sm["top_latents"]) & set(ref_s["top_latents"]))
        rows.append({**base, "d_max": sm["d_max"], "abs_delta": float(delta), "top_overlap": overlap,
                     "top_latents": sm["top_latents"], "verdict": "STABLE" if delta < threshold else "UNSTABLE"})
    ok = [r for r in rows if r["verdict"] != "INSUFFICIENT"]
    dm = np.array([r["d_max"] for r in ok])
    all_stable = bool(rows) and all(r["verdict"] == "STABLE" for r in rows)
    how = sorted({r["resample"] for r in rows})
    return {
        "reference_d_max": ref_s["d_max"],
        "reference_top_latents": ref_s["top_latents"],
        "threshold": threshold,
        "mode": ", ".join(how),
        "rows": rows,
        "mean_d_max": float(dm.mean()) if len(dm) else float("nan"),
        "std_d_max": float(dm.std(ddof=1)) if len(dm) > 1 else float("nan"),
        "stable": all_stable,
        "verdict": (f"d_max {'STABLE' if all_stable else 'UNSTABLE'} across {len(rows)} re-samples ({'; '.join(how)}; "
                    f"|delta| {'<' if all_stable else 'not all <'} {threshold}); mean top-{top_n} overlap "
                    f"{np.mean([r['top_overlap'] for r in rows]) if rows else float('nan'):.1f}/{top_n}"),
    }
