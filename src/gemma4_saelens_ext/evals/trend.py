"""Trend statistics for the steering sweep: Spearman rho and the OLS slope of a response on alpha, each with a
two-sided permutation p over orderings of the response (exact enumeration for small n: the 7-point alpha sweep has
7! = 5040 orderings)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals.stats import permutation_p

__all__ = ["spearman", "spearman_permutation", "slope", "slope_permutation"]



def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share the mean rank), like scipy.stats.rankdata."""
    a = np.asarray(a, dtype=np.float64)
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rho = Pearson correlation of ranks; 0 when either side is constant."""
    rx, ry = _rank(np.asarray(x)), _rank(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def _perm_matrix(n: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """All n! permutations when that is <= n_permutations (exact test), else random ones."""
    if math.factorial(n) <= max(n_permutations, 1):
        return np.array(list(itertools.permutations(range(n)))), True
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n_permutations, n)), axis=1), False


def spearman_permutation(
    x: Sequence[float], y: Sequence[float], *, n_permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """Spearman rho with a two-sided permutation p (exact enumeration when n! <= n_permutations, e.g. the
    7-point alpha sweep has 5040 orderings)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rho = spearman(x, y)
    perms, exact = _perm_matrix(len(y), n_permutations, seed)
    rx = _rank(x)
    rx = rx - rx.mean()
    ry = _rank(y)[perms]
    ry = ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx**2).sum() * (ry**2).sum(1))
    null = np.where(den > 0, (ry * rx).sum(1) / np.where(den > 0, den, 1), 0.0)
    if exact:
        p = float((np.abs(null) >= abs(rho) - 1e-12).mean())
    else:
        p = permutation_p(rho, null, alternative="two-sided")
    return {"rho": rho, "p": p, "exact": exact, "n_permutations": len(perms)}


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """OLS slope of y on x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc = x - x.mean()
    den = float((xc**2).sum())
    return float((xc * (y - y.mean())).sum() / den) if den > 0 else 0.0


def slope_permutation(
    x: Sequence[float], y: Sequence[float], *, n_permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """OLS slope with a two-sided permutation p over orderings of y (exact for small n)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    b = slope(x, y)
    perms, exact = _perm_matrix(len(y), n_permutations, seed)
    xc = x - x.mean()
    den = float((xc**2).sum()) or 1.0
    yp = y[perms]
    null = ((yp - yp.mean(1, keepdims=True)) * xc).sum(1) / den
    p = float((np.abs(null) >= abs(b) - 1e-12).mean()) if exact else permutation_p(b, null, alternative="two-sided")
    return {"slope": b, "p": p, "exact": exact, "n_permutations": len(perms)}
