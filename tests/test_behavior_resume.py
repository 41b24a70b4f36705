"""Resume after a killed CLI build: nothing generated twice, nothing lost, same text as an uninterrupted build."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gemma4_saelens_ext.behavior.build import BuildConfig, build_dataset, read_jsonl

pytestmark = pytest.mark.slow
MAX_NEW = 12
#: --max-prompts-per-family 4 keeps two whole werewolf twin groups (4 prompts) x 2 samples
TOTAL = 8


def test_resume_after_kill(gemma3_fp32, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable, "-m", "gemma4_saelens_ext.cli", "build-dataset", "--out", str(out),
        "--precision", "fp32", "--scenarios", "werewolf", "--max-prompts-per-family", "4",
        "--samples-per-prompt", "2", "--batch-size", "2", "--max-new-tokens", str(MAX_NEW),
        "--seed", "5", "--allow-empty-pool", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "raw" / "completions.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and len(read_jsonl(ckpt)) >= 2:
                break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    before = ckpt.read_bytes()
    n_before = len(read_jsonl(ckpt))
    assert 2 <= n_before < TOTAL, f"kill landed after {n_before} completions"
    assert not (out / "manifest.json").exists()

    cfg = BuildConfig(
        out=str(out), precision="fp32", scenarios=["werewolf"], max_prompts_per_family=4, samples_per_prompt=2,
        batch_size=4, max_new_tokens=MAX_NEW, seed=5, allow_empty_pool=True, resume=True, progress=False,
    )  # fmt: skip
    res = build_dataset(cfg, model=gemma3_fp32.model, tokenizer=gemma3_fp32.tokenizer)
    assert res.n_resumed == n_before and res.n_generated == TOTAL - n_before
    after = ckpt.read_bytes()
    assert after.startswith(before)  # nothing rewritten
    keys = [r["key"] for r in read_jsonl(ckpt)]
    assert len(keys) == len(set(keys)) == TOTAL  # none generated twice, none lost

    # the interrupted-then-resumed build equals an uninterrupted one (seeds are per completion)
    ref = build_dataset(
        BuildConfig(**{**cfg.__dict__, "out": str(tmp_path / "ref"), "resume": False, "batch_size": 6}),
        model=gemma3_fp32.model,
        tokenizer=gemma3_fp32.tokenizer,
    )
    assert {r["key"]: r["completion"] for r in ref.rows} == {r["key"]: r["completion"] for r in res.rows}
