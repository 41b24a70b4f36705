"""d-values with the unit of inference as the unit: d_max and the |d| > threshold count against the null valid
for the label layout, a group-bootstrap CI, and the replication test (latents selected on train, measured on eval).

``groups=None`` (and no ``clusters``) keeps the row-level behaviour (row permutations, row bootstrap): that treats
completions as independent and, on clustered pools, calls prompt identity an effect; the suite reports it only as a
labelled diagnostic. With groups (see :mod:`.layout` and :mod:`.nulls` for why):

* **null** — the randomization valid for the layout: whole groups flipped (both labels 1:1 in every group),
  groups' labels permuted across groups (one label per group), balance-weighted flips (mixed, unbalanced groups;
  d is then the balance-weighted d, equal to the plain d on balanced pools), or their product (a combination);
  the unit is a coarser cluster when one is given;
* **CI** — the bootstrap distribution of the maximum itself (d_max re-taken over all latents in every group
  resample), shifted by its bootstrap bias (:func:`~gemma4_saelens_ext.evals.stats.bias_corrected_ci`): the top
  latent was chosen on these rows, so an interval for that latent alone would be biased upward. The replication
  test's interval comes from eval rows that did not choose the latents;
* **power** — a non-significant result carries the minimum detectable value at 80% power (normal approximation:
  the null's 95th percentile plus 0.84 bootstrap standard errors of the same maximum).

Speed: rows are summed per (unit, label) cell once (weighted when the design weights them); each flip, permutation
or resample is then a ``[B, cells] @ [cells, k]`` product of those sums, so the cost depends on the number of
units, not rows (``benchmarks/bench_dvalues.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gemma4_saelens_ext.errors import check_finite
from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.layout import LabelLayout, classify_layout
from gemma4_saelens_ext.evals.nulls import NullDesign, null_design

__all__ = ["DValueResult", "dvalue_analysis", "ReplicationResult", "replication_analysis", "CellMoments"]

#: how the d_max CI and the power figure are made (written into results and the report)
CI_MAX = ("bias-corrected group bootstrap of d_max itself (the max over all latents re-taken in every resample; "
          "the top latent was chosen on these rows)")
CI_ROWS = ("bias-corrected row bootstrap of d_max itself (the max over all latents re-taken in every resample; "
           "the top latent was chosen on these rows)")
CI_REPLICATION = ("eval rows, which did not choose the latents; the max over the selected latents re-taken in every "
                  "group resample, bias-corrected")


class CellMoments:
    """Per-(group, label) sums of a column-centred matrix: everything a flip or a group resample needs."""

    def __init__(self, acts: Any, y: Any, groups: Any = None, *, codes: np.ndarray | None = None,
                 cell_weights: np.ndarray | None = None, n_groups: int | None = None):
        """``codes`` (integer unit codes 0..G-1) replace ``groups``; ``cell_weights`` [G, 2] weight each unit's
        deceptive (column 0) and honest (column 1) rows (a null design's balance weights); ``n_groups``: G when
        some units have no rows here (a resample)."""
        x = S._as_2d_float(acts)
        self.y = np.asarray(y).astype(np.int64)
        if x.shape[0] != len(self.y):
            raise ValueError(f"acts has {x.shape[0]} rows but y has {len(self.y)} labels")
        codes = G.group_codes(groups, len(self.y)) if codes is None else np.asarray(codes, dtype=np.int64)
        self.n_groups = max(int(codes.max()) + 1 if len(codes) else 0, n_groups or 0)
        cell = codes * 2 + self.y
        n_cells = 2 * self.n_groups
        # per-cell sums of the column-centred data in float64, a block of columns at a time (bounded temporaries),
        # by sorting rows into cells and reducing contiguous runs (np.add.at is ~50x slower)
        order = np.argsort(cell, kind="stable")
        present, starts = np.unique(cell[order], return_index=True)
        self.S = np.zeros((n_cells, x.shape[1]))
        self.Q = np.zeros((n_cells, x.shape[1]))
        for j in range(0, x.shape[1], 512):
            xb = x[order, j : j + 512].astype(np.float64)
            xb -= xb.mean(0, keepdims=True)
            self.S[present, j : j + 512] = np.add.reduceat(xb, starts, axis=0)
            xb *= xb
            self.Q[present, j : j + 512] = np.add.reduceat(xb, starts, axis=0)
        self.N = np.bincount(cell, minlength=n_cells).astype(np.float64)
        if cell_weights is not None:
            w = np.asarray(cell_weights, dtype=np.float64).reshape(-1)  # [G, 2] row-major = cell order
            self.S, self.Q, self.N = self.S * w[:, None], self.Q * w[:, None], self.N * w
        self.tot_s, self.tot_q, self.n = self.S.sum(0), self.Q.sum(0), float(self.N.sum())
        # per group: honest-cell and deceptive-cell sums ([G, k]); a flip swaps the two for its group
        self.S1, self.S0, self.Q1, self.Q0 = self.S[1::2], self.S[0::2], self.Q[1::2], self.Q[0::2]
        self.N1, self.N0 = self.N[1::2], self.N[0::2]

    def flipped_d(self, flips: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        """``[B, k]`` d under ``[B, G]`` group flips (an all-zero flip row = the observed d).

        Honest sums after flipping: the unflipped groups' honest cells plus the flipped groups' deceptive cells,
        i.e. ``sum(S1) + F @ (S0 - S1)``: one ``[B, G] @ [G, k]`` product per moment."""
        f = flips.astype(np.float64)
        s1 = self.S1.sum(0) + f @ (self.S0 - self.S1)
        q1 = self.Q1.sum(0) + f @ (self.Q0 - self.Q1)
        n1 = (self.N1.sum() + f @ (self.N0 - self.N1))[:, None]
        return S._d_from_moments(s1, q1, n1, self.tot_s - s1, self.tot_q - q1, self.n - n1, eps)

    def resampled_d(self, counts: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        """``[B, k]`` d when group g is drawn ``counts[b, g]`` times."""
        c = counts.astype(np.float64)
        return S._d_from_moments(c @ self.S1, c @ self.Q1, (c @ self.N1)[:, None], c @ self.S0, c @ self.Q0,
                                 (c @ self.N0)[:, None], eps)


def _chunked(fn: Any, mats: np.ndarray, reduce: Any, chunk: int = 256) -> list[Any]:
    return [reduce(fn(mats[i : i + chunk])) for i in range(0, len(mats), chunk)]


@dataclass
class DValueResult:
    """One split's d-values; every number beside its null, CI, n and n_groups (the d vector stays out of JSON)."""

    split: str
    n_pos: int
    n_neg: int
    #: units of inference (prompt groups, clusters or rows)
    n_groups: int
    #: the randomization, e.g. "group flips (exact, all 256)", "group-label permutations (random 1000)" or
    #: "row permutations (assumes independent rows)"
    null: str
    d_max: float
    d_max_latent: int
    n_above: int
    threshold: float
    top_latents: list[int]
    top_d: list[float]
    perfectly_separating: list[int]
    p_d_max: float
    p_n_above: float
    null_d_max_mean: float
    null_d_max_q95: float
    null_n_above_mean: float
    #: 95% CI of d_max (see ``d_max_ci_method``)
    d_max_ci: tuple[float, float]
    n_above_ci: tuple[float, float]
    #: max-statistic (FWER) p of each top latent: share of null d_max >= |d_j|
    top_latents_p_fwer: list[float]
    min_reachable_p: float
    #: minimum detectable d_max at 80% power (normal approximation; see module docstring)
    min_detectable_d: float
    n_permutations: int
    n_bootstrap: int
    verdict: str
    verdict_n_above: str
    #: the label layout and the unit of inference (:class:`~gemma4_saelens_ext.evals.layout.LabelLayout`)
    layout: dict[str, Any] = field(default_factory=dict)
    #: how ``d_max_ci`` and ``min_detectable_d`` were made
    d_max_ci_method: str = ""
    #: "plain" or "balance-weighted" (unbalanced mixed groups: each group's honest and deceptive rows weighted to
    #: equal totals)
    d_weighting: str = "plain"
    warnings: list[str] = field(default_factory=list)
    d: np.ndarray | None = field(default=None, repr=False)
    null_d_max: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("d")
        out.pop("null_d_max")
        return out


def _design(y: np.ndarray, groups: Any, clusters: Any, layout: LabelLayout | None, n_permutations: int,
            seed: int) -> NullDesign:
    return null_design(y, groups, n_permutations=n_permutations, seed=seed, clusters=clusters, layout=layout)


def dvalue_analysis(
    acts: Any,
    y: Any,
    *,
    groups: Any = None,
    clusters: Any = None,
    layout: LabelLayout | None = None,
    split: str = "split",
    threshold: float = 1.0,
    top_n: int = 10,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    min_class_size: int = 10,
    seed: int = 0,
    alpha: float = 0.05,
) -> DValueResult:
    """Cohen's d of every latent, d_max and the count |d| > threshold with a null, a CI and words.

    ``groups`` (one id per row) and/or ``clusters`` (a coarser id, e.g. the family: inference runs at that level),
    or a precomputed ``layout``: the null valid for the label layout (:func:`~gemma4_saelens_ext.evals.nulls.
    null_design`) and a unit bootstrap. All ``None``: row permutations and a class-stratified row bootstrap
    (independent rows assumed)."""
    x = check_finite(S._as_2d_float(acts), f"d-values ({split}): activations")
    y = np.asarray(y).astype(np.int64)
    n1, n0 = S.check_binary_labels(y, what=f"d-values ({split})")
    warns = S.class_size_warnings(y, min_class_size, what=split)
    row_level = groups is None and clusters is None and layout is None
    if row_level:
        d = S.cohens_d(x, y)
        summ = S.d_summary(d, threshold=threshold, top_n=top_n)
        n_groups, lay, weighting = len(y), classify_layout(y, None), "plain"
        null = S.permutation_null_d(x, y, n_permutations=n_permutations, seed=seed, threshold=threshold)
        boot = S.bootstrap_d(x, y, n_bootstrap=n_bootstrap, seed=seed + 1, threshold=threshold)
        p_dmax = S.permutation_p(summ["d_max"], null["d_max"])
        p_nab = S.permutation_p(summ["n_above"], null["n_above"])
        pfun = lambda v: S.permutation_p(v, null["d_max"])  # noqa: E731
        null_kind, ci_method = "row permutations (assumes independent rows)", CI_ROWS
        min_p = 1.0 / (1 + n_permutations)
    else:
        design = _design(y, groups, clusters, layout, n_permutations, seed)
        lay = design.layout
        weighting = "balance-weighted" if lay.n_unbalanced else "plain"
        cm = CellMoments(x, y, codes=design.codes, cell_weights=design.cell_weights)
        d = S.cohens_d(x, y, weights=design.weights)
        summ = S.d_summary(d, threshold=threshold, top_n=top_n)
        n_groups = cm.n_groups
        obs = np.abs(cm.flipped_d(np.zeros((1, n_groups), dtype=np.int8)))[0]  # same numerics as the null
        obs_dmax, obs_nab = float(obs.max()), int((obs > threshold).sum())
        parts = _chunked(cm.flipped_d, design.flips, lambda dd: (np.abs(dd).max(1), (np.abs(dd) > threshold).sum(1)))
        null = {"d_max": np.concatenate([p[0] for p in parts]), "n_above": np.concatenate([p[1] for p in parts])}
        counts = design.bootstrap_counts(n_bootstrap, seed + 1)
        bparts = _chunked(cm.resampled_d, counts, lambda dd: (np.nanmax(np.abs(dd), 1, initial=0.0),
                                                               (np.abs(dd) > threshold).sum(1)))
        boot = {"d_max": np.concatenate([p[0] for p in bparts]), "n_above": np.concatenate([p[1] for p in bparts])}
        p_dmax, p_nab = design.p_value(obs_dmax, null["d_max"]), design.p_value(obs_nab, null["n_above"])
        pfun = lambda v: design.p_value(v, null["d_max"])  # noqa: E731
        null_kind, ci_method, min_p = design.name, CI_MAX, design.min_p
        w = design.unreachable_warning(alpha, f"d-values ({split})")
        if w:
            warns.append(w)
    q95 = float(np.quantile(null["d_max"], 0.95))
    tmax = np.asarray(boot["d_max"], dtype=np.float64)
    ci = S.bias_corrected_ci(summ["d_max"], tmax)
    se = float(np.std(tmax[np.isfinite(tmax)])) if np.isfinite(tmax).sum() > 1 else float("nan")
    mde = G.min_detectable(q95, se)
    fwer = [pfun(abs(v)) for v in summ["top_d"]]
    n_rows = n1 + n0

    def words(name: str, value: float, p: float, m: float | None) -> str:
        if row_level:
            return S.verdict(name, value, p, n_pos=n1, n_neg=n0, alpha=alpha, null_q95=q95 if m else None,
                             ci=ci if m else None)
        return G.power_wording(name, value, p, alpha=alpha, n_groups=n_groups, n_rows=n_rows, mde=m,
                               null=design.short_name, units=design.units)

    return DValueResult(
        split=split, n_pos=n1, n_neg=n0, n_groups=n_groups, null=null_kind, d_max=summ["d_max"],
        d_max_latent=summ["d_max_latent"], n_above=summ["n_above"], threshold=threshold,
        top_latents=summ["top_latents"], top_d=summ["top_d"], perfectly_separating=summ["perfectly_separating"],
        p_d_max=p_dmax, p_n_above=p_nab, null_d_max_mean=float(null["d_max"].mean()), null_d_max_q95=q95,
        null_n_above_mean=float(np.mean(null["n_above"])), d_max_ci=ci, n_above_ci=S.percentile_ci(boot["n_above"]),
        top_latents_p_fwer=fwer, min_reachable_p=min_p, min_detectable_d=mde, n_permutations=len(null["d_max"]),
        n_bootstrap=n_bootstrap, verdict=words("d_max", summ["d_max"], p_dmax, mde),
        verdict_n_above=words(f"count |d|>{threshold:g}", summ["n_above"], p_nab, None), layout=lay.to_dict(),
        d_max_ci_method=ci_method, d_weighting=weighting, warnings=warns, d=d, null_d_max=null["d_max"],
    )


@dataclass
class ReplicationResult:
    """The primary test: latents chosen on train, their d measured on eval (same sign as on train)."""

    split: str
    selected_on: str
    latents: list[int]
    train_d: list[float]
    eval_d: list[float]
    eval_d_ci: list[tuple[float, float]]
    #: max-statistic p of each latent (share of null replicated_d_max >= its signed eval d)
    p_fwer: list[float]
    #: max_j sign(train d_j) * eval d_j over the selected latents
    replicated_d_max: float
    replicated_latent: int
    p: float
    null_q95: float
    min_reachable_p: float
    #: from eval rows: the null's 95th percentile + 0.84 bootstrap SEs of the replicated maximum
    min_detectable_d: float
    n_pos: int
    n_neg: int
    n_groups: int
    null: str
    verdict: str
    #: 95% CI of replicated_d_max (see ``ci_method``)
    replicated_d_max_ci: tuple[float, float] = (float("nan"), float("nan"))
    ci_method: str = CI_REPLICATION
    layout: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replication_analysis(
    eval_acts: Any,
    eval_y: Any,
    train_d: np.ndarray,
    *,
    groups: Any = None,
    clusters: Any = None,
    layout: LabelLayout | None = None,
    train_groups: Any = None,
    top_n: int = 10,
    split: str = "eval",
    selected_on: str = "train",
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ReplicationResult:
    """Select the ``top_n`` latents by |d| on train (``train_d``), then test on eval whether they separate the
    classes in the same direction: ``T = max_j sign(d_train_j) d_eval_j`` against the layout's null of T on eval
    (one-sided, so a latent that flips sign counts against itself). Selecting and measuring on the same rows
    inflates d; this is the number to quote. ``train_groups`` (the train split's group ids): refused when a group
    is in both splits."""
    G.check_split_overlap(train_groups, groups, what=f"replication ({selected_on} -> {split})",
                          names=(selected_on, split))
    train_d = np.asarray(train_d, dtype=np.float64)
    latents = S.d_summary(train_d, top_n=top_n)["top_latents"]
    sign = np.sign(train_d[latents])
    sign[sign == 0] = 1.0
    x = check_finite(S._as_2d_float(eval_acts), f"replication ({split}): activations")[:, latents]
    y = np.asarray(eval_y).astype(np.int64)
    n1, n0 = S.check_binary_labels(y, what=f"replication ({split})")
    design = _design(y, groups, clusters, layout, n_permutations, seed)
    cm = CellMoments(x, y, codes=design.codes, cell_weights=design.cell_weights)
    signed = sign * cm.flipped_d(np.zeros((1, cm.n_groups), dtype=np.int8))[0]
    stat = float(np.max(signed))
    null = np.concatenate(_chunked(cm.flipped_d, design.flips, lambda dd: (sign[None, :] * dd).max(1)))
    p = design.p_value(stat, null)
    boot = cm.resampled_d(design.bootstrap_counts(n_bootstrap, seed + 1))
    fin = np.where(np.isfinite(boot), boot, np.nan)  # percentile intervals of every latent at once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a latent with no finite resample: (nan, nan)
        qs = np.nanquantile(fin, [0.025, 0.975], axis=0)
    cis = [(float(a), float(b)) for a, b in qs.T]
    jbest = int(np.argmax(signed))
    tmax = (sign[None, :] * boot).max(1)
    se = float(np.std(tmax[np.isfinite(tmax)])) if np.isfinite(tmax).sum() > 1 else float("nan")
    q95 = float(np.quantile(null, 0.95))
    mde = G.min_detectable(q95, se)
    warns = [w for w in [design.unreachable_warning(alpha, f"replication ({split})", "greater")] if w]
    return ReplicationResult(
        split=split, selected_on=selected_on, latents=latents, train_d=[float(v) for v in train_d[latents]],
        eval_d=[float(v) for v in S.cohens_d(x, y, weights=design.weights)], eval_d_ci=cis,
        p_fwer=[design.p_value(float(v), null) for v in signed], replicated_d_max=stat,
        replicated_latent=latents[jbest], p=p, null_q95=q95, min_reachable_p=design.min_p_one_sided,
        min_detectable_d=mde, n_pos=n1, n_neg=n0, n_groups=cm.n_groups, null=design.name,
        verdict=G.power_wording(f"replicated d_max (top {len(latents)} latents chosen on {selected_on})", stat, p,
                                alpha=alpha, n_groups=cm.n_groups, n_rows=n1 + n0, mde=mde, null=design.short_name,
                                units=design.units),
        replicated_d_max_ci=S.bias_corrected_ci(stat, tmax), layout=design.layout.to_dict(), warnings=warns,
    )
