"""Linear probes: stratified k-fold logistic regression, balanced accuracy mean +- std, AUROC, a label-permutation
null and bootstrap CIs; plus the lexical baseline (bag of words on the completion's first 30 characters).

Why the baseline: in the seed's data the answer word itself ("Slug" vs "Snail") separates the classes. If a
probe on those words matches the probe on SAE latents, the SAE adds nothing beyond the words.

Protocol: features are standardized inside each fold (``StandardScaler`` in a pipeline), L2 logistic regression
(C=1, lbfgs), ``StratifiedKFold(shuffle=True, random_state=seed)``. Balanced accuracy is computed per fold (mean +-
std across folds, as in the seed card); AUROC on the pooled out-of-fold probabilities. With groups, folds keep
units whole and the null refits the same folds under the randomization valid for the label layout
(:func:`~gemma4_saelens_ext.evals.nulls.null_design`; unbalanced mixed groups: the fit, the balanced accuracy and
the AUROC use the design's balance weights); the CIs resample units. Without groups: shuffled labels (default 100
refits) and a stratified row bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gemma4_saelens_ext.errors import check_finite
from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.layout import LabelLayout
from gemma4_saelens_ext.evals.nulls import NullDesign, auroc, null_design

logger = logging.getLogger(__name__)

__all__ = ["ProbeResult", "check_cv_labels", "grouped_folds", "default_probe", "lexical_probe_estimator", "cross_validated_probe", "first_chars"]


@dataclass
class ProbeResult:
    """A cross-validated probe: balanced accuracy and AUROC (mean over folds, unit-bootstrap CIs), each beside its
    null p-value, the row counts, the number of units of inference (``n_groups``) and a verdict in words."""

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
    #: the randomization of the null (e.g. "group flips (exact, all 256)")
    null: str = ""
    #: the label layout and the unit of inference
    layout: dict[str, Any] = field(default_factory=dict)
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


def _fit(m: Any, X: Any, y: np.ndarray, w: np.ndarray | None) -> Any:
    """Fit with sample weights when given (to a pipeline's last step)."""
    if w is None:
        return m.fit(X, y)
    if hasattr(m, "steps"):
        return m.fit(X, y, **{f"{m.steps[-1][0]}__sample_weight": w})
    return m.fit(X, y, sample_weight=w)


def _cv_oof(est: Any, X: Any, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
            w: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold probabilities and per-fold balanced accuracy."""
    proba = np.empty(len(y))
    fold_bacc = []
    for tr, te in folds:
        m = clone(est)
        Xtr = [X[i] for i in tr] if isinstance(X, list) else X[tr]
        Xte = [X[i] for i in te] if isinstance(X, list) else X[te]
        if len(np.unique(y[tr])) < 2:  # a null labelling can leave one class in training: predict it
            p = np.full(len(te), float(y[tr].mean()))
        else:
            _fit(m, Xtr, y[tr], None if w is None else w[tr])
            p = m.predict_proba(Xte)[:, 1]
        proba[te] = p
        fold_bacc.append(balanced_accuracy(y[te], (p >= 0.5).astype(int), None if w is None else w[te]))
    return proba, fold_bacc


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> float:
    """Mean per-class recall over the classes present (sklearn's ``balanced_accuracy_score`` without its input
    validation, which dominated the bootstrap's run time); ``w``: weighted recalls."""
    y, pred = np.asarray(y), np.asarray(pred)
    if w is None:
        recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    else:
        w = np.asarray(w, dtype=np.float64)
        recalls = [float(w[(y == c) & (pred == c)].sum() / w[y == c].sum()) for c in (0, 1) if w[y == c].sum() > 0]
    return float(np.mean(recalls)) if recalls else float("nan")


def _auroc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    return float(auroc(p, y, w)[0]) if 0 < y.sum() < len(y) else float("nan")


def _unit_bootstrap_ci(stat: Any, design: NullDesign, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """Percentile CI of ``stat(idx)`` over unit resamples (:meth:`NullDesign.bootstrap_counts`)."""
    members = [np.flatnonzero(design.codes == g) for g in range(design.layout.n_groups)]
    vals = [stat(np.concatenate([np.repeat(members[g], c[g]) for g in np.flatnonzero(c)]))
            for c in design.bootstrap_counts(n_bootstrap, seed)]
    return S.percentile_ci(np.asarray(vals))


def grouped_folds(y: np.ndarray, groups: Any, n_splits: int, seed: int, *, what: str = "probe") -> list[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedGroupKFold`` folds (every group wholly in one test fold); an error when there are fewer groups
    than folds; a test fold holding one class only is logged (``what=""``: quietly, as in the null's refits)."""
    codes = G.group_codes(groups, len(y))
    n_groups = int(codes.max()) + 1
    if n_groups < n_splits:
        raise ValueError(f"{what}: {n_groups} groups but {n_splits}-fold grouped CV needs >= {n_splits} groups; use "
                         f"n_splits={max(n_groups, 2)} or add prompts/questions.")
    folds = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, codes))
    for k, (_, te) in enumerate(folds):
        if what and len(np.unique(y[te])) < 2:
            logger.info("%s: grouped test fold %d holds one class only (balanced accuracy uses its recall)", what, k)
    return folds


def _null(est: Any, X: Any, y: np.ndarray, design: NullDesign | None, folds: list, fold_ids: Any,
          w: np.ndarray | None, n_splits: int, n_permutations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy and AUROC of the whole CV procedure under each null labelling (the design's draws, or
    shuffled rows without a design): folds are made again from each labelling, as from the observed one, so the
    observed and the null statistics are the same function of the labels."""
    if design is None:
        rng = np.random.default_rng(seed + 1)
        labels = [rng.permutation(y) for _ in range(n_permutations)]
    else:
        labels = list(design.labels().astype(np.int64))
    # flips of 1:1 units leave every unit's class counts, hence the stratified folds, as observed
    same_folds = design is not None and design.layout.kind == "balanced_within"
    null_b, null_a = np.empty(len(labels)), np.empty(len(labels))
    for b, yp in enumerate(labels):
        if design is None:
            pf = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(yp)), yp))
        else:
            pf = folds if same_folds else grouped_folds(yp, fold_ids, n_splits, seed, what="")
        pp, fb = _cv_oof(est, X, yp, pf, w)
        null_b[b], null_a[b] = np.mean(fb), _auroc(yp, pp, w)
    return null_b, null_a


def cross_validated_probe(
    acts: Any,
    y: Any,
    *,
    groups: Any = None,
    clusters: Any = None,
    layout: LabelLayout | None = None,
    name: str = "probe",
    estimator: Any = None,
    n_splits: int = 5,
    n_permutations: int = 100,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_class_size: int = 10,
    alpha: float = 0.05,
) -> ProbeResult:
    """k-fold CV probe with a null and bootstrap CIs. ``acts``: [n, k] array, or a list of strings when
    ``estimator`` starts with a text vectorizer (see :func:`lexical_probe_estimator`).

    ``groups`` (one id per row) and/or ``clusters`` (a coarser unit) or a ``layout``: folds keep units whole
    (``StratifiedGroupKFold``), the null refits the same folds under the layout's randomization, the CIs resample
    units. All ``None``: ``StratifiedKFold`` over rows, shuffled-label null, row bootstrap (independent rows
    assumed: on clustered pools this memorises prompts)."""
    y = np.asarray(y).astype(np.int64)
    X = acts
    if not isinstance(X, list):
        X = check_finite(np.asarray(X, dtype=np.float32), f"{name}: features")
    if len(X) != len(y):
        raise ValueError(f"{name}: {len(X)} feature rows but {len(y)} labels")
    n1, n0 = check_cv_labels(y, n_splits, what=name)
    warns = S.class_size_warnings(y, min_class_size, what=name)
    est = estimator if estimator is not None else default_probe(seed)
    design, w, fold_ids = None, None, None
    if groups is None and clusters is None and layout is None:
        folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        n_groups = len(y)
    else:
        design = null_design(y, groups, n_permutations=n_permutations, seed=seed + 1, clusters=clusters,
                             layout=layout)
        n_groups = design.layout.n_groups
        # prompt groups as the unit: fold on the caller's ids (the same folds as before layouts existed)
        fold_ids = groups if groups is not None and design.layout.unit == "prompt group" else design.codes
        folds = grouped_folds(y, fold_ids, n_splits, seed, what=name)
        w = design.weights if design.layout.n_unbalanced else None
        msg = design.unreachable_warning(alpha, name)
        if msg:
            warns.append(msg)
    proba, fold_bacc = _cv_oof(est, X, y, folds, w)
    bacc = float(np.mean(fold_bacc))
    auc = _auroc(y, proba, w)
    # the null refits the validated arrays many times: scikit-learn's per-call validation is skipped there
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        null_b, null_a = _null(est, X, y, design, folds, fold_ids, w, n_splits, n_permutations, seed)
    pred = (proba >= 0.5).astype(int)

    def stat_b(idx: np.ndarray) -> float:
        return balanced_accuracy(y[idx], pred[idx], None if w is None else w[idx])

    def stat_a(idx: np.ndarray) -> float:
        return _auroc(y[idx], proba[idx], None if w is None else w[idx])

    if design is None:
        ci_b = S.bootstrap_ci(stat_b, len(y), strata=y, n_bootstrap=n_bootstrap, seed=seed + 2)
        ci_a = S.bootstrap_ci(stat_a, len(y), strata=y, n_bootstrap=n_bootstrap, seed=seed + 3)
    else:
        ci_b = _unit_bootstrap_ci(stat_b, design, n_bootstrap, seed + 2)
        ci_a = _unit_bootstrap_ci(stat_a, design, n_bootstrap, seed + 3)
    n_null = len(null_b)
    pfun = (lambda o, nl: S.permutation_p(o, nl)) if design is None else design.p_value
    p_b = pfun(bacc, null_b) if n_null else float("nan")
    p_a = pfun(auc, null_a[np.isfinite(null_a)]) if n_null else float("nan")
    n_feat = X.shape[1] if isinstance(X, np.ndarray) and X.ndim == 2 else 0
    q95 = float(np.quantile(null_b, 0.95)) if n_null else float("nan")
    if design is None:
        words = S.verdict(f"{name} balanced accuracy", bacc, p_b, n_pos=n1, n_neg=n0, alpha=alpha, ci=ci_b)
        null_name = f"shuffled row labels ({n_null}; assumes independent rows)"
    else:
        se = float(np.std(fold_bacc)) / np.sqrt(len(fold_bacc))
        words = G.power_wording(f"{name} balanced accuracy", bacc, p_b, alpha=alpha, n_groups=n_groups,
                                n_rows=n1 + n0, mde=G.min_detectable(q95, se), null=design.short_name,
                                units=design.units)
        null_name = design.name
    unit = "rows; assumes independent rows" if design is None else f"whole {design.layout.unit}s"
    return ProbeResult(
        name=name, n_pos=n1, n_neg=n0, n_groups=n_groups, n_features=int(n_feat), n_splits=n_splits,
        folds=f"{'StratifiedGroupKFold' if design is not None else 'StratifiedKFold'} ({unit})",
        balanced_accuracy=bacc, balanced_accuracy_std=float(np.std(fold_bacc)),
        fold_balanced_accuracy=[float(v) for v in fold_bacc], auroc=auc,
        balanced_accuracy_ci=ci_b, auroc_ci=ci_a, p_balanced_accuracy=p_b, p_auroc=p_a,
        null_balanced_accuracy_mean=float(np.mean(null_b)) if n_null else float("nan"),
        null_balanced_accuracy_q95=q95,
        null_auroc_mean=float(np.nanmean(null_a)) if n_null else float("nan"),
        n_permutations=n_null, verdict=words, null=null_name,
        layout=design.layout.to_dict() if design is not None else {}, warnings=warns,
    )
