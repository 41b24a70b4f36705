"""The null follows the label layout: classification, designs, the generic grouped test, and their calibration.

Unit tests check each design against hand counts and independent computations (row-level loops, scikit-learn's
AUROC). The calibration tests (slow) run every test (d_max, the |d| count, replication, AUROC, probes) on pools
without an honesty signal for every layout the issue names and check the false-positive rate at alpha 0.05, the
power on a planted latent against a valid reference permutation test written independently here, and that the
schemes that are *not* valid fail where they should (today's flip null on one-label groups, a group-level null when
labels are constant per family, a within-group shuffle when the label follows the answer word)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.dvalues import CellMoments, dvalue_analysis, replication_analysis
from gemma4_saelens_ext.evals.layout import classify_layout, detect_cluster, join_codes
from gemma4_saelens_ext.evals.nulls import auroc, auroc_test, grouped_permutation_test, null_design
from synthetic_pools import layout_pool

ALPHA = 0.05


def _y_g(spec: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows from (n_honest, n_deceptive) per group."""
    y = np.concatenate([np.r_[np.ones(h, int), np.zeros(d, int)] for h, d in spec])
    g = np.concatenate([np.full(h + d, f"g{i}") for i, (h, d) in enumerate(spec)])
    return y, g


def test_classify_layout_kinds_and_counts():
    cases = {
        "constant_within": [(3, 0), (0, 2), (0, 5), (1, 0)],
        "balanced_within": [(2, 2), (1, 1), (3, 3)],
        "mixed_unbalanced": [(1, 3), (2, 2), (4, 1)],
        "combination": [(3, 0), (0, 2), (1, 3), (2, 2)],
    }
    words = {"constant_within": "one label per prompt group", "balanced_within": "both labels 1:1 in every",
             "mixed_unbalanced": "both labels in every prompt group, not all 1:1", "combination": "a combination"}
    for kind, spec in cases.items():
        y, g = _y_g(spec)
        lay = classify_layout(y, g)
        assert lay.kind == kind and lay.n_groups == len(spec) and lay.unit == "prompt group"
        assert lay.n_constant == sum(1 for h, d in spec if h == 0 or d == 0)
        assert lay.n_balanced == sum(1 for h, d in spec if h == d)
        assert lay.n_unbalanced == sum(1 for h, d in spec if 0 < h != d > 0)
        assert lay.n_honest.tolist() == [h for h, _ in spec] and lay.description.startswith(words[kind])
    lay = classify_layout(*_y_g(cases["constant_within"]))
    assert lay.n_constant_honest == 2 and "2 honest, 2 deceptive" in lay.description
    rows = classify_layout(np.array([1, 0, 1, 0, 0]))
    assert rows.kind == "constant_within" and rows.unit == "row" and "independent rows" in rows.unit_reason
    with pytest.raises(ValueError, match="groups has 3 entries but there are 5 rows"):
        classify_layout(np.array([1, 0, 1, 0, 0]), ["a", "b", "c"])


def test_clusters_join_groups_and_are_detected_from_row_columns():
    assert join_codes(np.array([0, 0, 1, 2, 3]), np.array([0, 1, 1, 2, 2])).tolist() == [0, 0, 0, 1, 1]
    # labels per family, groups per prompt: the family is the unit
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    g = np.array([f"p{i // 2}" for i in range(12)])
    fam = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2 + ["d"] * 2)
    rows = [{"scenario": "s", "family": f} for f in fam]
    ids, col, why = detect_cluster(rows, y, g)
    assert col == "family" and list(ids) == list(fam) and "constant within each family" in why
    lay = classify_layout(y, g, clusters=ids, cluster_name=col, cluster_reason=why)
    assert lay.n_groups == 4 and lay.n_input_groups == 6 and lay.unit == "family" and lay.kind == "constant_within"
    # a coarser column that carries both labels is not a cluster; neither is one that is not coarser
    mixed = [{"family": f} for f in ["a"] * 6 + ["b"] * 6]
    assert detect_cluster(mixed, y, g) == (None, None, None)
    assert detect_cluster([{"family": str(v)} for v in g], y, g) == (None, None, None)
    r = dvalue_analysis(np.random.default_rng(0).normal(size=(12, 3)), y, groups=g, clusters=fam, n_permutations=100,
                        n_bootstrap=10, min_class_size=2)
    assert r.n_groups == 4 and r.null == "cluster-label permutations (exact, all 6)" and r.layout["unit"] == "cluster"


def test_null_designs_enumerate_exactly_with_the_right_invariants():
    # one label per group, 2 of 6 honest: C(6,2) = 15 permutations, each keeping 2 honest groups
    y, g = _y_g([(2, 0), (0, 3), (0, 1), (4, 0), (0, 2), (0, 2)])
    d = null_design(y, g, n_permutations=1000)
    assert d.exact and d.n_draws == 15 and d.n_total == 15 and not d.flips[0].any()
    L = d.labels()
    lay = d.layout
    honest_groups = np.array([[L[b][lay.codes == k][0] for k in range(6)] for b in range(15)])
    assert (honest_groups.sum(1) == 2).all() and len({tuple(r) for r in honest_groups}) == 15
    assert d.min_p_one_sided == pytest.approx(1 / 15) and d.min_p == pytest.approx(1 / 15)  # 2 != 6 - 2
    assert d.name == "group-label permutations (exact, all 15)" and (d.weights == 1).all()
    # 3 of 6: the complement is in the set, so a |statistic| reaches 2/20 at best
    assert null_design(*_y_g([(1, 0)] * 3 + [(0, 1)] * 3)).min_p == pytest.approx(2 / 20)
    # balanced groups: today's flip matrix, unchanged
    y, g = _y_g([(2, 2)] * 5)
    d = null_design(y, g, n_permutations=1000, seed=3)
    flips, exact = G.flip_matrix(5, 1000, 3)
    assert d.exact == exact and (d.flips == flips).all() and d.min_p == pytest.approx(2 / 32)
    # mixed unbalanced: flips, with balance weights that keep each group's weighted class totals under every flip
    y, g = _y_g([(1, 3), (2, 2), (4, 1), (1, 1)])
    d = null_design(y, g, n_permutations=1000)
    assert d.exact and d.n_draws == 16 and d.name.startswith("balance-weighted group flips")
    w = d.weights
    for Lb in d.labels():
        for k in range(4):
            m = d.codes == k
            assert w[m & (Lb == 1)].sum() == pytest.approx(w[m & (Lb == 0)].sum())
    np.testing.assert_allclose(w[:4], [2 * 3 / 4, 2 * 1 / 4, 2 * 1 / 4, 2 * 1 / 4])
    # combination: C(3,1) permutations of the one-label groups x 2^2 flips of the mixed ones
    y, g = _y_g([(2, 0), (0, 1), (0, 3), (1, 3), (2, 2)])
    d = null_design(y, g, n_permutations=1000)
    assert d.exact and d.n_draws == 12 and len({tuple(r) for r in d.flips}) == 12 and not d.flips[0].any()
    assert d.min_p == pytest.approx(1 / 12)
    # too many to enumerate: sampled, p floor 1/(1+B)
    y, g = _y_g([(1, 0)] * 10 + [(0, 1)] * 30)
    d = null_design(y, g, n_permutations=200, seed=1)
    assert not d.exact and d.n_draws == 200 and (d.labels().sum(1) == 10).all() and d.min_p == pytest.approx(1 / 201)


def test_weighted_kernel_equals_direct_weighted_d_under_every_draw():
    x, y, g, _ = layout_pool(4, layout="combination", n_groups=8, honest_share=0.3, n_latents=7)
    d = null_design(y, g, n_permutations=50, seed=2)
    cm = CellMoments(x, y, codes=d.codes, cell_weights=d.cell_weights)
    got = cm.flipped_d(d.flips)
    for b in (0, 7, 31):
        np.testing.assert_allclose(got[b], S.cohens_d(x, d.labels()[b], weights=d.weights), atol=1e-8)
    # the observed weighted d written out as a textbook loop
    obs = cm.flipped_d(np.zeros((1, cm.n_groups), dtype=np.int8))[0]
    w, yb = d.weights, y.astype(bool)
    for j in range(3):
        v = x[:, j].astype(float)
        m1, m0 = np.average(v[yb], weights=w[yb]), np.average(v[~yb], weights=w[~yb])
        ss = (w[yb] * (v[yb] - m1) ** 2).sum() + (w[~yb] * (v[~yb] - m0) ** 2).sum()
        assert obs[j] == pytest.approx((m1 - m0) / math.sqrt(ss / (w.sum() - 2)), abs=1e-9)


def test_auroc_matches_sklearn_with_weights_and_ties():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # ties
    L = rng.integers(0, 2, size=(5, 60))
    w = rng.uniform(0.2, 2.0, size=60)
    got = auroc(s, L, w)
    for b in range(5):
        assert got[b] == pytest.approx(roc_auc_score(L[b], s, sample_weight=w), abs=1e-12)
        assert auroc(s, L[b])[0] == pytest.approx(roc_auc_score(L[b], s), abs=1e-12)
    assert np.isnan(auroc(s, np.ones(60))[0])


def test_generic_test_reproduces_dvalue_p_with_a_row_level_statistic():
    """d_max through the generic entry point, computed row by row with the design's labels and weights, gives the
    same p as the cell-sum kernel in dvalue_analysis (exact enumeration, every layout)."""
    for layout in ("constant", "mixed", "combination", "balanced"):
        x, y, g, _ = layout_pool(9, layout=layout, n_groups=7, honest_share=0.3, n_latents=5)

        def dmax(L, w):
            return np.array([np.abs(S.cohens_d(x, lab, weights=w)).max() for lab in L])

        t = grouped_permutation_test(dmax, y, g, n_permutations=5000)
        r = dvalue_analysis(x, y, groups=g, n_permutations=5000, n_bootstrap=10, min_class_size=1)
        assert t.exact and r.null == t.null and t.layout.kind == r.layout["kind"]
        assert t.statistic == pytest.approx(r.d_max) and t.p == pytest.approx(r.p_d_max)
    res = auroc_test(x[:, 0], y, g, alternative="two-sided", n_permutations=5000)
    assert res.statistic == pytest.approx(roc_auc_score(y, x[:, 0])) and 0 < res.p <= 1


def test_unreachable_p_is_warned_with_the_layout():
    y, g = _y_g([(2, 0), (3, 0), (0, 2), (0, 1)])
    x = np.random.default_rng(0).normal(size=(len(y), 4))
    r = dvalue_analysis(x, y, groups=g, n_permutations=1000, n_bootstrap=10, min_class_size=1)
    assert r.min_reachable_p == pytest.approx(2 / 6)
    assert any("one label per prompt group" in w and "smallest reachable p" in w for w in r.warnings)


def test_splits_sharing_a_group_are_refused():
    x = np.random.default_rng(0).normal(size=(8, 3))
    y = np.array([1, 0] * 4)
    with pytest.raises(ValueError, match=r"1 group\(s\) appear in both 'train' and 'eval': 'q2'"):
        replication_analysis(x, y, np.ones(3), groups=["q2", "q2", "q3", "q3", "q4", "q4", "q5", "q5"],
                             train_groups=["q0", "q1", "q2"])
    G.check_split_overlap(["a"], ["b"])  # disjoint: fine


def test_make_split_detects_a_family_cluster_or_takes_a_named_one():
    from gemma4_saelens_ext.evals.context import make_split

    rows = [{"prompt_id": f"p{i // 2}", "family": f"f{i // 4}", "label": "honest" if (i // 4) % 2 else "deceptive",
             "scenario": "s"} for i in range(16)]
    y = np.array([int(r["label"] == "honest") for r in rows])
    warns: list[str] = []
    sp = make_split("train", rows, y, warnings=warns)
    lay = sp.layout()
    assert sp.cluster_source == "family" and lay.unit == "family" and lay.n_groups == 4 and lay.n_input_groups == 8
    assert any("constant within each family" in w for w in warns) and "family is the unit" in lay.unit_reason
    assert sp.subset(np.arange(8)).layout().n_groups == 2  # subsets keep the clusters
    assert make_split("train", rows, y, detect_cluster=False).layout().unit == "prompt group"
    named = make_split("train", rows, y, cluster="scenario")
    assert named.layout().n_groups == 1 and "stats.cluster = 'scenario'" in named.layout().unit_reason
    with pytest.raises(ValueError, match=r"stats.cluster = 'source_file': 16 row\(s\) of split 'train' have no"):
        make_split("train", rows, y, cluster="source_file")


def test_suite_refuses_train_and_eval_sharing_a_group(tmp_path):
    import json

    from gemma4_saelens_ext.evals.suite import load_suite, run_suite

    rows = [{"split": sp, "group": g, "prompt_id": f"{g}.{sp}", "prompt": "Q: ", "completion": c, "label": lab}
            for sp, groups in (("train", ["q1", "q2", "q3"]), ("eval", ["q3", "q4", "q5"])) for g in groups
            for c, lab in (("yes", "honest"), ("no", "deceptive"))]
    path = tmp_path / "ds.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_suite("evals/demo.yaml")
    cfg.dataset.scripted_families, cfg.dataset.path = None, str(path)
    with pytest.raises(ValueError, match=r"dataset: 1 group\(s\) appear in both 'train' and 'eval': 'q3'"):
        run_suite(cfg, output_dir=str(tmp_path / "out"))
