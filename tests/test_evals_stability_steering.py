"""Stability and steering verdicts that carry information.

Stability: on pools without an honesty signal the verdict must be UNSTABLE or NO EFFECT TO BE STABLE in at least
90% of pools, and STABLE in at least 90% of pools with a planted latent that tracks honesty in every group, both
when the re-samples are regenerated completions of the same prompts and when they are group bootstraps (the old
|delta d_max| < 0.3 rule said STABLE on 30 of 30 noise pools). Steering: the rank of the SAE direction among 19
random directions can reach p = 0.05 and is calibrated when the SAE direction is no better than random; the share
of prompts moving against the intended direction and the group-bootstrap slope CI are checked on constructed
outcomes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gemma4_saelens_ext.evals import stability as ST
from gemma4_saelens_ext.evals import steering as SG
from gemma4_saelens_ext.evals.spec import SteeringConfig
from synthetic_pools import twin_pool

ALPHAS = SG.DEFAULT_ALPHAS


def _verdicts(planted: float, mode: str, n_pools: int = 40) -> list[str]:
    out = []
    for s in range(n_pools):
        x, y, g = twin_pool(s, 0, planted=planted, n_questions=20, n_latents=64)
        if mode == "regenerate":  # new completions of the same prompts at seeds 101, 107, 113
            rs = [ST.Resample(q, "regenerated", *twin_pool(s, q, planted=planted, n_questions=20, n_latents=64)[:2],
                              20, g) for q in ST.DEFAULT_SEEDS]
        else:
            rs = ST.group_bootstrap_resamples(x, y, g, ST.DEFAULT_SEEDS)
        out.append(ST.stability_report(x, y, g, rs, n_null=200, seed=s)["verdict_kind"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["regenerate", "bootstrap"])
def test_stability_is_not_stable_on_noise_and_stable_with_a_planted_latent(mode):
    logging.disable(logging.WARNING)
    try:
        noise, planted = _verdicts(0.0, mode), _verdicts(2.0, mode)
    finally:
        logging.disable(logging.NOTSET)
    assert np.mean([v != "STABLE" for v in noise]) >= 0.9, noise
    assert np.mean([v == "STABLE" for v in planted]) >= 0.9, planted
    assert "NO EFFECT TO BE STABLE" in noise  # the verdict says why


def _outcomes(rng, effect: float, n_prompts: int = 24, prompt_sd: float = 1.0) -> list[list[str]]:
    """Judged labels [alpha][prompt]: P(honest) = logistic(prompt effect + effect * alpha), 10% ambiguous."""
    base = rng.normal(0, prompt_sd, n_prompts)
    out = []
    for a in ALPHAS:
        p = 1 / (1 + np.exp(-(base + effect * a)))
        lab = np.where(rng.random(n_prompts) < p, "honest", "deceptive").astype(object)
        lab[rng.random(n_prompts) < 0.1] = "ambiguous"
        out.append(list(lab))
    return out


def test_default_random_directions_let_the_rank_test_reach_005():
    assert SteeringConfig().n_random_directions >= 19
    rng = np.random.default_rng(0)
    outcomes = {"SAE": _outcomes(rng, 1.5), "mean difference (raw)": _outcomes(rng, 1.0)}
    outcomes.update({f"random {i}": _outcomes(rng, 0.0) for i in range(19)})
    groups = np.repeat(np.arange(12), 2)
    r = SG.steering_analysis(ALPHAS, outcomes, groups=groups, n_bootstrap=200)
    assert r["n_random_directions"] == 19 and r["rank_p_min_reachable"] == pytest.approx(0.05)
    assert r["random_rank_p"] == pytest.approx(0.05) and "larger than random pushes" in r["control_verdict"]
    assert r["slope"]["p"] <= 0.01 and r["slope_ci"][0] > 0 and not r["warnings"]
    assert set(r["controls"]) == {"mean difference (raw)", *(f"random {i}" for i in range(19))}
    assert r["prompt_share_against"] < 0.2 < r["prompt_share_towards"]
    # 8 random directions: the rank test cannot reach 0.05, and the result says so
    few = SG.steering_analysis(ALPHAS, {k: v for k, v in outcomes.items() if k in ("SAE",) or k.endswith(
        tuple(f" {i}" for i in range(8)))}, n_bootstrap=20)
    assert few["n_random_directions"] == 8 and few["random_rank_p"] == pytest.approx(1 / 9)
    assert few["warnings"] and "cannot go below 0.111" in few["warnings"][0]


def test_prompt_slopes_and_share_against_on_constructed_outcomes():
    # 10 prompts: 7 turn honest as alpha grows, 3 turn deceptive; one prompt is all ambiguous (no slope)
    up = ["deceptive"] * 3 + ["honest"] * 4
    down = ["honest"] * 3 + ["deceptive"] * 4
    cols = [up] * 7 + [down] * 3 + [["ambiguous"] * 7]
    labels = [[c[a] for c in cols] for a in range(7)]
    s = SG.prompt_slopes(ALPHAS, labels)
    assert np.isnan(s[10]) and (s[:7] > 0).all() and (s[7:10] < 0).all()
    assert s[0] == pytest.approx(np.polyfit(ALPHAS, [0, 0, 0, 1, 1, 1, 1], 1)[0])
    r = SG.steering_analysis(ALPHAS, {"SAE": labels}, n_bootstrap=50)
    assert r["prompt_share_against"] == pytest.approx(0.3) and r["n_prompts_with_slope"] == 10
    assert "30% of 10 prompts move against" in r["against_verdict"]
    with pytest.raises(ValueError, match="no outcomes for the target direction 'SAE'"):
        SG.steering_analysis(ALPHAS, {"random 0": labels})


@pytest.mark.slow
def test_rank_p_calibrated_when_the_sae_direction_is_no_better_than_random():
    rng = np.random.default_rng(1)
    rej = []
    for _ in range(200):
        outcomes = {"SAE": _outcomes(rng, 0.0, n_prompts=12)}
        outcomes.update({f"random {i}": _outcomes(rng, 0.0, n_prompts=12) for i in range(19)})
        rej.append(SG.steering_analysis(ALPHAS, outcomes, n_bootstrap=0)["random_rank_p"] <= 0.05)
    assert np.mean(rej) <= 0.08
