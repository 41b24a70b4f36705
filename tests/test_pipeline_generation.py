"""Sharded generation: `torchrun --nproc-per-node 2 ... build-dataset` equals a one-process build."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from gemma4_saelens_ext.behavior.build import BuildConfig, build_dataset, read_jsonl

pytestmark = pytest.mark.slow
ARGS = dict(
    model="gemma-4-tiny",
    precision="fp32",
    families=["slug_snail", "werewolf"],
    max_prompts_per_family=2,
    samples_per_prompt=3,
    max_new_tokens=20,
    batch_size=4,
    seed=7,
    allow_empty_pool=True,
    progress=False,
)


def _cli_args(out):
    return [
        "build-dataset", "--out", str(out), "--model", "gemma-4-tiny", "--precision", "fp32",
        "--families", "slug_snail,werewolf", "--max-prompts-per-family", "2", "--samples-per-prompt", "3",
        "--max-new-tokens", "20", "--batch-size", "4", "--seed", "7", "--allow-empty-pool", "--no-progress",
    ]  # fmt: skip


def test_two_rank_build_equals_one_process(tmp_path):
    single = build_dataset(BuildConfig(out=str(tmp_path / "one"), **ARGS))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gemma4_saelens_ext.cli", *_cli_args(tmp_path / "two")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    raw = tmp_path / "two" / "raw"
    assert not list(raw.glob("completions.rank*"))  # merged and removed
    one = {r["key"]: r["completion"] for r in read_jsonl(tmp_path / "one" / "raw" / "completions.jsonl")}
    two = {r["key"]: r["completion"] for r in read_jsonl(raw / "completions.jsonl")}
    assert len(one) == single.manifest["n_completions"] > 0
    assert one == two
    a = pd.read_parquet(tmp_path / "one" / "data" / "all.parquet")
    b = pd.read_parquet(tmp_path / "two" / "data" / "all.parquet")
    pd.testing.assert_frame_equal(a, b)
