"""Units of inference for the detection card, and a layout-aware grouped permutation test.

**The permutation test here is a stand-in.** Issue 16 gives the statistics one generic entry point,
``evals.nulls.grouped_permutation_test(stat_fn, y, groups, *, n_permutations, seed, alternative, clusters=None)``
(``stat_fn(labels [B, n], row weights [n]) -> [B]``), that first classifies the label layout and then randomizes the
way that layout allows. Until it lands on main, :func:`fallback_grouped_permutation_test` has the same signature and
does the same job; its only caller is :func:`gemma4_saelens_ext.evals.detection.grouped_p`, which switches to the
issue-16 function when it exists. Then delete :func:`fallback_grouped_permutation_test` (keep :func:`unit_design`
and :func:`unit_bootstrap_weights`, which the card's confidence intervals use).

How the units and the randomization are chosen (``y`` is 0/1, ``groups`` one id per row, ``clusters`` one coarser
id per row, e.g. the scenario family):

* **unit** — the prompt group. When ``clusters`` are given and the labels are constant inside every cluster (a
  family whose prompts all carry one label: its family effect would pass for a label effect), the cluster is the
  unit (groups and clusters that cut across each other are joined). Otherwise the clusters are *strata*: every
  randomization stays inside a cluster, so a family that differs from the others both in its share of deceptive
  prompts and in its scores cannot make an effect.
* **randomization**, per unit inside its stratum:
  - a unit with one label (``constant``): the units' labels are permuted among the constant units of the stratum
    (the number of honest units fixed);
  - a unit with both labels 1:1 (``balanced``): the whole unit is flipped (honest <-> deceptive) with probability
    1/2;
  - a unit with both labels in another ratio (``unbalanced``): its labels are shuffled among its rows (the unit's
    composition fixed; valid when a unit's rows are exchangeable under the null).
  Each of these leaves the data's distribution unchanged under the null "scores do not depend on the label", and
  so does their product, so the p-value ``(1 + #{null >= observed}) / (1 + B)`` is valid for every layout.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["UnitDesign", "GroupedTest", "unit_design", "permuted_labels", "unit_bootstrap_weights",
           "fallback_grouped_permutation_test"]

CONSTANT, BALANCED, UNBALANCED = 0, 1, 2


@dataclass
class UnitDesign:
    """Where the labels sit: the unit of each row, the stratum of each unit, and each unit's composition."""

    #: unit code of each row [n]
    codes: np.ndarray = field(repr=False)
    #: stratum of each unit [U] (one stratum when no clusters are given)
    strata: np.ndarray = field(repr=False)
    #: per unit: CONSTANT, BALANCED or UNBALANCED [U]
    unit_kind: np.ndarray = field(repr=False)
    #: per unit: its label when constant, else -1 [U]
    unit_label: np.ndarray = field(repr=False)
    #: "prompt group", "cluster" or "row"
    unit: str
    #: constant_within, balanced_within, mixed_unbalanced or combination
    layout: str
    #: the randomization in words
    null: str
    #: log of the number of distinct label arrangements the randomization reaches
    log_n_arrangements: float

    @property
    def n_units(self) -> int:
        return len(self.unit_kind)


@dataclass
class GroupedTest:
    """A grouped permutation test's result."""

    observed: float
    p: float
    null_values: np.ndarray = field(repr=False)
    layout: str = ""
    null: str = ""
    unit: str = ""
    n_units: int = 0
    #: the smallest p the test can give (from the number of arrangements and of permutations)
    min_p: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: row weights the statistic was computed with (1 here; issue 16's balance weights in unbalanced units)
    weights: np.ndarray | None = field(default=None, repr=False)


def _codes(ids: Any, n: int, what: str) -> np.ndarray:
    g = np.asarray([str(v) for v in ids])
    if len(g) != n:
        raise ValueError(f"{what} has {len(g)} entries but there are {n} rows; pass one {what} id per row.")
    return np.unique(g, return_inverse=True)[1].astype(np.int64)


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Codes of the finest partition that both ``a`` and ``b`` refine (connected components)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    na, nb = int(a.max()) + 1, int(b.max()) + 1
    adj = coo_matrix((np.ones(len(a)), (a, na + b)), shape=(na + nb, na + nb))
    comp = connected_components(adj, directed=False)[1]
    return np.unique(comp[a], return_inverse=True)[1].astype(np.int64)


def _composition(y: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    U = int(codes.max()) + 1
    n1 = np.bincount(codes, weights=y, minlength=U).astype(np.int64)
    return n1, np.bincount(codes, minlength=U).astype(np.int64) - n1


def unit_design(y: Any, groups: Any = None, clusters: Any = None) -> UnitDesign:
    """The units, strata and compositions of ``y`` over ``groups`` (``None``: one unit per row) and ``clusters``
    (see the module docstring)."""
    y = np.asarray(y).astype(np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("no rows to test")
    g = np.arange(n) if groups is None else _codes(groups, n, "groups")
    unit, strata_rows = ("row" if groups is None else "prompt group"), np.zeros(n, dtype=np.int64)
    if clusters is not None:
        joined = _join(g, _codes(clusters, n, "clusters"))
        n1, n0 = _composition(y, joined)
        if int(joined.max()) + 1 < int(g.max()) + 1 and np.all((n1 == 0) | (n0 == 0)):
            g, unit = joined, "cluster"  # labels constant within clusters: the cluster is the unit
        else:
            strata_rows = joined
    codes = np.unique(g, return_inverse=True)[1].astype(np.int64)
    U = int(codes.max()) + 1
    strata = np.zeros(U, dtype=np.int64)
    strata[codes] = strata_rows
    n1, n0 = _composition(y, codes)
    kind = np.where((n1 == 0) | (n0 == 0), CONSTANT, np.where(n1 == n0, BALANCED, UNBALANCED))
    label = np.where(kind == CONSTANT, (n1 > 0).astype(np.int64), -1)
    counts = [int((kind == k).sum()) for k in (CONSTANT, BALANCED, UNBALANCED)]
    layout = ("constant_within" if counts[0] == U else "balanced_within" if counts[1] == U else
              "mixed_unbalanced" if counts[0] == 0 else "combination")
    n_strata = len(np.unique(strata))
    where = f" within each of {n_strata} clusters" if n_strata > 1 else ""
    parts = []
    if counts[0]:
        parts.append(f"labels of whole {unit}s permuted among the {counts[0]} one-label {unit}s{where}")
    if counts[1]:
        parts.append(f"each of {counts[1]} 1:1 {unit}s flipped whole")
    if counts[2]:
        parts.append(f"labels shuffled inside each of {counts[2]} unbalanced {unit}s")
    logn = counts[1] * math.log(2.0)
    for s in np.unique(strata):
        c = (strata == s) & (kind == CONSTANT)
        m, m1 = int(c.sum()), int(label[c].sum())
        logn += math.lgamma(m + 1) - math.lgamma(m1 + 1) - math.lgamma(m - m1 + 1)
    for u in np.flatnonzero(kind == UNBALANCED):
        logn += math.lgamma(n1[u] + n0[u] + 1) - math.lgamma(n1[u] + 1) - math.lgamma(n0[u] + 1)
    return UnitDesign(codes=codes, strata=strata, unit_kind=kind, unit_label=label, unit=unit, layout=layout,
                      null="; ".join(parts), log_n_arrangements=logn)


def permuted_labels(design: UnitDesign, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, rows]`` 0/1 label arrays drawn from the design's randomization (see the module docstring)."""
    y = np.asarray(y).astype(np.int8)
    codes, kind = design.codes, design.unit_kind
    out = np.empty((n, len(y)), dtype=np.int8)
    ulab = np.broadcast_to(design.unit_label.astype(np.int8), (n, design.n_units)).copy()
    for s in np.unique(design.strata):
        idx = np.flatnonzero((design.strata == s) & (kind == CONSTANT))
        if len(idx) > 1:
            ulab[:, idx] = rng.permuted(ulab[:, idx], axis=1)
    row_kind = kind[codes]
    c = row_kind == CONSTANT
    out[:, c] = ulab[:, codes[c]]
    b = row_kind == BALANCED
    flips = (rng.random((n, design.n_units)) < 0.5).astype(np.int8)
    out[:, b] = y[b][None, :] ^ flips[:, codes[b]]
    rows = np.flatnonzero(row_kind == UNBALANCED)
    if rows.size:
        rows = rows[np.argsort(codes[rows], kind="stable")]  # contiguous blocks per unit
        keys = codes[rows][None, :] * 2.0 + rng.random((n, rows.size))
        out[:, rows] = y[rows][np.argsort(keys, axis=1)]  # a shuffle inside each block
    return out


def unit_bootstrap_weights(design: UnitDesign, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[B, rows]`` row weights of a bootstrap that resamples whole units with replacement inside each cell of
    (stratum, one-label honest / one-label deceptive / both labels), so every resample keeps both classes."""
    rng = np.random.default_rng(seed)
    U = design.n_units
    cell = design.strata * 3 + np.where(design.unit_kind == CONSTANT, design.unit_label, 2)
    counts = np.zeros((n_bootstrap, U), dtype=np.float32)
    for c in np.unique(cell):
        idx = np.flatnonzero(cell == c)
        m = len(idx)  # m draws with replacement per resample, counted per unit (a multinomial, via one bincount)
        draws = rng.integers(0, m, size=(n_bootstrap, m)) + (np.arange(n_bootstrap) * m)[:, None]
        counts[:, idx] = np.bincount(draws.ravel(), minlength=n_bootstrap * m).reshape(n_bootstrap, m)
    return counts[:, design.codes]


def fallback_grouped_permutation_test(
    stat_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: Any,
    groups: Any = None,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    alternative: str = "greater",
    clusters: Any = None,
    alpha: float = 0.05,
    chunk: int = 256,
) -> GroupedTest:
    """TEMPORARY stand-in for issue 16's ``grouped_permutation_test`` (same signature). ``stat_fn`` maps a
    ``[B, n]`` 0/1 label matrix and ``[n]`` row weights (all 1 here: no design of this module needs weights) to
    ``[B]`` statistics; the observed value is ``stat_fn(y[None], w)``."""
    from gemma4_saelens_ext.evals.stats import permutation_p

    y = np.asarray(y).astype(np.int8)
    design = unit_design(y, groups, clusters)
    w = np.ones(len(y))
    observed = float(np.asarray(stat_fn(y[None, :], w))[0])
    rng = np.random.default_rng(seed)
    null = np.concatenate([np.asarray(stat_fn(permuted_labels(design, y, min(chunk, n_permutations - lo), rng), w),
                                      dtype=np.float64) for lo in range(0, n_permutations, chunk)])
    finite = null[np.isfinite(null)]
    p = permutation_p(observed, finite, alternative=alternative) if finite.size and math.isfinite(observed) \
        else float("nan")
    min_p = max(1.0 / (1 + n_permutations), math.exp(-min(design.log_n_arrangements, 700.0)))
    warns = []
    if min_p > alpha:
        warns.append(f"only {design.n_units} {design.unit}s ({design.layout}): the smallest reachable p is "
                     f"{min_p:.3g}, so p < {alpha:g} cannot be reached; add prompt groups")
    return GroupedTest(observed=observed, p=p, null_values=null, layout=design.layout, null=design.null,
                       unit=design.unit, n_units=design.n_units, min_p=min_p, warnings=warns, weights=w)
