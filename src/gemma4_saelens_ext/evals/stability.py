"""Stability of the top latents (the seed's T9 at seeds 101, 107, 113), defined by what replicates and built so
that it can fail.

Two ways to get a re-sample of the behavior pool, and the report says which one was used:

* ``regenerate`` (with the model): new completions for the same train prompts, sampled with the dataset
  builder's per-row seeded sampler at base seed 101/107/113, judged by the same judge and re-balanced per group;
  then the same pooling and SAE. New text, same prompts: the question is whether the effect belongs to the
  behavior or to the particular completions that were sampled.
* ``group bootstrap`` (without a model): the train split's units resampled with replacement (honest and deceptive
  one-label units apart), one resample per seed. Weaker (the same completions come back), labelled as such.

The verdict (:func:`stability_report`) asks whether the reference's top latents come back, with their sign and
size, on each re-sample, *against what noise gives on the same design*: the statistic is the replicated d,
``R = max_j sign(d_ref_j) d_resample_j`` over the reference's top ``n`` latents (as in the primary replication
test), and its noise distribution comes from relabelling the reference and the re-sample together with the
reference's null design (the same unit flipped or permuted in both, matched by group id), choosing the top ``n``
latents again on each relabelled reference. That keeps every confound the pools share (the same prompts, the same
answer words, the same rows in a bootstrap resample) in the noise distribution too, so only an honesty effect can
make ``R`` exceed it.

* ``NO EFFECT TO BE STABLE`` — the reference's own d_max is not above its null (p > alpha): there is nothing whose
  stability could be judged (pure-noise pools end here);
* ``STABLE`` — the reference has an effect and it replicates beyond noise (p <= alpha) on every re-sample;
* ``UNSTABLE`` — the reference has an effect and at least one re-sample does not reproduce it (or is too small).

The top-``n`` overlap and ``|delta d_max|`` (the seed card's old 0.3 rule) are reported beside it, each with what
noise gives, but decide nothing: on pure-noise pools the old rule said STABLE 30 times in 30.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.dvalues import CellMoments
from gemma4_saelens_ext.evals.nulls import balance_cell_weights, null_design

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SEEDS", "Resample", "group_bootstrap_resamples", "regenerate_rows", "stability_report"]

DEFAULT_SEEDS: tuple[int, ...] = (101, 107, 113)
VERDICTS = ("STABLE", "UNSTABLE", "NO EFFECT TO BE STABLE")


@dataclass
class Resample:
    """One re-sampled pool: latents ``feats`` [n, d_sae], labels ``y``, group ids ``groups`` (the reference's ids,
    so a noise relabelling treats a prompt alike in both pools) and how it was made."""

    seed: int
    how: str
    feats: np.ndarray
    y: np.ndarray
    n_groups: int
    groups: np.ndarray | None = None


def group_bootstrap_resamples(feats: np.ndarray, y: np.ndarray, groups: Any, seeds: Sequence[int], *,
                              clusters: Any = None) -> list[Resample]:
    """Whole units drawn with replacement, one resample per seed (no model needed); with one-label units the
    honest and the deceptive ones are drawn apart, so every resample holds both classes."""
    y = np.asarray(y).astype(np.int64)
    design = null_design(y, groups, n_permutations=1, clusters=clusters)
    ids = np.asarray([str(v) for v in groups]) if groups is not None else np.arange(len(y)).astype(str)
    members = [np.flatnonzero(design.codes == g) for g in range(design.layout.n_groups)]
    out = []
    for s in seeds:
        c = design.bootstrap_counts(1, int(s))[0]
        idx = np.concatenate([np.repeat(members[g], c[g]) for g in np.flatnonzero(c)])
        out.append(Resample(int(s), "group bootstrap (same completions; no regeneration)", feats[idx], y[idx],
                            int((c > 0).sum()), ids[idx]))
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


def _top(a: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest |a| along the last axis (unordered), [..., n]."""
    n = min(n, a.shape[-1])
    return np.argpartition(-np.abs(a), n - 1, axis=-1)[..., :n]


def stability_report(
    reference_feats: np.ndarray,
    reference_y: Any,
    reference_groups: Any,
    resamples: Sequence[Resample],
    *,
    top_n: int = 5,
    n_null: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    clusters: Any = None,
    threshold: float = 0.3,
) -> dict[str, Any]:
    """Do the reference pool's top latents replicate on each re-sample beyond what noise gives on the same design?
    (See the module docstring.) ``n_null`` relabellings of the reference's null design (exact when it has fewer);
    ``threshold`` only labels the reported ``|delta d_max|``. A re-sample with fewer than 2 rows of a class is
    ``INSUFFICIENT`` (counted as not replicating)."""
    y = np.asarray(reference_y).astype(np.int64)
    S.check_binary_labels(y, what="stability reference")
    design = null_design(y, reference_groups, n_permutations=n_null, seed=seed, clusters=clusters)
    lay = design.layout
    cm = CellMoments(reference_feats, y, codes=design.codes, cell_weights=design.cell_weights)
    zero = np.zeros((1, cm.n_groups), dtype=np.int8)
    d_ref, null_ref = cm.flipped_d(zero)[0], cm.flipped_d(design.flips)
    ref_top = np.asarray(S.d_summary(d_ref, top_n=top_n)["top_latents"])
    ref_p = design.p_value(float(np.abs(d_ref).max()), np.abs(null_ref).max(1))
    top_b = _top(null_ref, top_n)  # the noise reference's own top latents, one set per relabelling
    sign_b = np.sign(np.take_along_axis(null_ref, top_b, 1))
    ids = [str(v) for v in (reference_groups if reference_groups is not None else range(len(y)))]
    unit_of = {g: int(u) for g, u in zip(ids, design.codes)}
    ref_dmax = float(np.abs(d_ref).max())
    rng = np.random.default_rng(seed + 1)
    rows = []
    for rs in resamples:
        ry = np.asarray(rs.y).astype(np.int64)
        base = {"seed": rs.seed, "resample": rs.how, "n_pos": int(ry.sum()), "n_neg": int((1 - ry).sum()),
                "n_groups": rs.n_groups, "top_n": top_n}
        if min(base["n_pos"], base["n_neg"]) < 2:
            rows.append({**base, "d_max": float("nan"), "abs_delta": float("nan"), "top_overlap": 0,
                         "top_latents": [], "replicated_d": float("nan"), "noise_q95": float("nan"),
                         "p": float("nan"), "verdict": "INSUFFICIENT"})
            continue
        rg = [str(v) for v in rs.groups] if rs.groups is not None else [f"new row {i}" for i in range(len(ry))]
        new = {g: cm.n_groups + i for i, g in enumerate(sorted({g for g in rg if g not in unit_of}))}
        codes = np.asarray([unit_of[g] if g in unit_of else new[g] for g in rg])  # groups the reference lacks:
        extra = (rng.random((design.n_draws, len(new))) < 0.5).astype(np.int8)  # flipped on their own
        extra[0] *= not design.exact  # the identity stays the identity
        flips = np.concatenate([design.flips, extra], 1)
        n1 = np.bincount(codes, weights=ry, minlength=cm.n_groups + len(new))
        cw = balance_cell_weights(n1, np.bincount(codes, minlength=len(n1)) - n1)
        rcm = CellMoments(rs.feats, ry, codes=codes, cell_weights=cw, n_groups=len(n1))
        d_r = rcm.flipped_d(np.zeros((1, rcm.n_groups), dtype=np.int8))[0]
        null_r = rcm.flipped_d(flips)
        stat = float(np.max(np.sign(d_ref[ref_top]) * d_r[ref_top]))
        noise = (sign_b * np.take_along_axis(null_r, top_b, 1)).max(1)
        p = design.p_value(stat, noise)
        top_r = S.d_summary(d_r, top_n=top_n)["top_latents"]
        noise_overlap = np.array([len(set(a) & set(b)) for a, b in zip(top_b.tolist(), _top(null_r, top_n).tolist())])
        rows.append({**base, "d_max": float(np.abs(d_r).max()), "abs_delta": float(abs(np.abs(d_r).max() - ref_dmax)),
                     "abs_delta_below_threshold": bool(abs(np.abs(d_r).max() - ref_dmax) < threshold),
                     "top_overlap": len(set(top_r) & set(ref_top.tolist())), "top_latents": top_r,
                     "noise_overlap_mean": float(noise_overlap.mean()),
                     "noise_overlap_q95": float(np.quantile(noise_overlap, 0.95)),
                     "replicated_d": stat, "noise_q95": float(np.quantile(noise, 0.95)), "p": p,
                     "verdict": "REPLICATES" if p <= alpha else "DOES NOT REPLICATE"})
    ok = [r for r in rows if r["verdict"] != "INSUFFICIENT"]
    dm = np.array([r["d_max"] for r in ok])
    if ref_p > alpha:
        kind = "NO EFFECT TO BE STABLE"
    else:
        kind = "STABLE" if rows and all(r["verdict"] == "REPLICATES" for r in rows) else "UNSTABLE"
    how = sorted({r["resample"] for r in rows})
    n_rep = sum(r["verdict"] == "REPLICATES" for r in rows)
    mean_overlap = np.mean([r["top_overlap"] for r in rows]) if rows else float("nan")
    words = {
        "NO EFFECT TO BE STABLE": f"the reference d_max {ref_dmax:.3g} is not above its null (p = {ref_p:.3g}), so "
                                  "there is no effect whose stability could be judged",
        "STABLE": f"the top-{top_n} latents replicate beyond noise on all {len(rows)} re-samples",
        "UNSTABLE": f"the reference has an effect (p = {ref_p:.3g}) but it replicates beyond noise on only "
                    f"{n_rep} of {len(rows)} re-samples",
    }[kind]
    return {
        "reference_d_max": ref_dmax, "reference_p": ref_p, "reference_top_latents": ref_top.tolist(),
        "null": design.name, "layout": lay.to_dict(), "threshold": threshold, "mode": ", ".join(how), "rows": rows,
        "mean_d_max": float(dm.mean()) if len(dm) else float("nan"),
        "std_d_max": float(dm.std(ddof=1)) if len(dm) > 1 else float("nan"),
        "stable": kind == "STABLE", "verdict_kind": kind,
        "verdict": f"{kind}: {words} ({'; '.join(how)}; mean top-{top_n} overlap {mean_overlap:.1f}/{top_n})",
    }
