"""Grouped inference: the prompt group is the unit of every null, fold, bootstrap and subsample.

Calibration is checked on clustered synthetic pools with no honesty signal (tests/synthetic_pools.py): the
false-positive rate of the d_max test, the |d|>1 count test and the probe test must sit near alpha, a planted
latent that tracks honesty in every group must still be found, and the row-level methods must be shown failing on
the same pools (so these tests can fail)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from gemma4_saelens_ext.evals import cross_validated_probe, dvalue_analysis, replication_analysis
from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.dvalues import CellMoments
from gemma4_saelens_ext.evals.nulls import null_design
from gemma4_saelens_ext.evals.probes import balanced_accuracy
from synthetic_pools import clustered_pool

ALPHA = 0.05
#: the pool shape used for calibration: cell-specific cluster effects dominate, so |d| > 1 happens under the null
#: (about one latent per pool) and the count test is not degenerate
POOL = dict(n_latents=512, density=0.6, shared=0.3)


def test_flip_matrix_enumerates_exactly_and_min_p():
    flips, exact = G.flip_matrix(4, 1000, seed=0)
    assert exact and flips.shape == (16, 4)
    assert len({tuple(r) for r in flips}) == 16 and not flips[0].any()
    flips, exact = G.flip_matrix(12, 1000, seed=0)
    assert not exact and flips.shape == (1000, 12)

    def balanced(n_groups, n_permutations=1000):  # both labels 1:1 in every group: the flip design
        return null_design(np.tile([1, 0], n_groups), np.repeat(np.arange(n_groups), 2), n_permutations=n_permutations)

    assert balanced(5).min_p == pytest.approx(2 / 32)
    assert balanced(8).min_p == pytest.approx(2 / 256)
    assert balanced(20, 999).min_p == pytest.approx(1 / 1000)
    assert "need >= 6 groups" in balanced(5).unreachable_warning(0.05, "x")
    assert balanced(6).unreachable_warning(0.05, "x") is None


def test_cell_moment_kernel_equals_direct_d_on_flipped_and_resampled_rows():
    x, y, g, _ = clustered_pool(3, n_questions=5, per_cell=3, n_latents=20)
    cm = CellMoments(x, y, g)
    codes = G.group_codes(g, len(y))
    flips, _ = G.flip_matrix(cm.n_groups, 1000, seed=1)
    got = cm.flipped_d(flips)
    for b in (0, 5, 17, 31):
        yb = y ^ flips[b][codes]
        np.testing.assert_allclose(got[b], S.cohens_d(x, yb), atol=1e-8)
    counts = G.group_bootstrap_counts(cm.n_groups, 4, seed=2)
    got = cm.resampled_d(counts)
    for b in range(4):  # the resample written out row by row
        idx = np.concatenate([np.repeat(np.flatnonzero(codes == k), counts[b, k]) for k in range(cm.n_groups)])
        np.testing.assert_allclose(got[b], S.cohens_d(x[idx], y[idx]), atol=1e-8)


@pytest.mark.slow  # Monte-Carlo calibration (200 null pools)
def test_dvalues_calibrated_on_clustered_null_pools_and_row_level_fails():
    rej_dmax, rej_count, counts = [], [], []
    for seed in range(200):
        x, y, g, _ = clustered_pool(seed, **POOL)
        r = dvalue_analysis(x, y, groups=g, n_permutations=1000, n_bootstrap=20, min_class_size=2)
        assert r.n_groups == 8 and r.null.startswith("group flips (exact")
        rej_dmax.append(r.p_d_max <= ALPHA)
        rej_count.append(r.p_n_above <= ALPHA)
        counts.append(r.n_above)
    assert np.mean(counts) > 0.5  # the count statistic is not degenerate on these pools
    assert 0.02 <= np.mean(rej_dmax) <= 0.08, np.mean(rej_dmax)
    assert 0.02 <= np.mean(rej_count) <= 0.08, np.mean(rej_count)
    # the row-level null (independent rows) on the same pools: prompt identity certified as an effect
    row = [dvalue_analysis(*clustered_pool(seed, **POOL)[:2], n_permutations=200, n_bootstrap=20,
                           min_class_size=2).p_d_max <= ALPHA for seed in range(20)]
    assert np.mean(row) >= 0.5


def test_dvalues_find_a_planted_consistent_latent():
    found = []
    for seed in range(20):
        x, y, g, _ = clustered_pool(1000 + seed, planted=2.0, **POOL)
        r = dvalue_analysis(x, y, groups=g, n_permutations=1000, n_bootstrap=100, min_class_size=2)
        found.append(r.p_d_max <= ALPHA and r.d_max_latent == 0)
        assert r.d_max_ci[0] <= r.d_max <= r.d_max_ci[1] + 1e-9
    assert np.mean(found) >= 0.9


@pytest.mark.slow  # Monte-Carlo calibration (200 null pools, 16k probe fits)
def test_probe_calibrated_with_grouped_folds_and_row_level_memorises():
    est = LogisticRegression(solver="liblinear")
    rej, bacc = [], []
    for seed in range(200):
        x, y, g, _ = clustered_pool(seed, n_latents=12, density=0.6, shared=0.3)
        r = cross_validated_probe(x, y, groups=g, estimator=est, n_splits=4, n_permutations=19, n_bootstrap=20,
                                  min_class_size=2)
        assert r.folds.startswith("StratifiedGroupKFold") and r.n_groups == 8
        rej.append(r.p_balanced_accuracy <= ALPHA)
        bacc.append(r.balanced_accuracy)
    assert 0.02 <= np.mean(rej) <= 0.08, np.mean(rej)
    assert abs(np.mean(bacc) - 0.5) < 0.05
    planted = []
    for seed in range(10):
        x, y, g, _ = clustered_pool(500 + seed, n_latents=12, density=0.6, shared=0.3, planted=3.0)
        r = cross_validated_probe(x, y, groups=g, estimator=est, n_splits=4, n_permutations=19, n_bootstrap=20,
                                  min_class_size=2)
        planted.append(r.p_balanced_accuracy <= ALPHA)
    assert np.mean(planted) >= 0.9
    row = [cross_validated_probe(*clustered_pool(s, n_latents=12, density=0.6, shared=0.3)[:2], estimator=est,
                                 n_splits=4, n_permutations=19, n_bootstrap=20, min_class_size=2) for s in range(10)]
    assert np.mean([r.balanced_accuracy for r in row]) > 0.6  # the same prompts in train and test folds
    assert np.mean([r.p_balanced_accuracy <= ALPHA for r in row]) >= 0.8


def test_replication_selects_on_train_and_measures_on_eval():
    # planted: the train-selected latent replicates on new questions
    xt, yt, gt, _ = clustered_pool(7, planted=2.0, **POOL)
    xe, ye, ge, _ = clustered_pool(8, planted=2.0, **POOL)
    train_d = S.cohens_d(xt, yt)
    r = replication_analysis(xe, ye, train_d, groups=ge, top_n=5)
    assert r.latents[0] == 0 and r.replicated_latent == 0 and r.p <= 2 / 256
    assert r.eval_d[0] == pytest.approx(S.cohens_d(xe[:, [0]], ye)[0])
    assert "significant" in r.verdict and "8 groups" in r.verdict
    # null: the selected latents' eval d is chance; calibrated over pools
    rej = []
    for seed in range(100):
        xt, yt, _, _ = clustered_pool(2 * seed, **POOL)
        xe, ye, ge, _ = clustered_pool(2 * seed + 1, **POOL)
        rej.append(replication_analysis(xe, ye, S.cohens_d(xt, yt), groups=ge, top_n=10).p <= ALPHA)
    assert np.mean(rej) <= 0.1
    # on the selection rows themselves d is inflated: the train d_max exceeds the replicated value on average
    xt, yt, gt, _ = clustered_pool(11, **POOL)
    xe, ye, ge, _ = clustered_pool(12, **POOL)
    d = S.cohens_d(xt, yt)
    assert np.abs(d).max() > replication_analysis(xe, ye, d, groups=ge).replicated_d_max


def test_perfectly_separating_latent_is_infinite_and_listed():
    rng = np.random.default_rng(0)
    y = np.array([1, 0] * 10)
    g = np.repeat(np.arange(10), 2)
    x = rng.normal(size=(20, 5))
    x[:, 3] = np.where(y == 1, 2.0, 1.0)
    x[:, 4] = 0.0
    d = S.cohens_d(x, y)
    assert d[3] == math.inf and d[4] == 0.0
    r = dvalue_analysis(x, y, groups=g, n_permutations=1024, n_bootstrap=50, min_class_size=2)
    assert r.null == "group flips (exact, all 1024)"
    assert r.perfectly_separating == [3] and r.d_max == math.inf and r.d_max_latent == 3
    assert r.p_d_max == pytest.approx(2 / 1024)  # only the identity and the all-groups flip reach inf


def test_holm_against_hand_computation():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")}
    adj = G.holm(p)
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["d"])


def test_sample_groups_takes_whole_groups_seeded():
    groups = np.repeat([f"g{i}" for i in range(10)], 4)
    idx = G.sample_groups(groups, 13, seed=1)
    kept = set(groups[idx])
    assert len(idx) <= 13 and len(idx) == 4 * len(kept) == 12
    rev = groups[::-1]
    assert set(rev[G.sample_groups(rev, 13, seed=1)]) == kept  # depends on the group ids, not the row order
    assert {frozenset(groups[G.sample_groups(groups, 13, seed=s)]) for s in range(6)} != {frozenset(kept)}  # seeded
    assert len(G.sample_groups(groups, None, 0)) == 40


def test_resolve_groups_fallbacks():
    g, src, warn = G.resolve_groups([{"group": "q1", "prompt": "a"}, {"group": "q2", "prompt": "b"}])
    assert list(g) == ["q1", "q2"] and src == "group" and warn is None
    g, src, _ = G.resolve_groups([{"prompt": "a"}, {"prompt": "a"}, {"prompt": "b"}])
    assert src == "prompt" and g[0] == g[1] != g[2]
    g, src, warn = G.resolve_groups([{"text": "x"}, {"text": "y"}])
    assert src == "row" and "independent rows" in warn


def test_fast_balanced_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        p = rng.integers(0, 2, 30)
        assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
