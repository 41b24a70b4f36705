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
Each alpha reuses the same sampling seed per batch, so alpha = 0 reproduces unsteered generation exactly.
Monotonicity: Spearman rho of alpha vs honest rate with an exact permutation p; OLS slope with an exact
permutation p and a bootstrap CI over prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from gemma4_saelens_ext.evals import stats as S

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPHAS",
    "decoded_direction",
    "mean_difference_direction",
    "cosine",
    "honest_rate",
    "sweep_statistics",
    "generate_completions",
    "run_steering",
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
    alphas: Sequence[float], labels: Sequence[Sequence[str]], *, n_bootstrap: int = 1000, seed: int = 0, alpha_level: float = 0.05
) -> dict[str, Any]:
    """Per-alpha honest rates and monotonicity stats. ``labels[a][i]`` = judge label of prompt i at alphas[a]."""
    lab = np.asarray(labels, dtype=object)
    rates = [honest_rate(row) for row in lab]
    r = np.array([x["honest_rate"] for x in rates])
    ok = np.isfinite(r)
    al = np.asarray(alphas, dtype=np.float64)
    sp = S.spearman_permutation(al[ok], r[ok]) if ok.sum() >= 3 else {"rho": float("nan"), "p": float("nan")}
    sl = S.slope_permutation(al[ok], r[ok]) if ok.sum() >= 3 else {"slope": float("nan"), "p": float("nan")}
    n_prompts = lab.shape[1] if lab.ndim == 2 else 0

    def boot_slope(idx: np.ndarray) -> float:
        rr = np.array([honest_rate(row[idx])["honest_rate"] for row in lab])
        m = np.isfinite(rr)
        return S.slope(al[m], rr[m]) if m.sum() >= 2 else float("nan")

    ci = S.bootstrap_ci(boot_slope, n_prompts, n_bootstrap=n_bootstrap, seed=seed) if n_prompts else (float("nan"),) * 2
    n_dec = int(sum(x["n_decisive"] for x in rates))
    verdict = (
        f"steering slope = {sl['slope']:.3g} honest-rate/alpha (Spearman rho = {sp['rho']:.3g}, exact permutation "
        f"p = {sp['p']:.3g}; {n_prompts} prompts x {len(al)} alphas, {n_dec} decisive completions): "
        + ("monotone beyond chance" if sp["p"] < alpha_level else "indistinguishable from no effect")
    )
    return {"alphas": list(map(float, al)), "per_alpha": rates, "spearman": sp, "slope": sl, "slope_ci": ci,
            "n_prompts": n_prompts, "verdict": verdict}


@torch.no_grad()
def generate_completions(
    lm: Any, prompts: Sequence[str], *, max_new_tokens: int = 12, temperature: float = 1.0, seed: int = 0, batch_size: int = 8
) -> list[str]:
    """Sampled completions; ``torch.manual_seed(seed + batch_index)`` before each batch makes runs repeatable."""
    tok, model = lm.tokenizer, lm.model
    out: list[str] = []
    for b, i in enumerate(range(0, len(prompts), batch_size)):
        enc = tok(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True, padding_side="left")
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        torch.manual_seed(seed + b)
        kw: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens,
                              "pad_token_id": tok.pad_token_id}
        if temperature > 0:
            kw.update(temperature=temperature, top_k=0, top_p=1.0)
        gen = model.generate(**enc, **kw)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def make_judge(name: str = "keyword", scenarios: Sequence[str] | None = None) -> JudgeFn:
    """A judge over dataset rows: looks each row's ``prompt_id`` up in the scenario library and applies the named
    behavior judge (``keyword`` = the seed's first-30-characters rule, ``paraphrase``, ``llm:ID``)."""
    from gemma4_saelens_ext.behavior.judges import JudgeItem, make_judges
    from gemma4_saelens_ext.behavior.scenarios import load_scenarios

    judges, skipped = make_judges(name)
    if not judges:
        raise ValueError(f"judge {name!r} unavailable: {skipped}")
    judge = judges[0]
    prompts = {p.id: p for p in load_scenarios(scenarios)}

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


def run_steering(
    lm: Any,
    layer: int,
    direction: np.ndarray,
    rows: Sequence[dict],
    judge: JudgeFn,
    *,
    scale: float,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    n_bootstrap: int = 1000,
) -> dict[str, Any]:
    """Generate for each row's ``prompt`` at each alpha with ``alpha * scale * direction`` added, judge, summarize."""
    from gemma4_saelens_ext.source import steering_hook

    if not rows:
        raise ValueError("steering: no prompts")
    u = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    prompts = [r["prompt"] for r in rows]
    labels, examples = [], {}
    from tqdm.auto import tqdm

    for a in tqdm(list(alphas), desc="steering sweep", disable=len(alphas) * len(rows) < 64):
        with steering_hook(lm, layer, u * float(scale), float(a)):
            comps = generate_completions(lm, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                         seed=seed, batch_size=batch_size)
        labels.append(judge(rows, comps))
        examples[str(float(a))] = comps[:3]
    out = sweep_statistics(alphas, labels, n_bootstrap=n_bootstrap, seed=seed)
    out.update({"scale": float(scale), "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
                "examples": examples, "judge": getattr(judge, "judge_name", "custom")})
    return out
