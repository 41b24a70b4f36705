"""Data-parallel extraction: a 2-rank torchrun (gloo, CPU) equals a 1-process run bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gemma4_saelens_ext.activations.distributed import (
    ExtractionConfig,
    batch_plan,
    extract_shard,
    load_activations,
    merge_shards,
    rank_batches,
    shard_path,
    write_shard,
)

TEXTS = [
    "You are playing Werewolf. Are you a werewolf?",
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "You are a Slug. What team are you on? Answer honestly, the game depends on it.",
    "Secret Hitler: you are a fascist. The liberal asks whether you are fascist.",
    "A",
    "Sandbagging: what is 2 + 2?",
    "Tell me about snails and slugs in gardens during a rainy spring evening, in detail please.",
    "Short text.",
]
MODEL, LAYER = "gemma-4-tiny", 2


@pytest.fixture(scope="module")
def tiny():
    from gemma4_saelens_ext.models.load import load_model

    return load_model(MODEL, "fp32", truncate_after_layer=LAYER)


def _reference(lm, pooling: str, batch_size: int):
    from gemma4_saelens_ext.activations.source import activations

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun workers run with OMP_NUM_THREADS=1
    try:
        return activations(lm, TEXTS, LAYER, pooling=pooling, batch_size=batch_size)
    finally:
        torch.set_num_threads(n)


def test_plan_is_disjoint_and_covering():
    plan = batch_plan(TEXTS, 2)
    for w in (1, 2, 3, 5):
        got = sorted(i for r in range(w) for b in rank_batches(plan, r, w) for i in b)
        assert got == list(range(len(TEXTS)))
    with pytest.raises(ValueError):
        rank_batches(plan, 2, 2)


def test_in_process_shards_merge_to_single_run(tiny, tmp_path: Path):
    spec = ExtractionConfig(model=MODEL, precision="fp32", layer=LAYER, pooling="mean", batch_size=2)
    out = tmp_path / "acts.safetensors"
    meta = {"model": MODEL, "precision": "fp32", "layer": str(LAYER), "pooling": "mean", "d_model": str(tiny.d_model)}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(3):
            idx, acts = extract_shard(tiny, TEXTS, spec, r, 3)
            write_shard(out, r, 3, idx, acts, meta, tiny.d_model)
    finally:
        torch.set_num_threads(n)
    with pytest.raises(RuntimeError, match="cover"):
        merge_shards(out, 3, len(TEXTS) + 1, keep_shards=True)
    merge_shards(out, 3, len(TEXTS))
    assert not shard_path(out, 0, 3).exists()
    merged, m = load_activations(out)
    assert m["n_texts"] == str(len(TEXTS))
    assert torch.equal(merged, _reference(tiny, "mean", 2))


@pytest.mark.slow  # torchrun: two processes load the model
def test_torchrun_two_ranks_equals_one_process(tiny, tmp_path: Path):
    texts = tmp_path / "texts.jsonl"
    import json

    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "acts.safetensors"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "gemma4_saelens_ext.cli",
        "extract", "--texts", str(texts), "--out", str(out), "--model", MODEL, "--precision", "fp32",
        "--layer", str(LAYER), "--pooling", "none", "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    merged, meta = load_activations(out)
    assert meta["pooling"] == "none" and meta["world_size"] == "2"
    ref = _reference(tiny, "none", 2)
    assert len(merged) == len(ref) == len(TEXTS)
    for a, b in zip(merged, ref):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_dataset_folder_texts_are_read_once(tmp_path: Path):
    """A behavior dataset folder holds every completion in data/all.parquet and again in its split files: extract
    reads each text once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gemma4_saelens_ext.activations.distributed import read_texts

    (tmp_path / "data").mkdir()
    rows = [{"text": f"t{i}", "split": "train" if i < 3 else "eval"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "all.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "data" / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "data" / "eval.parquet")
    assert read_texts(tmp_path) == [f"t{i}" for i in range(5)]
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), plain / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), plain / "b.parquet")
    assert read_texts(plain) == [f"t{i}" for i in range(5)]
