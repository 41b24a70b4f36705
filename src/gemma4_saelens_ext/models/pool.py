"""One load per model and precision in a run: a scoped pool of loaded models that ``load_model`` consults.

Inside ``with model_pool() as pool:`` every :func:`gemma4_saelens_ext.models.load.load_model` call first asks the
pool. A model already loaded from the same checkpoint at the same precision, on the same device and placement,
text-only the same way, serves the request when it holds the layer asked for: a full load serves any
``truncate_after_layer``, a load truncated after L serves layers <= L (their activations are the same bit for bit,
see docs/models.md). Otherwise the model loads and joins the pool (``load_model(..., keep=False)``: used once, not
kept). ``pool.loads`` lists every real load made while the pool was open (what the one-load-per-precision tests
count). Outside a pool ``load_model`` loads every time, as before.

The demo opens one pool around its stages, so the dataset, training and eval stages share one model; the
portability eval loads each other precision once and lets it go after use. Loads of one checkpoint share its
tokenizer (read-only in this package). A leaf: no package imports.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["LoadKey", "ModelPool", "model_pool", "active_pool"]


@dataclass(frozen=True)
class LoadKey:
    """What must match for a loaded model to serve another request (the hooked layer is checked apart)."""

    #: the resolved checkpoint folder
    source: str
    precision: str
    device: str
    text_only: bool
    lookups_on_cpu: bool


@dataclass
class ModelPool:
    """Loaded models of one run (see module docstring)."""

    #: (key, layer the load was truncated after or None for a full load, the LoadedModel)
    entries: list[tuple[LoadKey, int | None, Any]] = field(default_factory=list)
    #: every real load made while the pool was open: (key, truncated after)
    loads: list[tuple[LoadKey, int | None]] = field(default_factory=list)
    #: resolved checkpoint folder -> its tokenizer, shared by every load of that checkpoint (any precision; kept or
    #: not): parsing a Gemma tokenizer.json (262k entries) costs seconds per load, and the files are the same
    tokenizers: dict[str, Any] = field(default_factory=dict)

    def find(self, key: LoadKey, layer: int | None) -> Any | None:
        """A pooled model that serves ``key`` up to ``layer`` (None: the whole model is needed)."""
        for k, trunc, lm in self.entries:
            if k == key and (trunc is None or (layer is not None and layer <= trunc)):
                return lm
        return None

    def record(self, key: LoadKey, truncated_after: int | None, lm: Any, keep: bool) -> None:
        self.loads.append((key, truncated_after))
        self.tokenizers.setdefault(key.source, lm.tokenizer)
        if keep:
            self.entries.append((key, truncated_after, lm))

    def discard(self, lm: Any) -> None:
        """Let a model go (memory is freed once the caller drops its own references)."""
        self.entries = [e for e in self.entries if e[2] is not lm]

    def clear(self) -> None:
        self.entries.clear()
        self.tokenizers.clear()

    def load_count(self, precision: str | None = None) -> int:
        return sum(1 for k, _ in self.loads if precision is None or k.precision == precision)


_ACTIVE: contextvars.ContextVar[ModelPool | None] = contextvars.ContextVar("gemma4_model_pool", default=None)


def active_pool() -> ModelPool | None:
    """The pool of the innermost open :func:`model_pool`, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def model_pool(pool: ModelPool | None = None) -> Iterator[ModelPool]:
    """Share model loads inside the block (see module docstring). A pool made here lets its models go on exit; one
    passed in keeps them (to share loads across several blocks)."""
    owned = pool is None
    pool = ModelPool() if pool is None else pool
    token = _ACTIVE.set(pool)
    try:
        yield pool
    finally:
        _ACTIVE.reset(token)
        if owned:
            pool.clear()
