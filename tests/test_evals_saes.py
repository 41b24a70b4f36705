"""Several SAEs in one suite run (issue 17): the SAE list's schema, and a real run on the embedded Gemma 3 270M at
layer 12 with the SAE trained in-suite, a local folder, Gemma Scope 2 through SAELens's own ``gemma_3`` loader and a
Gemma 4 behavior-format release through the plugin's loader, both from a local Hugging Face cache with
HF_HUB_OFFLINE=1. Each gets a row in every table, and SAEBench-format files that pass the schema."""

from __future__ import annotations

import json

import pytest

from gemma4_saelens_ext.evals.saebench import (
    CORE_METRICS, SAEBenchInfo, TOP_LEVEL_KEYS, validate_saebench, write_saebench_results,
)
from gemma4_saelens_ext.evals.suite import load_suite, run_suite
from hf_cache import GEMMA_SCOPE_2_ID, GEMMA_SCOPE_2_RELEASE, GEMMA_SCOPE_2_REPO, behavior_release_files, \
    gemma_scope_2_files, write_hf_cache

BEHAVIOR = "Solshine/gemma4_test_behaviorSAE_topk_k8_L12"  # the author's naming: encoded pooled, no b_dec subtraction


def test_sae_list_schema_and_the_older_form():
    base = {"name": "x", "dataset": {"path": "z"}}
    cfg = load_suite({**base, "saes": [{"path": "runs/a/sae"}, {"release": "r", "sae_id": "i", "primary": True,
                                                                "encode": "pooled"}]})
    assert cfg.sae is None and [e.get("primary") for e in cfg.saes] == [None, True]
    old = load_suite({**base, "sae": {"path": "runs/a/sae"}, "other_saes": {"gs": {"release": "r", "sae_id": "i"}}})
    assert old.saes == [{"path": "runs/a/sae"}, {"release": "r", "sae_id": "i", "name": "gs"}]
    # the demo pipeline's `sae=` override replaces the primary entry's source and keeps its name
    demo = load_suite("demo", sae={"path": "/tmp/run/sae"})
    assert demo.saes == [{"name": "behavior", "path": "/tmp/run/sae"}]
    for bad, msg in [({"saes": [{"path": "a"}], "sae": {"path": "b"}}, "not both"),
                     ({"saes": [{"path": "a/b"}, {"path": "a/b"}]}, r"names \['a/b'\] appear twice"),
                     ({"saes": [{"release": "gemma-scope-2-270m-pt-res"}]}, "needs `sae_id`"),
                     ({"saes": [{"path": "a", "train": "demo_gemma3_270m_nf4"}]}, "exactly one of"),
                     ({"saes": [{"path": "a", "encode": "words"}]}, "encode must be auto, tokens or pooled"),
                     ({"saes": [{"train": "demo_gemma3_270m_nf4"}, {"train": "demo_gemma3_270m_nf4", "name": "b"}]},
                      "at most one entry may say `train`"),
                     ({"saes": [{"path": "a", "primary": True}, {"path": "b", "primary": True}]}, "more than one"),
                     ({"saes": [{"path": "a", "overrides": {"sae.k": 4}}]}, "applies to `train` only"),
                     ({"saes": [{"path": "a", "colour": 1}]}, r"unknown keys \['colour'\]"),
                     ({"saes": [{"path": "a", "name": "raw"}]}, "label other rows")]:
        with pytest.raises(ValueError, match=msg):
            load_suite({**base, **bad})


def test_saebench_writer_schema_and_sparse_probing_slot(tmp_path):
    """The writer API the detection card fills: core from a reconstruction row, sparse probing from its numbers;
    the documents carry SAEBench's keys and are refused when a required metric or key is missing."""
    info = SAEBenchInfo("behavior", {"d_in": 4, "d_sae": 8}, release=None, sae_id=None, sae_lens_version="6.54")
    rec = {"explained_variance": 0.8, "mse": 0.1, "l0": 4.0, "n_samples": 100, "alive": 7, "d_sae": 8,
           "core": {"cossim": 0.9, "l1": 3.0, "l2_norm_in": 2.0, "l2_norm_out": 1.8, "l2_ratio": 0.9,
                    "relative_reconstruction_bias": 1.0, "frac_alive": 0.875, "freq_over_1_percent": 0.5,
                    "freq_over_10_percent": 0.25, "normalized_freq_over_1_percent": 0.9,
                    "normalized_freq_over_10_percent": 0.6, "average_max_encoder_cosine_sim": 0.3,
                    "average_max_decoder_cosine_sim": float("nan")}}
    sp = {"llm": {"llm_test_accuracy": 0.9, "llm_top_1_test_accuracy": 0.6},
          "sae": {"sae_test_accuracy": 0.85, "sae_top_1_test_accuracy": 0.7, "sae_top_2_test_accuracy": 0.72,
                  "sae_top_5_test_accuracy": 0.8},
          "details": [{"dataset_name": "instructed_pairs", "llm_test_accuracy": 0.9, "sae_top_1_test_accuracy": 0.7}],
          "config": {"k_values": [1, 2, 5], "random_seed": 0}}
    paths = write_saebench_results(tmp_path, info, rec, sp)
    core = json.loads(paths["core"].read_text())
    assert paths["core"].parent.name == "core" and paths["core"].name == "custom_behavior_eval_results.json"
    assert set(core) == set(TOP_LEVEL_KEYS) and core["eval_type_id"] == "core"
    assert core["eval_result_metrics"]["reconstruction_quality"] == {"explained_variance": 0.8, "mse": 0.1,
                                                                     "cossim": 0.9}
    mbp = core["eval_result_metrics"]["model_behavior_preservation"]
    assert mbp == {"kl_div_score": -1, "kl_div_with_ablation": -1, "kl_div_with_sae": -1}  # not computed: -1
    assert core["eval_result_metrics"]["misc_metrics"]["average_max_decoder_cosine_sim"] == -1  # NaN: -1, as SAEBench
    assert {"kl_div_score", "ce_loss_score", "average_max_decoder_cosine_sim"} <= set(
        core["eval_result_unstructured"]["not_computed"])
    probe = json.loads(paths["sparse_probing"].read_text())
    assert probe["eval_type_id"] == "sparse_probing" and probe["eval_config"]["k_values"] == [1, 2, 5]
    assert probe["eval_result_metrics"]["sae"]["sae_top_5_test_accuracy"] == 0.8
    assert probe["eval_result_metrics"]["sae"]["sae_top_10_test_accuracy"] is None  # optional, not run
    assert probe["eval_result_details"][0]["dataset_name"] == "instructed_pairs"
    bad = json.loads(paths["core"].read_text())
    del bad["eval_result_metrics"]["sparsity"]["l0"]
    bad["sae_lens_id"] = 3
    with pytest.raises(ValueError, match=r"sae_lens_id should be str/NoneType, got int.*sparsity\.l0: required metric"):
        validate_saebench(bad)
    with pytest.raises(ValueError, match="unknown metrics"):
        write_saebench_results(tmp_path, info, None, {"sae": {"sae_top_3_accuracy": 0.5}})


def _fixtures(tmp_path, monkeypatch):
    """A local HF cache with Gemma Scope 2's layout and a behavior-format release, offline; a local SAE folder."""
    import huggingface_hub.constants as C
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    from gemma4_saelens_ext.releases.registry import register_release
    from gemma4_saelens_ext.releases.spec import ReleaseSpec, SAESpec

    cache = tmp_path / "hf_home" / "hub"
    write_hf_cache(cache, GEMMA_SCOPE_2_REPO, gemma_scope_2_files(tmp_path))
    name = BEHAVIOR.split("/")[1]
    write_hf_cache(cache, BEHAVIOR, behavior_release_files(tmp_path, name, d_in=640, d_sae=256, k=8, layer=12))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))  # huggingface_hub read the variable at import
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    register_release(ReleaseSpec(BEHAVIOR, saes=(SAESpec("blocks.12.hook_resid_post", f"{name}.pt", layer=12,
                                                         model_name="gemma-3-270m", precision="fp32"),),
                                 repo_id=BEHAVIOR, model="gemma-3-270m"), replace_existing=True)
    torch.manual_seed(1)
    local = TopKSAE(TopKSAEConfig(d_in=640, d_sae=320, k=12))
    with torch.no_grad():
        local.W_dec.copy_(torch.nn.functional.normalize(torch.randn(320, 640), dim=1))
        local.W_enc.copy_(local.W_dec.T)
    local.cfg.metadata.hook_name = "blocks.12.hook_resid_post"
    local.save_model(str(tmp_path / "local_sae"))
    return str(tmp_path / "local_sae")


@pytest.mark.slow
def test_four_sources_one_row_each_in_every_table(tmp_path, monkeypatch):
    from gemma4_saelens_ext.releases.registry import unregister_release

    local = _fixtures(tmp_path, monkeypatch)
    cfg = load_suite({
        "name": "four-saes", "seed": 0, "pooling": "mean",
        "model": {"source": "gemma-3-270m", "precision": "fp32", "layer": 12, "batch_size": 32, "max_length": 64},
        "saes": [{"name": "trained", "train": "demo_gemma3_270m_nf4",
                  "overrides": {"runner.training_tokens": 4096, "runner.train_batch_size_tokens": 128,
                                "runner.lr": 0.004, "sae.d_sae": 640}},
                 {"name": "local", "path": local},
                 {"name": "gemma-scope-2", "release": GEMMA_SCOPE_2_RELEASE, "sae_id": GEMMA_SCOPE_2_ID},
                 {"name": "behavior-release", "release": BEHAVIOR, "sae_id": "blocks.12.hook_resid_post"}],
        "dataset": {"scripted_families": ["slug_snail", "werewolf", "sandbagging_qa"]},
        "stats": {"n_permutations": 100, "n_bootstrap": 50, "probe_permutations": 3},
        "reconstruction": {"max_texts": 4}, "probes": {"n_splits": 2},
        "steering": {"enabled": False}, "stability": {"mode": "bootstrap"},
        "portability": {"precisions": ["fp32"], "max_texts": 4}})
    try:
        out = run_suite(cfg, output_dir=str(tmp_path / "rep"))
    finally:
        unregister_release(BEHAVIOR)
    r = json.loads((out / "report.json").read_text())
    names = ["trained", "local", "gemma-scope-2", "behavior-release"]
    saes = {s["name"]: s for s in r["saes"]}
    assert list(saes) == names and [s["primary"] for s in r["saes"]] == [True, False, False, False]
    assert r["sae"]["name"] == "trained" and r["sae"]["kind"].startswith("trained in-suite")
    assert (saes["gemma-scope-2"]["architecture"], saes["gemma-scope-2"]["d_sae"]) == ("JumpReLUSAE", 1024)
    assert saes["gemma-scope-2"]["hook"] == "blocks.12.hook_resid_post" and saes["gemma-scope-2"]["encode"] == "tokens"
    assert (saes["behavior-release"]["architecture"], saes["behavior-release"]["encode"]) == ("TopKSAE", "pooled")
    assert saes["local"]["d_sae"] == 320 and saes["trained"]["d_sae"] == 640
    # one row per SAE in every table, width / L0 / encoding unit beside it
    rec = {x["name"]: x for x in r["reconstruction"]["saes"]}
    assert list(rec) == names and rec["local"]["l0"] == pytest.approx(12.0)
    assert rec["behavior-release"]["l0"] == pytest.approx(8.0)
    assert rec["behavior-release"]["unit"].endswith("pooled texts")
    assert rec["gemma-scope-2"]["unit"].startswith("tokens") and rec["gemma-scope-2"]["lm_loss"]["n_tokens"] > 0
    assert r["reconstruction"]["explained_variance"] == rec["trained"]["explained_variance"]  # top level = primary
    assert [x["name"] for x in r["dvalues"]["by_sae"]] == names
    assert r["dvalues"]["by_sae"][0]["replicated"]["p"] == r["dvalues"]["primary"]["p"]
    assert any("[gemma-scope-2]" in o["name"] for o in r["tests"]["others"])  # other SAEs join the Holm family
    assert [x["name"] for x in r["control"]["by_sae"]] == names
    probe = {p["name"]: p for p in r["probes"]["results"]}
    assert set(names) <= set(probe) and probe["gemma-scope-2"]["sae"]["d_sae"] == 1024
    md = (out / "report.md").read_text()
    for n in names:
        assert md.count(f"{n} |") >= 3, n  # the SAE table, reconstruction, d-values (and probes)
    # one pass per split: every SAE's latents from it; the token rows kept, and how much was held
    ex = r["extraction"]
    assert set(ex["eval"]["saes"]) == {*names, "control SAE (random, same shape)"} and ex["eval"]["token_rows"] >= 1
    # SAEBench files, one per SAE, valid against the implemented schema
    for n in names:
        path = r["saebench"][n]["core"]
        doc = json.loads(open(path).read())
        validate_saebench(doc)
        assert set(doc["eval_result_metrics"]) == set(CORE_METRICS)
        assert doc["eval_result_metrics"]["sparsity"]["l0"] == pytest.approx(rec[n]["l0"])
        assert doc["eval_result_metrics"]["model_performance_preservation"]["ce_loss_score"] == \
            pytest.approx(rec[n]["lm_loss"]["ce_loss_score"])
        probing = json.loads(open(r["saebench"][n]["sparse_probing"]).read())  # from the detection card's readers
        validate_saebench(probing)
        assert probing["eval_type_id"] == "sparse_probing" and probing["eval_config"]["k_values"] == [1, 2, 5]
        assert probing["eval_result_details"][0]["dataset_name"] == "gemma4_saelens_ext/role_play"
    gs = json.loads(open(r["saebench"]["gemma-scope-2"]["core"]).read())
    assert (gs["sae_lens_release_id"], gs["sae_lens_id"]) == (GEMMA_SCOPE_2_RELEASE, GEMMA_SCOPE_2_ID)
    assert gs["sae_cfg_dict"]["d_sae"] == 1024 and gs["eval_config"]["context_size"] == 64
