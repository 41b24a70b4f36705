"""Readers for the detection card: probes trained on one dataset kind's TRAIN groups that score rows by how
deceptive they look (higher = more deceptive).

* ``dense`` — logistic regression on the pooled raw residual, standardised (``StandardScaler``).
* ``dense_topk`` — the same on the k residual channels with the largest class mean difference on train (SAEBench's
  ``llm_top_{k}``).
* ``sae_all`` — logistic regression on all of an SAE's latents, standardised.
* ``sae_topk`` — the k-sparse SAE probe, k in ``k_values``: the k latents with the largest ``|mean(deceptive) -
  mean(honest)|`` on train (SAEBench's sparse probing chooses them the same way), then a standardised logistic
  regression on those k.
* ``lexical`` — bag of words on the completion's first characters
  (:func:`gemma4_saelens_ext.evals.probes.lexical_probe_estimator`): if it matches the SAE readers, the SAE adds
  nothing beyond the words.

Every probe is L2 logistic regression (``C``, liblinear for the numeric ones). No cross-validation is needed: the
hyper-parameters are fixed, and the eval split's groups are never seen in training (checked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["READERS", "ReaderInputs", "FittedReader", "top_k_mean_diff", "fit_readers"]

#: every reader family, in the card's order
READERS = ("dense", "dense_topk", "sae_all", "sae_topk", "lexical")


@dataclass
class ReaderInputs:
    """What readers read for a set of rows (each optional; a reader whose input is missing is skipped)."""

    #: pooled raw residual of the hooked layer [n, d_model]
    acts: np.ndarray | None = None
    #: SAE name -> its latents per row [n, d_sae]
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    #: the completions (the lexical baseline reads their first characters)
    texts: list[str] | None = None

    def __len__(self) -> int:
        for v in (self.acts, *self.feats.values(), self.texts):
            if v is not None:
                return len(v)
        return 0

    def subset(self, idx: np.ndarray) -> "ReaderInputs":
        idx = np.asarray(idx, dtype=np.int64)
        return ReaderInputs(None if self.acts is None else self.acts[idx], {k: v[idx] for k, v in self.feats.items()},
                            None if self.texts is None else [self.texts[i] for i in idx])


@dataclass
class FittedReader:
    """A reader trained on one kind's train rows."""

    #: display name, e.g. "dense residual", "SAE demo: top-2 latents"
    name: str
    #: one of :data:`READERS`
    reader: str
    #: the SAE it reads (None for dense and lexical)
    sae: str | None
    #: k of a k-sparse reader
    k: int | None
    #: the latents (or residual channels) a k-sparse reader chose on train
    latents: list[int] | None
    estimator: Any = field(repr=False)
    lexical_chars: int = 30

    def _x(self, inputs: ReaderInputs) -> Any:
        if self.reader == "lexical":
            from gemma4_saelens_ext.evals.probes import first_chars

            return first_chars(inputs.texts, self.lexical_chars)
        x = inputs.acts if self.sae is None else inputs.feats[self.sae]
        return x if self.latents is None else x[:, self.latents]

    def scores(self, inputs: ReaderInputs) -> np.ndarray:
        """Deceptive-ness of each row: the probe's log-odds of ``deceptive`` (higher = more deceptive)."""
        return np.asarray(self.estimator.decision_function(self._x(inputs)), dtype=np.float64)

    def predict(self, inputs: ReaderInputs) -> np.ndarray:
        """1 = deceptive, at the probe's own 0.5 probability."""
        return np.asarray(self.estimator.predict(self._x(inputs))).astype(np.int64)


def top_k_mean_diff(X: np.ndarray, y_deceptive: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` columns with the largest ``|mean over deceptive rows - mean over honest rows|``, largest first
    (ties: lower index first). The selection rule of SAEBench's sparse probing."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y_deceptive).astype(bool)
    if X.shape[0] != len(y):
        raise ValueError(f"{X.shape[0]} rows but {len(y)} labels")
    if not (y.any() and (~y).any()):
        raise ValueError("top_k_mean_diff needs deceptive and honest rows")
    if not 1 <= k <= X.shape[1]:
        raise ValueError(f"k must be between 1 and the number of columns ({X.shape[1]}), got {k}")
    diff = np.abs(X[y].mean(0) - X[~y].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def _numeric_probe(C: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear", max_iter=1000,
                                                              random_state=seed))


def fit_readers(inputs: ReaderInputs, y_deceptive: Any, *, readers: Sequence[str] = ("dense", "sae_all", "sae_topk",
                "lexical"), k_values: Sequence[int] = (1, 2, 5), C: float = 1.0, seed: int = 0,
                lexical_chars: int = 30) -> list[FittedReader]:
    """Train every requested reader on ``inputs`` (one kind's TRAIN rows) with ``y_deceptive`` (1 = deceptive,
    0 = honest). Readers whose input is absent are skipped; k larger than the width is skipped with a log line."""
    from sklearn.base import clone

    from gemma4_saelens_ext.evals.probes import lexical_probe_estimator

    unknown = [r for r in readers if r not in READERS]
    if unknown:
        raise ValueError(f"unknown reader(s) {unknown}; valid: {list(READERS)}")
    y = np.asarray(y_deceptive).astype(np.int64)
    if len(y) != len(inputs):
        raise ValueError(f"{len(inputs)} input rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("readers need honest and deceptive training rows")
    base = _numeric_probe(C, seed)
    out: list[FittedReader] = []

    def fit(name: str, reader: str, sae: str | None, x: Any, k: int | None = None,
            latents: np.ndarray | None = None, est: Any = None) -> None:
        est = clone(base) if est is None else est
        xs = x if latents is None else x[:, latents]
        est.fit(xs, y)
        out.append(FittedReader(name, reader, sae, k, None if latents is None else [int(i) for i in latents], est,
                                lexical_chars))

    sparse = [("dense_topk", None, inputs.acts)] + [("sae_topk", name, f) for name, f in inputs.feats.items()]
    for r in readers:
        if r == "dense" and inputs.acts is not None:
            fit("dense residual", "dense", None, inputs.acts)
        elif r == "sae_all":
            for name, f in inputs.feats.items():
                fit(f"SAE {name}: all latents", "sae_all", name, f)
        elif r in ("dense_topk", "sae_topk"):
            for kind, name, x in sparse:
                if kind != r or x is None:
                    continue
                for k in k_values:
                    if k > x.shape[1]:
                        logger.info("%s: k=%d > %d columns, skipped", r, k, x.shape[1])
                        continue
                    lat = top_k_mean_diff(x, y, k)
                    label = f"residual top-{k} channels" if name is None else f"SAE {name}: top-{k} latents"
                    fit(label, r, name, x, k, lat)
        elif r == "lexical" and inputs.texts is not None:
            from gemma4_saelens_ext.evals.probes import first_chars

            est = lexical_probe_estimator(seed, C)
            est.fit(first_chars(inputs.texts, lexical_chars), y)
            out.append(FittedReader(f"lexical (first {lexical_chars} chars, BoW)", "lexical", None, None, None, est,
                                    lexical_chars))
    return out
