"""Label layouts: where the honest/deceptive labels sit inside the units of inference, and which unit that is.

A randomization test is valid when, with no honesty effect, the data's distribution does not change under the
label transformations it averages over. Which transformations those are depends on where the labels sit, so every
grouped test first classifies the layout (:func:`classify_layout`) and then takes the randomization valid for it
(:func:`gemma4_saelens_ext.evals.nulls.null_design`):

* ``constant_within`` — every unit carries one label (an incentive prompt judged once, per-prompt labels): the
  units' labels are permuted across units, the number of honest units fixed. (Flipping them instead would change
  the class balance: with 25% honest units a flipped pool is about half honest, and the observed statistic then
  looks extreme; that test rejects a true null most of the time.)
* ``balanced_within`` — every unit holds both labels 1:1 (the builder's pools): whole units are flipped
  (honest <-> deceptive), which keeps each unit's composition.
* ``mixed_unbalanced`` — every unit holds both labels, not all 1:1: whole units are flipped with *balance weights*
  (a unit's honest rows weighted ``2 n_dec / n``, its deceptive rows ``2 n_hon / n``). A flip then keeps each unit's
  weighted honest and deceptive totals, and amounts to a sign flip of the unit's honest-minus-deceptive contrast.
  (A within-unit shuffle of rows is the other candidate; it is only valid when a unit's rows are exchangeable, and
  on pools where the label follows the answer word it calls the word an effect. The calibration tests show both.)
* ``combination`` — some units carry one label, others both: one-label units' labels are permuted among
  themselves and mixed units are flipped (weighted); the product of two valid randomizations is valid.

The unit is the prompt group, or a coarser *cluster* (family, scenario, source file) when the caller names one or
the labels are constant within one (:func:`detect_cluster`): prompt groups of one family that all carry the
family's label are not independent evidence (a family effect would pass for an honesty effect), so the family is
the unit. Groups and clusters that cut across each other are joined (connected components). ``groups=None`` means
one unit per row: the row-level layout, which assumes independent rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LAYOUT_KINDS", "CLUSTER_COLUMNS", "LabelLayout", "classify_layout", "join_codes", "detect_cluster"]

LAYOUT_KINDS = ("balanced_within", "constant_within", "mixed_unbalanced", "combination")
#: row columns checked for a coarser level within which labels are constant
CLUSTER_COLUMNS = ("family", "scenario", "source_file", "source")
#: per-unit kinds
CONSTANT, BALANCED, UNBALANCED = 0, 1, 2


def _codes(ids: Any, n: int, what: str) -> np.ndarray:
    g = np.asarray([str(v) for v in ids])
    if len(g) != n:
        raise ValueError(f"{what} has {len(g)} entries but there are {n} rows; pass one {what} id per row.")
    return np.unique(g, return_inverse=True)[1].astype(np.int64)


def join_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Codes 0..U-1 of the finest partition both ``a`` and ``b`` refine: rows sharing an ``a`` id or a ``b`` id
    end in one unit (connected components of the bipartite id graph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    na, nb = int(a.max()) + 1, int(b.max()) + 1
    adj = coo_matrix((np.ones(len(a)), (a, na + b)), shape=(na + nb, na + nb))
    _, comp = connected_components(adj, directed=False)
    return np.unique(comp[a], return_inverse=True)[1].astype(np.int64)


@dataclass
class LabelLayout:
    """Where the labels sit inside the units of inference (see the module docstring)."""

    #: balanced_within, constant_within, mixed_unbalanced or combination
    kind: str
    #: units of inference (prompt groups, clusters or rows) the nulls randomize over
    n_groups: int
    #: distinct ``groups`` ids before any clustering
    n_input_groups: int
    n_rows: int
    #: units holding one label, and how many of those are honest
    n_constant: int
    n_constant_honest: int
    #: units holding both labels 1:1, and both labels in another ratio
    n_balanced: int
    n_unbalanced: int
    #: "prompt group", "row", or the cluster's name (e.g. "family")
    unit: str
    #: why that unit was chosen
    unit_reason: str
    #: one line for reports
    description: str
    #: unit code of each row [n]
    codes: np.ndarray = field(repr=False)
    #: per unit: honest and deceptive row counts [G], and kind (0 constant, 1 balanced, 2 unbalanced)
    n_honest: np.ndarray = field(repr=False)
    n_deceptive: np.ndarray = field(repr=False)
    unit_kind: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "n_groups", "n_input_groups", "n_rows", "n_constant",
                                              "n_constant_honest", "n_balanced", "n_unbalanced", "unit",
                                              "unit_reason", "description")}


def _describe(kind: str, noun: str, G: int, nc: int, nch: int, nb: int, nu: int) -> str:
    s = "s" if G != 1 else ""
    if kind == "constant_within":
        return f"one label per {noun} ({G} {noun}{s}: {nch} honest, {nc - nch} deceptive)"
    if kind == "balanced_within":
        return f"both labels 1:1 in every {noun} ({G} {noun}{s})"
    if kind == "mixed_unbalanced":
        return f"both labels in every {noun}, not all 1:1 ({G} {noun}{s}: {nu} unbalanced, {nb} balanced)"
    return (f"a combination ({G} {noun}{s}: {nc} with one label ({nch} honest), {nb + nu} with both ({nu} not "
            f"1:1))")


def classify_layout(
    y: Any,
    groups: Any = None,
    *,
    clusters: Any = None,
    cluster_name: str = "cluster",
    cluster_reason: str | None = None,
) -> LabelLayout:
    """Classify the label layout of ``y`` (0/1) over ``groups`` (one id per row; ``None`` = one unit per row).

    ``clusters`` (one id per row, e.g. the family): inference runs at that coarser level (joined with the groups
    where they cut across each other); ``cluster_name`` names it in reports and ``cluster_reason`` says why (by
    default: passed by the caller)."""
    y = np.asarray(y).astype(np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("classify_layout: no rows")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"labels must be 0/1 (1 = honest), got values {sorted(set(np.unique(y).tolist()))}")
    g = np.arange(n) if groups is None else _codes(groups, n, "groups")
    n_input = int(g.max()) + 1
    if clusters is not None:
        codes = join_codes(g, _codes(clusters, n, cluster_name))
        unit = cluster_name
        reason = cluster_reason or f"{cluster_name} ids passed by the caller: inference runs at that level"
        if groups is not None and int(codes.max()) + 1 < n_input:
            reason += f" ({n_input} prompt groups fall into {int(codes.max()) + 1} {cluster_name}s)"
    elif groups is None:
        codes, unit = g, "row"
        reason = "no groups given: every row is its own unit (assumes independent rows; a labelled diagnostic)"
    else:
        codes, unit, reason = g, "prompt group", "the groups passed (a question with its role-swapped twins)"
    G = int(codes.max()) + 1
    n1 = np.bincount(codes, weights=y, minlength=G).astype(np.int64)
    n0 = np.bincount(codes, minlength=G).astype(np.int64) - n1
    ukind = np.where((n1 == 0) | (n0 == 0), CONSTANT, np.where(n1 == n0, BALANCED, UNBALANCED))
    nc, nb, nu = (int((ukind == k).sum()) for k in (CONSTANT, BALANCED, UNBALANCED))
    nch = int(((ukind == CONSTANT) & (n1 > 0)).sum())
    if nc == G:
        kind = "constant_within"
    elif nb == G:
        kind = "balanced_within"
    elif nc == 0:
        kind = "mixed_unbalanced"
    else:
        kind = "combination"
    return LabelLayout(kind=kind, n_groups=G, n_input_groups=n_input, n_rows=n, n_constant=nc,
                       n_constant_honest=nch, n_balanced=nb, n_unbalanced=nu, unit=unit, unit_reason=reason,
                       description=_describe(kind, unit, G, nc, nch, nb, nu), codes=codes, n_honest=n1,
                       n_deceptive=n0, unit_kind=ukind)


def detect_cluster(
    rows: Sequence[Mapping[str, Any]],
    y: Any,
    groups: Any,
    *,
    columns: Sequence[str] = CLUSTER_COLUMNS,
) -> tuple[np.ndarray | None, str | None, str | None]:
    """A coarser level the labels are constant within, from the rows' columns (family, scenario, source file):
    the first column present in every row whose levels (joined with the groups) are fewer than the groups and each
    hold one label. Returns ``(cluster ids, column, reason)``, or three ``None`` when no column qualifies."""
    y = np.asarray(y).astype(np.int64)
    n = len(y)
    if n == 0 or len(rows) != n:
        return None, None, None
    g = np.arange(n) if groups is None else _codes(groups, n, "groups")
    n_groups = int(g.max()) + 1
    for col in columns:
        vals = [r.get(col) for r in rows]
        if any(v in (None, "") for v in vals):
            continue
        ids = np.asarray([str(v) for v in vals])
        units = join_codes(g, np.unique(ids, return_inverse=True)[1])
        U = int(units.max()) + 1
        if U >= n_groups or U < 2:
            continue
        n1 = np.bincount(units, weights=y, minlength=U)
        if np.all((n1 == 0) | (n1 == np.bincount(units, minlength=U))):
            reason = (f"labels are constant within each {col} ({U} {col}s over {n_groups} prompt groups): prompt "
                      f"groups of one {col} share its label and its {col} effect, so they are not independent "
                      f"evidence and the {col} is the unit of inference")
            logger.info(reason)
            return ids, col, reason
    return None, None, None
