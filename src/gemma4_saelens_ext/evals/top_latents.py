"""Top latents with examples: for each of the top-|d| latents, the texts of each class that activate it most
(the seed's T8 table). Pure: takes latents, texts and labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import stats as S

__all__ = ["top_examples"]


def top_examples(
    feats: np.ndarray,
    texts: Sequence[str],
    y: np.ndarray,
    latents: Sequence[int],
    d_values: Sequence[float] | None = None,
    *,
    n_examples: int = 2,
    max_chars: int = 80,
) -> list[dict[str, Any]]:
    """For each latent: its d (if given), and the top ``n_examples`` honest / deceptive texts by activation."""
    feats = np.asarray(feats)
    y = np.asarray(y).astype(bool)
    out = []
    for k, j in enumerate(latents):
        col = feats[:, j]
        entry: dict[str, Any] = {"latent": int(j)}
        if d_values is not None:
            entry["d"] = float(d_values[k])
        for name, mask in ((S.POSITIVE, y), (S.NEGATIVE, ~y)):
            idx = np.flatnonzero(mask)
            order = idx[np.argsort(-col[idx], kind="stable")][:n_examples]
            entry[f"top_{name}"] = [{"activation": float(col[i]), "text": texts[i][:max_chars]} for i in order]
        out.append(entry)
    return out
