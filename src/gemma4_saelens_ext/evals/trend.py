"""Trend statistics for the steering sweep: Spearman rho and the OLS slope of a response on alpha, each with a
two-sided permutation p over orderings of the response, from ``scipy.stats.permutation_test`` (``pairings``: the
response is re-ordered against alpha; exact enumeration when n! <= n_permutations, e.g. the 7-point alpha sweep's
5040 orderings; two-sided p = twice the smaller one-sided p, at most 1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["spearman", "spearman_permutation", "slope", "slope_permutation"]


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=-1, keepdims=True)


def _rho(rx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of ``y`` ([..., n]) against centred ranks ``rx``; 0 where a side is constant."""
    from scipy.stats import rankdata

    ry = _centred(rankdata(y, axis=-1))
    den = np.sqrt((rx**2).sum() * (ry**2).sum(-1))
    return np.where(den > 0, (ry * rx).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def _ols(xc: np.ndarray, y: np.ndarray) -> np.ndarray:
    den = float((xc**2).sum())
    return (_centred(y) * xc).sum(-1) / den if den > 0 else np.zeros(np.shape(y)[:-1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rho = Pearson correlation of ranks; 0 when either side is constant."""
    from scipy.stats import rankdata

    return float(_rho(_centred(rankdata(np.asarray(x, dtype=np.float64))), np.asarray(y, dtype=np.float64)))


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """OLS slope of y on x."""
    x = np.asarray(x, dtype=np.float64)
    return float(_ols(x - x.mean(), np.asarray(y, dtype=np.float64)))


def _permutation(stat: Callable[[np.ndarray], np.ndarray], y: Sequence[float], n_permutations: int,
                 seed: int) -> tuple[float, float, bool, int]:
    import math

    from scipy.stats import permutation_test

    y = np.asarray(y, dtype=np.float64)
    res = permutation_test((y,), lambda yy, axis=-1: stat(np.moveaxis(yy, axis, -1)), permutation_type="pairings",
                           vectorized=True, n_resamples=n_permutations, alternative="two-sided", rng=seed)
    exact = math.factorial(len(y)) <= n_permutations
    return float(res.statistic), float(res.pvalue), exact, len(res.null_distribution)


def spearman_permutation(
    x: Sequence[float], y: Sequence[float], *, n_permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """Spearman rho with a two-sided permutation p (exact enumeration when n! <= n_permutations, e.g. the
    7-point alpha sweep has 5040 orderings)."""
    from scipy.stats import rankdata

    rx = _centred(rankdata(np.asarray(x, dtype=np.float64)))
    rho, p, exact, n = _permutation(lambda yy: _rho(rx, yy), y, n_permutations, seed)
    return {"rho": rho, "p": p, "exact": exact, "n_permutations": n}


def slope_permutation(
    x: Sequence[float], y: Sequence[float], *, n_permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """OLS slope with a two-sided permutation p over orderings of y (exact for small n)."""
    x = np.asarray(x, dtype=np.float64)
    b, p, exact, n = _permutation(lambda yy: _ols(x - x.mean(), yy), y, n_permutations, seed)
    return {"slope": b, "p": p, "exact": exact, "n_permutations": n}
