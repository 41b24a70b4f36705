"""Length-sorted batches: rows of similar length share a batch, so little of each batch is padding.

Used by every batched forward pass in the package (``source.activations``, its sharded twin
``pipeline.distributed.batch_plan``, and ``behavior.sampling.generate_completions``), so they all group rows the
same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["length_sorted_batches"]

T = TypeVar("T")


def length_sorted_batches(items: Sequence[T], key: Callable[[T], Any], batch_size: int) -> list[list[int]]:
    """Indices into ``items``, sorted by ``key(item)`` (stable: ties keep input order), cut into ``batch_size`` runs.

    ``key`` is usually a length (characters or tokens); it may be a tuple to break ties, e.g.
    ``(n_tokens, prompt_id)``. Every index appears exactly once; the last batch may be shorter.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(range(len(items)), key=lambda i: key(items[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
