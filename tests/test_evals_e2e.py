"""End to end on the embedded Gemma 3 270M (tiny budgets), steering at alpha=0 == unsteered, suite errors,
and the training hook's evaluation + JSONL log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma4_saelens_ext.evals.training_callback import TrainingEvalHook
from gemma4_saelens_ext.evals.suite import run_suite
from gemma4_saelens_ext.evals.suite_file import load_suite

DEMO = "evals/demo.yaml"


def tiny_cfg(tmp_path, **over):
    cfg = load_suite(DEMO)
    cfg.dataset.scripted_families = ["slug_snail", "werewolf", "sandbagging_qa"]
    cfg.model.batch_size = 32
    cfg.model.max_length = 64
    # the package's trainer (SAELens runner) on the scripted train split (~4k tokens, cached and re-read): a tiny
    # budget with a higher learning rate reaches EV ~0.6 in ~64 steps
    cfg.saes[0]["overrides"] = {"runner.training_tokens": 8192, "runner.train_batch_size_tokens": 128, "runner.lr": 0.004,
                            "sae.d_sae": 640}
    cfg.stats.n_permutations, cfg.stats.n_bootstrap, cfg.stats.probe_permutations = 100, 50, 3
    cfg.probes.n_splits = 2  # the scripted eval split of these families has 2 prompt groups
    cfg.reconstruction.max_texts = 4
    cfg.steering.alphas, cfg.steering.n_prompts, cfg.steering.max_new_tokens = [0.0, 1.0], 2, 4
    cfg.steering.n_random_directions = 1
    cfg.stability.mode = "bootstrap"
    cfg.portability.precisions, cfg.portability.max_texts = ["fp32"], 4
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.slow  # loads the embedded model, runs the whole demo suite
def test_demo_suite_end_to_end(tmp_path):
    out = run_suite(tiny_cfg(tmp_path), output_dir=str(tmp_path / "rep"))
    r = json.loads((out / "report.json").read_text())
    for fam in ("reconstruction", "dvalues", "probes", "detection", "steering", "stability", "top_latents",
                "portability"):
        assert fam in r, fam
    tr = r["dvalues"]["splits"]["train"]
    assert tr["n_groups"] >= 2 and tr["null"].startswith("group flips") and 0 < tr["p_d_max"] <= 1
    prim = r["dvalues"]["primary"]
    assert prim["selected_on"] == "train" and prim["split"] == "eval" and len(prim["latents"]) == 10
    assert r["tests"]["primary"]["p"] == prim["p"] and all("p_holm" in o for o in r["tests"]["others"])
    assert r["sae"]["encode"] == "tokens" and r["control"]["contrast"] == ["V3", "neutral"]
    # the SAE was trained by training.train on the train split at the suite's model, precision and layer
    sae = r["sae"]
    assert sae["kind"].startswith("trained in-suite") and sae["train"] == "demo_gemma3_270m_nf4"
    assert sae["training"]["model"] == {**sae["training"]["model"], "source": "gemma-3-270m", "precision": "fp32",
                                        "layer": 6}
    assert sae["hook"] == "blocks.6.hook_resid_post" and sae["d_sae"] == 640 and sae["from_cached_activations"]
    import pyarrow.parquet as pq

    from gemma4_saelens_ext.evals.data import scripted_rows

    texts = pq.read_table(out / "sae_data" / "train.parquet")["text"].to_pylist()
    splits = scripted_rows(["slug_snail", "werewolf", "sandbagging_qa"], seed=0)
    assert texts == [x["text"] for x in splits["train"]] and sae["training_texts"] == len(texts)
    assert not set(texts) & {x["text"] for x in splits["eval"]}  # never an eval prompt
    assert (out / "sae" / "cfg.json").exists()
    assert r["reconstruction"]["explained_variance"] > 0.3  # trained, not the random init (EV << 0)
    assert "random_slope_percentile" in r["steering"] and len(r["steering"]["controls"]) == 2
    assert r["dataset"]["sizes"]["eval"]["groups"] == prim["n_groups"]
    assert r["versions"]["sae-lens"].startswith("6.")
    assert r["reconstruction"]["lm_loss"]["n_tokens"] > 0
    # fp32 vs fp32 through the same SAE: exactly unchanged
    row = r["portability"]["rows"][0]
    assert row["precision"] == "fp32" and row["ev_drop"] == 0.0 and row["verdict"] == "ok"
    # the label layout, the null and the interval methods are named (the scripted pools are 1:1 in every group)
    lay = r["dataset"]["layout"]["train"]
    assert lay["kind"] == "balanced_within" and lay["unit"] == "prompt group" and tr["layout"] == lay
    assert tr["d_max_ci_method"].startswith("bias-corrected group bootstrap of d_max itself")
    assert prim["ci_method"].startswith("eval rows") and prim["layout"]["kind"] == "balanced_within"
    st = r["stability"]
    assert st["verdict_kind"] in ("STABLE", "UNSTABLE", "NO EFFECT TO BE STABLE") and st["null"].startswith("group flips")
    sg = r["steering"]
    assert sg["n_random_directions"] == 1 and "random_rank_p" in sg and "prompt_share_against" in sg
    assert any("rank p cannot go below 0.5" in w for w in r["warnings"])  # one random direction: said, not hidden
    assert {"steering slope (SAE direction)", "steering rank among random directions (SAE direction)"} <= {
        o["name"] for o in r["tests"]["others"]}
    card = r["detection"]["kinds"]["role_play"]["rows"]
    assert [c["family"] for c in card] == ["dense", "sae_all", "sae_topk", "sae_topk", "sae_topk", "lexical"]
    assert all(c["auroc_honest_deceptive"]["ci"] and c["auroc_honest_deceptive"]["p"] for c in card)
    sp = r["detection"]["saebench_sparse_probing"][r["sae"]["name"]]
    assert "llm_test_accuracy" in sp["llm"] and "sae_top_1_test_accuracy" in sp["sae"]
    files = r["saebench"][r["sae"]["name"]]  # SAEBench-format files beside report.json
    assert json.loads(open(files["sparse_probing"]).read())["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] \
        == pytest.approx(sp["sae"]["sae_top_1_test_accuracy"])
    assert json.loads(open(files["core"]).read())["eval_type_id"] == "core"
    md = (out / "report.md").read_text()
    assert md.index("## Detection card") < md.index("Tests")
    assert "PRIMARY: replicated d_max" in md and "Holm-adjusted" in md and "groups" in md
    assert "label layout" in md and "null = group flips" in md and "rank p among 1 random directions" in md
    assert "Positive control" in md and "random direction" in md
    assert (out / "d_hist.png").exists() and (out / "probes.png").exists()


@pytest.mark.slow  # loads the embedded model and generates
def test_steering_alpha_zero_reproduces_unsteered_and_controls_run():
    from gemma4_saelens_ext.evals import steering as SG
    from gemma4_saelens_ext.models.load import load_model

    lm = load_model("gemma-3-270m", "fp32")
    rows = [{"prompt": "You are on team Slug.\nYou answer: '", "prompt_id": "a"},
            {"prompt": "The werewolf says: '", "prompt_id": "b"}]
    seen: list[list[str]] = []

    def judge(rs, comps):
        seen.append(list(comps))
        return ["ambiguous"] * len(comps)

    d = lm.d_model
    dirs = {"big": np.ones(d) / np.sqrt(d), "random 0": SG.random_directions(d, 1, 0)[0]}
    out = SG.run_steering(lm, 6, dirs, rows, judge, scale=400.0, alphas=[0.0, 1.0], max_new_tokens=5, seed=3,
                          batch_size=1)
    assert set(out) == {"big", "random 0"}
    # alpha 0 is generated once and shared; it equals the unsteered builder sampler's output
    from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests

    reqs = make_requests([("0:a", rows[0]["prompt"]), ("1:b", rows[1]["prompt"])], 1, 3)
    plain = {c.key: c.completion for c in generate_completions(lm.model, lm.tokenizer, reqs, max_new_tokens=5,
                                                                   progress=False)}
    assert seen[0] == [plain["0:a#0"], plain["1:b#0"]] == seen[2]
    assert seen[1] != seen[0]  # a push of 400 along the all-ones direction changes the text
    # batch size does not change the result (one seed per row)
    again = SG.run_steering(lm, 6, {"big": dirs["big"]}, rows, judge, scale=400.0, alphas=[1.0], max_new_tokens=5,
                            seed=3, batch_size=2)
    assert again["big"]["examples"]["1.0"] == out["big"]["examples"]["1.0"]


def test_suite_errors_before_long_work(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        load_suite({"name": "x", "sae": {"path": "y"}, "dataset": {"path": "z"}, "probes": {"folds": 3}})
    with pytest.raises(ValueError, match="needs `path`"):
        load_suite({"name": "x", "sae": {"path": "y"}, "dataset": {}})
    cfg = tiny_cfg(tmp_path)
    cfg.probes.n_splits = 50
    with pytest.raises(ValueError, match="50-fold (stratified|grouped) CV needs >= 50"):
        run_suite(cfg, output_dir=str(tmp_path / "r"))
    cfg = tiny_cfg(tmp_path)
    cfg.dataset.eval_split = "nope"
    with pytest.raises(ValueError, match="split 'nope' is empty"):
        run_suite(cfg, output_dir=str(tmp_path / "r2"))
    # SAE width vs model width: found from the two config files before the model or the SAE loads
    from sae_lens import TopKSAE, TopKSAEConfig

    sae_dir = tmp_path / "sae"
    TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4)).save_model(str(sae_dir))
    cfg = tiny_cfg(tmp_path, saes=[{"path": str(sae_dir)}])
    cfg.model.layer = 6
    with pytest.raises(ValueError, match=r"d_in=32 does not match the model's hidden size 640 .*config\.json"):
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
    grouped = TrainingEvalHook(x, labels, groups=np.arange(40) // 4, n_permutations=200).evaluate(sae, step=1)
    assert grouped["heldout/n_groups"] == 10 and 0 < grouped["heldout/p_d_max"] <= 1
    with pytest.raises(ValueError, match="only one class"):
        TrainingEvalHook(x, ["honest"] * 40)


def test_every_suite_field_has_a_docstring():
    """simple_parsing reads these for --help: a docstring directly under every field of every suite section."""
    import dataclasses

    from simple_parsing.docstring import get_attribute_docstring

    from gemma4_saelens_ext.evals import spec

    classes = [getattr(spec, n) for n in spec.__all__ if dataclasses.is_dataclass(getattr(spec, n, None))]
    assert len(classes) == 13
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
               if not get_attribute_docstring(c, f.name).docstring_below]
    assert not missing, missing
