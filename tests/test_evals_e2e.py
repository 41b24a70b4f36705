"""End to end on the embedded Gemma 3 270M (tiny budgets), steering at alpha=0 == unsteered, suite errors,
and the training hook's evaluation + JSONL log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gemma4_saelens_ext.evals.hooks import TrainingEvalHook
from gemma4_saelens_ext.evals.suite import load_suite, run_suite

DEMO = "evals/demo.yaml"


def tiny_cfg(tmp_path, **over):
    cfg = load_suite(DEMO)
    cfg.dataset.scripted_families = ["slug_snail", "werewolf", "sandbagging_qa"]
    cfg.model.batch_size = 32
    cfg.model.max_length = 64
    cfg.sae["fit"].update(steps=30, d_sae=640, token_level=False)
    cfg.stats.n_permutations, cfg.stats.n_bootstrap, cfg.stats.probe_permutations = 100, 50, 3
    cfg.probes.n_splits = 3
    cfg.reconstruction.max_texts = 4
    cfg.steering.alphas, cfg.steering.n_prompts, cfg.steering.max_new_tokens = [0.0, 1.0], 2, 4
    cfg.portability.precisions, cfg.portability.max_texts = ["fp32"], 4
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_demo_suite_end_to_end(tmp_path):
    out = run_suite(tiny_cfg(tmp_path), output_dir=str(tmp_path / "rep"))
    r = json.loads((out / "report.json").read_text())
    for fam in ("reconstruction", "dvalues", "probes", "steering", "stability", "top_latents", "portability"):
        assert fam in r, fam
    assert r["dvalues"]["train"]["n_permutations"] == 100 and 0 < r["dvalues"]["train"]["p_d_max"] <= 1
    assert r["versions"]["sae-lens"].startswith("6.")
    assert r["reconstruction"]["lm_loss"]["n_tokens"] > 0
    # fp32 vs fp32 through the same SAE: exactly unchanged
    row = r["portability"]["rows"][0]
    assert row["precision"] == "fp32" and row["ev_drop"] == 0.0 and row["verdict"] == "ok"
    md = (out / "report.md").read_text()
    assert "indistinguishable from chance" in md or "above chance" in md
    assert (out / "d_hist.png").exists() and (out / "probes.png").exists()


def test_steering_alpha_zero_reproduces_unsteered():
    from gemma4_saelens_ext.evals.steering import generate_completions
    from gemma4_saelens_ext.models import load_model
    from gemma4_saelens_ext.source import steering_hook

    lm = load_model("gemma-3-270m", "fp32")
    prompts = ["You are on team Slug.\nYou answer: '", "The werewolf says: '"]
    base = generate_completions(lm, prompts, max_new_tokens=5, temperature=1.0, seed=3)
    with steering_hook(lm, 6, torch.ones(lm.d_model), 0.0):
        steered0 = generate_completions(lm, prompts, max_new_tokens=5, temperature=1.0, seed=3)
    assert steered0 == base
    with steering_hook(lm, 6, torch.ones(lm.d_model) * 50, 1.0):
        moved = generate_completions(lm, prompts, max_new_tokens=5, temperature=1.0, seed=3)
    assert moved != base


def test_suite_errors_before_long_work(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        load_suite({"name": "x", "sae": {"path": "y"}, "dataset": {"path": "z"}, "probes": {"folds": 3}})
    with pytest.raises(ValueError, match="needs `path`"):
        load_suite({"name": "x", "sae": {"path": "y"}, "dataset": {}})
    cfg = tiny_cfg(tmp_path)
    cfg.probes.n_splits = 50
    with pytest.raises(ValueError, match="50-fold stratified CV needs >= 50 per class; use n_splits="):
        run_suite(cfg, output_dir=str(tmp_path / "r"))
    cfg = tiny_cfg(tmp_path)
    cfg.dataset.eval_split = "nope"
    with pytest.raises(ValueError, match="split 'nope' is empty"):
        run_suite(cfg, output_dir=str(tmp_path / "r2"))
    # SAE width vs model width
    from sae_lens import TopKSAE, TopKSAEConfig

    sae_dir = tmp_path / "sae"
    TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4)).save_model(str(sae_dir))
    cfg = tiny_cfg(tmp_path, sae={"path": str(sae_dir)})
    cfg.model.layer = 6
    with pytest.raises(ValueError, match="d_in=32 but the model's residual width is 640"):
        run_suite(cfg, output_dir=str(tmp_path / "r3"))


def test_training_hook_evaluate_and_jsonl(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    labels = ["honest", "deceptive"] * 20
    hook = TrainingEvalHook(x, labels, every_n_steps=1, jsonl_path=tmp_path / "h.jsonl")
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=32, k=4))
    rec = hook.evaluate(sae, step=5)
    hook._log(rec)
    line = json.loads((tmp_path / "h.jsonl").read_text().splitlines()[0])
    assert line["step"] == 5 and line["heldout/l0"] == pytest.approx(4.0) and "heldout/d_max" in line
    with pytest.raises(ValueError, match="only one class"):
        TrainingEvalHook(x, ["honest"] * 40)
