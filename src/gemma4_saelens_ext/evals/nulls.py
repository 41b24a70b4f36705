"""Randomization designs valid for each label layout (:mod:`.layout`), and one generic grouped permutation test.

:func:`null_design` turns a layout into a set of label transformations, each a *flip vector* over the units
(1 = swap that unit's honest and deceptive rows), so every design is a ``[B, G]`` 0/1 matrix whatever the layout:

* ``balanced_within``: every unit flipped with probability 1/2 (all ``2^G`` flips when ``2^G <= B``);
* ``constant_within``: a permutation of the one-label units' labels, written as the flips that produce it (the
  number of honest units fixed; all ``C(G, G_honest)`` when that is ``<= B``);
* ``mixed_unbalanced``: flips as in the balanced case, with balance weights on the rows (see :mod:`.layout`);
* ``combination``: the product of the two (exact when ``C(Gc, Gc_honest) * 2^Gm <= B``).

A statistic is computed from labels and row weights: ``stat_fn(labels [B, n], weights [n]) -> [B]``. The weights
are 1 except in unbalanced mixed units; a statistic that ignores them is valid on every layout but those (Cohen's
d uses them through :func:`gemma4_saelens_ext.evals.stats.cohens_d`; :func:`auroc` takes them too). The exact
enumeration includes the identity and gives ``p = share of the set at least as extreme``; a sampled design gives
``p = (1 + k) / (1 + B)``. The smallest reachable p is reported and a warning names the layout when ``p < alpha``
cannot be reached.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals.layout import CONSTANT, LabelLayout, classify_layout

logger = logging.getLogger(__name__)

__all__ = ["NullDesign", "null_design", "balance_cell_weights", "PermutationTest", "grouped_permutation_test", "auroc",
           "auroc_test"]

ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass
class NullDesign:
    """A randomization valid for a label layout: the flips of whole units, the row weights and what p can be."""

    layout: LabelLayout
    #: observed labels [n] (1 = honest)
    y: np.ndarray = field(repr=False)
    #: [B, G] 0/1: which units have their labels swapped in each draw (row 0 = identity when exact)
    flips: np.ndarray = field(repr=False)
    #: [n] row weights: 1, except 2 n_dec / n (honest rows) and 2 n_hon / n (deceptive rows) of unbalanced units
    weights: np.ndarray = field(repr=False)
    #: [G, 2] the weight of each unit's deceptive (column 0) and honest (column 1) rows
    cell_weights: np.ndarray = field(repr=False)
    #: the draws are the whole randomization set (identity included)
    exact: bool
    #: size of the whole randomization set
    n_total: float
    #: the design's name in reports, e.g. "group flips (exact, all 256)"
    name: str
    #: smallest reachable p for a statistic that is unchanged when every label is swapped (|d|, |AUROC - 1/2|)
    min_p: float
    #: smallest reachable p for a one-sided (sign-aware) statistic
    min_p_one_sided: float

    @property
    def codes(self) -> np.ndarray:
        return self.layout.codes

    @property
    def n_draws(self) -> int:
        return len(self.flips)

    @property
    def short_name(self) -> str:
        """The null in a verdict line: flip-null, weighted-flip, group-permutation, permutation-and-flip."""
        return {"balanced_within": "flip-null", "mixed_unbalanced": "weighted-flip",
                "constant_within": f"{_noun(self.layout)}-permutation",
                "combination": "permutation-and-flip"}[self.layout.kind]

    @property
    def units(self) -> str:
        """The unit of inference, plural: groups, rows, families, ..."""
        noun = _noun(self.layout)
        return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"

    def labels(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """``[b, n]`` int8 labels of the draws ``rows`` (all by default)."""
        f = self.flips if rows is None else self.flips[rows]
        return (self.y[None, :].astype(np.int8) ^ f[:, self.codes]).astype(np.int8)

    def p_value(self, observed: float, null: np.ndarray, alternative: str = "greater") -> float:
        """p of ``observed`` against the statistic's values over the draws (NaN draws dropped)."""
        if alternative not in ALTERNATIVES:
            raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
        null = np.asarray(null, dtype=np.float64)
        null = null[~np.isnan(null)]
        if not len(null) or np.isnan(observed):
            return float("nan")
        if alternative == "less":
            observed, null = -observed, -null
        elif alternative == "two-sided":
            observed, null = abs(observed), np.abs(null)
        return G.flip_p(float(observed), null, self.exact)

    def smallest_p(self, alternative: str = "two-sided") -> float:
        return self.min_p if alternative == "two-sided" else self.min_p_one_sided

    def unreachable_warning(self, alpha: float, what: str, alternative: str = "two-sided") -> str | None:
        """A warning (also logged) when p < alpha cannot be reached under this design; None otherwise."""
        p = self.smallest_p(alternative)
        if p <= alpha:
            return None
        if self.layout.n_constant == 0:  # flips: 2/2^G (1/2^G one-sided) must reach alpha
            need = next(g for g in range(1, 64) if (2.0 if alternative == "two-sided" else 1.0) / 2**g <= alpha)
            more = f"need >= {need} {self.units}"
        else:
            more = f"more {self.units} are needed"
        msg = (f"{what}: {self.layout.description}; the smallest reachable p under {self.name} is {p:.3g} > alpha "
               f"{alpha:g}, so nothing can be significant ({more})")
        logger.warning(msg)
        return msg

    def bootstrap_counts(self, n_bootstrap: int, seed: int) -> np.ndarray:
        """``[B, G]`` how often each unit is drawn by a unit bootstrap. With one-label units the honest ones, the
        deceptive ones and the mixed ones are resampled separately, so every resample holds both classes."""
        lay = self.layout
        if lay.n_constant == 0:
            return G.group_bootstrap_counts(lay.n_groups, n_bootstrap, seed)
        rng = np.random.default_rng(seed)
        out = np.zeros((n_bootstrap, lay.n_groups), dtype=np.int64)
        const = lay.unit_kind == CONSTANT
        for members in (np.flatnonzero(const & (lay.n_honest > 0)), np.flatnonzero(const & (lay.n_honest == 0)),
                        np.flatnonzero(~const)):
            if len(members):
                out[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)),
                                                  size=n_bootstrap)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "exact": self.exact, "n_draws": self.n_draws, "n_total": self.n_total,
                "min_p": self.min_p, "min_p_one_sided": self.min_p_one_sided, "layout": self.layout.to_dict()}


def _noun(layout: LabelLayout) -> str:
    return "group" if layout.unit == "prompt group" else layout.unit


def _combos(n: int, k: int) -> np.ndarray:
    """All 0/1 vectors of length n with k ones, [C(n,k), n]."""
    out = np.zeros((math.comb(n, k), n), dtype=np.int8)
    for i, c in enumerate(itertools.combinations(range(n), k)):
        out[i, list(c)] = 1
    return out


def balance_cell_weights(n_honest: Any, n_deceptive: Any) -> np.ndarray:
    """``[G, 2]`` balance weights of each unit's deceptive (column 0) and honest (column 1) rows: ``2 n_hon / n``
    and ``2 n_dec / n`` in a unit holding both labels (1 when they are 1:1), 1 in a one-label or empty unit."""
    n1, n0 = np.asarray(n_honest, dtype=np.float64), np.asarray(n_deceptive, dtype=np.float64)
    cw = np.ones((len(n1), 2))
    mixed = (n1 > 0) & (n0 > 0)
    cw[mixed, 1] = 2 * n0[mixed] / (n1 + n0)[mixed]
    cw[mixed, 0] = 2 * n1[mixed] / (n1 + n0)[mixed]
    return cw


def null_design(
    y: Any,
    groups: Any = None,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    clusters: Any = None,
    layout: LabelLayout | None = None,
) -> NullDesign:
    """The randomization valid for the layout of ``y`` over ``groups`` (or ``clusters``; see :mod:`.layout`).

    ``layout`` (from :func:`classify_layout`) skips the classification, e.g. to keep a detected cluster's reason."""
    y = np.asarray(y).astype(np.int64)
    lay = layout if layout is not None else classify_layout(y, groups, clusters=clusters)
    if len(lay.codes) != len(y):
        raise ValueError(f"layout has {len(lay.codes)} rows but y has {len(y)}")
    Gn = lay.n_groups
    const = np.flatnonzero(lay.unit_kind == CONSTANT)
    mixed = np.flatnonzero(lay.unit_kind != CONSTANT)
    yc = (lay.n_honest[const] > 0).astype(np.int8)
    h, m = int(yc.sum()), len(mixed)
    total = math.comb(len(const), h) * 2**m  # an exact integer (huge for row-level layouts)
    B = max(int(n_permutations), 1)
    exact = total <= B
    n_total = float(total) if total < 10**300 else math.inf
    if len(const) == 0:  # flips only: today's flip matrix (same draws for the same seed)
        flips, exact = G.flip_matrix(Gn, B, seed)
    elif exact:
        zc = _combos(len(const), h) ^ yc[None, :]
        zm = ((np.arange(2**m, dtype=np.int64)[:, None] >> np.arange(m)) & 1).astype(np.int8)
        flips = np.zeros((len(zc) * len(zm), Gn), dtype=np.int8)
        flips[:, const] = np.repeat(zc, len(zm), axis=0)
        flips[:, mixed] = np.tile(zm, (len(zc), 1))
        ident = int(np.flatnonzero(~flips.any(1))[0])
        flips[[0, ident]] = flips[[ident, 0]]
    else:
        rng = np.random.default_rng(seed)
        flips = np.zeros((B, Gn), dtype=np.int8)
        flips[:, const] = rng.permuted(np.broadcast_to(yc, (B, len(const))), axis=1) ^ yc[None, :]
        flips[:, mixed] = rng.random((B, m)) < 0.5
    cw = balance_cell_weights(lay.n_honest, lay.n_deceptive)
    weights = cw[lay.codes, y]
    complement = len(const) == 0 or 2 * h == len(const)
    one = 1.0 / total
    sym = (2.0 if complement else 1.0) / total
    if not exact:
        one, sym = max(one, 1.0 / (1 + B)), max(sym, 1.0 / (1 + B))
    noun = _noun(lay)
    how = f"exact, all {len(flips)}" if exact else f"random {len(flips)}"
    name = {
        "balanced_within": f"{noun} flips ({how})",
        "mixed_unbalanced": f"balance-weighted {noun} flips ({how})",
        "constant_within": f"{noun}-label permutations ({how})",
        "combination": f"{noun}-label permutations of one-label {noun}s x balance-weighted flips of mixed {noun}s "
                       f"({how})",
    }[lay.kind]
    return NullDesign(layout=lay, y=y, flips=flips.astype(np.int8), weights=weights, cell_weights=cw, exact=exact,
                      n_total=n_total, name=name, min_p=sym, min_p_one_sided=one)


@dataclass
class PermutationTest:
    """A statistic, its p under the layout's randomization, and what that randomization was."""

    statistic: float
    p: float
    alternative: str
    #: the design's name, e.g. "group-label permutations (exact, all 70)"
    null: str
    exact: bool
    n_permutations: int
    min_p: float
    layout: LabelLayout
    null_distribution: np.ndarray = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "p": self.p, "alternative": self.alternative, "null": self.null,
                "exact": self.exact, "n_permutations": self.n_permutations, "min_p": self.min_p,
                "layout": self.layout.to_dict(), "warnings": list(self.warnings)}


def grouped_permutation_test(
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
    what: str = "statistic",
    design: NullDesign | None = None,
) -> PermutationTest:
    """Permutation test of ``stat_fn(labels [B, n] int8, weights [n]) -> [B]`` under the randomization valid for
    the layout of ``y`` over ``groups``/``clusters`` (:func:`null_design`; pass ``design`` to reuse one).

    ``alternative``: ``greater`` (large values are evidence), ``less``, or ``two-sided`` (``|stat|``; centre the
    statistic first, e.g. ``AUROC - 1/2``)."""
    y = np.asarray(y).astype(np.int64)
    d = design if design is not None else null_design(y, groups, n_permutations=n_permutations, seed=seed,
                                                      clusters=clusters)
    obs = float(np.asarray(stat_fn(y[None, :].astype(np.int8), d.weights), dtype=np.float64).reshape(-1)[0])
    null = np.concatenate([np.asarray(stat_fn(d.labels(slice(i, i + chunk)), d.weights), dtype=np.float64)
                           for i in range(0, d.n_draws, chunk)])
    warns = [w for w in [d.unreachable_warning(alpha, what, alternative)] if w]
    return PermutationTest(statistic=obs, p=d.p_value(obs, null, alternative), alternative=alternative,
                           null=d.name, exact=d.exact, n_permutations=d.n_draws,
                           min_p=d.smallest_p(alternative), layout=d.layout, null_distribution=null, warnings=warns)


def auroc(scores: Any, labels: Any, weights: Any = None) -> np.ndarray:
    """Weighted AUROC of fixed ``scores`` [n] for each row of ``labels`` ([B, n] or [n], 1 = positive): the
    weighted share of (positive, negative) pairs ranked correctly, ties counted half. Returns [B] (NaN where a
    row has one class)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    L = np.atleast_2d(np.asarray(labels)).astype(np.float64)
    if L.shape[1] != len(s):
        raise ValueError(f"auroc: {len(s)} scores but labels have {L.shape[1]} columns")
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    block = np.cumsum(np.r_[True, ss[1:] != ss[:-1]]) - 1
    pos = L[:, order] * w[order]
    neg = (1.0 - L[:, order]) * w[order]
    bneg = np.add.reduceat(neg, starts, axis=1)
    below = np.cumsum(bneg, axis=1) - bneg
    val = below[:, block] + 0.5 * bneg[:, block]
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * val).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def auroc_test(
    scores: Any,
    y: Any,
    groups: Any = None,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    alternative: str = "greater",
    clusters: Any = None,
    alpha: float = 0.05,
) -> PermutationTest:
    """AUROC of fixed scores against the layout's null. ``greater``: AUROC > 1/2 (scores higher for honest
    rows); ``two-sided``: ``|AUROC - 1/2|``. The statistic is the balance-weighted AUROC (plain when no unit is
    unbalanced)."""
    shift = 0.5 if alternative == "two-sided" else 0.0
    res = grouped_permutation_test(lambda L, w: auroc(scores, L, w) - shift, y, groups, n_permutations=n_permutations,
                                   seed=seed, alternative=alternative, clusters=clusters, alpha=alpha, what="AUROC")
    res.statistic += shift
    return res
