"""Labels of the behavior statistics: ``y`` is 0/1 with 1 = the positive class (``honest``), 0 = ``deceptive``.

:func:`encode_labels` maps strings to ``y`` (normalised: "Honest", " DECEPTIVE "), leaving ambiguous/unlabelled rows
out and refusing anything else with its count; :func:`check_binary_labels` refuses empty, one-class and too-small
label vectors; :func:`class_size_warnings` words small classes. numpy only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["POSITIVE", "NEGATIVE", "NON_DECISIVE", "encode_labels", "check_binary_labels", "class_size_warnings"]

POSITIVE = "honest"
NEGATIVE = "deceptive"

NON_DECISIVE = ("ambiguous", "unlabelled")  #: labels of no class: their rows are left out of the statistics


def encode_labels(
    labels: Sequence[Any], positive: str = POSITIVE, negative: str = NEGATIVE, *, what: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to (keep_mask, y), y in {0,1}. Strings are normalised ("Honest", " DECEPTIVE "); ambiguous /
    unlabelled rows are masked out; any other value is refused with its count. Bool/int labels pass (1 = positive)."""
    from collections import Counter

    from gemma4_saelens_ext.errors import UserError

    arr = np.asarray(list(labels), dtype=object)
    if arr.size == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    if all(isinstance(v, (bool, np.bool_, int, np.integer)) for v in arr):
        y = np.asarray(arr, dtype=np.int64)
        if not set(np.unique(y)).issubset({0, 1}):
            raise UserError(f"{what}: integer labels must be 0/1, got values {sorted(map(int, np.unique(y)))}.")
        return np.ones(len(y), dtype=bool), y
    s = np.asarray([None if v is None else str(v).strip().lower() for v in arr], dtype=object)
    pos, neg = positive.strip().lower(), negative.strip().lower()
    keep = (s == pos) | (s == neg)
    if other := Counter(v for v in s[~keep] if v not in NON_DECISIVE):
        raise UserError(f"{what}: {sum(other.values())} of {len(s)} labels are neither {positive!r}, {negative!r} nor "
                        f"ambiguous/unlabelled ({', '.join(f'{v!r} x{n}' for v, n in other.most_common(8))}).",
                        f"relabel those rows {positive}, {negative} or ambiguous (case and spaces do not matter).")
    return keep, (s[keep] == pos).astype(np.int64)


def check_binary_labels(y: np.ndarray, *, what: str = "labels", min_per_class: int = 2) -> tuple[int, int]:
    """Raise a clear error for empty / one-class / too-small label vectors; return (n_positive, n_negative).

    ``min_per_class=2`` is the floor for a pooled SD (n-1 > 0 in each class)."""
    y = np.asarray(y)
    if y.size == 0:
        raise ValueError(f"{what}: empty (no honest/deceptive samples). Check the split name and label column.")
    n1 = int((y == 1).sum())
    n0 = int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        only = POSITIVE if n0 == 0 else NEGATIVE
        raise ValueError(
            f"{what}: only one class present ({n1 + n0} samples, all {only!r}); a between-class statistic needs "
            f"both {POSITIVE!r} and {NEGATIVE!r} samples."
        )
    if min(n1, n0) < min_per_class:
        raise ValueError(
            f"{what}: needs >= {min_per_class} samples per class, got {POSITIVE}={n1}, {NEGATIVE}={n0}."
        )
    return n1, n0


def class_size_warnings(y: np.ndarray, min_per_class: int, *, what: str = "split") -> list[str]:
    """Warnings (also logged) when a class is smaller than ``min_per_class``: small classes make d and probe
    accuracy noisy, and the report should say so next to the number."""
    y = np.asarray(y)
    out = []
    for cls, name in ((1, POSITIVE), (0, NEGATIVE)):
        n = int((y == cls).sum())
        if n < min_per_class:
            msg = f"{what}: only {n} {name} samples (< min_class_size={min_per_class}); statistics are noisy."
            logger.warning(msg)
            out.append(msg)
    return out
