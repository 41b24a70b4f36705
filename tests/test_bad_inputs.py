"""Bad input, caught early, in one table: each entry is a mistake a user makes, the call that makes it, and the
error it must give (type and the words that name the problem and the fix). Nothing here loads a model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_folders import config_only


def _suite(**over):
    from gemma4_saelens_ext.evals import load_suite

    base = {"name": "x", "sae": {"path": "y"}, "dataset": {"path": "z"}}
    base.update(over)
    return load_suite(base)


def _tiny_sae():
    from sae_lens import TopKSAE, TopKSAEConfig

    return TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))


def _write(tmp: Path, name: str, data: bytes | str) -> str:
    p = tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(p)


def _pickled_ckpt(tmp: Path) -> str:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp / "sae.pt"
    torch.save({"sae_state_dict": {"W_enc": torch.zeros(4, 8)}, "optimizer_state_dict": {"x": Evil()}}, p)
    return str(p)


def _run_suite_dict(tmp: Path, **over):
    from gemma4_saelens_ext.evals import run_suite

    cfg = _suite(**over)
    return run_suite(cfg, output_dir=str(tmp / "rep"))


def _build(tmp: Path, **kw):
    from gemma4_saelens_ext.behavior import BuildConfig, build_dataset

    return build_dataset(BuildConfig(out=str(tmp / "ds"), **kw))


def _build_into_foreign(tmp: Path):
    (tmp / "ds").mkdir()
    (tmp / "ds" / "notes.txt").write_text("my own file")
    return _build(tmp, max_prompts_per_family=1)


def _two_rows_split(tmp: Path, label: str):
    from gemma4_saelens_ext.evals.context import labelled_split

    return labelled_split("eval", [{"label": label, "group": "g"}] * 4)


def _train_config_only(tmp: Path, kind: str = "gemma4-multimodal", layer: int = 2, d_in: int = 64):
    """Train on a model folder holding only config.json (4 layers, hidden 64): a check made after the load would
    fail on the missing weights instead of giving its own error."""
    from gemma4_saelens_ext.training.runner import train

    return train({"model": {"source": config_only(tmp, kind), "precision": "fp32", "layer": layer},
                  "sae": {"d_in": d_in, "d_sae": 128, "k": 4},
                  "runner": {"dataset_path": "builtin:roleplay-corpus", "train_batch_size_tokens": 256,
                             "output_path": str(tmp / "sae")}})


def _suite_config_only(tmp: Path, layer: int | None = None, sae_d_in: int = 64, sae_hook: str = "blocks.2.hook_resid_post"):
    """Run a suite on a config-only model folder (4 layers, hidden 64) with an SAE folder saved by SAELens."""
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=sae_d_in, d_sae=16, k=4))
    sae.cfg.metadata.hook_name = sae_hook
    sae.save_model(str(tmp / "sae"))
    return _run_suite_dict(tmp, model={"source": config_only(tmp), "layer": layer}, sae={"path": str(tmp / "sae")})


def _demo(tmp: Path, **kw):
    from gemma4_saelens_ext.pipeline.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(out=str(tmp / "d"), **kw), echo=lambda _: None)


def _cli(*argv):
    from gemma4_saelens_ext.cli import main

    return main(list(argv))


# (id, call(tmp_path), exception type, regex the message must match)
CASES = [
    ("unknown precision", lambda t: __import__("gemma4_saelens_ext.models.precision", fromlist=["x"]).get_precision("fp8"),
     ValueError, r"Unknown precision 'fp8'.*Valid precisions: nf4, nf4-bf16, int8, fp16, bf16, fp32"),
    ("layer out of range", lambda t: __import__("gemma4_saelens_ext.models.load", fromlist=["x"]).parse_layer(40, 18),
     ValueError, r"Layer 40 is out of range: this model has 18 layers \(0\.\.17\)"),
    ("bad hook name", lambda t: __import__("gemma4_saelens_ext.models.load", fromlist=["x"]).parse_layer("blocks.x.resid", 18),
     ValueError, r"matches no residual-stream module.*blocks\.L\.hook_resid_post"),
    ("d_in mismatch", lambda t: __import__("gemma4_saelens_ext.evals.saeio", fromlist=["x"]).check_sae_matches(
        _tiny_sae(), d_model=640), ValueError, r"d_in=32 but the model's residual width is 640"),
    ("missing training config", lambda t: __import__("gemma4_saelens_ext.training.runner", fromlist=["x"]).load_training_config(
        "nope"), FileNotFoundError, r"shipped training_configs: demo_gemma3_270m_nf4"),
    ("missing suite", lambda t: __import__("gemma4_saelens_ext.evals", fromlist=["x"]).load_suite("nope"),
     FileNotFoundError, r"shipped evals: demo"),
    ("training config without sae.k", lambda t: __import__("gemma4_saelens_ext.training.runner", fromlist=["x"])
     .load_training_config({"model": {"source": "gemma-3-270m", "layer": 6}, "sae": {"d_in": 640, "d_sae": 64}}),
     ValueError, r"needs sae\.k"),
    ("override outside a section", lambda t: __import__("gemma4_saelens_ext.training.runner", fromlist=["x"])
     .load_training_config("demo_gemma3_270m_nf4", {"training_tokens": 5}), ValueError, r"must start with one of"),
    ("missing dataset names the command that builds it", lambda t: __import__(
        "gemma4_saelens_ext.evals.data", fromlist=["x"]).load_rows(str(t / "runs" / "ds"), "train"),
     FileNotFoundError, r"does not exist\. Build it first: `gemma4-sae build-dataset --out"),
    ("dataset without the split", lambda t: (t.joinpath("ds", "data").mkdir(parents=True), __import__(
        "gemma4_saelens_ext.evals.data", fromlist=["x"]).load_rows(str(t / "ds"), "eval")),
     ValueError, r"has no split 'eval'; available"),
    ("dataset file without a split column", lambda t: __import__("gemma4_saelens_ext.evals.data", fromlist=["x"])
     .load_rows(_write(t, "r.jsonl", json.dumps({"prompt": "p", "label": "honest"})), "train"),
     ValueError, r"no `split` column"),
    ("one-class split", lambda t: _two_rows_split(t, "honest"), ValueError, r"only one class present"),
    ("no labelled rows", lambda t: _two_rows_split(t, "ambiguous"), ValueError, r"empty \(no honest/deceptive"),
    ("one-class probe labels", lambda t: __import__("gemma4_saelens_ext.evals.probes", fromlist=["x"])
     .cross_validated_probe(np.zeros((10, 3)), np.ones(10)), ValueError, r"only one class"),
    ("more folds than groups", lambda t: __import__("gemma4_saelens_ext.evals.probes", fromlist=["x"])
     .cross_validated_probe(np.random.default_rng(0).normal(size=(12, 3)), np.tile([0, 1], 6),
                            groups=np.repeat([0, 1, 2], 4), n_splits=5, min_class_size=1),
     ValueError, r"3 groups but 5-fold grouped CV needs >= 5 groups; use n_splits=3"),
    ("groups of the wrong length", lambda t: __import__("gemma4_saelens_ext.evals", fromlist=["x"]).dvalue_analysis(
        np.zeros((6, 2)), np.tile([0, 1], 3), groups=[1, 2]), ValueError, r"groups has 2 entries but there are 6 rows"),
    ("suite naming an unknown family", lambda t: _suite(sparsity={"enabled": True}), ValueError,
     r"unknown keys \['sparsity'\]; valid keys:"),
    ("suite with an unknown option", lambda t: _suite(probes={"folds": 3}), ValueError, r"suite\.probes: unknown keys \['folds'\]"),
    ("unknown steering scale", lambda t: _suite(steering={"scale": "huge"}), ValueError, r"Unknown steering scale 'huge'"),
    ("unknown pooling", lambda t: _suite(pooling="median"), ValueError, r"pooling must be last, mean or max"),
    ("unknown encode unit", lambda t: _suite(encode="words"), ValueError, r"encode must be auto, tokens or pooled"),
    ("unknown stability mode", lambda t: _suite(stability={"mode": "resample"}), ValueError,
     r"stability\.mode must be auto, regenerate or bootstrap"),
    ("suite without an SAE", lambda t: __import__("gemma4_saelens_ext.evals", fromlist=["x"]).load_suite(
        {"name": "x", "dataset": {"path": "z"}}), ValueError, r"missing required key 'sae'"),
    ("unknown precision in a suite", lambda t: _suite(model={"precision": "int4"}), ValueError, r"Unknown precision 'int4'"),
    ("suite with the removed sae.fit", lambda t: _suite(sae={"fit": {"d_sae": 64}}), ValueError,
     r"sae\.fit was removed; use `sae\.train: demo_gemma3_270m_nf4`"),
    ("suite training an SAE from a missing config", lambda t: _suite(sae={"train": "nope"}), FileNotFoundError,
     r"shipped training_configs: demo_gemma3_270m_nf4"),
    ("suite overriding what it sets itself", lambda t: _suite(sae={"train": "demo_gemma3_270m_nf4", "overrides": {
        "runner.dataset_path": "x"}}), ValueError, r"sets \['runner\.dataset_path'\].*set \['dataset\.train_split'\] in the suite"),
    ("suite SAE override outside a section", lambda t: _suite(sae={"train": "demo_gemma3_270m_nf4", "overrides": {
        "training_tokens": 5}}), ValueError, r"must start with one of model, sae, runner"),
    ("missing SAE folder", lambda t: __import__("gemma4_saelens_ext.evals.saeio", fromlist=["x"]).load_sae(
        {"path": str(t / "no_sae")}), FileNotFoundError, r"SAE folder .* does not exist"),
    ("corrupt checkpoint", lambda t: __import__("gemma4_saelens_ext.releases.checkpoint", fromlist=["x"]).load_state_dict_file(
        _write(t, "sae.pt", b"\x00garbage, not a torch file")), ValueError, r"could not be read as a torch checkpoint \(corrupt or truncated file\?\)"),
    ("pickled object in a nested checkpoint", lambda t: __import__("gemma4_saelens_ext.releases.checkpoint", fromlist=["x"])
     .load_state_dict_file(_pickled_ckpt(t)), ValueError, r"Refusing to load .*pickled Python objects.*would run code"),
    ("empty scenario file", lambda t: __import__("gemma4_saelens_ext.behavior.scenarios", fromlist=["x"])
     .load_scenarios([_write(t, "empty.yaml", "")]), ValueError, r"empty\. Add a family: `family: NAME`"),
    ("zero samples per prompt", lambda t: _build(t, samples_per_prompt=0), Exception, r"samples_per_prompt must be >= 1"),
    ("judge API unreachable (no key) and no other judge", lambda t: _build(t, judges=["llm:nokey"]), Exception,
     r"No usable judge in \['llm:nokey'\].*no API key: set GEMMA4_SAE_JUDGE_NOKEY_API_KEY.*add `keyword`"),
    ("build into a folder that is not ours", _build_into_foreign, Exception,
     r"is not empty and holds no dataset build; choose a new or empty --out \(files that are not ours are never"),
    ("training: layer out of range, found before the model loads", lambda t: _train_config_only(t, layer=99),
     ValueError, r"model\.layer=99: Layer 99 is out of range: this model has 4 layers \(0\.\.3\)\. Read from "
     r".*config\.json; set model\.layer to a layer in 0\.\.3"),
    ("training: sae.d_in is not the hidden size, found before the model loads (Gemma 3 multimodal config)",
     lambda t: _train_config_only(t, "gemma3-multimodal", d_in=640), ValueError,
     r"sae\.d_in=640 does not match the model's hidden size 64 \(.*config\.json\); set sae\.d_in: 64"),
    ("eval suite: layer out of range, found before the model loads", lambda t: _suite_config_only(t, layer=99),
     ValueError, r"model\.layer=99: Layer 99 is out of range: this model has 4 layers"),
    ("eval suite: SAE folder's d_in is not the hidden size", lambda t: _suite_config_only(t, sae_d_in=32), ValueError,
     r"SAE '.*' \(.*sae\) d_in=32 does not match the model's hidden size 64.*pick the SAE for this model"),
    ("eval suite: the SAE's hook is past the model's last layer", lambda t: _suite_config_only(
        t, sae_hook="blocks.9.hook_resid_post"), ValueError,
     r"hook_name \(model\.layer is unset\)='blocks\.9\.hook_resid_post': Layer 9 is out of range.*pick the SAE"),
    ("demo: --layer out of range, found before the dataset stage", lambda t: _demo(t, layer=99), ValueError,
     r"model\.layer=99: Layer 99 is out of range: this model has 18 layers \(0\.\.17\)"),
    ("demo: the training config's sae.d_in is not the model's hidden size", lambda t: _demo(
        t, model=config_only(t), layer=2), ValueError, r"sae\.d_in=640 does not match the model's hidden size 64"),
    ("no disk space", lambda t: __import__("gemma4_saelens_ext.pipeline.demo", fromlist=["x"]).run_demo(
        __import__("gemma4_saelens_ext.pipeline.demo", fromlist=["x"]).DemoConfig(out=str(t / "d"), min_free_gb=1e9)),
     RuntimeError, r"GB free.*Free some space, or point --out"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(case, tmp_path):
    _, call, exc, pattern = case
    with pytest.raises(exc) as e:
        call(tmp_path)
    assert re.search(pattern, str(e.value), flags=re.S), str(e.value)


def test_table_is_broad():
    assert len(CASES) >= 25


def test_cli_reports_errors_with_exit_code_2(tmp_path, caplog):
    assert _cli("evals", "validate", "no_such_suite") == 2
    assert "shipped evals" in caplog.text
    assert _cli("train", "no_such_config") == 2
    assert _cli("train", "demo_gemma3_270m_nf4", "--set", "runner.training_tokens") == 2
    assert "--set expects KEY=VALUE" in caplog.text
