"""The detection card, its readers and the transfer matrix.

Kernels are checked against independent computations (sklearn's AUROC, hand counts, a direct argsort); the grouped
AUROC test is checked for calibration on null pools shaped like each dataset kind's label layout, and a planted
deception direction must be found through the readers end to end. A row-level test is shown failing on the same
clustered null pools, so the calibration tests can fail."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gemma4_saelens_ext.evals import detection as DT
from gemma4_saelens_ext.evals import nulls as N
from gemma4_saelens_ext.evals.groups import check_split_overlap
from gemma4_saelens_ext.evals.detection_run import (
    DetectionData, render_detection, run_detection, sparse_probing_results,
)
from gemma4_saelens_ext.evals.readers import ReaderInputs, fit_readers, top_k_mean_diff

ALPHA = 0.05
N_POOLS = 300
B = 200


# ------------------------------------------------------------------------------------------ kernels


def test_auroc_kernels_match_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=80), 1)  # many ties
    L = rng.integers(0, 2, (20, 80)).astype(np.int8)
    want = [roc_auc_score(row, s) for row in L]
    np.testing.assert_allclose(N.auroc(s, L), want, atol=1e-12)  # the rank form (unit weights)
    np.testing.assert_allclose(N.weighted_auroc(s, L, 1 - L), want, atol=1e-12)
    y = L[0]
    for _ in range(5):  # integer weights = rows repeated
        w = rng.integers(0, 4, 80).astype(float)
        rep = np.repeat(np.arange(80), w.astype(int))
        got = N.weighted_auroc(s, (w * y)[None], (w * (1 - y))[None])[0]
        assert got == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)
        assert N.auroc(s, y, w)[0] == pytest.approx(got, abs=1e-12)  # the weighted form
    assert np.isnan(N.auroc(s, np.ones((1, 80), np.int8))[0])
    assert N.auroc(-s, y)[0] == pytest.approx(1 - roc_auc_score(y, s))  # orientation: higher = positive


def test_threshold_recall_and_honest_fpr_against_hand_counts():
    control = np.arange(200, dtype=float)  # 0..199: at 1%, 2 control rows may sit above the threshold
    t, level, reached, note = DT.threshold_at_fpr(control, 0.01)
    assert (t, level, reached, note) == (197.0, 0.01, 0.01, None)
    dec = np.array([150.0, 197.0, 198.0, 250.0, 300.0])
    hon = np.array([10.0, 198.5, 100.0, 120.0])
    s = np.r_[dec, hon, control]
    labels = ["deceptive"] * 5 + ["honest"] * 4 + ["control"] * 200
    groups = [f"d{i}" for i in range(5)] + [f"d{i}" for i in range(4)] + [f"c{i}" for i in range(200)]
    f = DT.detection_figures(s, labels, groups, n_permutations=50, n_bootstrap=50)
    assert f.threshold == 197.0 and f.control_fpr == 0.01
    assert f.recall_at_threshold.value == pytest.approx(3 / 5)  # 198, 250, 300 > 197 (197 itself is not flagged)
    assert f.honest_fpr_at_threshold.value == pytest.approx(1 / 4)  # 198.5
    assert f.auroc_honest_deceptive.value == pytest.approx(roc_auc_score([1] * 5 + [0] * 4, s[:9]))
    # 40 control rows cannot set 1%: the level is 1/40 and the card says so
    t, level, reached, note = DT.threshold_at_fpr(np.arange(40.0), 0.01)
    assert level == 1 / 40 and t == 38.0 and reached == 1 / 40 and "40 control rows" in note


def test_weighted_threshold_equals_threshold_on_repeated_rows():
    rng = np.random.default_rng(1)
    s = rng.normal(size=150)
    w = rng.integers(0, 3, (6, 150)).astype(float)
    t = DT.weighted_threshold(s, w, 0.05)
    for b in range(6):
        rep = np.repeat(s, w[b].astype(int))
        assert t[b] == DT.threshold_at_fpr(rep, 0.05)[0]
        assert (rep > t[b]).sum() <= np.floor(0.05 * len(rep) + 1e-9) < (rep >= t[b]).sum()


def test_top_k_mean_diff_matches_direct_argsort():
    rng = np.random.default_rng(2)
    X = np.maximum(rng.normal(size=(60, 30)), 0)
    y = rng.integers(0, 2, 60)
    direct = np.argsort(-np.abs(X[y == 1].mean(0) - X[y == 0].mean(0)), kind="stable")
    for k in (1, 2, 5):
        assert top_k_mean_diff(X, y, k).tolist() == direct[:k].tolist()
    with pytest.raises(ValueError, match="k must be between"):
        top_k_mean_diff(X, y, 31)


def test_overlapping_train_and_eval_groups_are_refused():
    with pytest.raises(ValueError, match=r"2 (prompt )?group\(s\).*g1'?, '?g2"):
        check_split_overlap(["g0", "g1", "g2"], ["g1", "g2", "g3"], names=("training rows", "evaluation rows"))
    tr, ev = _kind_data(3, "instructed_pairs", 8, planted=1.0), _kind_data(4, "instructed_pairs", 8, planted=1.0)
    ev.groups[:] = tr.groups[: len(ev.groups)]
    with pytest.raises(ValueError, match="readers trained on instructed_pairs"):
        run_detection(tr, ev, readers=["dense"], k_values=[1], n_permutations=10, n_bootstrap=10)


def test_card_design_names_the_layout_and_the_unit():
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    kw = dict(n_permutations=100, seed=0)
    lay = DT.card_design(y, list("aabbccdd"), **kw).layout
    assert lay.kind == "combination" and lay.unit_kind.tolist() == [1, 1, 0, 0]
    assert DT.card_design([1, 0, 1, 0], list("aabb"), **kw).layout.kind == "balanced_within"
    assert DT.card_design([1, 1, 0, 0], list("abcd"), **kw).layout.kind == "constant_within"
    assert DT.card_design([1, 1, 0, 1, 0, 0], list("aaabbb"), **kw).layout.kind == "mixed_unbalanced"
    # a group with one label: the cluster is the unit (whether or not the labels are constant within it) ...
    for yc in ([1, 1, 0, 0], [1, 0, 1, 0]):
        lay = DT.card_design(yc, list("abcd"), clusters=list("xxyy"), **kw).layout
        assert lay.unit == "cluster" and lay.n_groups == 2 and "hold one label" in lay.unit_reason
    # ... with both labels in every group, a cluster's effect cancels inside the groups: the group stays the unit
    lay = DT.card_design([1, 0, 1, 0], list("aabb"), clusters=list("xxxx"), **kw).layout
    assert lay.unit == "prompt group" and lay.n_groups == 2


def test_card_design_keeps_each_unit_and_carries_the_balance_weights_into_the_bootstrap():
    y = np.array([1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0])
    groups = ["bal"] * 4 + ["unb"] * 4 + ["c1", "c2", "c3", "c4", "c5"]
    d = DT.card_design(y, groups, n_permutations=500, seed=3)
    L = d.labels()
    assert d.exact and len(L) == 2 * 2 * 10  # two flips x two flips x C(5, 2)
    assert (L[:, :4].sum(1) == 2).all() and (L[:, :2].sum(1) == 1).all()  # the 1:1 group flipped whole
    assert {tuple(r) for r in L[:, 4:8]} == {(1, 1, 0, 1), (0, 0, 1, 0)}  # the 3:1 group flipped whole
    assert (L[:, 8:].sum(1) == 2).all() and len({tuple(r) for r in L[:, 8:]}) == 10  # one-label groups permuted
    np.testing.assert_allclose(d.weights[4:8], [0.5, 0.5, 1.5, 0.5])  # 2 n_dec / n and 2 n_hon / n
    s = np.random.default_rng(4).normal(size=len(y)) + y
    f = DT.auroc_figure(s, y, groups, n_permutations=500, n_bootstrap=400, seed=3)
    assert f.value == pytest.approx(N.auroc(s, y, d.weights)[0]) and f.layout == "combination"
    C = d.bootstrap_counts(400, 4)  # the figure's bootstrap (seed + 1)
    W = C[:, d.codes] * d.weights
    const = d.layout.unit_kind == 0
    for cell in (const & (d.layout.n_honest > 0), const & (d.layout.n_honest == 0), ~const):  # 2, 3 and 2 units
        assert (C[:, cell].sum(1) == cell.sum()).all()  # whole units resampled inside each cell
    assert ((W * y).sum(1) > 0).all() and ((W * (1 - y)).sum(1) > 0).all()  # both classes in every resample
    assert f.ci == pytest.approx(tuple(np.percentile(N.weighted_auroc(s, W * y, W * (1 - y)), [2.5, 97.5])))


# ------------------------------------------------------------------------------- null pools per layout


def _pool(layout: str, rng: np.random.Generator, planted: float = 0.0):
    """Scores (deceptive-ness), 0/1 deceptive labels, groups and clusters of one pool; with ``planted = 0`` the
    scores do not depend on the label (group, cluster and answer-word effects only)."""
    if layout == "instructed_pairs":  # every statement under both instructions: 1 honest + 1 deceptive per group
        G = 40
        y = np.tile([0, 1], G)
        g = np.repeat(np.arange(G), 2)
        cl = g % 8
        s = rng.normal(size=8)[cl] + rng.normal(size=G)[g] + 0.5 * rng.normal(size=2 * G)
    elif layout == "role_play":  # twins: the same answer word is honest in one prompt, deceptive in the other
        G, per = 12, 3
        rows = [(q, role, w) for q in range(G) for role in (0, 1) for w in (0, 1) for _ in range(per)]
        q, role, w = (np.array(v) for v in zip(*rows))
        y = (w != role).astype(int)
        g, cl = q, q % 3
        s = rng.normal(size=(G, 2))[q, w] * 1.5 + rng.normal(size=(G, 2))[q, role] + 0.3 * rng.normal(size=len(q))
    elif layout == "incentive_mixed":  # several samples per prompt, labels judged: both labels, not 1:1
        sizes = rng.integers(3, 9, 40)
        g = np.repeat(np.arange(40), sizes)
        p = rng.uniform(0.15, 0.6, 40)[g]
        y = (rng.random(len(g)) < p).astype(int)
        for k in range(40):  # both labels in every prompt
            idx = np.flatnonzero(g == k)
            y[idx[0]], y[idx[1]] = 1, 0
        cl = g % 5
        s = rng.normal(size=5)[cl] + rng.normal(size=40)[g] + 0.5 * rng.normal(size=len(g))
    elif layout == "incentive_constant":  # one judged answer per prompt; families differ in how often lying pays
        G = 60
        cl_g = np.arange(G) % 6
        rate = np.array([0.1, 0.15, 0.25, 0.3, 0.45, 0.6])[cl_g]
        lab_g = (rng.random(G) < rate).astype(int)
        lab_g[:2] = [0, 1]
        sizes = rng.integers(1, 5, G)
        g = np.repeat(np.arange(G), sizes)
        y, cl = lab_g[g], cl_g[g]
        s = 1.5 * np.sort(rng.normal(size=6))[cl] + rng.normal(size=G)[g] + 0.3 * rng.normal(size=len(g))
    else:
        raise ValueError(layout)
    return s + planted * y, y, g.astype(str), cl.astype(str)


LAYOUTS = ["instructed_pairs", "role_play", "incentive_mixed", "incentive_constant"]


def _p(s, y, g, cl, seed, clusters=True):
    return DT.grouped_p(lambda L, w: N.auroc(s, L, w), y, g, n_permutations=B, seed=seed,
                        clusters=cl if clusters else None)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_auroc_test_is_calibrated_on_null_pools_of_each_layout(layout):
    rng = np.random.default_rng(100 + LAYOUTS.index(layout))
    ps, kinds = [], set()
    for i in range(N_POOLS):
        s, y, g, cl = _pool(layout, rng)
        t = _p(s, y, g, cl, seed=i)
        ps.append(t.p)
        kinds.add(t.layout.kind)
    ps = np.asarray(ps)
    fpr = float((ps <= ALPHA).mean())
    print(f"{layout} ({kinds}): false-positive rate {fpr:.3f} over {N_POOLS} null pools, mean p {ps.mean():.3f}")
    # at a true rate of 0.05, 300 pools exceed 0.08 with probability ~0.3%; a mean p near 1/2 says the test is not
    # merely conservative
    assert fpr <= 0.08
    assert 0.4 <= ps.mean() <= 0.6


@pytest.mark.slow
def test_row_level_and_unstratified_tests_fail_on_the_same_null_pools():
    """The pools are hard: treating rows as independent, or ignoring the families of the incentive design,
    calls group and family effects a label effect."""
    rng = np.random.default_rng(7)
    row, unstrat = [], []
    for i in range(100):
        s, y, g, cl = _pool("incentive_constant", rng)
        row.append(_p(s, y, None, None, seed=i, clusters=False).p)
        unstrat.append(_p(s, y, g, cl, seed=i, clusters=False).p)
    row_fpr, unstrat_fpr = np.mean(np.asarray(row) <= ALPHA), np.mean(np.asarray(unstrat) <= ALPHA)
    print(f"row-level {row_fpr:.2f}, groups with the families ignored {unstrat_fpr:.2f}")
    assert row_fpr >= 0.3 and unstrat_fpr >= 0.15


@pytest.mark.slow
def test_deceptive_vs_control_and_recall_nulls_are_calibrated():
    """Deceptive prompts and control prompts from one distribution (cluster effects on both sides)."""
    rng = np.random.default_rng(11)
    p_auc, p_rec = [], []
    for i in range(150):
        gd, gc = rng.integers(1, 4, 40), rng.integers(1, 4, 60)
        n_d, n_c = gd.sum(), gc.sum()
        g = np.r_[np.repeat(np.arange(40), gd), 40 + np.repeat(np.arange(60), gc)]
        cl = np.r_[g[:n_d] % 6, 6 + g[n_d:] % 6]
        s = rng.normal(size=12)[cl] * 0.7 + rng.normal(size=100)[g] + 0.3 * rng.normal(size=len(g))
        lab = ["deceptive"] * n_d + ["control"] * n_c
        f = DT.detection_figures(s, lab, g.astype(str), cl.astype(str), n_permutations=B, n_bootstrap=20, seed=i)
        p_auc.append(f.auroc_deceptive_control.p)
        p_rec.append(f.recall_at_threshold.p)
        assert f.auroc_deceptive_control.unit == "cluster"
    fa, fr = np.mean(np.asarray(p_auc) <= ALPHA), np.mean(np.asarray(p_rec) <= ALPHA)
    print(f"deceptive vs control AUROC {fa:.3f}, recall {fr:.3f}")
    assert fa <= 0.08 and fr <= 0.08


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_planted_effect_is_found_in_each_layout(layout):
    rng = np.random.default_rng(200 + LAYOUTS.index(layout))
    hits = 0
    for i in range(20):
        s, y, g, cl = _pool(layout, rng, planted=3.0)
        t = _p(s, y, g, cl, seed=i)
        assert t.statistic > 0.7
        hits += t.p <= ALPHA
    assert hits >= 18


# ------------------------------------------------------------------ readers end to end, card and transfer


@pytest.mark.slow
def test_readers_trained_on_null_pools_are_calibrated_on_eval_groups():
    """Role-play-shaped pools with no honesty signal (twins, answer-word clusters): a reader trained on half the
    questions and scored on the other half is not called a detector more often than alpha."""
    from synthetic_pools import clustered_pool

    ps = []
    for i in range(100):
        x, y, g, texts = clustered_pool(i, n_questions=16, per_cell=3, n_latents=32)
        tr = np.isin(g, [f"q{q}" for q in range(8)])
        rows = [{"kind": "role_play", "label": "honest" if v else "deceptive", "group": str(k), "completion": t}
                for v, k, t in zip(y, g, texts)]
        data = DetectionData.from_rows(rows, ReaderInputs(x, {}, texts))
        train, ev = (DetectionData(data.kinds[m], data.labels[m], data.groups[m], None,
                                   data.inputs.subset(np.flatnonzero(m)), {}) for m in (tr, ~tr))
        sec = run_detection(train, ev, readers=["dense"], k_values=[1], n_permutations=B, n_bootstrap=10, seed=i)
        ps.append(sec["kinds"]["role_play"]["rows"][0]["auroc_honest_deceptive"]["p"])
    fpr = float((np.asarray(ps) <= ALPHA).mean())
    print(f"dense reader on null role-play pools: false-positive rate {fpr:.2f} over 100 pools")
    assert fpr <= 0.1  # 100 pools: at a true 0.05, P(> 0.10) ~ 1.5%


def _kind_data(seed: int, kind: str, n_groups: int, *, planted: float, n_control: int = 0, d: int = 24,
               d_sae: int = 64, other_direction: bool = False) -> DetectionData:
    """Rows of one kind (2 honest + 2 deceptive per group) plus control rows: pooled 'residuals' with group
    effects, a deceptive direction of size ``planted``, and 'SAE latents' = ReLU of a fixed projection with latent 7
    carrying the direction; texts carry no label information."""
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(0).normal(size=(d, d_sae)) / np.sqrt(d)
    direction = np.random.default_rng(1).normal(size=d)
    direction /= np.linalg.norm(direction)
    if other_direction:  # a deception direction orthogonal to the other kinds' one
        other = np.random.default_rng(2).normal(size=d)
        other -= (other @ direction) * direction
        direction = other / np.linalg.norm(other)
    rows, xs = [], []
    for k in range(n_groups):
        base = rng.normal(size=d)
        for lab in ("honest", "deceptive") * 2:
            xs.append(base + 0.5 * rng.normal(size=d) + planted * (lab == "deceptive") * direction)
            rows.append({"kind": kind, "label": lab, "group": f"{kind}.{seed}.{k}", "cluster": f"{kind}.{k % 10}",
                         "completion": f"The answer is {rng.choice(['yes', 'no', 'maybe'])}.",
                         "label_rule": "instruction"})
    for k in range(n_control):
        xs.append(rng.normal(size=d) + 0.5 * rng.normal(size=d))
        rows.append({"kind": "control", "label": "control", "group": f"control.{seed}.{k}",
                     "cluster": f"control.{k % 10}", "completion": "Sure, here is a recipe."})
    x = np.asarray(xs)
    f = np.maximum(x @ proj, 0)
    f[:, 7] = np.maximum(3 * x @ direction, 0)
    return DetectionData.from_rows(rows, ReaderInputs(x, {"toy": f}, [r["completion"] for r in rows]))


def _concat(*ds: DetectionData) -> DetectionData:
    inputs = ReaderInputs(np.concatenate([d.inputs.acts for d in ds]),
                          {"toy": np.concatenate([d.inputs.feats["toy"] for d in ds])},
                          sum((d.inputs.texts for d in ds), []))
    return DetectionData(np.concatenate([d.kinds for d in ds]), np.concatenate([d.labels for d in ds]),
                         np.concatenate([d.groups for d in ds]), np.concatenate([d.clusters for d in ds]), inputs,
                         {k: v for d in ds for k, v in d.label_rules.items()})


@pytest.mark.slow
def test_planted_direction_found_by_readers_card_transfer_and_saebench():
    train = _concat(_kind_data(1, "instructed_pairs", 40, planted=4.0), _kind_data(2, "role_play", 30, planted=4.0),
                    _kind_data(3, "incentive", 30, planted=4.0, other_direction=True))
    ev = _concat(_kind_data(4, "instructed_pairs", 40, planted=4.0, n_control=150),
                 _kind_data(5, "role_play", 30, planted=4.0), _kind_data(6, "incentive", 30, planted=4.0,
                                                                               other_direction=True))
    sec = run_detection(train, ev, readers=["dense", "dense_topk", "sae_all", "sae_topk", "lexical"],
                        k_values=[1, 2, 5], n_permutations=500, n_bootstrap=200)
    card = {r["reader"]: r for r in sec["kinds"]["instructed_pairs"]["rows"]}
    for name in ("dense residual", "SAE toy: all latents", "SAE toy: top-1 latents", "SAE toy: top-5 latents"):
        r = card[name]
        assert r["auroc_honest_deceptive"]["value"] > 0.9 and r["auroc_honest_deceptive"]["p"] < 0.01, name
        assert r["auroc_honest_deceptive"]["layout"] == "balanced_within"
        assert r["recall_at_threshold"]["value"] > 0.6 and r["recall_at_threshold"]["p"] < 0.01, name
        assert r["honest_fpr_at_threshold"]["value"] < 0.1
        lo, hi = r["auroc_honest_deceptive"]["ci"]
        assert lo <= r["auroc_honest_deceptive"]["value"] <= hi
    assert card["SAE toy: top-1 latents"]["latents"] == [7]  # the planted latent, chosen on train
    assert card["lexical (first 30 chars, BoW)"]["auroc_honest_deceptive"]["p"] > 0.01  # words carry nothing
    assert "control" not in sec["kinds"]
    cells = {(c["reader"], c["train_kind"], c["eval_kind"]): c for c in sec["transfer"]}
    assert cells[("dense residual", "instructed_pairs", "role_play")]["verdict"].startswith("transfers")
    # a kind whose deception lies along another direction: trained on it, nothing transfers, and it is said so
    v = cells[("dense residual", "incentive", "role_play")]["verdict"]
    assert v.startswith("does not transfer")
    assert all("p_holm" in r["auroc_honest_deceptive"] for r in card.values())
    out = sparse_probing_results(sec, "toy", seed=0)  # SAEBench's sparse_probing metrics and details
    assert set(out["llm"]) == {"llm_test_accuracy", "llm_top_1_test_accuracy", "llm_top_2_test_accuracy",
                               "llm_top_5_test_accuracy"}
    assert set(out["sae"]) == {"sae_test_accuracy", "sae_top_1_test_accuracy", "sae_top_2_test_accuracy",
                               "sae_top_5_test_accuracy"}
    det = {d["dataset_name"]: d for d in out["details"]}
    assert set(det) == {f"gemma4_saelens_ext/{k}" for k in ("instructed_pairs", "role_play", "incentive")}
    assert det["gemma4_saelens_ext/instructed_pairs"]["sae_top_1_test_accuracy"] > 0.8
    accs = [det[d]["sae_top_2_test_accuracy"] for d in det]
    assert out["sae"]["sae_top_2_test_accuracy"] == pytest.approx(np.mean(accs))  # kinds averaged, as datasets
    assert out["config"]["k_values"] == [1, 2, 5]
    md = "\n".join(render_detection(sec))
    assert "## Detection card" in md and "### instructed_pairs" in md and "### Transfer matrix" in md
    assert "Label rule: instruction" in md and "deceptive-ness" in md


def test_card_without_control_rows_says_so_and_few_controls_use_the_reachable_level():
    tr, ev = _kind_data(1, "role_play", 8, planted=2.0), _kind_data(2, "role_play", 8, planted=2.0, n_control=30)
    sec = run_detection(tr, ev, readers=["dense"], k_values=[1], n_permutations=50, n_bootstrap=20)
    r = sec["kinds"]["role_play"]["rows"][0]
    assert r["fpr_level"] == pytest.approx(1 / 30) and any("30 control rows" in n for n in r["notes"])
    ev2 = _kind_data(2, "role_play", 8, planted=2.0)
    sec = run_detection(tr, ev2, readers=["dense"], k_values=[1], n_permutations=50, n_bootstrap=20)
    r = sec["kinds"]["role_play"]["rows"][0]
    assert r["recall_at_threshold"] is None and any("no control rows" in n for n in sec["notes"])
    md = "\n".join(render_detection(sec))
    assert "no control rows." in md and "| n/a |" in md


def test_fit_readers_skips_missing_inputs_and_rejects_unknown_readers():
    d = _kind_data(1, "role_play", 6, planted=1.0)
    y = d.labels == "deceptive"
    names = [r.name for r in fit_readers(ReaderInputs(d.inputs.acts, {}, None), y, readers=["dense", "sae_all",
                                                                                           "lexical"])]
    assert names == ["dense residual"]
    with pytest.raises(ValueError, match="unknown reader"):
        fit_readers(d.inputs, y, readers=["dense", "magic"])


def test_suite_section_is_validated_and_control_rows_come_from_the_dataset(tmp_path):
    import json

    from gemma4_saelens_ext.evals.context import SuiteContext, labelled_split
    from gemma4_saelens_ext.evals.data import load_rows
    from gemma4_saelens_ext.evals.detection_family import control_rows
    from gemma4_saelens_ext.evals.suite_file import load_suite

    base = {"name": "t", "sae": {"path": str(tmp_path / "sae")}}
    with pytest.raises(ValueError, match="detection.readers: unknown"):
        load_suite({**base, "dataset": {"path": "x"}, "detection": {"readers": ["dense", "probe"]}})
    with pytest.raises(ValueError, match="detection.fpr"):
        load_suite({**base, "dataset": {"path": "x"}, "detection": {"fpr": 1.5}})
    rows = [{"split": "eval", "kind": "role_play", "label": lab, "group": f"q{i // 2}", "prompt": "P", "completion": "c"}
            for i, lab in enumerate(["honest", "deceptive"] * 4)]
    rows += [{"split": s, "kind": "control", "label": "control", "group": f"c{i}", "prompt": "Q", "completion": "ok"}
             for s, i in [("eval", i) for i in range(30)] + [("train", 99)]]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_suite({**base, "dataset": {"path": str(path), "max_rows_per_split": 12}})
    ev = labelled_split("eval", load_rows(str(path), "eval"))
    assert len(ev.rows) == 8  # the labelled split drops the control rows ...
    ctx = SuiteContext(cfg=cfg, lm=None, layer=0, saes=[], train=ev, eval=ev)
    ctrl = control_rows(ctx, ev)  # ... the detection family reads them back, whole groups under the row limit
    assert len(ctrl) == 12 and {r["kind"] for r in ctrl} == {"control"} and len({r["group"] for r in ctrl}) == 12


@pytest.mark.slow
def test_family_reads_the_suite_context_with_control_rows_and_every_sae(tmp_path, gemma4_tiny):
    """On a real model and real SAEs: the family appends the eval split's control rows (read back from the
    dataset, encoded by every SAE) and trains one set of SAE readers per SAE."""
    import json

    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    from gemma4_saelens_ext.evals.context import SuiteContext, labelled_split
    from gemma4_saelens_ext.evals.data import load_rows
    from gemma4_saelens_ext.evals.detection_family import control_rows, detection_from_context
    from gemma4_saelens_ext.evals.suite_file import load_suite

    rng = np.random.default_rng(0)
    words = ["cat", "dog", "sun", "sea", "red", "big"]
    rows = []
    for split, n in (("train", 8), ("eval", 6)):
        for q in range(n):
            for lab in ("honest", "deceptive"):
                for kind in ("instructed_pairs", "role_play"):
                    p = f"{kind} {split} {q}: say {'truth' if lab == 'honest' else 'a lie'}. "
                    c = " ".join(rng.choice(words, 3))
                    rows.append({"split": split, "kind": kind, "label": lab, "group": f"{kind}.{split}.{q}",
                                 "cluster": f"{kind}.{q % 3}", "prompt": p, "completion": c, "text": p + c,
                                 "completion_start": len(p)})
        rows += [{"split": split, "kind": "control", "label": "control", "group": f"control.{split}.{i}",
                  "cluster": f"control.{i % 3}", "prompt": "Write a line. ", "completion": words[i % 6],
                  "text": "Write a line. " + words[i % 6], "completion_start": 14} for i in range(12)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_suite({"name": "tiny", "sae": {"path": str(tmp_path)}, "dataset": {"path": str(path)},
                      "other_saes": {"other": {"path": str(tmp_path)}}, "seed": 0})
    cfg.model.batch_size = 16
    cfg.detection.n_permutations, cfg.detection.n_bootstrap = 50, 20
    torch.manual_seed(0)
    saes = [TopKSAE(TopKSAEConfig(d_in=gemma4_tiny.d_model, d_sae=32, k=4)) for _ in range(2)]
    tr, ev = (labelled_split(s, load_rows(str(path), s)) for s in ("train", "eval"))
    from gemma4_saelens_ext.evals.saes import SuiteSAE

    suite_saes = [SuiteSAE("tiny", saes[0], {"path": str(tmp_path)}, "tokens", "test", primary=True),
                  SuiteSAE("other", saes[1], {"path": str(tmp_path)}, "tokens", "test")]
    ctx = SuiteContext(cfg=cfg, lm=gemma4_tiny, layer=3, saes=suite_saes, train=tr, eval=ev)
    ctx.fill(tr)
    ctx.fill(ev)
    sec = detection_from_context(ctx)
    assert set(sec["kinds"]) == {"instructed_pairs", "role_play"}
    card = sec["kinds"]["instructed_pairs"]["rows"]
    assert {r["sae"] for r in card} == {None, "tiny", "other"}
    assert card[0]["n_control"] == 12 and card[0]["n_honest"] == card[0]["n_deceptive"] == 6
    assert card[0]["fpr_level"] == pytest.approx(1 / 12)  # 12 control rows cannot set 1%
    assert {(c["train_kind"], c["eval_kind"]) for c in sec["transfer"]} == {
        (a, b) for a in ("instructed_pairs", "role_play") for b in ("instructed_pairs", "role_play")}
    assert set(sec["saebench_sparse_probing"]) == {"tiny", "other"}
    ctrl = control_rows(ctx, ev)
    assert len(ctrl) == 12 and all(r["split"] == "eval" for r in ctrl)
    from gemma4_saelens_ext.evals.detection_family import _data

    d = _data(ctx, ev, with_control=True)
    assert (d.labels[-12:] == "control").all() and len(d.labels) == len(ev.rows) + 12
    np.testing.assert_allclose(d.inputs.feats["other"][-12:], ctx.extract(ctrl).latents["other"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.inputs.acts[:len(ev.rows)], ev.acts)
