"""Outputs are locked and never lost, long steps show progress, and a broken optional dependency fails only the
commands that need it. Real processes, real models, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gemma4_saelens_ext.behavior.store import read_jsonl

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "gemma4_saelens_ext.cli"]


def _wait_for(cond, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -------------------------------------------------------------------------------------------------------- the lock
BUILD = ["build-dataset", "--precision", "fp32", "--scenarios", "werewolf", "--max-prompts-per-family", "2",
         "--samples-per-prompt", "2", "--batch-size", "2", "--max-new-tokens", "12", "--seed", "5",
         "--allow-empty-pool", "--no-progress"]  # fmt: skip
TOTAL = 4  # one werewolf twin group (2 prompts) x 2 samples


def test_a_second_build_with_resume_is_refused_while_the_first_runs(tmp_path, gemma3_fp32, capsys):
    """The refusal message of a busy folder says to pass --resume; doing that while the first build runs must not
    make two writers: the second exits 2 at once (no traceback, naming the first), the first finishes alone, every
    completion is generated once, and a --resume afterwards finds nothing left to do."""
    from gemma4_saelens_ext.behavior import BuildConfig, build_dataset
    from gemma4_saelens_ext.cli import main

    out = tmp_path / "ds"
    first = subprocess.Popen([*CLI, *BUILD, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for(lambda: (tmp_path / ".ds.lock.owner").exists(), first, 300, "the first build holds the lock")
        t0 = time.perf_counter()
        rc = main([*BUILD, "--out", str(out), "--resume"])  # the second writer, in this process
        refused_in = time.perf_counter() - t0
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        assert re.search(rf"--out .*ds is being written by pid {first.pid} on .*build-dataset", err), err
        assert first.poll() is None, "the second build was refused only after the first had finished"
        _, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, first_err
    keys = [r["key"] for r in read_jsonl(out / "raw" / "completions.jsonl")]
    assert len(keys) == len(set(keys)) == TOTAL  # one writer: nothing generated twice
    assert not (tmp_path / ".ds.lock.owner").exists()  # released
    again = build_dataset(BuildConfig(out=str(out), precision="fp32", scenarios=["werewolf"], max_prompts_per_family=2,
                                      samples_per_prompt=2, max_new_tokens=12, seed=5, allow_empty_pool=True,
                                      resume=True, progress=False), model=gemma3_fp32.model,
                          tokenizer=gemma3_fp32.tokenizer)
    assert (again.n_generated, again.n_resumed) == (0, TOTAL)
    print(f"second writer refused in {refused_in:.2f}s")


# ------------------------------------------------------------------------------------------- the activation cache
def _cache_config(tmp: Path) -> str:
    """The embedded Gemma 3 270M (fp32, layer 6) on a small text folder, with a budget above the data so the
    activations are cached first; 2 sequences per cache batch, so caching takes many batches."""
    corpus = Path(__import__("gemma4_saelens_ext").__file__).parent / "data" / "corpus" / "train.jsonl"
    data = tmp / "texts"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(corpus.read_text().splitlines(keepends=True)[:60]))
    cfg = {
        "model": {"source": "gemma-3-270m", "precision": "fp32", "layer": 6, "cache_activations": "auto"},
        "sae": {"d_in": 640, "d_sae": 256, "k": 8},
        "runner": {"dataset_path": str(data), "context_size": 64, "training_tokens": 6_400,
                   "train_batch_size_tokens": 128, "store_batch_size_prompts": 2, "n_batches_in_buffer": 4,
                   "n_batches_for_norm_estimate": 2, "exclude_special_tokens": True, "output_path": str(tmp / "sae"),
                   "checkpoint_path": str(tmp / "ck"), "seed": 1},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp / "cfg.yaml")


def test_ctrl_c_while_caching_activations_resumes_the_cache(tmp_path, gemma3_fp32, caplog):
    """Ctrl-C during the activation caching before training exits 130 without a traceback and keeps the batches
    already cached; the rerun computes only the rest, then trains."""
    import logging

    from gemma4_saelens_ext.training import train

    cfg = _cache_config(tmp_path)
    partial = tmp_path / "ck" / "activation_cache.partial"

    def batches() -> list[Path]:
        return sorted(partial.glob("batch_*.safetensors"))

    proc = subprocess.Popen([*CLI, "train", cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(batches()) >= 3, proc, 600, "three cached batches")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err
    done = [p.name for p in batches()]
    n_total = json.loads((partial / "identity.json").read_text())["batches"]
    assert 3 <= len(done) < n_total, f"the interrupt landed after {len(done)} of {n_total} batches"
    assert not (tmp_path / "ck" / "activation_cache").exists()

    with caplog.at_level(logging.INFO, logger="gemma4_saelens_ext"):
        train(cfg)  # the same config again
    assert f"Activation cache: resuming, {len(done)} of {n_total} batches already done" in caplog.text
    cache = tmp_path / "ck" / "activation_cache"
    info = json.loads((cache / "gemma4_cache.json").read_text())
    assert info["batches"] == n_total and not partial.exists()
    assert (tmp_path / "sae" / "cfg.json").exists()
    from datasets import load_from_disk

    assert len(load_from_disk(str(cache))) == info["rows"] == 2 * n_total


# ------------------------------------------------------------------------------------------------ the training bar
@pytest.mark.parametrize(("tokens", "batch"), [(20_000, 256), (6_400, 32)])
def test_the_training_bar_moves_at_least_every_percent(tmp_path, gemma4_tiny, tokens, batch, capfd):
    """The README's 20k-token override: SAELens moves its bar every 100 steps, so at 256-token batches (79 steps) it
    never moved. Now it moves every step there, and every 1% (2 steps) of a 200-step run, ending at the full count."""
    from gemma4_saelens_ext.training import TrainingProgress, train

    bar = TrainingProgress()
    cfg = {"model": {"source": "gemma-4-tiny", "precision": "fp32", "layer": 2, "cache_activations": False},
           "sae": {"d_in": 64, "d_sae": 128, "k": 8},
           "runner": {"dataset_path": "builtin:roleplay-corpus", "context_size": 64, "training_tokens": tokens,
                      "train_batch_size_tokens": batch, "store_batch_size_prompts": 8, "n_batches_in_buffer": 8,
                      "n_batches_for_norm_estimate": 2, "output_path": str(tmp_path / "sae"),
                      "checkpoint_path": str(tmp_path / "ck")}}
    train(cfg, callbacks=[bar])
    steps = -(-tokens // batch)  # SAELens trains whole batches until it has seen the budget
    assert bar.total_steps == steps and bar.every == max(1, steps // 100)
    assert bar.updates >= min(steps, 100)
    assert bar.shown[-1] == tokens  # the bar ends full
    assert max(b - a for a, b in zip([0, *bar.shown], bar.shown)) <= max(1, steps // 100) * batch
    err = capfd.readouterr().err
    assert f"Training SAE step {steps}/{steps}" in err and "tok" in err


# ---------------------------------------------------------------------------------------- a broken bitsandbytes
_BROKEN_BNB = '''
import importlib.abc, importlib.machinery, sys
class _Loader(importlib.abc.Loader):
    def create_module(self, spec): return None
    def exec_module(self, module): raise RuntimeError("libbitsandbytes_cpu.so: cannot open shared object file")
class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bitsandbytes":
            return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)
sys.meta_path.insert(0, _Finder())
'''

_RUN_COMMANDS = '''
import sys
from gemma4_saelens_ext.cli import main
for argv in (["--help"], ["models"], ["releases"], ["train", "demo_gemma3_270m_nf4", "--out", sys.argv[1]]):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    print(f"RC {argv[0]} {rc}", flush=True)
'''


def test_a_broken_bitsandbytes_fails_only_the_quantized_precisions(tmp_path):
    """bitsandbytes installed but failing to import (a missing CUDA library) used to kill every command, --help
    included: transformer_lens imports it whenever transformers says it is there. Now --help, models and releases
    (which imports SAELens) work, and training at nf4 fails with exit 2 naming bitsandbytes and the fix."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_BROKEN_BNB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    res = subprocess.run([sys.executable, "-c", _RUN_COMMANDS, str(tmp_path / "sae")], capture_output=True, text=True,
                         env=env, timeout=600)
    rcs = dict(re.findall(r"RC (\S+) (\d+)", res.stdout))
    assert rcs == {"--help": "0", "models": "0", "releases": "0", "train": "2"}, res.stdout + res.stderr
    assert "bitsandbytes failed to import (RuntimeError: libbitsandbytes_cpu.so" in res.stderr
    assert "Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit" in res.stdout  # releases listed them
    assert re.search(r"gemma4-sae: error: The quantized precisions \(nf4, nf4-bf16, int8, nf4-fp32compute\) need bitsandbytes, which "
                     r"did not import.*pick an unquantized precision", res.stderr), res.stderr
    assert "Traceback" not in res.stderr
