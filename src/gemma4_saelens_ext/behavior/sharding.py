"""A build under ``torchrun``: every rank samples its slice of the requests, rank 0 merges and finishes alone.

Every completion has its own seed, so the merged completions equal a one-process build's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.behavior.config import BuildConfig, BuildError
from gemma4_saelens_ext.behavior.plan import sample_missing
from gemma4_saelens_ext.behavior.scenarios import Prompt
from gemma4_saelens_ext.behavior.store import append_jsonl, prepare_out, read_jsonl

__all__ = ["generate_sharded", "merge_completion_shards"]

log = logging.getLogger(__name__)


def generate_sharded(cfg: BuildConfig, prompts: list[Prompt], model: Any, tokenizer: Any) -> bool:
    """Under ``torchrun``: every rank samples its slice ``rank::world`` of the requests into its own checkpoint, then
    rank 0 merges them into ``raw/completions.jsonl`` and goes on (judges, pools, files) alone. Returns True on
    rank 0."""
    import torch.distributed as dist

    from gemma4_saelens_ext.activations.dist import barrier as _barrier
    from gemma4_saelens_ext.activations.dist import init_distributed as _init_dist

    rank, world, _local, device = _init_dist()
    try:
        status: list[Any] = [None]
        if rank == 0:
            try:
                prepare_out(cfg)
            except BuildError as e:
                status[0] = str(e)
        dist.broadcast_object_list(status, src=0)
        if status[0]:
            raise BuildError(status[0])
        raw = Path(cfg.out) / "raw"
        # model caches (GGUF conversion, derived checkpoints) are built under a file lock: safe from every rank
        sample_missing(
            cfg, prompts, raw / f"completions.rank{rank}-of-{world}.jsonl", model, tokenizer, shard=(rank, world)
        )
        _barrier(device)
        if rank == 0:
            merge_completion_shards(raw)
        return rank == 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def merge_completion_shards(raw: str | Path) -> int:
    """Append every ``completions.rank*-of-*.jsonl`` record missing from ``completions.jsonl``, then drop the shard
    files (a crash in between only leaves duplicates, which resume skips). Returns the number appended."""
    raw = Path(raw)
    main = raw / "completions.jsonl"
    have = {r["key"] for r in read_jsonl(main, repair=True)}
    added = 0
    shards = sorted(raw.glob("completions.rank*-of-*.jsonl"))
    for f in shards:
        new = [r for r in read_jsonl(f, repair=True) if r["key"] not in have]
        have.update(r["key"] for r in new)
        if new:
            append_jsonl(main, new)
            added += len(new)
    for f in shards:
        f.unlink()
    log.info("merged %d rank checkpoints into %s (+%d completions)", len(shards), main, added)
    return added
