"""Pure statistics for behavior evals: Cohen's d over all latents, permutation nulls, bootstrap CIs, verdicts.

Everything here takes arrays and returns numbers; no model, no SAE, no I/O, so each function can be checked
against a textbook computation. The reason this module exists: with ~40 samples and thousands of latents, the
largest |d| is large by chance alone (the seed card's d_max 0.72 at n=38 is about what shuffled labels give),
so every behavior number must travel with its null distribution, a CI and its sample sizes.

Conventions
-----------
* ``y`` is a 0/1 vector; 1 = the *positive* class (``honest`` by default), 0 = the negative class (``deceptive``).
* Cohen's d per latent j: ``d_j = (mean_1j - mean_0j) / s_pooled_j`` with
  ``s_pooled_j^2 = ((n1-1) var_1j + (n0-1) var_0j) / (n1 + n0 - 2)`` (unbiased within-class variances).
  Positive d = higher on honest samples.
* A latent whose pooled SD is 0 gets ``d = 0`` when its class means agree too (dead, or constant everywhere: no
  evidence) and ``d = +-inf`` when they differ (constant within each class, different between them: a perfectly
  separating latent, listed by :func:`d_summary`).
* ``d_max = max_j |d_j|``; ``n_above = #{j : |d_j| > threshold}`` (threshold 1 by default).
* Permutation p-value: ``p = (1 + #{null >= observed}) / (1 + B)`` (never 0; exact-test convention).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# the labels have one home (:mod:`.labels`); re-exported for the statistics that use them as ``S.*``
from gemma4_saelens_ext.evals.labels import (
    NEGATIVE, NON_DECISIVE, POSITIVE, check_binary_labels, class_size_warnings, encode_labels,
)

logger = logging.getLogger(__name__)

__all__ = [
    "POSITIVE", "NEGATIVE", "encode_labels", "NON_DECISIVE", "check_binary_labels", "class_size_warnings", "cohens_d",
    "d_summary", "fast_cohens_d", "weighted_cohens_d", "permutation_null_d", "bootstrap_d", "permutation_p",
    "percentile_ci", "bias_corrected_ci", "bootstrap_ci", "verdict",
]



# ------------------------------------------------------------------------------------------------ Cohen's d


def _as_2d_float(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor without importing torch here
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected a [n_samples, n_latents] matrix, got shape {x.shape}")
    return x


def _d_from_moments(
    s1: np.ndarray, q1: np.ndarray, n1: np.ndarray, s0: np.ndarray, q0: np.ndarray, n0: np.ndarray, eps: float
) -> np.ndarray:
    """d from per-class sums (s), sums of squares (q) and counts (n); arrays broadcast ([B,1] counts vs [B,k])."""
    m1 = s1 / n1
    m0 = s0 / n0
    ss1 = np.maximum(q1 - s1 * m1, 0.0)  # sum of squared deviations, clipped against rounding
    ss0 = np.maximum(q0 - s0 * m0, 0.0)
    var = (ss1 + ss0) / (n1 + n0 - 2)
    sd = np.sqrt(var)
    diff = m1 - m0
    return _safe_ratio(diff, sd, eps)


def _safe_ratio(diff: np.ndarray, sd: np.ndarray, eps: float) -> np.ndarray:
    """diff / sd, with the two undefined cases made explicit: no spread and no difference -> 0 (a dead or
    constant latent carries no evidence); no spread but a difference -> +-inf (constant within each class and
    different between them: a perfectly separating latent)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sep = np.where(np.abs(diff) > eps, np.sign(diff) * np.inf, 0.0)
        return np.where(sd > eps, diff / np.where(sd > eps, sd, 1.0), sep)


def cohens_d(acts: Any, y: Any, *, weights: Any = None, eps: float = 1e-8) -> np.ndarray:
    """Per-latent Cohen's d (pooled SD), vectorized over latents. ``acts`` [n, k], ``y`` 0/1 [n] -> [k] float64.

    Two-pass formula in float64 (1024 columns at a time: bounded temporaries), so large activation offsets do not
    cancel. ``weights`` [n] (frequency weights, e.g. a null design's balance weights): weighted class means and
    squared deviations, ``n`` -> sum of weights."""
    x = _as_2d_float(acts)
    y = np.asarray(y).astype(bool)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"acts has {x.shape[0]} rows but y has {y.shape[0]} labels")
    check_binary_labels(y.astype(int), what="cohens_d")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    w = None if w is None or np.all(w == 1) else w
    n1, n0 = (int(y.sum()), int((~y).sum())) if w is None else (w[y].sum(), w[~y].sum())
    out = np.empty(x.shape[1])
    for j in range(0, x.shape[1], 1024):
        a, b = x[y, j : j + 1024].astype(np.float64), x[~y, j : j + 1024].astype(np.float64)
        if w is None:
            m1, m0 = a.mean(0), b.mean(0)
            ss = ((a - m1) ** 2).sum(0) + ((b - m0) ** 2).sum(0)
        else:
            m1, m0 = w[y] @ a / n1, w[~y] @ b / n0
            ss = w[y] @ (a - m1) ** 2 + w[~y] @ (b - m0) ** 2
        out[j : j + 1024] = _safe_ratio(m1 - m0, np.sqrt(ss / (n1 + n0 - 2)), eps)
    return out


def weighted_cohens_d(x: np.ndarray, w1: np.ndarray, w0: np.ndarray | None = None, *, x2: np.ndarray | None = None,
                      totals: tuple[np.ndarray, np.ndarray] | None = None, eps: float = 1e-8) -> np.ndarray:
    """Cohen's d for B weightings at once: ``w1``/``w0`` are [B, n] non-negative integer weights (membership
    counts) of the two groups. Returns [B, k].

    One kernel serves the permutation null (w1 = permuted 0/1 indicator; ``w0=None`` means "the complement",
    whose sums are totals minus group-1 sums, saving half the work) and the stratified bootstrap (w = multinomial
    resample counts per class). Group sums are matrix products ``W @ X`` and ``W @ X^2``, which is what makes
    1000 permutations x 6144 latents x 10k samples take seconds instead of minutes. ``x`` should be column-centred
    (centring keeps the one-pass variance formula accurate in float32); pass ``x2 = x*x`` and
    ``totals = (x.sum(0), x2.sum(0))`` (float64) to reuse them across chunks."""
    dt = x.dtype
    if x2 is None:
        x2 = x * x
    w1 = w1.astype(dt, copy=False)
    s1, q1, n1 = (w1 @ x).astype(np.float64), (w1 @ x2).astype(np.float64), w1.sum(1, keepdims=True).astype(np.float64)
    if w0 is None:
        if totals is None:
            totals = (x.sum(0, dtype=np.float64), x2.sum(0, dtype=np.float64))
        s0, q0, n0 = totals[0][None, :] - s1, totals[1][None, :] - q1, float(x.shape[0]) - n1
    else:
        w0 = w0.astype(dt, copy=False)
        s0, q0 = (w0 @ x).astype(np.float64), (w0 @ x2).astype(np.float64)
        n0 = w0.sum(1, keepdims=True).astype(np.float64)
    return _d_from_moments(s1, q1, n1, s0, q0, n0, eps)


def fast_cohens_d(acts: Any, y: Any, *, dtype: Any = np.float32) -> np.ndarray:
    """Cohen's d through the same matrix kernel as the permutation null (centred, float32 by default): the
    observed statistic and its null then share numerics exactly. Agrees with :func:`cohens_d` to ~1e-5."""
    x = _centred(acts, dtype)
    y = np.asarray(y).astype(np.int64)
    check_binary_labels(y, what="fast_cohens_d")
    return weighted_cohens_d(x, y[None, :].astype(dtype))[0]


def d_summary(d: np.ndarray, *, threshold: float = 1.0, top_n: int = 10) -> dict[str, Any]:
    """d_max (max |d|), argmax, count |d| > threshold, the top_n latents by |d| (index, signed d) and the
    perfectly separating latents (|d| = inf)."""
    d = np.asarray(d, dtype=np.float64)
    absd = np.abs(d)
    order = np.argsort(-absd, kind="stable")[:top_n]
    return {
        "perfectly_separating": [int(i) for i in np.flatnonzero(np.isinf(d))],
        "d_max": float(absd.max()) if absd.size else 0.0,
        "d_max_latent": int(order[0]) if absd.size else -1,
        "n_above": int((absd > threshold).sum()),
        "threshold": threshold,
        "top_latents": [int(i) for i in order],
        "top_d": [float(d[i]) for i in order],
    }


def _centred(acts: Any, dtype: Any = np.float32) -> np.ndarray:
    x = _as_2d_float(acts).astype(np.float64, copy=False)
    x = x - x.mean(0, keepdims=True)
    return x.astype(dtype, copy=False)


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, total)) for i in range(0, total, size)]


def permutation_null_d(
    acts: Any,
    y: Any,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    threshold: float = 1.0,
    chunk: int = 128,
    dtype: Any = np.float32,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Label-permutation null of d_max and of the |d| > threshold count: shuffle labels (class sizes fixed),
    recompute all latents' d, keep the summaries. Returns ``{"d_max": [B], "n_above": [B]}``.

    Vectorized as ``[chunk, n] @ [n, k]`` matrix products (float32 by default; the data are centred first)."""
    x = _centred(acts, dtype)
    y = np.asarray(y).astype(np.int64)
    check_binary_labels(y, what="permutation_null_d")
    rng = np.random.default_rng(seed)
    n = len(y)
    x2 = x * x
    totals = (x.sum(0, dtype=np.float64), x2.sum(0, dtype=np.float64))
    dmax = np.empty(n_permutations)
    nab = np.empty(n_permutations, dtype=np.int64)
    it = _chunks(n_permutations, chunk)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="permutation null (d)")
    for lo, hi in it:
        perm = rng.permuted(np.broadcast_to(y, (hi - lo, n)), axis=1)
        d = weighted_cohens_d(x, perm.astype(dtype), x2=x2, totals=totals)
        a = np.abs(d)
        dmax[lo:hi] = a.max(1)
        nab[lo:hi] = (a > threshold).sum(1)
    return {"d_max": dmax, "n_above": nab}


def bootstrap_d(
    acts: Any,
    y: Any,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 1.0,
    chunk: int = 128,
    dtype: Any = np.float32,
    latent: int | None = None,
) -> dict[str, np.ndarray]:
    """Stratified bootstrap of d_max and the |d| > threshold count (resample each class with replacement, sizes
    fixed). The max over thousands of latents is biased upward under resampling (a resample with duplicated rows
    lets some other latent win), so its percentile interval can sit entirely above the observed d_max. With
    ``latent`` (the observed top latent) the result also holds ``d_selected``: that latent's |d| in each resample,
    whose interval describes the reported effect; the permutation null stays the reference for "above chance"."""
    x = _centred(acts, dtype)
    y = np.asarray(y).astype(np.int64)
    n1, n0 = check_binary_labels(y, what="bootstrap_d")
    idx1, idx0 = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    x2 = x * x
    rng = np.random.default_rng(seed)
    n = len(y)
    dmax = np.empty(n_bootstrap)
    nab = np.empty(n_bootstrap, dtype=np.int64)
    sel = np.empty(n_bootstrap)
    for lo, hi in _chunks(n_bootstrap, chunk):
        b = hi - lo
        w1 = np.zeros((b, n), dtype=dtype)
        w0 = np.zeros((b, n), dtype=dtype)
        w1[:, idx1] = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=b)
        w0[:, idx0] = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=b)
        a = np.abs(weighted_cohens_d(x, w1, w0, x2=x2))
        dmax[lo:hi] = a.max(1)
        nab[lo:hi] = (a > threshold).sum(1)
        if latent is not None:
            sel[lo:hi] = a[:, latent]
    out = {"d_max": dmax, "n_above": nab}
    if latent is not None:
        out["d_selected"] = sel
    return out


def permutation_p(observed: float, null: np.ndarray, *, alternative: str = "greater") -> float:
    """``(1 + #{null >= obs}) / (1 + B)`` for ``greater``; ``less`` mirrors it; ``two-sided`` uses |.|."""
    null = np.asarray(null, dtype=np.float64)
    tol = 1e-7 * max(1.0, abs(observed)) if math.isfinite(observed) else 0.0
    if alternative == "greater":
        k = int((null >= observed - tol).sum())
    elif alternative == "less":
        k = int((null <= observed + tol).sum())
    elif alternative == "two-sided":
        k = int((np.abs(null) >= abs(observed) - tol).sum())
    else:
        raise ValueError(f"alternative must be greater/less/two-sided, got {alternative!r}")
    return (1 + k) / (1 + len(null))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    lo = (1 - level) / 2
    return (float(np.quantile(s, lo)), float(np.quantile(s, 1 - lo)))


def bias_corrected_ci(observed: float, samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a bootstrapped *maximum* shifted by its bootstrap bias ``mean(T*) - T``: the max
    over many latents re-taken in every resample sits above the observed max (a resample lets another latent
    win), so the plain percentile interval can miss it. ``[T - (mean* - q_lo), T + (q_hi - mean*)]``."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0 or not math.isfinite(observed):
        return (float("nan"), float("nan"))
    lo, hi = percentile_ci(s, level)
    m = float(s.mean())
    return (float(observed - (m - lo)), float(observed + (hi - m)))


def bootstrap_ci(
    stat: Callable[[np.ndarray], float],
    n: int,
    *,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``stat(idx)`` over bootstrap index draws, for statistics without a vectorized form
    (AUROC, balanced accuracy). ``groups`` (integer codes): whole groups are resampled with replacement (the
    clustered design); else rows, stratified by ``strata`` when given so each resample keeps the class sizes."""
    rng = np.random.default_rng(seed)
    vals = np.empty(n_bootstrap)
    if groups is not None:
        members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        for b in range(n_bootstrap):
            pick = rng.integers(0, len(members), size=len(members))
            vals[b] = stat(np.concatenate([members[i] for i in pick]))
        return percentile_ci(vals, level)
    strata_idx = [np.arange(n)] if strata is None else [np.flatnonzero(strata == g) for g in np.unique(strata)]
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in strata_idx])
        vals[b] = stat(idx)
    return percentile_ci(vals, level)


# ------------------------------------------------------------------------------------------------- verdicts


def verdict(
    name: str,
    value: float,
    p: float,
    *,
    n_pos: int,
    n_neg: int,
    alpha: float = 0.05,
    null_q95: float | None = None,
    ci: tuple[float, float] | None = None,
) -> str:
    """One line in words, e.g. ``d_max = 0.72 is indistinguishable from chance at n=38 (19 honest / 19
    deceptive; permutation p = 0.41; chance 95th pct 0.80)``."""
    n = n_pos + n_neg
    extra = [f"{n_pos} {POSITIVE} / {n_neg} {NEGATIVE}", f"permutation p = {p:.3g}"]
    if null_q95 is not None:
        extra.append(f"chance 95th pct {null_q95:.3g}")
    if ci is not None and all(np.isfinite(ci)):
        extra.append(f"95% CI [{ci[0]:.3g}, {ci[1]:.3g}]")
    if p <= alpha:
        head = f"{name} = {value:.3g} is above chance at n={n}"
    else:
        head = f"{name} = {value:.3g} is indistinguishable from chance at n={n}"
    return f"{head} ({'; '.join(extra)})"
