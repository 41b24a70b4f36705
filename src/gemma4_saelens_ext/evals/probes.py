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
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gemma4_saelens_ext.errors import check_finite
from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S

logger = logging.getLogger(__name__)

__all__ = ["ProbeResult", "check_cv_labels", "grouped_folds", "default_probe", "lexical_probe_estimator", "cross_validated_probe", "first_chars"]


@dataclass
class ProbeResult:
    name: str
    n_pos: int
    n_neg: int
    n_groups: int
    n_features: int
    n_splits: int
    #: how the folds were made
    folds: str
    balanced_accuracy: float
    balanced_accuracy_std: float
    fold_balanced_accuracy: list[float]
    auroc: float
    balanced_accuracy_ci: tuple[float, float]
    auroc_ci: tuple[float, float]
    p_balanced_accuracy: float
    p_auroc: float
    null_balanced_accuracy_mean: float
    null_balanced_accuracy_q95: float
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
        fold_bacc.append(balanced_accuracy(y[te], (p >= 0.5).astype(int)))
    return proba, fold_bacc


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present (sklearn's ``balanced_accuracy_score`` without its input
    validation, which dominated the bootstrap's run time)."""
    y, pred = np.asarray(y), np.asarray(pred)
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def grouped_folds(y: np.ndarray, groups: Any, n_splits: int, seed: int, *, what: str = "probe") -> list[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedGroupKFold`` folds (every group wholly in one test fold); an error when there are fewer groups
    than folds or a test fold would hold one class only."""
    codes = G.group_codes(groups, len(y))
    n_groups = int(codes.max()) + 1
    if n_groups < n_splits:
        raise ValueError(f"{what}: {n_groups} groups but {n_splits}-fold grouped CV needs >= {n_splits} groups; use "
                         f"n_splits={max(n_groups, 2)} or add prompts/questions.")
    folds = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, codes))
    for k, (_, te) in enumerate(folds):
        if len(np.unique(y[te])) < 2:
            logger.info("%s: grouped test fold %d holds one class only (balanced accuracy uses its recall)", what, k)
    return folds


def cross_validated_probe(
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    name: str = "probe",
    estimator: Any = None,
    n_splits: int = 5,
    n_permutations: int = 100,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_class_size: int = 10,
    alpha: float = 0.05,
) -> ProbeResult:
    """k-fold CV probe with a null and bootstrap CIs. ``X``: [n, k] array, or a list of strings when
    ``estimator`` starts with a text vectorizer (see :func:`lexical_probe_estimator`).

    ``groups`` (one id per row): folds keep groups whole (``StratifiedGroupKFold``), the null refits the same
    folds with the labels of whole groups flipped, the CIs resample groups. ``None``: ``StratifiedKFold`` over
    rows, shuffled-label null, row bootstrap (independent rows assumed: on clustered pools this memorises prompts)."""
    y = np.asarray(y).astype(np.int64)
    if not isinstance(X, list):
        X = check_finite(np.asarray(X, dtype=np.float32), f"{name}: features")
    if len(X) != len(y):
        raise ValueError(f"{name}: {len(X)} feature rows but {len(y)} labels")
    n1, n0 = check_cv_labels(y, n_splits, what=name)
    warns = S.class_size_warnings(y, min_class_size, what=name)
    est = estimator if estimator is not None else default_probe(seed)
    if groups is None:
        folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        n_groups, codes = len(y), None
    else:
        folds = grouped_folds(y, groups, n_splits, seed, what=name)
        codes = G.group_codes(groups, len(y))
        n_groups = int(codes.max()) + 1
        w = G.small_group_warning(n_groups, n_permutations, alpha, name)
        if w:
            warns.append(w)
    proba, fold_bacc = _cv_oof(est, X, y, folds)
    bacc = float(np.mean(fold_bacc))
    auc = _auroc(y, proba)
    null_b, null_a = np.empty(n_permutations), np.empty(n_permutations)
    if codes is None:
        rng = np.random.default_rng(seed + 1)
        for b in range(n_permutations):
            yp = rng.permutation(y)
            pf = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(yp)), yp))
            pp, fb = _cv_oof(est, X, yp, pf)
            null_b[b], null_a[b] = np.mean(fb), _auroc(yp, pp)
    else:
        flips, exact = G.flip_matrix(n_groups, n_permutations, seed + 1)  # exact enumeration may be fewer
        null_b, null_a = np.empty(len(flips)), np.empty(len(flips))
        for b, yp in enumerate(G.flip_labels(y, codes, flips).astype(np.int64)):
            pp, fb = _cv_oof(est, X, yp, folds)
            null_b[b], null_a[b] = np.mean(fb), _auroc(yp, pp)
    pred = (proba >= 0.5).astype(int)
    ci_b = S.bootstrap_ci(lambda idx: balanced_accuracy(y[idx], pred[idx]), len(y), strata=y,
                          n_bootstrap=n_bootstrap, seed=seed + 2, groups=codes)
    ci_a = S.bootstrap_ci(lambda idx: _auroc(y[idx], proba[idx]), len(y), strata=y, n_bootstrap=n_bootstrap,
                          seed=seed + 3, groups=codes)
    n_null = len(null_b)
    if codes is None:
        exact = False
    p_b = G.flip_p(bacc, null_b, exact) if n_null else float("nan")
    p_a = G.flip_p(auc, null_a[np.isfinite(null_a)], exact) if n_null else float("nan")
    n_feat = X.shape[1] if isinstance(X, np.ndarray) and X.ndim == 2 else 0
    q95 = float(np.quantile(null_b, 0.95)) if n_null else float("nan")
    if codes is None:
        words = S.verdict(f"{name} balanced accuracy", bacc, p_b, n_pos=n1, n_neg=n0, alpha=alpha, ci=ci_b)
    else:
        se = float(np.std(fold_bacc)) / np.sqrt(len(fold_bacc))
        words = G.power_wording(f"{name} balanced accuracy", bacc, p_b, alpha=alpha, n_groups=n_groups,
                                n_rows=n1 + n0, mde=G.min_detectable(q95, se))
    return ProbeResult(
        name=name, n_pos=n1, n_neg=n0, n_groups=n_groups, n_features=int(n_feat), n_splits=n_splits,
        folds="StratifiedGroupKFold (whole groups)" if codes is not None else "StratifiedKFold (rows; assumes independent rows)",
        balanced_accuracy=bacc, balanced_accuracy_std=float(np.std(fold_bacc)),
        fold_balanced_accuracy=[float(v) for v in fold_bacc], auroc=auc,
        balanced_accuracy_ci=ci_b, auroc_ci=ci_a, p_balanced_accuracy=p_b, p_auroc=p_a,
        null_balanced_accuracy_mean=float(np.mean(null_b)) if n_null else float("nan"),
        null_balanced_accuracy_q95=q95,
        null_auroc_mean=float(np.nanmean(null_a)) if n_null else float("nan"),
        n_permutations=n_null, verdict=words, warnings=warns,
    )
