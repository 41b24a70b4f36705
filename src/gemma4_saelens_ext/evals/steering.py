"""Steering with an SAE-decoded direction: add ``alpha * scale * u`` to layer L's output while generating, judge
the completions, and ask whether the honest rate moves monotonically with alpha.

Direction (documented choice): take the ``top_n`` latents by |d| (d = Cohen's d honest - deceptive on the train
split); ``u = normalize(sum_i w_i * W_dec[i])`` with ``w_i = d_i`` (``weighting="d"``, default: strong latents
count more and deceptive-leaning latents enter with a minus sign), ``sign(d_i)`` (``"sign"``) or 1
(``"uniform"``). ``alpha > 0`` pushes toward the honest side.

Scale (documented choice, :func:`steering_scale`): ``"residual_norm"`` (default) = mean L2 norm of layer L's
residual over the eval texts (completion tokens), so ``alpha = 1`` adds a vector as long as a typical residual;
``"projection_std"`` = standard deviation of the residuals' projection on ``u``, so ``alpha = 1`` moves a sample by
one natural spread along the direction (Gemma's residual norm is dominated by a few outlier dimensions, and a
residual-norm push makes a small model's completions incoherent). The sweep default is -2, -1, -0.5, 0, 0.5, 1, 2.

Honest rate = honest / (honest + deceptive) among the judge's decisive labels (ambiguous rate reported beside).
Sampling uses the dataset builder's per-row seeded sampler with the same seed per prompt at every alpha, so results
do not depend on batch size. Generation (:func:`steered_completions`): every direction and alpha of a prompt runs in
one batch, one row per (direction, alpha) with its own vector added at layer L, and the prompt is computed once up
to layer L and branched there (the rows differ only after L). Monotonicity: Spearman rho
of alpha vs honest rate with an exact permutation p; OLS slope with an exact permutation p and a bootstrap CI over
prompt groups.

Controls: the same sweep, at the same scale, along ``n_random`` random unit directions (19 by default, so the rank
test can reach p = 1/20 = 0.05) and along the raw mean-difference direction. The SAE direction's slope is ranked
among the random slopes: rank p = (1 + #{random slopes >= SAE slope}) / (1 + n_random), a one-sided test of "this
direction moves the honest rate no more than a random push of the same length" (e.g. one that merely breaks the
text). It is reported beside the slope's own p and both enter the report's Holm family. Beside them: the share of
prompts that move *against* the intended direction (their own honest-vs-alpha slope is negative) and a group
bootstrap CI on the slope. The ambiguous rate per alpha shows incoherence (text that names neither role).

The statistics (:func:`steering_analysis`) take only the judged outcomes per direction, alpha and prompt, so the
generation (:func:`run_steering`) can change underneath them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals import trend as T

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPHAS",
    "decoded_direction",
    "mean_difference_direction",
    "cosine",
    "honest_rate",
    "sweep_statistics",
    "random_directions",
    "run_steering",
    "steered_completions",
    "slope_percentile",
    "rank_p",
    "prompt_slopes",
    "steering_analysis",
    "make_judge",
]

DEFAULT_ALPHAS: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
JudgeFn = Callable[[Sequence[dict], Sequence[str]], list[str]]


def decoded_direction(w_dec_rows: np.ndarray, d_values: Sequence[float], *, weighting: str = "d") -> np.ndarray:
    """Unit direction from decoder rows [m, d_in] weighted by the latents' d (see module docstring)."""
    d = np.asarray(d_values, dtype=np.float64)
    if weighting == "d":
        w = d
    elif weighting == "sign":
        w = np.sign(d)
    elif weighting == "uniform":
        w = np.ones_like(d)
    else:
        raise ValueError(f"weighting must be d, sign or uniform, got {weighting!r}")
    v = (w[:, None] * np.asarray(w_dec_rows, dtype=np.float64)).sum(0)
    n = np.linalg.norm(v)
    if n == 0:
        raise ValueError("decoded direction is zero (all weights zero?)")
    return v / n


def mean_difference_direction(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Raw mean(honest) - mean(deceptive) of the activations (the reference direction)."""
    y = np.asarray(y).astype(bool)
    S.check_binary_labels(y.astype(int), what="mean-difference direction", min_per_class=1)
    a = np.asarray(acts, dtype=np.float64)
    return a[y].mean(0) - a[~y].mean(0)


#: steering scale kinds -> what ``alpha = 1`` means (written into the report)
SCALE_DEFINITIONS = {
    "residual_norm": "mean L2 norm of the pooled residuals",
    "projection_std": "std of the pooled residuals projected on the direction",
}


def check_scale_kind(kind: str) -> None:
    if kind not in SCALE_DEFINITIONS:
        raise ValueError(f"Unknown steering scale {kind!r}; use one of {', '.join(SCALE_DEFINITIONS)}.")


def steering_scale(acts: Any, u: Any, kind: str = "residual_norm") -> float:
    """Length of ``alpha = 1`` (see module docstring)."""
    check_scale_kind(kind)
    x = np.asarray(acts, dtype=np.float64)
    if kind == "residual_norm":
        return float(np.linalg.norm(x, axis=1).mean())
    return float((x @ np.asarray(u, dtype=np.float64).ravel()).std())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else 0.0


def honest_rate(labels: Sequence[str]) -> dict[str, float]:
    lab = list(labels)
    h, d = lab.count(S.POSITIVE), lab.count(S.NEGATIVE)
    return {
        "honest_rate": h / (h + d) if h + d else float("nan"),
        "n_honest": h,
        "n_deceptive": d,
        "n_decisive": h + d,
        "ambiguous_rate": 1 - (h + d) / len(lab) if lab else float("nan"),
        "n": len(lab),
    }


def sweep_statistics(
    alphas: Sequence[float], labels: Sequence[Sequence[str]], *, n_bootstrap: int = 1000, seed: int = 0,
    alpha_level: float = 0.05, groups: Any = None,
) -> dict[str, Any]:
    """Per-alpha honest and ambiguous rates and monotonicity stats. ``labels[a][i]`` = judge label of prompt i at
    alphas[a]. The slope CI resamples prompts, or whole groups of prompts when ``groups`` (one id per prompt)."""
    lab = np.asarray(labels, dtype=object)
    rates = [honest_rate(row) for row in lab]
    r = np.array([x["honest_rate"] for x in rates])
    ok = np.isfinite(r)
    al = np.asarray(alphas, dtype=np.float64)
    sp = T.spearman_permutation(al[ok], r[ok]) if ok.sum() >= 3 else {"rho": float("nan"), "p": float("nan")}
    sl = T.slope_permutation(al[ok], r[ok]) if ok.sum() >= 3 else {"slope": float("nan"), "p": float("nan")}
    n_prompts = lab.shape[1] if lab.ndim == 2 else 0

    def boot_slope(idx: np.ndarray) -> float:
        rr = np.array([honest_rate(row[idx])["honest_rate"] for row in lab])
        m = np.isfinite(rr)
        return T.slope(al[m], rr[m]) if m.sum() >= 2 else float("nan")

    codes = None
    if groups is not None:
        from gemma4_saelens_ext.evals.groups import group_codes

        codes = group_codes(groups, n_prompts)
    ci = (S.bootstrap_ci(boot_slope, n_prompts, n_bootstrap=n_bootstrap, seed=seed, groups=codes) if n_prompts
          else (float("nan"),) * 2)
    n_dec = int(sum(x["n_decisive"] for x in rates))
    verdict = (
        f"steering slope = {sl['slope']:.3g} honest-rate/alpha (Spearman rho = {sp['rho']:.3g}, exact permutation "
        f"p = {sp['p']:.3g}; {n_prompts} prompts x {len(al)} alphas, {n_dec} decisive completions): "
        + ("monotone beyond chance" if sp["p"] <= alpha_level else "not significant with this many alphas and prompts")
    )
    return {"alphas": list(map(float, al)), "per_alpha": rates, "spearman": sp, "slope": sl, "slope_ci": ci,
            "n_prompts": n_prompts, "verdict": verdict}


def make_judge(name: str = "keyword", scenarios: Sequence[str] | None = None) -> JudgeFn:
    """A judge over dataset rows: looks each row's ``prompt_id`` up in the scenario library and applies the named
    behavior judge (``keyword`` = the seed's first-30-characters rule, ``paraphrase``, ``llm:ID``)."""
    from gemma4_saelens_ext.behavior.judges import JudgeItem, make_judges
    from gemma4_saelens_ext.behavior.scenarios import load_scenarios

    judges, skipped = make_judges(name)
    if not judges:
        raise ValueError(f"judge {name!r} unavailable: {skipped}")
    judge = judges[0]
    prompts = {p.id: p for p in load_scenarios(scenarios, kinds=None)}  # every kind: rows of any kind are looked up

    def fn(rows: Sequence[dict], completions: Sequence[str]) -> list[str]:
        items = []
        for r, c in zip(rows, completions):
            pid = r.get("prompt_id")
            if pid not in prompts:
                raise KeyError(f"prompt_id {pid!r} is not in the scenario library; pass the scenario files used to build the dataset.")
            items.append(JudgeItem(key=f"{pid}", prompt=prompts[pid], completion=c))
        return judge.label(items)

    fn.judge_name = judge.name  # type: ignore[attr-defined]
    return fn


#: prompt kinds whose rows the behavior judges label (role-play roles, two-choice quizzes); steering and the
#: regenerating stability mode sample prompts of these kinds only (rows without a ``kind`` are role-play rows)
JUDGED_KINDS: tuple[str, ...] = ("role_play", "input_variation")


def judged_rows(rows: Sequence[dict]) -> np.ndarray:
    """Indices of ``rows`` whose kind the behavior judges can label (see :data:`JUDGED_KINDS`)."""
    return np.asarray([i for i, r in enumerate(rows) if (r.get("kind") or "role_play") in JUDGED_KINDS], dtype=int)


def random_directions(d: int, n: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors in R^d (Gaussian, normalized): the control directions."""
    v = np.random.default_rng(seed).standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def steered_completions(
    lm: Any,
    layer: int,
    directions: dict[str, np.ndarray],
    rows: Sequence[dict],
    *,
    scale: float,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
    max_rows: int = 128,
) -> dict[str, list[list[str]]]:
    """``out[name][a][i]``: row ``i``'s ``prompt`` continued with ``alphas[a] * scale * u_name`` added to layer
    ``layer``'s output at every position.

    One ``generate`` call per prompt (at most ``max_rows`` rows each) holds every (direction, alpha), alpha = 0 once
    and shared; the prompt runs once up to layer L and is branched there
    (:func:`gemma4_saelens_ext.activations.source.branched_prefill`). Each prompt has one seed (the builder's
    per-row seeded sampler), the same for every direction and alpha, so a completion is what one
    ``generate_completions`` call per direction and alpha gives (up to floating-point differences between batch
    shapes, which can flip a draw that lands within rounding of a boundary)."""
    from functools import partial

    from tqdm.auto import tqdm

    from gemma4_saelens_ext.activations.source import branched_prefill, steering_rows_hook
    from gemma4_saelens_ext.behavior.sampling import generate_branches, make_requests

    if not rows:
        raise ValueError("steering: no prompts")
    reqs = make_requests([(f"{i}:{r['prompt_id']}", r["prompt"]) for i, r in enumerate(rows)], 1, seed)
    combos = ([("", 0.0)] if any(float(a) == 0.0 for a in alphas) else []) + [
        (name, float(a)) for name in directions for a in alphas if float(a) != 0.0]
    unit = {k: torch.as_tensor(np.asarray(u), dtype=torch.float32).flatten() for k, u in directions.items()}
    deltas = torch.stack([a * float(scale) * unit[k] if a else torch.zeros(lm.d_model) for k, a in combos])
    got: dict[tuple[str, float], list[str]] = {c: [] for c in combos}
    for r in tqdm(reqs, desc="steering prompts", disable=len(reqs) < 3):
        for start in range(0, len(combos), max_rows):
            part = combos[start : start + max_rows]
            with steering_rows_hook(lm, layer, deltas[start : start + len(part)]):
                res = generate_branches(lm.model, lm.tokenizer, r.prompt, [r.seed] * len(part),
                                        max_new_tokens=max_new_tokens, temperature=temperature,
                                        prefill=partial(branched_prefill, lm, layer))
            for c, (text, _n, _fin) in zip(part, res):
                got[c].append(text)
    return {name: [got[("", 0.0)] if float(a) == 0.0 else got[(name, float(a))] for a in alphas]
            for name in directions}


def run_steering(
    lm: Any,
    layer: int,
    directions: dict[str, np.ndarray],
    rows: Sequence[dict],
    judge: JudgeFn,
    *,
    scale: float,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, dict[str, Any]]:
    """For each named unit direction, generate every row's ``prompt`` at each alpha with ``alpha * scale * u``
    added to layer ``layer`` and judge it: ``{name: {"labels": [alpha][prompt] judge labels, "examples": ...}}``
    (the statistics: :func:`steering_analysis`).

    Generation: :func:`steered_completions` (every direction and alpha of a prompt in one batch, the prompt run once
    up to the layer; one seed per prompt, the same at every alpha and for every direction, alpha = 0 generated once
    and shared). ``batch_size`` is kept for callers; a prompt's rows share one batch."""
    comps = steered_completions(lm, layer, directions, rows, scale=scale, alphas=alphas,
                                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for name, per_alpha in comps.items():
        out[name] = {"labels": [judge(rows, c) for c in per_alpha],
                     "examples": {str(float(a)): c[:3] for a, c in zip(alphas, per_alpha)}}
    return out


def slope_percentile(slope: float, control_slopes: Sequence[float]) -> float:
    """Share of control (random-direction) slopes strictly below ``slope``, plus half the ties, in [0, 1]."""
    c = np.asarray([v for v in control_slopes if np.isfinite(v)], dtype=np.float64)
    if not c.size or not np.isfinite(slope):
        return float("nan")
    return float(((c < slope).sum() + 0.5 * (c == slope).sum()) / c.size)


def rank_p(slope: float, control_slopes: Sequence[float]) -> float:
    """One-sided rank p of ``slope`` among control slopes: ``(1 + #{control >= slope}) / (1 + n)`` (NaN controls
    left out; ties count against). Its smallest value is ``1 / (1 + n)``."""
    c = np.asarray([v for v in control_slopes if np.isfinite(v)], dtype=np.float64)
    if not c.size or not np.isfinite(slope):
        return float("nan")
    return float((1 + (c >= slope - 1e-12).sum()) / (1 + c.size))


def prompt_slopes(alphas: Sequence[float], labels: Sequence[Sequence[str]]) -> np.ndarray:
    """Each prompt's own OLS slope of honest (1) / deceptive (0) on alpha over its decisive alphas ([P]; NaN when
    fewer than two distinct alphas are decisive)."""
    lab = np.asarray(labels, dtype=object)
    h = np.where(lab == S.POSITIVE, 1.0, np.where(lab == S.NEGATIVE, 0.0, np.nan))  # [A, P]
    al = np.broadcast_to(np.asarray(alphas, dtype=np.float64)[:, None], h.shape)
    ok = np.isfinite(h)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = ok.sum(0)
        ma = np.where(ok, al, 0).sum(0) / n
        mh = np.where(ok, h, 0).sum(0) / n
        sxx = np.where(ok, (al - ma) ** 2, 0).sum(0)
        sxy = np.where(ok, (al - ma) * (np.nan_to_num(h) - mh), 0).sum(0)
        return np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1), np.nan)


def _slope_only(alphas: Sequence[float], labels: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A random direction's per-alpha rates and OLS slope (its own permutation p is not needed: it is a control)."""
    rates = [honest_rate(row) for row in labels]
    r = np.array([x["honest_rate"] for x in rates])
    ok = np.isfinite(r)
    b = T.slope(np.asarray(alphas, dtype=np.float64)[ok], r[ok]) if ok.sum() >= 2 else float("nan")
    return {"per_alpha": rates, "slope": {"slope": b, "p": float("nan")}}


def steering_analysis(
    alphas: Sequence[float],
    outcomes: dict[str, Sequence[Sequence[str]]],
    *,
    target: str = "SAE",
    groups: Any = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha_level: float = 0.05,
) -> dict[str, Any]:
    """The steering statistics from judged outcomes only: ``outcomes[direction][a][i]`` = judge label of prompt i
    at ``alphas[a]`` along that direction (``target`` is the SAE direction; names starting with ``random`` are the
    random controls). Returns the target's sweep (:func:`sweep_statistics`, slope CI over prompt groups when
    ``groups``), its rank p among the random directions, the share of prompts moving against the intended
    direction, each control's slope and p, and verdict lines."""
    if target not in outcomes:
        raise ValueError(f"steering: no outcomes for the target direction {target!r}; got {sorted(outcomes)}")
    main = sweep_statistics(alphas, outcomes[target], n_bootstrap=n_bootstrap, seed=seed, alpha_level=alpha_level,
                            groups=groups)
    controls = {k: (_slope_only(alphas, v) if k.startswith("random") else
                    sweep_statistics(alphas, v, n_bootstrap=0, seed=seed, alpha_level=alpha_level))
                for k, v in outcomes.items() if k != target}
    rand = [v["slope"]["slope"] for k, v in controls.items() if k.startswith("random")]
    n_rand = len(rand)
    b = main["slope"]["slope"]
    rp = rank_p(b, rand)
    pct = slope_percentile(b, rand)
    ps = prompt_slopes(alphas, outcomes[target])
    defined = np.isfinite(ps)
    against = float((ps[defined] < 0).mean()) if defined.any() else float("nan")
    towards = float((ps[defined] > 0).mean()) if defined.any() else float("nan")
    warns = []
    if 1.0 / (1 + max(n_rand, 0)) > alpha_level:
        warns.append(f"steering: {n_rand} random directions, so the rank p cannot go below {1 / (1 + n_rand):.3g} > "
                     f"alpha {alpha_level:g} (use >= {int(np.ceil(1 / alpha_level)) - 1} random directions)")
        logger.warning(warns[-1])
    if np.isfinite(rp):
        control = (f"the SAE direction's slope ranks above {pct:.0%} of {n_rand} random directions of the same length "
                   f"(rank p = {rp:.3g}): " + ("larger than random pushes" if rp <= alpha_level else
                                              "not distinguishable from a random push of the same size"))
    else:
        control = f"rank among {n_rand} random directions undefined (too few decisive completions for a slope)"
    out = dict(main)
    out.update({
        "random_rank_p": rp, "random_slope_percentile": pct, "n_random_directions": n_rand,
        "rank_p_min_reachable": 1.0 / (1 + n_rand) if n_rand else float("nan"),
        "prompt_share_against": against, "prompt_share_towards": towards, "n_prompts_with_slope": int(defined.sum()),
        "controls": {k: {"slope": v["slope"]["slope"], "p": v["slope"]["p"], "per_alpha": v["per_alpha"]}
                     for k, v in controls.items()},
        "control_verdict": control,
        "against_verdict": (f"{against:.0%} of {int(defined.sum())} prompts move against the intended direction "
                            f"({towards:.0%} with it)" if defined.any() else "no prompt has a defined slope"),
        "warnings": warns,
    })
    return out
