"""Calibration of every grouped test on every label layout (slow; vectorised, modest pool counts).

For each layout the issue names (one label per group 1:1 and 25/75 with group sizes 1-20, mixed 1:1 as the builder
makes, mixed 25/75 with exchangeable rows and with the label following the answer word, a combination, few groups
G = 4, 6, 8, labels constant per family while groups are prompts, and sparse TopK-like latents), pools without an
honesty signal give the false-positive rate of d_max, the |d| > 0.5 count, replication and a fixed-score AUROC at
alpha 0.05 (200 pools: a true rate of 0.05 exceeds 0.08 with probability ~2%; a rate of 0.15 stays under 0.08 with
probability < 1e-4). Power on a planted latent is compared with a valid reference permutation test written
independently below (row labels from the reference randomization, plain d through the row kernel). And the schemes
that are not valid are shown failing on the layouts where they fail, so these tests can fail."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.dvalues import CellMoments, dvalue_analysis, replication_analysis
from gemma4_saelens_ext.evals.layout import detect_cluster
from gemma4_saelens_ext.evals.nulls import auroc_test
from gemma4_saelens_ext.evals.probes import cross_validated_probe
from synthetic_pools import layout_pool

pytestmark = pytest.mark.slow

ALPHA, MAX_FPR, B = 0.05, 0.08, 99
CASES = {
    "one label per group, 1:1, sizes 1-20": dict(layout="constant", honest_share=0.5, sizes=(1, 20)),
    "one label per group, 25/75, sizes 1-20": dict(layout="constant", honest_share=0.25, sizes=(1, 20)),
    "mixed 1:1 in every group (the builder's), label follows the word": dict(layout="balanced", within="words",
                                                                             sizes=(2, 10)),
    "mixed 25/75, sizes 2-20, exchangeable rows": dict(layout="mixed", honest_share=0.25),
    "mixed 25/75, sizes 2-20, label follows the word": dict(layout="mixed", honest_share=0.25, within="words"),
    "combination: half one-label, half mixed 25/75": dict(layout="combination", honest_share=0.25),
    "few groups: G=4, mixed 1:1": dict(layout="balanced", n_groups=4, within="words"),
    "few groups: G=6, one label per group": dict(layout="constant", n_groups=6),
    "few groups: G=8, mixed 25/75": dict(layout="mixed", n_groups=8, honest_share=0.25),
    "labels per family (8 families), groups per prompt": dict(layout="constant", n_families=8),
    "sparse TopK-like latents (8 of 128), one label per group 25/75": dict(layout="constant", honest_share=0.25,
                                                                           n_latents=128, topk=8),
    "sparse TopK-like latents (8 of 128), mixed 25/75": dict(layout="mixed", honest_share=0.25, n_latents=128,
                                                             topk=8),
}


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)  # the few-group cases warn on every pool
    yield
    logging.disable(logging.NOTSET)


def _cluster(f, y, g):
    """The family column, when the labels are constant within it (the suite's detection)."""
    return detect_cluster([{"family": v} for v in f], y, g)[0]


def _grouped_tests(seed: int, conf: dict, planted: float = 0.0) -> list[float]:
    """p of d_max, of the |d| > 0.5 count, of replication (latents chosen on an independent pool of the same
    design) and of the AUROC of latent 0, under the null the layout calls for."""
    x, y, g, f = layout_pool(2 * seed, planted=planted, **conf)
    xt, yt, _, _ = layout_pool(2 * seed + 1, planted=planted, **conf)
    cl = _cluster(f, y, g)
    kw = dict(groups=g, clusters=cl, n_permutations=B, seed=seed)
    r = dvalue_analysis(x, y, n_bootstrap=2, min_class_size=1, threshold=0.5, **kw)
    rep = replication_analysis(x, y, S.cohens_d(xt, yt), n_bootstrap=2, **kw)
    auc = auroc_test(x[:, 0], y, alternative="two-sided", **kw)
    return [r.p_d_max, r.p_n_above, rep.p, auc.p]


@pytest.mark.parametrize("case", list(CASES))
def test_false_positive_rate_per_layout(case):
    conf = CASES[case]
    p = np.array([_grouped_tests(s, conf) for s in range(200)])
    fpr = (p <= ALPHA).mean(0)
    assert (fpr <= MAX_FPR).all(), dict(zip(["d_max", "count", "replication", "AUROC"], fpr))


def _reference_p(x, y, unit, kind: str, seed: int) -> float:
    """A valid reference test of d_max written row by row: one-label units' labels permuted across units, mixed
    units either shuffled within the unit (``within``: valid when a unit's rows are exchangeable) or flipped
    (``flip``: valid for 1:1 units); plain d through the row kernel; p = (1 + k) / (1 + B)."""
    rng = np.random.default_rng(10_000 + seed)
    u = np.unique(unit, return_inverse=True)[1]
    n1, n = np.bincount(u, weights=y), np.bincount(u)
    const = (n1 == 0) | (n1 == n)
    L = np.tile(y, (B, 1))
    for b in range(B):
        lab = np.zeros(len(n), int)
        lab[const] = rng.permutation((n1[const] > 0).astype(int))
        L[b, const[u]] = lab[u[const[u]]]
        for k in np.flatnonzero(~const):
            idx = np.flatnonzero(u == k)
            L[b, idx] = (1 - y[idx] if rng.random() < 0.5 else y[idx]) if kind == "flip" else rng.permutation(y[idx])
    null = np.abs(S.weighted_cohens_d(S._centred(x, np.float64), L.astype(np.float64))).max(1)
    return (1 + int((null >= np.abs(S.cohens_d(x, y)).max() - 1e-9).sum())) / (1 + B)


POWER = [  # (case, planted shift on latent 0 of honest rows, reference for mixed units)
    ("one label per group, 25/75, sizes 1-20", 1.8, "within"),
    ("mixed 1:1 in every group (the builder's), label follows the word", 0.8, "flip"),
    ("mixed 25/75, sizes 2-20, exchangeable rows", 0.6, "within"),
    ("combination: half one-label, half mixed 25/75", 1.2, "within"),
    ("labels per family (8 families), groups per prompt", 3.5, "within"),
    ("sparse TopK-like latents (8 of 128), mixed 25/75", 1.5, "within"),
]


@pytest.mark.parametrize("case,planted,kind", POWER)
def test_power_is_within_a_tenth_of_a_valid_reference_test(case, planted, kind):
    conf = CASES[case]
    ours, ref = [], []
    for s in range(60):
        x, y, g, f = layout_pool(5000 + s, planted=planted, **conf)
        cl = _cluster(f, y, g)
        r = dvalue_analysis(x, y, groups=g, clusters=cl, n_permutations=B, n_bootstrap=2, min_class_size=1, seed=s)
        ours.append(r.p_d_max <= ALPHA)
        ref.append(_reference_p(x, y, f if cl is not None else g, kind, s) <= ALPHA)
    assert 0.3 <= np.mean(ref) <= 0.98, np.mean(ref)  # an informative effect size: neither hopeless nor certain
    assert np.mean(ours) >= np.mean(ref) - 0.1, (np.mean(ours), np.mean(ref))


def _old_flip_p(x, y, g) -> float:
    """Today's null before layouts: whole groups flipped whatever their composition."""
    cm = CellMoments(x, y, g)
    flips, exact = G.flip_matrix(cm.n_groups, B, 0)
    obs = np.abs(cm.flipped_d(np.zeros((1, cm.n_groups), dtype=np.int8))).max()
    return G.flip_p(obs, np.abs(cm.flipped_d(flips)).max(1), exact)


def test_invalid_schemes_fail_where_they_should():
    """(1) The old flip null on one-label groups 25/75 (the issue's first design); (2) a group-level permutation
    when labels are constant per family; (3) a within-group shuffle when the label follows the answer word (why
    mixed unbalanced groups get balance-weighted flips, not a shuffle). Each beside the chosen design on the same
    pools."""
    def rates(case, bad):
        out = []
        for s in range(100):
            x, y, g, f = layout_pool(2 * s, **CASES[case])
            cl = _cluster(f, y, g)
            r = dvalue_analysis(x, y, groups=g, clusters=cl, n_permutations=B, n_bootstrap=2, min_class_size=1)
            out.append((r.p_d_max <= ALPHA, bad(x, y, g, f, s) <= ALPHA))
        return np.mean(out, 0)

    good, old = rates("one label per group, 25/75, sizes 1-20", lambda x, y, g, f, s: _old_flip_p(x, y, g))
    assert old >= 0.2 and good <= MAX_FPR, (old, good)
    good, grp = rates("labels per family (8 families), groups per prompt",
                      lambda x, y, g, f, s: _reference_p(x, y, g, "within", s))
    assert grp >= 0.4 and good <= MAX_FPR, (grp, good)
    good, shuf = rates("mixed 25/75, sizes 2-20, label follows the word",
                       lambda x, y, g, f, s: _reference_p(x, y, g, "within", s))
    assert shuf >= 0.8 and good <= MAX_FPR, (shuf, good)


@pytest.mark.parametrize("case", ["one label per group, 25/75, sizes 1-20",
                                  "mixed 25/75, sizes 2-20, exchangeable rows",
                                  "labels per family (8 families), groups per prompt"])
def test_probe_null_calibrated_on_new_layouts(case):
    """The probe refits its grouped folds under the layout's randomization (balance-weighted fits on mixed
    unbalanced groups; whole families when labels are constant per family)."""
    est = LogisticRegression(solver="liblinear")
    conf = dict(CASES[case], n_latents=8, n_groups=16, sizes=(1, 12))
    rej = []
    for s in range(100):
        x, y, g, f = layout_pool(s, **conf)
        r = cross_validated_probe(x, y, groups=g, clusters=_cluster(f, y, g), estimator=est, n_splits=2,
                                  n_permutations=19, n_bootstrap=2, min_class_size=1, seed=s)
        rej.append(r.p_balanced_accuracy <= ALPHA)
    assert np.mean(rej) <= MAX_FPR, np.mean(rej)
