"""Data-parallel activation extraction over ``torch.distributed`` (gloo on CPU, nccl on GPU).

Launch::

    torchrun --nproc-per-node 2 -m gemma4_saelens_ext.cli extract \\
        --model gemma-3-270m --precision nf4 --layer 12 --pooling mean \\
        --texts prompts.txt --out runs/acts/L12_mean.safetensors

Every rank loads the model (rank 0 first, so derived checkpoints are built once), takes a disjoint, deterministic
slice of the work, runs :func:`gemma4_saelens_ext.activations.source.activations`, and writes its own shard
(``<out>.shards/rank{r}-of-{w}.safetensors``, atomic tmp + ``os.replace``). After a barrier rank 0 merges the shards
into ``<out>`` in the original text order.

**Slicing.** Texts are length-sorted exactly as :func:`~gemma4_saelens_ext.activations.source.activations` sorts them and cut into
batches of ``batch_size``; rank ``r`` takes batches ``r, r + w, r + 2w, ...``. Slicing whole batches (rather than texts
``i::w``) keeps every padded batch identical to the single-process run, so fp32 results are bit-for-bit equal to
``activations(lm, texts, layer, batch_size=...)`` on one process; striding over length-sorted batches also balances
the token load across ranks.

**File format** (safetensors): ``acts`` float32 — ``[n_texts, d]`` for pooled extraction, or all tokens concatenated
``[sum(lengths), d]`` for ``pooling="none"`` with ``lengths`` int64 ``[n_texts]``; ``index`` int64 (global text
indices, shards only). Metadata: model, precision, layer, pooling, n_texts, world_size. Read with
:func:`load_activations`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gemma4_saelens_ext.activations.batching import length_sorted_batches
from gemma4_saelens_ext.activations.dist import barrier as _barrier
from gemma4_saelens_ext.activations.dist import init_distributed as _init_dist
from gemma4_saelens_ext.activations.config import ExtractConfig, ExtractionConfig

logger = logging.getLogger(__name__)

__all__ = [
    "ExtractConfig",
    "ExtractionConfig",
    "batch_plan",
    "rank_batches",
    "extract_shard",
    "merge_shards",
    "load_activations",
    "read_texts",
    "shard_path",
    "run_extract",
    "check_output_space",
    "cmd_extract",
]


# ---------------------------------------------------------------------------------------------------------------- plan
def batch_plan(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Global batches of text indices, length-sorted exactly as ``source.activations`` does (the same function)."""
    return length_sorted_batches(texts, len, batch_size)


def rank_batches(plan: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s disjoint slice of the plan: batches ``rank::world_size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    return plan[rank::world_size]


def shard_path(out: str | Path, rank: int, world_size: int) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.shards" / f"rank{rank}-of-{world_size}.safetensors"


# ------------------------------------------------------------------------------------------------------------------ io
def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from gemma4_saelens_ext.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_activations(path: str | Path) -> tuple[torch.Tensor | list[torch.Tensor], dict[str, str]]:
    """Read a merged (or shard) file: ``(acts, metadata)``; per-token files come back as a list of ``[n_i, d]``."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    acts = tensors["acts"]
    if "lengths" in tensors:
        return list(torch.split(acts, tensors["lengths"].tolist())), meta
    return acts, meta


def _check_texts(texts: list[Any], where: str, numbers: list[int] | None = None, unit: str = "line") -> list[str]:
    """One output row per input row: refuse null, non-text and empty (or whitespace-only) texts, naming their line
    or row numbers, instead of embedding ``"None"`` or a BOS-only vector, or dropping a row."""
    from gemma4_saelens_ext.errors import UserError

    numbers = numbers or list(range(1, len(texts) + 1))
    bad = {"null": [], "not a text": [], "empty": []}
    for n, t in zip(numbers, texts):
        if t is None:
            bad["null"].append(n)
        elif not isinstance(t, str):
            bad["not a text"].append(n)
        elif not t.strip():
            bad["empty"].append(n)
    found = {k: v for k, v in bad.items() if v}
    if found:
        said = "; ".join(f"{k} at {unit}{'s' if len(v) > 1 else ''} {', '.join(map(str, v[:20]))}"
                         + (f" (+{len(v) - 20} more)" if len(v) > 20 else "") for k, v in found.items())
        raise UserError(f"{where}: {said}. Each input row gives one output row, so every text must be non-empty.",
                        "remove those rows or give them text; output row i is input row i.")
    if not texts:
        raise UserError(f"{where}: no texts.", "give a file with at least one text.")
    return texts


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts from ``.txt`` (one per line), ``.jsonl``/``.json`` (strings or objects with ``column``), ``.parquet``,
    or a folder: a behavior dataset folder gives every completion once (``data/all.parquet``; its split files hold
    the same rows again), any other folder its ``*.parquet`` files, sorted by name.

    Row alignment: output row i is input row i. A null, non-text or empty text is refused with its line (row)
    number, never dropped or turned into ``"None"``; only blank lines at the end of a ``.txt`` file and blank lines
    of a ``.jsonl`` file (not records) are skipped."""
    from gemma4_saelens_ext.errors import MissingFileError, UserError
    from gemma4_saelens_ext.io import read_records

    p = Path(path)
    if p.is_dir() and (p / "data" / "all.parquet").is_file():
        return read_texts(p / "data" / "all.parquet", column)
    if p.is_dir():
        files = sorted(p.glob("*.parquet")) or sorted(p.glob("**/*.parquet"))
        if not files:
            raise MissingFileError(f"--texts {p}: no .parquet files in this folder.",
                                   "give a .txt/.jsonl/.json/.parquet file or a folder of parquet files.")
        return [t for f in files for t in read_texts(f, column)]
    if not p.exists():
        raise MissingFileError(f"--texts {p}: no such file.", "give an existing .txt, .jsonl, .json or .parquet file.")

    def pick(obj: Any, n: int) -> Any:
        if obj is None or isinstance(obj, str):
            return obj
        if isinstance(obj, dict) and column in obj:
            return obj[column]
        raise UserError(f"{p} record {n}: expected a string or an object with a {column!r} field, got "
                        f"{type(obj).__name__}.", f"give every record a {column!r} field (or set --column).")

    if p.suffix in (".parquet", ".jsonl"):
        recs, nums, unit = read_records(p, columns=[column] if p.suffix == ".parquet" else None)
        return _check_texts([pick(r, n) for r, n in zip(recs, nums)], str(p), nums, unit=unit)
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON ({e.msg}, line {e.lineno}).", "fix the file.") from None
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a JSON list of texts, got {type(data).__name__}.", "give a list.")
        return _check_texts([pick(x, i) for i, x in enumerate(data, 1)], str(p), unit="item")
    lines = p.read_text().splitlines()
    while lines and not lines[-1].strip():  # blank lines at the end are not rows
        lines.pop()
    return _check_texts(lines, str(p))


# ------------------------------------------------------------------------------------------------------------- compute
def extract_shard(
    lm: Any,
    texts: Sequence[str],
    spec: ExtractionConfig,
    rank: int = 0,
    world_size: int = 1,
    *,
    progress: bool = False,
) -> tuple[list[int], list[torch.Tensor] | torch.Tensor]:
    """This rank's ``(global indices, activations)``; indices follow the order of the rank's batches."""
    from tqdm.auto import tqdm

    from gemma4_saelens_ext.activations.source import activations

    mine = rank_batches(batch_plan(texts, spec.batch_size), rank, world_size)
    idx: list[int] = []
    outs: list[Any] = []
    for batch in tqdm(mine, desc=f"rank {rank} extract", disable=not progress):
        a = activations(
            lm,
            [texts[i] for i in batch],
            spec.layer,
            pooling=spec.pooling,  # type: ignore[arg-type]
            batch_size=len(batch),
            max_length=spec.max_length,
        )
        idx.extend(batch)
        outs.append(a)
    if spec.pooling == "none":
        return idx, [t for a in outs for t in a]
    if not outs:
        return idx, torch.zeros(0, lm.d_model)
    return idx, torch.cat(outs)


def _pack(acts: list[torch.Tensor] | torch.Tensor, pooling: str, d: int) -> dict[str, torch.Tensor]:
    if pooling == "none":
        assert isinstance(acts, list)
        lengths = torch.tensor([t.shape[0] for t in acts], dtype=torch.int64)
        cat = torch.cat(acts) if acts else torch.zeros(0, d)
        return {"acts": cat.float(), "lengths": lengths}
    assert isinstance(acts, torch.Tensor)
    return {"acts": acts.float()}


def write_shard(
    out: str | Path, rank: int, world_size: int, idx: list[int], acts: Any, meta: dict[str, str], d: int
) -> Path:
    path = shard_path(out, rank, world_size)
    tensors = _pack(acts, meta["pooling"], d)
    tensors["index"] = torch.tensor(idx, dtype=torch.int64)
    _atomic_save(tensors, path, {**meta, "rank": str(rank), "world_size": str(world_size)})
    return path


def merge_shards(out: str | Path, world_size: int, n_texts: int, *, keep_shards: bool = False) -> Path:
    """Merge ``rank*-of-{world_size}`` shards into ``out`` in the original text order (checks coverage)."""
    out = Path(out)
    seen: list[int] = []
    parts: dict[int, torch.Tensor] = {}
    meta: dict[str, str] = {}
    pooling = None
    for r in range(world_size):
        p = shard_path(out, r, world_size)
        if not p.exists():
            raise FileNotFoundError(f"Missing shard of rank {r}: {p}")
        with safe_open(str(p), framework="pt") as f:
            m = dict(f.metadata() or {})
            t = {k: f.get_tensor(k) for k in f.keys()}
        pooling = m["pooling"]
        meta = {k: v for k, v in m.items() if k != "rank"}
        idx = t["index"].tolist()
        rows = torch.split(t["acts"], t["lengths"].tolist()) if "lengths" in t else list(t["acts"])
        for i, row in zip(idx, rows):
            parts[i] = row
        seen.extend(idx)
    if sorted(seen) != list(range(n_texts)):
        raise RuntimeError(f"Shards cover {len(set(seen))} of {n_texts} texts (duplicates or gaps); not merging.")
    ordered = [parts[i] for i in range(n_texts)]
    d = int(meta.get("d_model", "0"))
    if pooling == "none":
        tensors = _pack(ordered, "none", d)
    else:
        tensors = {"acts": torch.stack(ordered) if ordered else torch.zeros(0, d)}
    meta["n_texts"] = str(n_texts)
    _atomic_save(tensors, out, meta)
    if not keep_shards:
        for r in range(world_size):
            shard_path(out, r, world_size).unlink(missing_ok=True)
        try:
            shard_path(out, 0, world_size).parent.rmdir()
        except OSError:
            pass
    return out


# ------------------------------------------------------------------------------------------------------------- driver
def check_output_space(out: str | Path, lm: Any, texts: Sequence[str], spec: ExtractionConfig) -> float:
    """Free disk at ``out`` for the shards plus the merged file (float32; per token for ``pooling="none"``, counted
    with the tokenizer), checked before the forward passes."""
    from gemma4_saelens_ext.io import check_disk_space

    if spec.pooling == "none":
        ids = lm.tokenizer(list(texts), truncation=spec.max_length is not None, max_length=spec.max_length)["input_ids"]
        rows = sum(len(x) for x in ids)
    else:
        rows = len(texts)
    return check_disk_space(out, 2 * rows * lm.d_model * 4, f"the activations ({rows} x {lm.d_model} float32, "
                            "shards and merged file)")


def run_extract(
    texts: Sequence[str], out: str | Path, spec: ExtractionConfig, *, keep_shards: bool = False, progress: bool = True
) -> Path | None:
    """Run on every rank (or alone); returns the merged path on rank 0, ``None`` elsewhere."""
    import torch.distributed as dist

    from gemma4_saelens_ext.models.load import load_model

    rank, world, _local, device = _init_dist()
    t0 = time.perf_counter()
    try:

        def load() -> Any:
            return load_model(
                spec.model, spec.precision, truncate_after_layer=spec.layer if spec.truncate else None, device=device
            )

        # rank 0 builds any derived checkpoint (GGUF conversion, truncation) before the others read it
        lm = load() if rank == 0 else None
        _barrier(device)
        if lm is None:
            lm = load()
        layer = lm.resolve_layer(spec.layer)
        if rank == 0:
            check_output_space(out, lm, texts, spec)
        idx, acts = extract_shard(lm, texts, spec, rank, world, progress=progress and rank == 0)
        meta = {
            "model": str(spec.model),
            "precision": spec.precision,
            "layer": str(layer),
            "pooling": spec.pooling,
            "batch_size": str(spec.batch_size),
            "d_model": str(lm.d_model),
            "n_texts": str(len(texts)),
        }
        write_shard(out, rank, world, idx, acts, meta, lm.d_model)
        logger.info("rank %d/%d: %d texts in %.1fs", rank, world, len(idx), time.perf_counter() - t0)
        _barrier(device)
        merged = merge_shards(out, world, len(texts), keep_shards=keep_shards) if rank == 0 else None
        _barrier(device)
        if merged is not None:
            logger.info("merged %d shards -> %s (%.1fs)", world, merged, time.perf_counter() - t0)
        return merged
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def cmd_extract(cfg: ExtractConfig) -> int:
    """``gemma4-sae extract``: the output path and the texts are checked before the model loads; rank 0 holds the
    output's lock for the whole run."""
    import os
    from contextlib import nullcontext

    from gemma4_saelens_ext.io import check_out, output_lock

    check_out(cfg.out, kind="file")
    texts = read_texts(cfg.texts, cfg.column)
    with output_lock(cfg.out) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        merged = run_extract(texts, cfg.out, cfg.spec, keep_shards=cfg.keep_shards, progress=cfg.progress)
    if merged is not None:
        print(f"wrote {merged} ({len(texts)} texts)")
    return 0
