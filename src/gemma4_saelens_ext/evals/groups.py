"""The prompt group as the unit of inference: group ids, group flips, group bootstrap, group subsamples, split
checks, Holm adjustment and power wording.

A behavior pool is clustered: a prompt's completions repeat a few near-identical answers, the label is a function
of (prompt, answer word), and role-swapped twins share one question. Rows are not independent, so every
randomization works on whole groups:

* **flips** — :func:`flip_matrix`: the ``2^G`` ways of swapping honest <-> deceptive inside whole groups
  (enumerated exactly when ``2^G <= n_permutations``, else sampled). Which randomization a test uses depends on the
  label layout (flips, group-label permutations, weighted flips): :mod:`.layout` and :mod:`.nulls`.
* **group bootstrap** — resample whole groups with replacement (each row weighted by how often its group was
  drawn).
* **subsamples** — a seeded sample of whole groups, never the first rows of a file.
* **splits** — :func:`check_split_overlap` refuses train and eval splits that share a group.

Every function also works with ``groups=None`` meaning "one group per row" (today's row-level behaviour), which is
what the row-level diagnostic reports.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "group_codes",
    "resolve_groups",
    "flip_matrix",
    "flip_p",
    "group_bootstrap_counts",
    "sample_groups",
    "holm",
    "min_detectable",
    "power_wording",
    "check_split_overlap",
    "Z_80",
]

#: z quantile for 80% power (one-sided normal approximation)
Z_80 = 0.8416212335729143


def group_codes(groups: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Integer codes 0..G-1 for group ids (``None`` = one group per row)."""
    if groups is None:
        return np.arange(n)
    g = np.asarray([str(v) for v in groups])
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries but there are {n} rows; pass one group id per row.")
    _, codes = np.unique(g, return_inverse=True)
    return codes.astype(np.int64)


def resolve_groups(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, str, str | None]:
    """Group id of each row and how it was found: the ``group`` column (a question with its role-swapped twins)
    when every row has one, else ``prompt_id``, else the prompt text; else one group per row, with a warning that
    inference then assumes independent rows. Returns ``(groups, source, warning)``."""
    for key in ("group", "prompt_id", "prompt"):
        vals = [r.get(key) for r in rows]
        if rows and all(v not in (None, "") for v in vals):
            return np.asarray([str(v) for v in vals]), key, None
    warn = (
        "the dataset has no group, prompt_id or prompt column: every row is its own group, so the statistics "
        "assume independent rows (near-duplicate completions of one prompt would then look like an effect)"
    )
    logger.warning(warn)
    return np.asarray([f"row{i}" for i in range(len(rows))]), "row", warn


def flip_matrix(n_groups: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """``[B, G]`` 0/1 flips of whole groups and whether they are the exact enumeration.

    All ``2^G`` flip vectors when that is <= ``n_permutations`` (row 0 is the identity); else ``n_permutations``
    random ones (each group flipped with probability 1/2)."""
    if n_groups <= 30 and 2**n_groups <= max(n_permutations, 1):
        codes = np.arange(2**n_groups, dtype=np.int64)[:, None]
        return ((codes >> np.arange(n_groups)) & 1).astype(np.int8), True
    rng = np.random.default_rng(seed)
    return (rng.random((n_permutations, n_groups)) < 0.5).astype(np.int8), False


def flip_p(observed: float, null: np.ndarray, exact: bool) -> float:
    """p of ``observed`` against a flip null: with the exact enumeration (identity included) the share of flips
    >= observed; with sampled flips ``(1 + k) / (1 + B)``."""
    null = np.asarray(null, dtype=np.float64)
    if not exact:
        from gemma4_saelens_ext.evals.stats import permutation_p

        return permutation_p(observed, null)
    tol = 1e-7 * max(1.0, abs(observed)) if math.isfinite(observed) else 0.0
    return float(max((null >= observed - tol).mean(), 1.0 / len(null)))


def group_bootstrap_counts(n_groups: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[B, G]`` how often each group is drawn when G groups are resampled with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_bootstrap)


def sample_groups(groups: Sequence[Any], max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of whole groups holding at most ``max_rows`` rows (at least one
    group). ``max_rows=None`` or a limit >= the row count keeps every row. The order of groups is a hash of
    (seed, group id), so the sample does not depend on the row order."""
    from gemma4_saelens_ext.behavior.pools import take_whole_groups

    g = np.asarray([str(v) for v in groups])
    if max_rows is None or max_rows >= len(g):
        return np.arange(len(g))
    uniq, counts = np.unique(g, return_counts=True)
    chosen = take_whole_groups(dict(zip(uniq.tolist(), counts.tolist())), max_rows, seed)
    return np.flatnonzero(np.isin(g, chosen))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries are left out of the family and
    stay NaN."""
    items = [(k, float(v)) for k, v in pvalues.items() if v is not None and math.isfinite(float(v))]
    m = len(items)
    out = {k: float("nan") for k in pvalues}
    running = 0.0
    for i, (k, p) in enumerate(sorted(items, key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def min_detectable(null_q95: float, se: float) -> float:
    """Normal-approximation minimum detectable value at 80% power: a true effect delta whose estimate
    (~ N(delta, se)) exceeds the null's 95th percentile 80% of the time: ``q95 + 0.84 se``."""
    if not (math.isfinite(null_q95) and math.isfinite(se)):
        return float("nan")
    return float(null_q95 + Z_80 * se)


def power_wording(name: str, value: float, p: float, *, alpha: float, n_groups: int, n_rows: int,
                  mde: float | None = None, p_adjusted: float | None = None, null: str = "flip-null",
                  units: str = "groups") -> str:
    """One line: significant, or not significant with the power at this n (never "no effect"). ``null`` names
    the randomization (``flip-null``, ``group-permutation``, ...), ``units`` the unit of inference."""
    padj = "" if p_adjusted is None else f", Holm-adjusted {p_adjusted:.3g}"
    base = f"{name} = {value:.3g} ({null} p = {p:.3g}{padj}; {n_groups} {units}, {n_rows} rows)"
    p_use = p if p_adjusted is None else p_adjusted
    if math.isfinite(p_use) and p_use <= alpha:
        return f"{base}: significant at alpha {alpha:g}"
    tail = f"; minimum detectable value at 80% power ~ {mde:.2g}" if mde is not None and math.isfinite(mde) else ""
    return f"{base}: not significant at {n_groups} {units}{tail}"


def check_split_overlap(train_groups: Any, eval_groups: Any, *, what: str = "train/eval splits",
                        names: tuple[str, str] = ("train", "eval")) -> None:
    """Refuse two splits that share a group: latents chosen on one split and measured on the other would be
    measured on the prompts that chose them (the builder never does this; a user dataset may)."""
    if train_groups is None or eval_groups is None:
        return
    shared = sorted({str(v) for v in train_groups} & {str(v) for v in eval_groups})
    if shared:
        show = ", ".join(repr(v) for v in shared[:10]) + (f" and {len(shared) - 10} more" if len(shared) > 10 else "")
        raise ValueError(
            f"{what}: {len(shared)} group(s) appear in both {names[0]!r} and {names[1]!r}: {show}. Selection and "
            "measurement must use different prompts; re-split the dataset by group (every row of a question and its "
            "role-swapped twins in one split), e.g. with gemma4_saelens_ext.behavior.pools.split_groups, or drop the "
            "shared groups.")
