"""One extraction pass per set of rows: every number the families need from the model comes from one forward pass
per row (to the hooked layer), computed while the batch's token activations are in memory.

From the pass over a row set (a split, the positive control's rows, a regenerated stability pool):

* ``pooled``: the raw residual pooled over each completion (``last`` / ``mean`` / ``max``; BOS left out);
* ``latents[name]``: each SAE's latents per completion, the way that SAE was trained: per token then pooled over the
  completion (``tokens``), or on the pooled residual (``pooled``);
* ``tokens[i]``: every token's activation except BOS, for the rows asked for in ``keep_tokens`` only
  (reconstruction's and portability's inputs, the encode-convention check).

The pass reads :func:`gemma4_saelens_ext.activations.source.layer_batches`, the same batches and tensors that
:func:`~gemma4_saelens_ext.activations.source.activations` pools, and applies the same selection and pooling, so
``pooled`` and ``latents`` equal what separate ``activations(...)`` / ``activations(..., token_fn=encoder)`` calls
on the same rows return, bit for bit (``tests/test_evals_extraction.py``). Token activations of a row subset come
out of the subset's batches in a separate pass, and of the whole row set's batches here: equal up to float rounding
of a differently padded batch (the test states the tolerance).

Memory: ``pooled`` (rows x d_model) and each SAE's latents (rows x d_sae) as float32, plus the kept rows' tokens;
one batch of token activations at a time otherwise. :meth:`RowActivations.nbytes` reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "RowActivations", "extract"]


@dataclass(frozen=True)
class Encoder:
    """An SAE as the pass applies it."""

    name: str
    sae: Any
    #: ``tokens`` (latents per token, pooled over the completion) or ``pooled`` (latents of the pooled residual)
    unit: str


@dataclass
class RowActivations:
    """What one pass over ``n`` rows holds (float32 numpy)."""

    #: [n, d_model] raw residual pooled over each completion
    pooled: np.ndarray
    #: SAE name -> [n, d_sae] latents per completion
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    #: row index -> [n_tokens - 1, d_model], every token but BOS (only the rows kept)
    tokens: dict[int, np.ndarray] = field(default_factory=dict)

    def token_matrix(self, rows: Iterable[int]) -> np.ndarray:
        """The kept rows' token activations, concatenated in the order given."""
        rows = [int(i) for i in rows]
        missing = [i for i in rows if i not in self.tokens]
        if missing:
            raise ValueError(f"token activations of rows {missing[:5]} were not kept by the extraction pass; pass "
                             "them in extract(..., keep_tokens=...)")
        if not rows:
            return np.zeros((0, self.pooled.shape[1]), np.float32)
        return np.concatenate([self.tokens[i] for i in rows])

    def nbytes(self) -> dict[str, int]:
        return {"pooled": int(self.pooled.nbytes), "latents": int(sum(v.nbytes for v in self.latents.values())),
                "tokens": int(sum(v.nbytes for v in self.tokens.values())), "token_rows": len(self.tokens)}


def extract(
    lm: Any,
    texts: Sequence[str],
    layer: int,
    *,
    completion_start: Sequence[int],
    pooling: str,
    encoders: Sequence[Encoder] = (),
    keep_tokens: Iterable[int] = (),
    batch_size: int = 8,
    max_length: int | None = 256,
    progress: bool = False,
) -> RowActivations:
    """One forward pass over ``texts`` (see the module docstring). ``completion_start``: the character offset of
    each completion; ``keep_tokens``: row indices whose every-token activations are kept."""
    import torch

    from gemma4_saelens_ext.activations.source import layer_batches, pool
    from gemma4_saelens_ext.evals.saeio import encode_decode

    if pooling not in ("last", "mean", "max"):
        raise ValueError(f"pooling must be last, mean or max, got {pooling!r}")
    if len(completion_start) != len(texts):
        raise ValueError("completion_start needs one offset per text.")
    names = [e.name for e in encoders]
    if len(set(names)) != len(names):
        raise ValueError(f"encoder names must be unique, got {names}")
    bad = [e.unit for e in encoders if e.unit not in ("tokens", "pooled")]
    if bad:
        raise ValueError(f"encoder unit must be tokens or pooled, got {bad}")
    if not texts:
        raise ValueError("extract: no rows")
    keep = {int(i) for i in keep_tokens}
    per_token = [e for e in encoders if e.unit == "tokens"]
    n = len(texts)
    pooled: list[Any] = [None] * n
    lat: dict[str, list[Any]] = {e.name: [None] * n for e in per_token}
    tokens: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for b in layer_batches(lm, texts, layer, batch_size=batch_size, max_length=max_length, offsets=True,
                               progress=progress):
            for row, i in enumerate(b.idx):
                if i in keep:
                    tokens[i] = b.acts[row][b.mask[row]][1:].numpy().astype(np.float32)
                a = b.acts[row][b.span(row, int(completion_start[i]))]
                pooled[i] = pool(a, pooling)
                for e in per_token:
                    lat[e.name][i] = pool(torch.as_tensor(encode_decode(e.sae, a)[0]), pooling)
    out = RowActivations(torch.stack(pooled).numpy().astype(np.float32), tokens=tokens)
    for e in encoders:
        if e.unit == "tokens":
            out.latents[e.name] = torch.stack(lat[e.name]).numpy().astype(np.float32)
        else:
            out.latents[e.name] = encode_decode(e.sae, out.pooled)[0]
    logger.info("extraction: %d rows, %d SAEs, %s", n, len(encoders), out.nbytes())
    return out
