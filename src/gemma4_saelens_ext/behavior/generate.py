"""The completions of a build: which prompts (whole groups per family), and sampling what the checkpoint lacks.

Every completion has the key ``prompt_id#sample_index`` and its own seed, so a resumed or sharded build generates
exactly the completions a one-go build would, and never generates a key twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.behavior.config import BuildConfig, BuildError
from gemma4_saelens_ext.behavior.pools import stable_order
from gemma4_saelens_ext.behavior.sampling import check_max_new_tokens, generate_completions, make_requests
from gemma4_saelens_ext.behavior.scenarios import Prompt, load_scenarios
from gemma4_saelens_ext.behavior.store import append_jsonl, read_jsonl

__all__ = ["select_prompts", "whole_groups", "sample_missing"]

log = logging.getLogger(__name__)


def whole_groups(prompts: list[Prompt], max_per_family: int, seed: int) -> list[Prompt]:
    """At most ``max_per_family`` prompts of each family, taken as whole groups (a question with its role-swapped
    twins, or its template variants) in a seeded order, at least one group per family: a twin is never cut off
    from its group, so group balance stays possible."""
    by_fam: dict[str, dict[str, list[Prompt]]] = {}
    for p in prompts:
        by_fam.setdefault(p.family, {}).setdefault(p.group or p.id, []).append(p)
    keep: set[str] = set()
    for groups in by_fam.values():
        n = 0
        for g in stable_order(groups, seed):
            if n and n + len(groups[g]) > max_per_family:
                continue
            keep.update(p.id for p in groups[g])
            n += len(groups[g])
    return [p for p in prompts if p.id in keep]


def select_prompts(cfg: BuildConfig) -> list[Prompt]:
    prompts = load_scenarios(
        cfg.scenarios or None, families=cfg.families or None, include_input_variation=cfg.include_input_variation
    )
    if cfg.max_prompts_per_family is not None:
        prompts = whole_groups(prompts, cfg.max_prompts_per_family, cfg.seed)
    if not prompts:
        raise BuildError("No prompts selected; check --scenarios / --families / --max-prompts-per-family.")
    return prompts


def _load_model(cfg: BuildConfig) -> tuple[Any, Any]:
    from gemma4_saelens_ext.models.load import load_model

    lm = load_model(cfg.model, cfg.precision)
    return lm.model, lm.tokenizer


def sample_missing(
    cfg: BuildConfig,
    prompts: list[Prompt],
    ckpt: Path,
    model: Any,
    tokenizer: Any,
    shard: tuple[int, int] | None = None,
) -> tuple[list[dict], int, int]:
    """Generate what ``ckpt`` lacks; returns (records in key order, n generated now, n found in the checkpoint).

    The model is loaded only if something is missing. ``shard=(rank, world)``: only requests ``rank::world`` (in
    request order), written to ``ckpt``; completions already in the merged ``completions.jsonl`` beside it count as
    done."""
    by_id = {p.id: p for p in prompts}
    existing = read_jsonl(ckpt, repair=True)
    if shard is not None:
        existing = read_jsonl(ckpt.parent / "completions.jsonl", repair=True) + existing
    records: dict[str, dict[str, Any]] = {}
    dupes = 0
    for r in existing:
        if r["key"] in records:
            dupes += 1
            continue
        p = by_id.get(r["prompt_id"])
        if p is not None and r.get("prompt_hash") != p.text_hash:
            raise BuildError(
                f"{ckpt} holds completions of prompt {p.id!r} generated from a different prompt text (the scenario "
                "file changed since). Use --overwrite to rebuild, or restore the old scenario file."
            )
        records[r["key"]] = r
    if dupes:
        log.warning("%s holds %d duplicate keys; keeping the first of each", ckpt, dupes)
    n_resumed = sum(1 for k in records if k.split("#")[0] in by_id)
    reqs = make_requests([(p.id, p.text) for p in prompts], cfg.samples_per_prompt, cfg.seed)
    if shard is not None:
        reqs = reqs[shard[0] :: shard[1]]
    todo = [r for r in reqs if r.key not in records]
    if n_resumed:
        log.info("resuming: %d completions already in %s, %d to generate", n_resumed, ckpt, len(todo))
    if todo:
        if model is None or tokenizer is None:
            model, tokenizer = _load_model(cfg)
        keywords = [k for p in prompts for k in (*p.honest_keywords, *p.deceptive_keywords)]
        check_max_new_tokens(cfg.max_new_tokens, tokenizer, keywords)

        def save(batch) -> None:
            lines = []
            for c in batch:
                p = by_id[c.prompt_id]
                rec = {**asdict(c), "prompt_hash": p.text_hash}
                records[c.key] = rec
                lines.append(rec)
            append_jsonl(ckpt, lines)

        generate_completions(
            model,
            tokenizer,
            todo,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
            on_batch=save,
            progress=cfg.progress,
        )
    keys = {r.key for r in reqs}
    selected = [records[k] for k in sorted(keys, key=lambda k: (k.split("#")[0], int(k.split("#")[1])))]
    return selected, len(todo), n_resumed
