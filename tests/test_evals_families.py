"""Pure parts of the eval families on synthetic data: probes, reconstruction, portability, steering stats,
stability, top latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.evals import ExplainedVarianceCalculator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gemma4_saelens_ext.evals import probes as P
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals import reconstruction as R
from gemma4_saelens_ext.evals import portability as PT
from gemma4_saelens_ext.evals import stability as ST
from gemma4_saelens_ext.evals import steering as SG
from gemma4_saelens_ext.evals.saeio import check_sae_matches, encode_decode, random_sae_like
from gemma4_saelens_ext.evals.top_latents import top_examples
from synthetic_pools import twin_pool


def planted(n=80, k=20, seed=0, strength=2.0):
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    x = rng.normal(size=(n, k))
    w = rng.normal(size=k)
    x += strength * np.outer(2 * y - 1, w / np.linalg.norm(w))
    return x, y


def test_probe_recovers_planted_signal_and_chance_on_shuffled():
    x, y = planted()
    est = make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear"))  # 20x faster than lbfgs here
    r = P.cross_validated_probe(x, y, estimator=est, n_permutations=20, n_bootstrap=200)
    assert r.balanced_accuracy > 0.9 and r.auroc > 0.9
    assert r.p_balanced_accuracy <= 1 / 21 + 1e-9 and "above chance" in r.verdict
    assert r.balanced_accuracy_ci[0] < r.balanced_accuracy <= r.balanced_accuracy_ci[1] + 1e-9
    ys = np.random.default_rng(1).permutation(y)
    rs = P.cross_validated_probe(x, ys, estimator=est, n_permutations=20, n_bootstrap=100)
    assert 0.3 < rs.balanced_accuracy < 0.7
    assert rs.p_balanced_accuracy > 0.05 and "indistinguishable from chance at n=80" in rs.verdict


def test_lexical_probe_on_answer_words():
    texts = ["I'm a Slug.' Another", "I am a Snail!' Then", "Slug, of course", "Snail, clearly"] * 8
    y = np.array([1, 0, 1, 0] * 8)
    r = P.cross_validated_probe(P.first_chars(texts), y, estimator=P.lexical_probe_estimator(), n_permutations=5,
                                n_bootstrap=50, name="lexical")
    assert r.balanced_accuracy == 1.0


def test_probe_errors():
    x = np.zeros((12, 3))
    with pytest.raises(ValueError, match="only one class"):
        P.cross_validated_probe(x, np.ones(12))
    y = np.array([1] * 9 + [0] * 3)
    with pytest.raises(ValueError, match="needs >= 5 per class; use n_splits=3"):
        P.cross_validated_probe(x, y)


def tiny_sae(d_in=16, d_sae=64, k=4, seed=0):
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return sae


def test_reconstruction_metrics_match_saelens_and_hand():
    sae = tiny_sae()
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32) + 3.0
    m, feats = R.sae_reconstruction(sae, x)
    _, recon = encode_decode(sae, x)
    calc = ExplainedVarianceCalculator()
    calc.add_batch(torch.tensor(recon), torch.tensor(x))
    assert m["explained_variance"] == pytest.approx(calc.compute(), rel=1e-5)  # sae_lens sums in fp32 per batch
    assert m["mse"] == pytest.approx(float(((x - recon) ** 2).mean()), rel=1e-5)
    assert m["l0"] == pytest.approx(4.0) and m["alive"] == int((feats != 0).any(0).sum())
    assert R.reconstruction_metrics(x, x, feats)["explained_variance"] == 1.0


def test_portability_fp32_vs_fp32_unchanged_and_rule():
    sae = tiny_sae()
    x = np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)
    f, r = encode_decode(sae, x)
    m = R.reconstruction_metrics(x, r, f)
    f2, r2 = encode_decode(sae, x.copy())
    rows = PT.portability_table({"fp32": m, "fp32-again": R.reconstruction_metrics(x, r2, f2)}, "fp32")
    assert rows[1]["explained_variance"] == rows[0]["explained_variance"]
    assert rows[1]["ev_drop"] == 0.0 and rows[1]["alive_shift"] == 0.0 and rows[1]["verdict"] == "ok"
    m = dict(m, explained_variance=0.9)  # the rule on hand-set numbers (a random SAE's EV is negative)
    bad = dict(m, explained_variance=0.9 * 0.7)
    rows = PT.portability_table({"fp32": m, "nf4": bad, "int8": {"error": "no kernels"}}, "fp32")
    assert rows[1]["verdict"] == "retrain" and rows[2]["verdict"] == "unavailable"
    shifted = dict(m, alive=int(m["alive"] * 2) + 1)
    assert PT.portability_table({"fp32": m, "bf16": shifted}, "fp32")[1]["verdict"] == "retrain"
    loose = PT.PortabilityRule(max_ev_drop=0.5, max_alive_shift=5.0)
    assert PT.portability_table({"fp32": m, "nf4": bad}, "fp32", loose)[1]["verdict"] == "ok"


def test_sae_checks_and_control():
    sae = tiny_sae()
    with pytest.raises(ValueError, match="d_in=16 but the model's residual width is 640"):
        check_sae_matches(sae, d_model=640)
    ctrl = random_sae_like(sae, seed=3)
    assert ctrl.W_dec.shape == sae.W_dec.shape and not torch.allclose(ctrl.W_dec, sae.W_dec)
    assert torch.allclose(ctrl.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_steering_pure_parts():
    rows = np.eye(4)
    u = SG.decoded_direction(rows[:2], [2.0, -1.0])
    np.testing.assert_allclose(u, np.array([2, -1, 0, 0]) / np.sqrt(5))
    assert SG.cosine(u, [1, 0, 0, 0]) == pytest.approx(2 / np.sqrt(5))
    x, y = planted(k=4)
    md = SG.mean_difference_direction(x, y)
    assert md.shape == (4,)
    labs = [["honest"] * i + ["deceptive"] * (6 - i) + ["ambiguous"] for i in range(7)]
    st = SG.sweep_statistics(SG.DEFAULT_ALPHAS, labs, n_bootstrap=50)
    assert st["spearman"]["rho"] == pytest.approx(1.0) and st["spearman"]["p"] == pytest.approx(2 / 5040)
    assert st["per_alpha"][0]["ambiguous_rate"] == pytest.approx(1 / 7)
    assert "monotone beyond chance" in st["verdict"]


def test_stability_verdicts_and_fields_and_top_examples():
    x, y, g = twin_pool(3, 0, planted=3.0, n_questions=12)
    boot = ST.group_bootstrap_resamples(x, y, g, ST.DEFAULT_SEEDS)
    rep = ST.stability_report(x, y, g, boot)
    assert [r["seed"] for r in rep["rows"]] == [101, 107, 113] and rep["mode"].startswith("group bootstrap")
    assert rep["verdict_kind"] == "STABLE" and rep["stable"] and rep["reference_top_latents"][0] == 0
    assert rep["null"].startswith("group flips") and rep["layout"]["kind"] == "balanced_within"
    # the same rows again replicate exactly: replicated d = the reference's top |d|, overlap complete
    same = ST.stability_report(x, y, g, [ST.Resample(1, "identity", x, y, 12, g)])
    row = same["rows"][0]
    assert row["replicated_d"] == pytest.approx(rep["reference_d_max"]) and row["top_overlap"] == 5
    assert row["abs_delta"] < 1e-12 and row["verdict"] == "REPLICATES"
    # a regenerated pool without the signal: the effect does not come back -> UNSTABLE (the reference has one)
    x0, y0, g0 = twin_pool(3, 101, n_questions=12)
    fail = ST.stability_report(x, y, g, [ST.Resample(2, "regenerated", x0, y0, 12, g0)])
    assert fail["rows"][0]["verdict"] == "DOES NOT REPLICATE" and fail["verdict_kind"] == "UNSTABLE"
    assert fail["rows"][0]["abs_delta"] == pytest.approx(abs(np.abs(S.cohens_d(x0, y0)).max() - rep["reference_d_max"]))
    # no effect in the reference: nothing to be stable
    xn, yn, gn = twin_pool(5, 0, n_questions=12)
    none = ST.stability_report(xn, yn, gn, [ST.Resample(1, "identity", xn, yn, 12, gn)])
    assert none["verdict_kind"] == "NO EFFECT TO BE STABLE" and not none["stable"] and none["reference_p"] > 0.05
    tiny = ST.stability_report(x, y, g, [ST.Resample(3, "regenerated", x[:3], np.array([1, 0, 0]), 1, g[:3])])
    assert tiny["rows"][0]["verdict"] == "INSUFFICIENT" and not tiny["stable"]
    texts = [f"t{i}" for i in range(len(y))]
    ex = top_examples(np.abs(x), texts, y, [0, 1], [0.5, -0.2], n_examples=2)
    assert ex[0]["latent"] == 0 and len(ex[0]["top_honest"]) == 2
    assert ex[0]["top_honest"][0]["activation"] >= ex[0]["top_honest"][1]["activation"]


def test_random_direction_percentile():
    v = SG.random_directions(16, 8, seed=0)
    assert v.shape == (8, 16) and np.allclose(np.linalg.norm(v, axis=1), 1)
    assert SG.slope_percentile(0.5, [0.1, 0.2, 0.6, 0.7]) == 0.5
    assert SG.slope_percentile(1.0, [0.1, 0.2]) == 1.0 and SG.slope_percentile(0.1, [0.1, 0.2]) == 0.25
    assert SG.rank_p(1.0, [0.1] * 19) == pytest.approx(1 / 20) and SG.rank_p(0.1, [0.1, 0.2]) == 1.0
    assert SG.rank_p(0.15, [0.1, 0.2, float("nan")]) == pytest.approx(2 / 3)
