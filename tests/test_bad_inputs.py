"""Bad input, caught early, in two tables: each entry is a mistake a user makes, the call (or the command line) that
makes it, and the error it must give. Nothing here loads a model.

* :data:`CASES` (the API): the exception type, the words that name the key, file or value and the fix, and that
  ``gemma4-sae`` would show it as a user error (one paragraph, no traceback: :func:`is_user_error`).
* :data:`CLI_CASES` (``gemma4-sae``): the exit status (2), no traceback on stderr, and the words on stderr.

Each case hits one check: remove the check and the case fails (a different error, a traceback, or none)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from checkpoint_folders import config_only

from gemma4_saelens_ext.cli.app import is_user_error
from gemma4_saelens_ext.errors import MissingDependencyError, MissingFileError, OutputBusyError, UserError

DEMO_CFG = "demo_gemma3_270m_nf4"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def _mod(name: str):
    return __import__(f"gemma4_saelens_ext.{name}", fromlist=["x"])


def _suite(**over):
    base = {"name": "x", "sae": {"path": "y"}, "dataset": {"path": "z"}}
    base.update(over)
    return _mod("evals").load_suite(base)


def _stats(**kw):
    return _suite(stats=kw)


def _tiny_sae():
    from sae_lens import TopKSAE, TopKSAEConfig

    return TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))


def _write(tmp: Path, name: str, data: bytes | str) -> str:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(p)


def _yaml(tmp: Path, name: str, data) -> str:
    return _write(tmp, name, yaml.safe_dump(data))


def _jsonl(tmp: Path, name: str, rows) -> str:
    return _write(tmp, name, "\n".join(json.dumps(r) for r in rows) + "\n")


def _pickled_ckpt(tmp: Path) -> str:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp / "sae.pt"
    torch.save({"sae_state_dict": {"W_enc": torch.zeros(4, 8)}, "optimizer_state_dict": {"x": Evil()}}, p)
    return str(p)


def _sae_folder(tmp: Path, damage: str | None = None) -> str:
    """A folder saved by SAELens (d_in 32, d_sae 64), then damaged: cfg (not JSON), truncate (the weights cut in
    half), d_sae (cfg.json disagrees with the weights), weights (the weights file removed)."""
    folder = tmp / "sae"
    _tiny_sae().save_model(str(folder))
    cfg, w = folder / "cfg.json", folder / "sae_weights.safetensors"
    if damage == "cfg":
        cfg.write_text(cfg.read_text()[:40])
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "d_sae":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "d_sae": 128}))
    elif damage == "weights":
        w.unlink()
    return str(folder)


def _train_cfg(**over):
    return _mod("training.config").load_training_config(DEMO_CFG, over)


def _train_file(tmp: Path, text: str):
    return _mod("training.config").load_training_config(_write(tmp, "cfgs/mine.yaml", text))


def _build(tmp: Path, **kw):
    from gemma4_saelens_ext.behavior import BuildConfig, build_dataset

    return build_dataset(BuildConfig(out=str(tmp / "ds"), **kw))


def _build_into_foreign(tmp: Path):
    (tmp / "ds").mkdir()
    (tmp / "ds" / "notes.txt").write_text("my own file")
    return _build(tmp, max_prompts_per_family=1)


def _build_while_busy(tmp: Path):
    from gemma4_saelens_ext.io import output_lock

    with output_lock(tmp / "ds"):  # another writer holds the folder
        return _build(tmp, max_prompts_per_family=1, resume=True)


def _split(labels):
    from gemma4_saelens_ext.evals.context import labelled_split

    return labelled_split("eval", [{"label": lab, "group": f"g{i % 3}"} for i, lab in enumerate(labels)])


def _train_config_only(tmp: Path, kind: str = "gemma4-multimodal", layer: int = 2, d_in: int = 64):
    """Train on a model folder holding only config.json (4 layers, hidden 64): a check made after the load would
    fail on the missing weights instead of giving its own error."""
    from gemma4_saelens_ext.training.runner import train

    return train({"model": {"source": config_only(tmp, kind), "precision": "fp32", "layer": layer},
                  "sae": {"d_in": d_in, "d_sae": 128, "k": 4},
                  "runner": {"dataset_path": "builtin:roleplay-corpus", "train_batch_size_tokens": 256,
                             "output_path": str(tmp / "sae")}})


def _run_suite_dict(tmp: Path, **over):
    return _mod("evals").run_suite(_suite(**over), output_dir=str(tmp / "rep"))


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


def _nan(x: np.ndarray, rows=(1, 4), value=np.nan) -> np.ndarray:
    x = x.copy()
    x[list(rows), 0] = value
    return x


_RNG = np.random.default_rng(0)
_X, _Y = _RNG.normal(size=(12, 3)), np.tile([0, 1], 6)
_GROUPS = np.repeat(np.arange(6), 2)


def _rows_file(tmp: Path, drop: dict[int, str] | None = None, name: str = "rows.jsonl") -> str:
    """Six labelled rows in train/eval; ``drop`` removes a key from some rows (row index -> key)."""
    rows = [{"text": f"t{i}", "label": ["honest", "deceptive"][i % 2], "split": ["train", "eval"][i // 3],
             "group": f"g{i}"} for i in range(6)]
    for i, key in (drop or {}).items():
        rows[i].pop(key)
    return _jsonl(tmp, name, rows)


def _file(tmp: Path, name: str = "exists.txt") -> str:
    return _write(tmp, name, "a file where a folder goes")


# (id, call(tmp_path), exception type, regex the message must match)
CASES = [
    # ---- names and ranges of the model side
    ("unknown precision", lambda t: _mod("models.precision").get_precision("fp8"),
     ValueError, r"Unknown precision 'fp8'.*Valid precisions: nf4, nf4-bf16, int8, fp16, bf16, fp32"),
    ("layer out of range", lambda t: _mod("models.load").parse_layer(40, 18),
     ValueError, r"Layer 40 is out of range: this model has 18 layers \(0\.\.17\)"),
    ("bad hook name", lambda t: _mod("models.load").parse_layer("blocks.x.resid", 18),
     ValueError, r"matches no residual-stream module.*blocks\.L\.hook_resid_post"),
    ("d_in mismatch", lambda t: _mod("evals.saeio").check_sae_matches(_tiny_sae(), d_model=640),
     ValueError, r"d_in=32 but the model's residual width is 640"),
    pytest.param(("device cuda without CUDA", lambda t: _mod("errors").check_device("cuda", "runner.device"),
                  UserError, r"runner\.device='cuda', but this machine has no CUDA device.*set runner\.device=cpu"),
                 marks=NO_CUDA, id="device cuda without CUDA"),
    ("not a device", lambda t: _mod("errors").check_device("gpu0", "runner.device"), UserError,
     r"runner\.device='gpu0' is not a device.*cpu, cuda, cuda:N or mps"),
    ("bitsandbytes that does not import fails only the quantized precisions", lambda t: _without_bnb(
        lambda: _mod("models.precision").from_pretrained_kwargs("nf4")), MissingDependencyError,
     r"quantized precisions \(nf4, nf4-bf16, int8, nf4-fp32compute\) need bitsandbytes, which did not import.*pick an unquantized"),
    # ---- training configs: paths, shapes, keys, types, ranges
    ("missing training config", lambda t: _mod("training.runner").load_training_config("nope"),
     FileNotFoundError, r"shipped training_configs: demo_gemma3_270m_nf4"),
    ("training config path that does not exist is not the shipped file of that name",
     lambda t: _mod("training.config").load_training_config("my_configs/demo_gemma3_270m_nf4.yaml"),
     MissingFileError, r"my_configs/demo_gemma3_270m_nf4\.yaml is not a file \(no such path\)"),
    ("training config that is a YAML list", lambda t: _train_file(t, "- model: {source: x}\n- sae: {}\n"),
     UserError, r"training config .*mine\.yaml: expected a mapping .*got a list"),
    ("training config with a section that is not a mapping", lambda t: _train_file(
        t, "model: gemma-3-270m\nsae: {d_in: 640, d_sae: 64, k: 4}\n"), UserError,
     r"mine\.yaml: model: expected a mapping .*got the text 'gemma-3-270m'"),
    ("training config that is not valid YAML", lambda t: _train_file(t, "model:\n  source: [x\n"), UserError,
     r"mine\.yaml line \d+, column \d+: not valid YAML"),
    ("training config without sae.k", lambda t: _mod("training.runner").load_training_config(
        {"model": {"source": "gemma-3-270m", "layer": 6}, "sae": {"d_in": 640, "d_sae": 64}}),
     ValueError, r"needs sae\.k"),
    ("override outside a section", lambda t: _train_cfg(training_tokens=5), ValueError, r"must start with one of"),
    ("misspelled runner key (--set runner.training_token=1000)", lambda t: _mod("training.config").load_training_config(
        DEMO_CFG, {"runner.training_token": 1000}), UserError,
     r"unknown keys \['runner\.training_token'\] \(runner\.training_token: did you mean runner\.training_tokens"
     r".*valid keys: runner\.training_tokens, .*runner\.lr"),
    ("misspelled sae key", lambda t: _train_cfg(**{"sae.kk": 8}), UserError,
     r"unknown keys \['sae\.kk'\] \(sae\.kk: did you mean sae\.k\b"),
    ("misspelled model key", lambda t: _train_cfg(**{"model.layr": 3}), UserError,
     r"unknown keys \['model\.layr'\] \(model\.layr: did you mean model\.layer\?\); valid keys: model\.layer"),
    ("misspelled logger key", lambda t: _train_cfg(**{"runner.logger.log_to_wanb": True}), UserError,
     r"unknown keys \['runner\.logger\.log_to_wanb'\].*did you mean runner\.logger\.log_to_wandb"),
    ("runner key the plugin sets from the model section", lambda t: _train_cfg(**{"runner.hook_name": "x"}),
     UserError, r"runner\.hook_name is set by the plugin from model\.layer.*set model\.layer instead"),
    ("k = 0 (an SAE that never fires)", lambda t: _train_cfg(**{"sae.k": 0}), UserError,
     r"sae\.k=0 is out of range: it must be in \[1, 2560\].*between 1 and sae\.d_sae=2560"),
    ("k below 0", lambda t: _train_cfg(**{"sae.k": -3}), UserError, r"sae\.k=-3 is out of range"),
    ("k above d_sae (a late crash inside torch)", lambda t: _train_cfg(**{"sae.k": 3000}), UserError,
     r"sae\.k=3000 is out of range: it must be in \[1, 2560\]"),
    ("d_sae = 0", lambda t: _train_cfg(**{"sae.d_sae": 0}), UserError, r"sae\.d_sae=0 is out of range: it must be >= 1"),
    ("training_tokens = 0 (an untrained SAE saved)", lambda t: _train_cfg(**{"runner.training_tokens": 0}),
     UserError, r"runner\.training_tokens=0 is out of range: it must be >= 1"),
    ("training_tokens below one batch (zero steps)", lambda t: _train_cfg(**{"runner.training_tokens": 100}),
     UserError, r"runner\.training_tokens=100 is less than one batch \(runner\.train_batch_size_tokens=256\): the SAE "
     r"would be saved untrained"),
    ("learning rate 0", lambda t: _train_cfg(**{"runner.lr": 0}), UserError,
     r"runner\.lr=0 is out of range: it must be > 0"),
    ("context_size that is not a number", lambda t: _train_cfg(**{"runner.context_size": "abc"}), UserError,
     r"runner\.context_size='abc' should be an integer"),
    ("quoted number in the training config", lambda t: _train_cfg(**{"runner.train_batch_size_tokens": "256"}),
     UserError, r"runner\.train_batch_size_tokens='256' should be an integer \(write 256 without quotes\)"),
    ("unknown cache_activations mode", lambda t: _train_cfg(**{"model.cache_activations": "sometimes"}), UserError,
     r"model\.cache_activations='sometimes' must be auto, true or false"),
    pytest.param(("runner.device=cuda on a machine without CUDA", lambda t: _train_cfg(**{"runner.device": "cuda"}),
                  UserError, r"runner\.device='cuda', but this machine has no CUDA device"),
                 marks=NO_CUDA, id="runner.device=cuda on a machine without CUDA"),
    ("training: layer out of range, found before the model loads", lambda t: _train_config_only(t, layer=99),
     ValueError, r"model\.layer=99: Layer 99 is out of range: this model has 4 layers \(0\.\.3\)\. Read from "
     r".*config\.json; set model\.layer to a layer in 0\.\.3"),
    ("training: sae.d_in is not the hidden size, found before the model loads (Gemma 3 multimodal config)",
     lambda t: _train_config_only(t, "gemma3-multimodal", d_in=640), ValueError,
     r"sae\.d_in=640 does not match the model's hidden size 64 \(.*config\.json\); set sae\.d_in: 64"),
    # ---- eval suites: paths, shapes, keys, types, ranges
    ("missing suite", lambda t: _mod("evals").load_suite("nope"), FileNotFoundError, r"shipped evals: demo"),
    ("suite path that does not exist is not the shipped suite of that name (my_suites_typo/demo.yaml)",
     lambda t: _mod("evals").load_suite("my_suites_typo/demo.yaml"), MissingFileError,
     r"my_suites_typo/demo\.yaml is not a file \(no such path\); shipped evals: demo"),
    ("misspelled shipped suite name", lambda t: _mod("evals").load_suite("dem"), MissingFileError,
     r"dem is neither a file nor a shipped config \(did you mean demo\?\)"),
    ("suite that is a YAML list", lambda t: _mod("evals").load_suite(_write(t, "s.yaml", "- name: x\n- sae: y\n")),
     UserError, r"suite .*s\.yaml: expected a mapping .*got a list"),
    ("suite naming an unknown family", lambda t: _suite(sparsity={"enabled": True}), ValueError,
     r"unknown keys \['sparsity'\].*; valid keys:"),
    ("suite with a misspelled section (close match first)", lambda t: _suite(stat={"alpha": 0.05}), UserError,
     r"suite: unknown keys \['stat'\] \(stat: did you mean stats.*\); valid keys: stats"),
    ("suite with an unknown option", lambda t: _suite(probes={"folds": 3}), ValueError,
     r"suite\.probes: unknown keys \['folds'\]"),
    ("suite section that is a list", lambda t: _suite(stats=[{"alpha": 0.05}]), UserError,
     r"suite\.stats: expected a mapping .*got a list"),
    ("n_splits given as text ('5')", lambda t: _suite(probes={"n_splits": "5"}), UserError,
     r"suite\.probes\.n_splits='5' should be an integer \(write 5 without quotes\)"),
    ("alpha = 5 (noise called significant)", lambda t: _stats(alpha=5), UserError,
     r"stats\.alpha=5 is out of range: it must be in \(0, 1\)"),
    ("alpha = 0", lambda t: _stats(alpha=0), UserError, r"stats\.alpha=0 is out of range: it must be in \(0, 1\)"),
    ("negative n_permutations", lambda t: _stats(n_permutations=-5), UserError,
     r"stats\.n_permutations=-5 is out of range: it must be >= 1"),
    ("zero bootstrap resamples", lambda t: _stats(n_bootstrap=0), UserError, r"stats\.n_bootstrap=0 is out of range"),
    ("one-fold probes", lambda t: _suite(probes={"n_splits": 1}), UserError,
     r"probes\.n_splits=1 is out of range: it must be >= 2"),
    ("negative steering temperature", lambda t: _suite(steering={"temperature": -1}), UserError,
     r"steering\.temperature=-1 is out of range: it must be >= 0"),
    ("zero batch size", lambda t: _suite(model={"batch_size": 0}), UserError, r"model\.batch_size=0 is out of range"),
    ("portability drop above 1", lambda t: _suite(portability={"max_ev_drop": 2}), UserError,
     r"portability\.max_ev_drop=2 is out of range: it must be in \[0, 1\]"),
    ("control contrast with one variant", lambda t: _suite(control={"contrast": ["V3"]}), UserError,
     r"control\.contrast=\['V3'\] must name two variants"),
    ("stability without seeds", lambda t: _suite(stability={"seeds": []}), UserError, r"stability\.seeds is empty"),
    ("sae that is a list", lambda t: _suite(sae=["x"]), UserError, r"suite\.sae=\['x'\] should be a mapping"),
    ("unknown steering scale", lambda t: _suite(steering={"scale": "huge"}), ValueError, r"Unknown steering scale 'huge'"),
    ("unknown pooling", lambda t: _suite(pooling="median"), ValueError, r"pooling must be last, mean or max"),
    ("unknown encode unit", lambda t: _suite(encode="words"), ValueError, r"encode must be auto, tokens or pooled"),
    ("unknown stability mode", lambda t: _suite(stability={"mode": "resample"}), ValueError,
     r"stability\.mode must be auto, regenerate or bootstrap"),
    ("suite without an SAE", lambda t: _mod("evals").load_suite({"name": "x", "dataset": {"path": "z"}}), ValueError,
     r"missing required key 'sae'"),
    ("unknown precision in a suite", lambda t: _suite(model={"precision": "int4"}), ValueError, r"Unknown precision 'int4'"),
    ("suite with the removed sae.fit", lambda t: _suite(sae={"fit": {"d_sae": 64}}), ValueError,
     r"sae\.fit was removed; use `sae\.train: demo_gemma3_270m_nf4`"),
    ("suite training an SAE from a missing config", lambda t: _suite(sae={"train": "nope"}), FileNotFoundError,
     r"shipped training_configs: demo_gemma3_270m_nf4"),
    ("suite training an SAE with a misspelled override", lambda t: _suite(sae={"train": DEMO_CFG, "overrides": {
        "runner.training_token": 5}}), UserError, r"did you mean runner\.training_tokens"),
    ("suite overriding what it sets itself", lambda t: _suite(sae={"train": DEMO_CFG, "overrides": {
        "runner.dataset_path": "x"}}), ValueError, r"sets \['runner\.dataset_path'\].*set \['dataset\.train_split'\] in the suite"),
    ("suite SAE override outside a section", lambda t: _suite(sae={"train": DEMO_CFG, "overrides": {
        "training_tokens": 5}}), ValueError, r"must start with one of model, sae, runner"),
    ("eval suite: layer out of range, found before the model loads", lambda t: _suite_config_only(t, layer=99),
     ValueError, r"model\.layer=99: Layer 99 is out of range: this model has 4 layers"),
    ("eval suite: SAE folder's d_in is not the hidden size", lambda t: _suite_config_only(t, sae_d_in=32), ValueError,
     r"SAE '.*' \(.*sae\) d_in=32 does not match the model's hidden size 64.*pick the SAE for this model"),
    ("eval suite: the SAE's hook is past the model's last layer", lambda t: _suite_config_only(
        t, sae_hook="blocks.9.hook_resid_post"), ValueError,
     r"hook_name \(model\.layer is unset\)='blocks\.9\.hook_resid_post': Layer 9 is out of range.*pick the SAE"),
    # ---- datasets: every row, labels normalised or refused
    ("missing dataset names the command that builds it", lambda t: _mod("evals.data").load_rows(
        str(t / "runs" / "ds"), "train"), FileNotFoundError, r"does not exist\. Build it first: `gemma4-sae build-dataset --out"),
    ("dataset without the split", lambda t: (t.joinpath("ds", "data").mkdir(parents=True), _mod("evals.data").load_rows(
        str(t / "ds"), "eval")), ValueError, r"has no split 'eval'; available"),
    ("dataset file without a split column", lambda t: _mod("evals.data").load_rows(
        _write(t, "r.jsonl", json.dumps({"prompt": "p", "label": "honest"})), "train"), ValueError, r"no `split` column"),
    ("JSONL rows without `split` in some rows (not only row 0 is checked)", lambda t: _mod("evals.data").load_rows(
        _rows_file(t, {2: "split", 4: "split"}), "train"), UserError,
     r"rows\.jsonl: 2 of 6 lines have no `split` \(lines 3, 5\); they would be left out of every split"),
    ("rows without a label", lambda t: _mod("evals.data").load_rows(_rows_file(t, {1: "label"}), "train"), UserError,
     r"rows\.jsonl: 1 of 3 lines have no `label` \(lines 2\)"),
    ("rows without a text", lambda t: _mod("evals.data").load_rows(_rows_file(t, {5: "text"}), "eval"), UserError,
     r"1 lines have neither `text` nor `prompt` \+ `completion` \(lines 6\)"),
    ("dataset line that is not JSON", lambda t: _mod("evals.data").load_rows(_write(
        t, "r.jsonl", '{"text": "a", "label": "honest", "split": "train"}\n{"text": "b",\n'), "train"), UserError,
     r"r\.jsonl line 2: not valid JSON"),
    ("labels that are neither honest, deceptive nor ambiguous are refused with a count", lambda t: _split(
        ["honest", "deceptive", "yes", "no", "yes", "honest"]), UserError,
     r"split 'eval': 3 of 6 labels are neither 'honest', 'deceptive' nor ambiguous/unlabelled \('yes' x2, 'no' x1\)"),
    ("a null label is refused", lambda t: _split(["honest", "deceptive", None, "honest"]), UserError,
     r"1 of 4 labels are neither .*\(None x1\)"),
    ("one-class split", lambda t: _split(["honest"] * 4), ValueError, r"only one class present"),
    ("no labelled rows", lambda t: _split(["ambiguous"] * 4), ValueError, r"empty \(no honest/deceptive"),
    ("integer labels other than 0/1", lambda t: _mod("evals.stats").encode_labels([0, 1, 2]), UserError,
     r"integer labels must be 0/1, got values \[0, 1, 2\]"),
    # ---- non-finite activations
    ("NaN activations in d-values", lambda t: _mod("evals").dvalue_analysis(_nan(_X), _Y, groups=_GROUPS), UserError,
     r"d-values \(split\): activations: 2 NaN and 0 inf values in 2 of 12 rows \(rows 1, 4\)"),
    ("inf activations in d-values", lambda t: _mod("evals").dvalue_analysis(_nan(_X, (7,), np.inf), _Y), UserError,
     r"0 NaN and 1 inf values in 1 of 12 rows \(rows 7\).*nf4, bf16 or fp32 instead of fp16"),
    ("NaN features in a probe", lambda t: _mod("evals.probes").cross_validated_probe(
        _nan(_X), _Y, groups=_GROUPS, n_splits=3, min_class_size=1), UserError, r"probe: features: 2 NaN"),
    ("NaN activations in the replication test", lambda t: _mod("evals.dvalues").replication_analysis(
        _nan(_X, (0,)), _Y, np.ones(3), groups=_GROUPS), UserError, r"replication \(eval\): activations: 1 NaN"),
    # ---- statistics arguments
    ("one-class probe labels", lambda t: _mod("evals.probes").cross_validated_probe(np.zeros((10, 3)), np.ones(10)),
     ValueError, r"only one class"),
    ("more folds than groups", lambda t: _mod("evals.probes").cross_validated_probe(
        _RNG.normal(size=(12, 3)), np.tile([0, 1], 6), groups=np.repeat([0, 1, 2], 4), n_splits=5, min_class_size=1),
     ValueError, r"3 groups but 5-fold grouped CV needs >= 5 groups; use n_splits=3"),
    ("groups of the wrong length", lambda t: _mod("evals").dvalue_analysis(
        np.zeros((6, 2)), np.tile([0, 1], 3), groups=[1, 2]), ValueError, r"groups has 2 entries but there are 6 rows"),
    # ---- extraction texts: one output row per input row
    ("extract: a JSON null text is refused with its line (never the text 'None')", lambda t: _mod(
        "activations.distributed").read_texts(_jsonl(t, "t.jsonl", [{"text": "a"}, {"text": None}, "c"])), UserError,
     r"t\.jsonl: null at line 2\. Each input row gives one output row"),
    ("extract: an empty text is refused (never a BOS-only vector)", lambda t: _mod("activations.distributed").read_texts(
        _jsonl(t, "t.jsonl", ["a", "", "c", " "])), UserError, r"t\.jsonl: empty at lines 2, 4"),
    ("extract: a blank .txt line is refused (rows stay aligned)", lambda t: _mod("activations.distributed").read_texts(
        _write(t, "t.txt", "first\n\nthird\n\n")), UserError, r"t\.txt: empty at line 2\."),
    ("extract: a JSON list item that is not a text", lambda t: _mod("activations.distributed").read_texts(
        _write(t, "t.json", '["a", 3]')), UserError, r"t\.json record 2: expected a string or an object with a 'text'"),
    ("extract: a null in a parquet column", lambda t: _mod("activations.distributed").read_texts(_parquet(
        t, ["a", None, "c"])), UserError, r"t\.parquet: null at row 2"),
    ("extract: texts file that does not exist", lambda t: _mod("activations.distributed").read_texts(str(t / "no.txt")),
     MissingFileError, r"--texts .*no\.txt: no such file"),
    ("extract: zero batch size", lambda t: _mod("activations.config").ExtractionConfig(batch_size=0), UserError,
     r"--batch-size=0 is out of range: it must be >= 1"),
    ("extract: --out is an existing folder", lambda t: _mod("activations.config").ExtractConfig(
        texts="t.txt", out=str(t)), UserError, r"--out .* is an existing folder, but this command writes a file there"),
    # ---- output paths: checked before work, locked while written
    ("training: --out is an existing file, refused before the model loads", lambda t: _mod("training.runner").train(
        DEMO_CFG, {"runner.output_path": _file(t)}), UserError,
     r"runner\.output_path \(--out\) .*exists\.txt is an existing file, but this command writes a folder there"),
    ("training: an SAE larger than the free disk is refused before the model loads", lambda t: _mod(
        "training.runner").train(DEMO_CFG, {"runner.output_path": str(t / "sae"), "sae.d_sae": 10**12}), UserError,
     r"GB free at .*; training an SAE of d_in 640, d_sae 1000000000000 needs about .* GB\..*larger disk"),
    ("build: --out is an existing file", lambda t: _mod("behavior").BuildConfig(out=_file(t)), UserError,
     r"--out .*exists\.txt is an existing file"),
    ("build: --out under a file", lambda t: _mod("behavior").BuildConfig(out=str(Path(_file(t)) / "ds")), UserError,
     r"--out .*exists\.txt/ds: .*exists\.txt is a file, so nothing can be created under it"),
    ("evals: output_dir is an existing file", lambda t: _mod("evals").run_suite(_suite(), output_dir=_file(t)),
     UserError, r"output_dir \(--out\) .*exists\.txt is an existing file"),
    ("demo: --out is an existing file", lambda t: _mod("pipeline.config").DemoConfig(out=_file(t)), UserError,
     r"--out .*exists\.txt is an existing file"),
    ("export: out_dir is an existing file", lambda t: _mod("releases").export_sae(
        _tiny_sae(), _file(t), release="x", layer=3, precision="fp32"), UserError, r"out_dir .*exists\.txt is an existing file"),
    ("a second writer of the same build folder (--resume included) is refused", _build_while_busy, OutputBusyError,
     r"--out .*ds is being written by pid \d+ on .*: .*Fix: wait until that job ends"),
    ("no disk space", lambda t: _demo(t, min_free_gb=1e9), UserError, r"GB free.*free some space, or point the output"),
    # ---- dataset builds: every setting checked before the folder is touched
    ("zero samples per prompt", lambda t: _build(t, samples_per_prompt=0), UserError,
     r"--samples-per-prompt=0 is out of range: it must be >= 1"),
    ("negative temperature (refused before the folder keeps it)", lambda t: _build(t, temperature=-1), UserError,
     r"--temperature=-1 is out of range: it must be >= 0"),
    ("eval fraction 1.5 (refused before generation)", lambda t: _build(t, eval_fraction=1.5), UserError,
     r"--eval-fraction=1\.5 is out of range: it must be in \[0, 1\)"),
    ("zero new tokens", lambda t: _build(t, max_new_tokens=0), UserError, r"--max-new-tokens=0 is out of range"),
    ("no judge", lambda t: _build(t, judges=[]), UserError, r"--judges is empty"),
    ("judge API unreachable (no key) and no other judge", lambda t: _build(t, judges=["llm:nokey"]), Exception,
     r"No usable judge in \['llm:nokey'\].*no API key: set GEMMA4_SAE_JUDGE_NOKEY_API_KEY.*add `keyword`"),
    ("build into a folder that is not ours", _build_into_foreign, Exception,
     r"is not empty and holds no dataset build; choose a new or empty --out \(files that are not ours are never"),
    ("empty scenario file", lambda t: _mod("behavior.scenarios").load_scenarios([_write(t, "empty.yaml", "")]),
     ValueError, r"empty\. Add a family: `family: NAME`"),
    ("scenario file that does not exist", lambda t: _build(t, scenarios=[str(t / "mine.yaml")]), ValueError,
     r"Scenario file .*mine\.yaml does not exist"),
    ("scenario file that is a YAML list", lambda t: _mod("behavior.scenarios").load_scenarios(
        [_write(t, "s.yaml", "- family: x\n")]), ValueError, r"s\.yaml: the top level must be a mapping with a `family:`"),
    ("demo: zero training tokens", lambda t: _mod("pipeline.config").DemoConfig(out=str(t / "d"), training_tokens=0),
     UserError, r"--training-tokens=0 is out of range: it must be >= 1"),
    ("demo: --layer out of range, found before the dataset stage", lambda t: _demo(t, layer=99), ValueError,
     r"model\.layer=99: Layer 99 is out of range: this model has 18 layers \(0\.\.17\)"),
    ("demo: the training config's sae.d_in is not the model's hidden size", lambda t: _demo(
        t, model=config_only(t), layer=2), ValueError, r"sae\.d_in=640 does not match the model's hidden size 64"),
    # ---- SAE folders and checkpoints: errors that name the file
    ("missing SAE folder", lambda t: _mod("evals.saeio").sae_from_entry({"path": str(t / "no_sae")}), FileNotFoundError,
     r"SAE folder .* does not exist"),
    ("SAE folder whose cfg.json is not JSON",
     lambda t: _mod("evals.saeio").sae_from_entry(_sae_folder(t, "cfg")), UserError,
     r"sae/cfg\.json is not valid JSON"),
    ("SAE folder with truncated weights", lambda t: _mod("evals.saeio").sae_from_entry(_sae_folder(t, "truncate")),
     UserError, r"sae/sae_weights\.safetensors cannot be read .*damaged or truncated"),
    ("SAE folder whose cfg.json d_sae disagrees with the weights", lambda t: _mod("evals.saeio").sae_from_entry(
        _sae_folder(t, "d_sae")), UserError, r"sae_weights\.safetensors: W_enc has shape \[32, 64\], but .*cfg\.json "
     r"says d_in=32, d_sae=128"),
    ("SAE folder without its weights file", lambda t: _mod("evals.saeio").sae_from_entry(_sae_folder(t, "weights")),
     MissingFileError, r"SAE folder .*sae has no sae_weights\.safetensors"),
    ("misspelled release name lists close matches (not 'check your connection')", lambda t: _mod(
        "releases.folders").load_release("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bi",
                                         "blocks.25.hook_resid_post"), UserError,
     r"is not a known SAE release \(did you mean Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit"),
    ("unknown sae_id in a release", lambda t: _mod("releases.folders").load_release(
        "Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit", "blocks.26.hook_resid_post"), UserError,
     r"has no sae_id 'blocks\.26\.hook_resid_post' \(did you mean blocks\.25\.hook_resid_post"),
    ("corrupt checkpoint", lambda t: _mod("releases.checkpoint").load_state_dict_file(
        _write(t, "sae.pt", b"\x00garbage, not a torch file")), ValueError,
     r"could not be read as a torch checkpoint \(corrupt or truncated file\?\)"),
    ("pickled object in a nested checkpoint", lambda t: _mod("releases.checkpoint").load_state_dict_file(
        _pickled_ckpt(t)), ValueError, r"Refusing to load .*pickled Python objects.*would run code"),
]


def _without_bnb(call):
    """``call()`` while bitsandbytes cannot be imported (what the CLI's guard records when its import fails)."""
    import sys

    saved = {k: v for k, v in sys.modules.items() if k == "bitsandbytes" or k.startswith("bitsandbytes.")}
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    try:
        return call()
    finally:
        del sys.modules["bitsandbytes"]
        sys.modules.update(saved)


def _parquet(tmp: Path, texts) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), tmp / "t.parquet")
    return str(tmp / "t.parquet")


def _ids(cases):
    return [c.values[0][0] if hasattr(c, "values") else c[0] for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_bad_input_gives_a_clear_error(case, tmp_path):
    _, call, exc, pattern = case
    with pytest.raises(exc) as e:
        call(tmp_path)
    assert re.search(pattern, str(e.value), flags=re.S), str(e.value)
    assert is_user_error(e.value), f"gemma4-sae would print a traceback for: {type(e.value).__name__}: {e.value}"


# ------------------------------------------------------------------------------------------------------------ the CLI
def _cli_file(t: Path, name: str, text: str) -> str:
    return _write(t, name, text)


def _suite_file(t: Path, **over) -> str:
    base = {"name": "x", "sae": {"path": "y"}, "dataset": {"path": "z"}}
    base.update(over)
    return _yaml(t, "suite.yaml", base)


# (id, argv(tmp_path), exit status, regex stderr must match)
CLI_CASES = [
    ("--set with a misspelled key", lambda t: ["train", DEMO_CFG, "--set", "runner.training_token=1000"], 2,
     r"unknown keys \['runner\.training_token'\] \(runner\.training_token: did you mean runner\.training_tokens"),
    ("--set sae.k=0", lambda t: ["train", DEMO_CFG, "--set", "sae.k=0"], 2, r"sae\.k=0 is out of range"),
    ("--training-tokens 0 (refused while the command line is read)", lambda t: ["train", DEMO_CFG, "--training-tokens",
     "0"], 2, r"--training-tokens=0 is out of range: it must be >= 1"),
    ("--set without a value", lambda t: ["train", DEMO_CFG, "--set", "runner.training_tokens"], 2,
     r"--set expects KEY=VALUE \(e\.g\. runner\.training_tokens=20000\), got 'runner\.training_tokens'"),
    ("--set context_size=abc", lambda t: ["train", DEMO_CFG, "--set", "runner.context_size=abc"], 2,
     r"runner\.context_size='abc' should be an integer"),
    pytest.param(("--set runner.device=cuda without CUDA", lambda t: ["train", DEMO_CFG, "--set", "runner.device=cuda"],
                  2, r"runner\.device='cuda', but this machine has no CUDA device"), marks=NO_CUDA,
                 id="--set runner.device=cuda without CUDA"),
    ("train: a config path that does not exist", lambda t: ["train", "my_configs/demo_gemma3_270m_nf4.yaml"], 2,
     r"my_configs/demo_gemma3_270m_nf4\.yaml is not a file"),
    ("train: --out is an existing file", lambda t: ["train", DEMO_CFG, "--out", _file(t)], 2,
     r"--out .*exists\.txt is an existing file, but this command writes a folder there"),
    ("build-dataset: --temperature -1", lambda t: ["build-dataset", "--out", str(t / "ds"), "--temperature", "-1"], 2,
     r"--temperature=-1\.0 is out of range: it must be >= 0"),
    ("build-dataset: --eval-fraction 1.5", lambda t: ["build-dataset", "--out", str(t / "ds"), "--eval-fraction", "1.5"],
     2, r"--eval-fraction=1\.5 is out of range: it must be in \[0, 1\)"),
    ("build-dataset: --out is an existing file", lambda t: ["build-dataset", "--out", _file(t)], 2,
     r"--out .*exists\.txt is an existing file"),
    ("build-dataset: --resume with --overwrite", lambda t: ["build-dataset", "--out", str(t / "ds"), "--resume",
     "--overwrite"], 2, r"give --resume or --overwrite, not both"),
    ("evals validate: a suite path with a typo is not the shipped suite", lambda t: ["evals", "validate",
     "my_suites_typo/demo.yaml"], 2, r"my_suites_typo/demo\.yaml is not a file \(no such path\)"),
    ("evals validate: a suite that is a YAML list", lambda t: ["evals", "validate", _cli_file(t, "l.yaml", "- a: 1\n")],
     2, r"expected a mapping .*got a list"),
    ("evals validate: stats.alpha 5", lambda t: ["evals", "validate", _suite_file(t, stats={"alpha": 5})], 2,
     r"stats\.alpha=5 is out of range: it must be in \(0, 1\)"),
    ("evals validate: n_splits '5'", lambda t: ["evals", "validate", _suite_file(t, probes={"n_splits": "5"})], 2,
     r"suite\.probes\.n_splits='5' should be an integer"),
    ("evals validate: n_permutations -5", lambda t: ["evals", "validate", _suite_file(t, stats={"n_permutations": -5})],
     2, r"stats\.n_permutations=-5 is out of range"),
    ("evals validate: a misspelled key", lambda t: ["evals", "validate", _suite_file(t, probes={"n_split": 3})], 2,
     r"suite\.probes: unknown keys \['n_split'\] \(n_split: did you mean n_splits"),
    ("evals run: --out is an existing file", lambda t: ["evals", "run", "demo", "--out", _file(t)], 2,
     r"--out .*exists\.txt is an existing file"),
    ("extract: null texts, with their line numbers", lambda t: ["extract", "--texts", _jsonl(
        t, "t.jsonl", [{"text": "a"}, {"text": None}, {"text": "b"}, {"text": None}]), "--out", str(t / "a.safetensors")],
     2, r"null at lines 2, 4"),
    ("extract: --out is an existing folder", lambda t: ["extract", "--texts", _write(t, "t.txt", "a\n"), "--out",
     str(t)], 2, r"is an existing folder, but this command writes a file there"),
    ("extract: --texts that does not exist", lambda t: ["extract", "--texts", str(t / "no.txt"), "--out",
     str(t / "a.safetensors")], 2, r"--texts .*no\.txt: no such file"),
    ("demo: --out is an existing file", lambda t: ["demo", "--out", _file(t)], 2, r"--out .*exists\.txt is an existing file"),
    ("demo: --samples-per-prompt 0", lambda t: ["demo", "--out", str(t / "d"), "--samples-per-prompt", "0"], 2,
     r"--samples-per-prompt=0 is out of range"),
    ("export: a SAE folder whose cfg.json is not JSON", lambda t: ["export", _sae_folder(t, "cfg"), "--out",
     str(t / "rel"), "--release", "r"], 2, r"sae/cfg\.json is not valid JSON"),
    ("export: a misspelled release", lambda t: ["export", "--from-release",
     "Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bi", "--sae-id", "blocks.25.hook_resid_post", "--out",
     str(t / "rel"), "--release", "r"], 2, r"not a known SAE release \(did you mean Solshine/gemma4_e2b_gf1"),
    ("export: --out is an existing file", lambda t: ["export", _sae_folder(t), "--out", _file(t), "--release", "r"], 2,
     r"--out .*exists\.txt is an existing file"),
    ("export: a missing SAE folder", lambda t: ["export", str(t / "missing"), "--out", str(t / "rel"), "--release",
     "r"], 2, r"SAE folder .*missing does not exist"),
    ("--config-file that does not exist", lambda t: ["demo", "--config-file", str(t / "no.yaml")], 2,
     r"--config-file .*no\.yaml: no such file"),
    ("--config-file that is a YAML list", lambda t: ["demo", "--config-file", _cli_file(t, "c.yaml", "- out: x\n")], 2,
     r"--config-file .*c\.yaml: expected a mapping"),
    ("--config-file with a misspelled key", lambda t: ["demo", "--config-file", _yaml(t, "c.yaml", {
     "sample_per_prompt": 3})], 2, r"unknown keys \['sample_per_prompt'\] \(sample_per_prompt: did you mean "
     r"samples_per_prompt"),
    ("--config-file with a value of the wrong type", lambda t: ["demo", "--config-file", _yaml(t, "c.yaml", {
     "samples_per_prompt": "many"})], 2, r"samples_per_prompt='many' should be an integer"),
]


def _main(argv, capsys) -> tuple[int, str]:
    from gemma4_saelens_ext.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own usage errors exit 2 without a traceback
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CLI_CASES, ids=_ids(CLI_CASES))
def test_cli_bad_input_exits_2_without_a_traceback(case, tmp_path, capsys, monkeypatch):
    _, argv, code, pattern = case
    monkeypatch.chdir(tmp_path)
    rc, err = _main(argv(tmp_path), capsys)
    assert rc == code, err
    assert "Traceback" not in err, err
    assert re.search(pattern, err, flags=re.S), err


def test_tables_are_broad():
    assert len(CASES) + len(CLI_CASES) >= 80


def test_refused_settings_never_reach_the_output_folder(tmp_path, capsys):
    """--temperature -1 is refused while the command line is read: the folder is never created, so the corrected
    rerun is not refused because of it. A start that stopped before its first completion keeps no settings either."""
    from gemma4_saelens_ext.behavior import BuildConfig
    from gemma4_saelens_ext.behavior.store import prepare_out

    out = tmp_path / "ds"
    assert _main(["build-dataset", "--out", str(out), "--temperature", "-1"], capsys)[0] == 2
    assert not out.exists()
    # a start that wrote raw/build.json and then stopped (a late refusal, Ctrl-C in the model load)
    prepare_out(BuildConfig(out=str(out), temperature=0.5))
    assert json.loads((out / "raw" / "build.json").read_text())["generation"]["temperature"] == 0.5
    prepare_out(BuildConfig(out=str(out), temperature=1.0))  # not "already holds a build": nothing was generated
    assert json.loads((out / "raw" / "build.json").read_text())["generation"]["temperature"] == 1.0
    (out / "raw" / "completions.jsonl").write_text('{"key": "p#0"}\n')  # once something is generated, it is kept
    with pytest.raises(UserError, match=r"already holds a build .*temperature=1\.0.*Pass --resume"):
        prepare_out(BuildConfig(out=str(out), temperature=0.5))


def test_labels_are_normalised_never_dropped():
    """'Honest', 'DECEPTIVE' and surrounding spaces count as the classes: all 24 rows are kept (12 were dropped)."""
    labels = ["honest", "Honest", " deceptive", "DECEPTIVE ", "Deceptive", "HONEST"] * 4
    sp = _split(labels)
    assert len(sp.y) == 24 and int(sp.y.sum()) == 12
    assert len(_split(["honest", "Ambiguous", "deceptive", "unlabelled", "honest", "deceptive"]).y) == 4


def test_debug_shows_the_traceback_of_a_user_error(capsys, tmp_path):
    rc, err = _main(["--debug", "demo", "--out", str(tmp_path / "d"), "--samples-per-prompt", "0"], capsys)
    assert rc == 2 and "Traceback" in err and "--samples-per-prompt=0 is out of range" in err
    rc, err = _main(["demo", "--out", str(tmp_path / "d"), "--samples-per-prompt", "0", "--debug"], capsys)
    assert rc == 2 and "Traceback" in err  # accepted anywhere on the line


def test_an_unexpected_error_keeps_its_traceback_and_says_where_to_report(capsys, monkeypatch):
    """A bug (here: the embedded-model table broken, so `models` fails inside its own code) is not a user error."""
    from gemma4_saelens_ext.models import embedded

    monkeypatch.setattr(embedded, "EMBEDDED_MODELS", {"x": None})
    rc, err = _main(["models"], capsys)
    assert rc == 1 and "Traceback" in err and "TypeError" in err
    assert "This is a bug in gemma4-saelens-ext" in err and "issue tracker" in err


def test_argparse_errors_exit_2_without_a_traceback(capsys):
    rc, err = _main(["train", DEMO_CFG, "--no-such-flag"], capsys)
    assert rc == 2 and "Traceback" not in err and "unrecognized arguments: --no-such-flag" in err
    rc, err = _main(["build-dataset", "--out", "x", "--precision", "q4"], capsys)
    assert rc == 2 and "invalid choice: 'q4'" in err
