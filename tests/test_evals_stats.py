"""Pure statistics vs independent computations (textbook loops, scipy), and calibration of the nulls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals import trend as T
from gemma4_saelens_ext.evals.dvalues import dvalue_analysis


def textbook_d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        a = [float(v) for v, lab in zip(x[:, j], y) if lab == 1]
        b = [float(v) for v, lab in zip(x[:, j], y) if lab == 0]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        va = sum((v - ma) ** 2 for v in a) / (len(a) - 1)
        vb = sum((v - mb) ** 2 for v in b) / (len(b) - 1)
        sp = math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2))
        out[j] = 0.0 if sp == 0 else (ma - mb) / sp
    return out


def test_cohens_d_matches_textbook_and_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, size=(57, 40)) + rng.normal(size=40) * 100  # large offsets
    x[:, :5] += 0.8 * (np.arange(57) % 3 == 0)[:, None]
    y = (np.arange(57) % 3 == 0).astype(int)
    d = S.cohens_d(x, y)
    np.testing.assert_allclose(d, textbook_d(x, y), rtol=1e-9, atol=1e-9)
    # scipy: equal-variance t = d / sqrt(1/n1 + 1/n0)
    t = sps.ttest_ind(x[y == 1], x[y == 0], equal_var=True).statistic
    n1, n0 = y.sum(), (1 - y).sum()
    np.testing.assert_allclose(d, t * math.sqrt(1 / n1 + 1 / n0), rtol=1e-8)
    # the float32 matrix kernel (used for nulls) agrees
    np.testing.assert_allclose(S.fast_cohens_d(x, y), d, atol=2e-4)


def test_weighted_kernel_complement_equals_explicit():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 12))
    x = x - x.mean(0)
    w1 = (rng.random((5, 30)) < 0.4).astype(float)
    a = S.weighted_cohens_d(x, w1)
    b = S.weighted_cohens_d(x, w1, 1 - w1)
    np.testing.assert_allclose(a, b, atol=1e-10)
    # each row equals the direct computation for that labelling
    for r in range(5):
        np.testing.assert_allclose(a[r], S.cohens_d(x, w1[r].astype(int)), atol=1e-9)


def test_zero_variance_latents_dead_zero_separating_infinite():
    rng = np.random.default_rng(3)
    y = np.array([1] * 6 + [0] * 6)
    x = rng.normal(size=(12, 4))
    x[:, 1] = 0.0  # dead
    x[:, 2] = np.where(y == 1, 2.0, 1.0)  # constant within each class, different between: perfectly separating
    d = S.cohens_d(x, y)
    assert d[1] == 0 and d[2] == np.inf and np.isfinite(d[[0, 3]]).all()
    fd = S.fast_cohens_d(x, y)
    assert fd[1] == 0 and np.isfinite(fd[[0, 3]]).all()
    r = dvalue_analysis(x, y, n_permutations=50, n_bootstrap=50, min_class_size=2)
    assert r.perfectly_separating == [2] and r.d_max_latent == 2


@settings(max_examples=25, deadline=None)
@given(
    scale=st.floats(0.1, 100),
    shift=st.floats(-1e3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_d_affine_invariant_and_antisymmetric(scale, shift, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, 6))
    y = np.array([0, 1] * 10)
    d = S.cohens_d(x, y)
    np.testing.assert_allclose(S.cohens_d(x * scale + shift, y), d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(S.cohens_d(x, 1 - y), -d, atol=1e-12)


def test_d_summary_and_counts():
    d = np.array([0.1, -1.5, 1.2, 0.9])
    s = S.d_summary(d, top_n=3)
    assert s["d_max"] == 1.5 and s["d_max_latent"] == 1 and s["n_above"] == 2
    assert s["top_latents"] == [1, 2, 3] and s["top_d"][0] == -1.5


def test_permutation_pvalues_uniform_under_null():
    """Calibration: with no effect, p(d_max) over many datasets is ~Uniform(0,1) (KS test)."""
    rng = np.random.default_rng(4)
    ps = []
    for rep in range(150):
        x = rng.normal(size=(24, 30))
        y = np.array([1] * 12 + [0] * 12)
        obs = S.d_summary(S.fast_cohens_d(x, y))["d_max"]
        null = S.permutation_null_d(x, y, n_permutations=199, seed=rep)["d_max"]
        ps.append(S.permutation_p(obs, null))
    ps = np.array(ps)
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    assert 0.35 < ps.mean() < 0.65


def test_permutation_p_small_with_planted_effect():
    rng = np.random.default_rng(5)
    y = np.array([1] * 20 + [0] * 20)
    x = rng.normal(size=(40, 200))
    x[:, 17] += 2.0 * y
    r = dvalue_analysis(x, y, n_permutations=1000, n_bootstrap=200, seed=0)
    assert r.d_max_latent == 17
    assert r.p_d_max <= 2 / 1001
    assert r.top_latents_p_fwer[0] <= 2 / 1001
    assert "above chance" in r.verdict and "n=40" in r.verdict
    assert r.d_max_ci[0] < r.d_max < r.d_max_ci[1] + 1e-9
    # and with no planted effect on a seed-card-sized sample, chance d_max is large yet the verdict says chance
    x0 = rng.normal(size=(38, 2000))
    y0 = np.array([1] * 19 + [0] * 19)
    r0 = dvalue_analysis(x0, y0, n_permutations=300, n_bootstrap=100, seed=1)
    assert r0.d_max > 0.9  # max over 2000 null latents is big
    assert r0.p_d_max > 0.01
    assert "indistinguishable from chance at n=38" in r0.verdict


def test_bootstrap_keeps_class_sizes_and_min_class_warning():
    rng = np.random.default_rng(6)
    y = np.array([1] * 4 + [0] * 30)
    x = rng.normal(size=(34, 10))
    r = dvalue_analysis(x, y, n_permutations=100, n_bootstrap=100, min_class_size=10)
    assert r.warnings and "only 4 honest" in r.warnings[0]
    b = S.bootstrap_d(x, y, n_bootstrap=2000)
    # class sizes fixed: a row-level bootstrap would leave no honest row in ~1.4% of resamples (d undefined)
    assert b["d_max"].shape == (2000,) and np.isfinite(b["d_max"]).all()
    # the same distribution as a plain loop that resamples each class with replacement (independent computation)
    loop = []
    for _ in range(2000):
        i = np.concatenate([rng.choice(np.flatnonzero(y == 1), 4), rng.choice(np.flatnonzero(y == 0), 30)])
        loop.append(np.abs(S.cohens_d(x[i], y[i])).max())
    se = np.hypot(b["d_max"].std(), np.std(loop)) / np.sqrt(2000)
    assert abs(b["d_max"].mean() - np.mean(loop)) < 4 * se
    assert abs(np.quantile(b["d_max"], 0.9) - np.quantile(loop, 0.9)) < 0.1 * np.quantile(loop, 0.9)


def test_label_errors():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="only one class"):
        S.cohens_d(x, np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        S.check_binary_labels(np.array([]))
    keep, y = S.encode_labels(["honest", "ambiguous", "deceptive", "honest"])
    assert keep.tolist() == [True, False, True, True] and y.tolist() == [1, 0, 1]


def test_spearman_and_slope_against_scipy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    assert T.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert T.slope(x, y) == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-10)
    alphas = [-2, -1, -0.5, 0, 0.5, 1, 2]
    res = T.spearman_permutation(alphas, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert res["exact"] and res["n_permutations"] == 5040
    assert res["rho"] == pytest.approx(1.0) and res["p"] == pytest.approx(2 / 5040)
    sl = T.slope_permutation(alphas, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert sl["p"] == pytest.approx(2 / 5040)
    flat = T.spearman_permutation(alphas, [0.5] * 7)
    assert flat["rho"] == 0.0 and flat["p"] == 1.0


def test_bootstrap_ci_generic():
    rng = np.random.default_rng(8)
    v = rng.normal(3.0, 1.0, size=200)
    lo, hi = S.bootstrap_ci(lambda idx: float(v[idx].mean()), len(v), n_bootstrap=500)
    assert lo < 3.0 < hi and hi - lo < 0.5


def test_d_max_ci_brackets_the_reported_effect_under_the_null():
    """The resampled max over many latents is biased upward; the reported CI (top latent's |d|) must still bracket
    the observed d_max, even with no effect and few samples (the seed card's regime)."""
    rng = np.random.default_rng(3)
    for rep in range(4):
        x = rng.normal(size=(24, 500))
        y = np.array([0, 1] * 12)
        r = dvalue_analysis(x, y, n_permutations=100, n_bootstrap=200, seed=rep)
        assert r.d_max_ci[0] <= r.d_max <= r.d_max_ci[1]


def test_steering_scales_against_direct_computation():
    from gemma4_saelens_ext.evals.steering import steering_scale

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) * np.array([100.0, 1, 1, 1, 1, 1, 1, 1])  # one outlier dimension, as in Gemma
    u = np.eye(8)[3]
    assert steering_scale(x, u, "residual_norm") == pytest.approx(np.mean([np.linalg.norm(r) for r in x]))
    assert steering_scale(x, u, "projection_std") == pytest.approx(np.std(x[:, 3]))
    with pytest.raises(ValueError, match="projection_std"):
        steering_scale(x, u, "bogus")


def test_unknown_steering_scale_is_refused_when_the_suite_loads():
    from gemma4_saelens_ext.evals.suite_file import load_suite

    with pytest.raises(ValueError, match="Unknown steering scale 'huge'"):
        load_suite("evals/demo.yaml", steering={"scale": "huge"})
