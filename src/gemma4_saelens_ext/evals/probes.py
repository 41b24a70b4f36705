"""Linear probes: stratified k-fold logistic regression, balanced accuracy mean +- std, AUROC, a label-permutation
null and bootstrap CIs; plus the lexical baseline (bag of words on the completion's first 30 characters).

Why the baseline: in the seed's data the answer word itself ("Slug" vs "Snail") separates the classes. If a
probe on those words matches the probe on SAE latents, the SAE adds nothing beyond the words.

Protocol: features are standardized inside each fold (``StandardScaler`` in a pipeline), L2 logistic regression
(C=1, lbfgs), ``StratifiedKFold(shuffle=True, random_state=seed)``. Balanced accuracy is computed per fold (mean +-
std across folds, as in the seed card); AUROC on the pooled out-of-fold probabilities. The null refits the whole
CV on shuffled labels (default 100 times); the CI bootstraps the out-of-fold predictions (stratified).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gemma4_saelens_ext.evals import stats as S

logger = logging.getLogger(__name__)

__all__ = ["ProbeResult", "check_cv_labels", "default_probe", "lexical_probe_estimator", "cross_validated_probe", "first_chars"]


@dataclass
class ProbeResult:
    name: str
    n_pos: int
    n_neg: int
    n_features: int
    n_splits: int
    balanced_accuracy: float
    balanced_accuracy_std: float
    fold_balanced_accuracy: list[float]
    auroc: float
    balanced_accuracy_ci: tuple[float, float]
    auroc_ci: tuple[float, float]
    p_balanced_accuracy: float
    p_auroc: float
    null_balanced_accuracy_mean: float
    null_auroc_mean: float
    n_permutations: int
    verdict: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_cv_labels(y: np.ndarray, n_splits: int, *, what: str = "probe") -> tuple[int, int]:
    """Errors before fitting: empty, one class, or fewer samples per class than folds (suggest fewer folds)."""
    n1, n0 = S.check_binary_labels(np.asarray(y), what=what, min_per_class=1)
    small = min(n1, n0)
    if small < n_splits:
        cls = S.POSITIVE if n1 < n0 else S.NEGATIVE
        hint = f"use n_splits={small}" if small >= 2 else "collect more samples"
        raise ValueError(
            f"{what}: class {cls!r} has {small} samples but {n_splits}-fold stratified CV needs >= {n_splits} per "
            f"class; {hint} (or more data)."
        )
    return n1, n0


def default_probe(seed: int = 0, C: float = 1.0) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def first_chars(texts: Sequence[str], n_chars: int = 30) -> list[str]:
    return [t[:n_chars] for t in texts]


def lexical_probe_estimator(seed: int = 0, C: float = 1.0) -> Any:
    """Bag of words (unigrams, lower-cased, 1+ char tokens) -> logistic regression; the vectorizer is fit inside
    each fold so unseen words in the test fold carry no signal."""
    return make_pipeline(
        CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b"),
        LogisticRegression(C=C, max_iter=2000, random_state=seed),
    )


def _cv_oof(est: Any, X: Any, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[float]]:
    proba = np.empty(len(y))
    fold_bacc = []
    for tr, te in folds:
        m = clone(est)
        Xtr = [X[i] for i in tr] if isinstance(X, list) else X[tr]
        Xte = [X[i] for i in te] if isinstance(X, list) else X[te]
        m.fit(Xtr, y[tr])
        p = m.predict_proba(Xte)[:, 1]
        proba[te] = p
        fold_bacc.append(balanced_accuracy_score(y[te], (p >= 0.5).astype(int)))
    return proba, fold_bacc


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def cross_validated_probe(
    X: Any,
    y: Any,
    *,
    name: str = "probe",
    estimator: Any = None,
    n_splits: int = 5,
    n_permutations: int = 100,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_class_size: int = 10,
    alpha: float = 0.05,
) -> ProbeResult:
    """Stratified k-fold CV probe with permutation null and bootstrap CIs. ``X``: [n, k] array, or a list of
    strings when ``estimator`` starts with a text vectorizer (see :func:`lexical_probe_estimator`)."""
    y = np.asarray(y).astype(np.int64)
    if not isinstance(X, list):
        X = np.asarray(X, dtype=np.float32)
    if len(X) != len(y):
        raise ValueError(f"{name}: {len(X)} feature rows but {len(y)} labels")
    n1, n0 = check_cv_labels(y, n_splits, what=name)
    warns = S.class_size_warnings(y, min_class_size, what=name)
    est = estimator if estimator is not None else default_probe(seed)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = list(skf.split(np.zeros(len(y)), y))
    proba, fold_bacc = _cv_oof(est, X, y, folds)
    bacc = float(np.mean(fold_bacc))
    auc = _auroc(y, proba)
    rng = np.random.default_rng(seed + 1)
    null_b, null_a = np.empty(n_permutations), np.empty(n_permutations)
    for b in range(n_permutations):
        yp = rng.permutation(y)
        pf = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(yp)), yp))
        pp, fb = _cv_oof(est, X, yp, pf)
        null_b[b] = np.mean(fb)
        null_a[b] = _auroc(yp, pp)
    pred = (proba >= 0.5).astype(int)
    ci_b = S.bootstrap_ci(lambda idx: balanced_accuracy_score(y[idx], pred[idx]), len(y), strata=y,
                          n_bootstrap=n_bootstrap, seed=seed + 2)
    ci_a = S.bootstrap_ci(lambda idx: _auroc(y[idx], proba[idx]), len(y), strata=y, n_bootstrap=n_bootstrap, seed=seed + 3)
    p_b = S.permutation_p(bacc, null_b) if n_permutations else float("nan")
    p_a = S.permutation_p(auc, null_a[np.isfinite(null_a)]) if n_permutations else float("nan")
    n_feat = X.shape[1] if isinstance(X, np.ndarray) and X.ndim == 2 else 0
    return ProbeResult(
        name=name, n_pos=n1, n_neg=n0, n_features=int(n_feat), n_splits=n_splits,
        balanced_accuracy=bacc, balanced_accuracy_std=float(np.std(fold_bacc)),
        fold_balanced_accuracy=[float(v) for v in fold_bacc], auroc=auc,
        balanced_accuracy_ci=ci_b, auroc_ci=ci_a, p_balanced_accuracy=p_b, p_auroc=p_a,
        null_balanced_accuracy_mean=float(np.mean(null_b)) if n_permutations else float("nan"),
        null_auroc_mean=float(np.nanmean(null_a)) if n_permutations else float("nan"),
        n_permutations=n_permutations,
        verdict=S.verdict(f"{name} balanced accuracy", bacc, p_b, n_pos=n1, n_neg=n0, alpha=alpha, ci=ci_b),
        warnings=warns,
    )
