"""The completions of a build: which prompts (whole groups), how many samples of each, and sampling what the
checkpoint lacks.

Every completion has the key ``prompt_id#sample_index`` and its own seed, so a resumed or sharded build generates
exactly the completions a one-go build would, and never generates a key twice. Written completions (off-policy
instructed pairs) are not sampled: :func:`written_records` makes their records.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.behavior.config import BuildConfig, BuildError
from gemma4_saelens_ext.behavior.kinds import DEFAULT_KINDS
from gemma4_saelens_ext.behavior.pools import stable_order, take_whole_groups
from gemma4_saelens_ext.behavior.sampling import check_max_new_tokens, generate_completions, make_requests
from gemma4_saelens_ext.behavior.scenarios import Prompt, load_scenarios
from gemma4_saelens_ext.behavior.store import append_jsonl, read_jsonl

__all__ = ["select_prompts", "whole_groups", "spread_groups", "sample_plan", "sample_missing", "written_records"]

log = logging.getLogger(__name__)


def whole_groups(prompts: list[Prompt], max_per_family: int, seed: int) -> list[Prompt]:
    """At most ``max_per_family`` prompts of each family, taken as whole groups (a question with its role-swapped
    twins, or its template variants) in a seeded order, at least one group per family: a twin is never cut off
    from its group, so group balance stays possible."""
    by_fam: dict[str, dict[str, list[Prompt]]] = {}
    for p in prompts:
        by_fam.setdefault(p.family, {}).setdefault(p.group or p.id, []).append(p)
    keep = {p.id for groups in by_fam.values()
            for g in take_whole_groups({g: len(ps) for g, ps in groups.items()}, max_per_family, seed)
            for p in groups[g]}
    return [p for p in prompts if p.id in keep]


def spread_groups(prompts: list[Prompt], n_groups: int, seed: int) -> list[Prompt]:
    """At most ``n_groups`` whole groups, taken in turn from each cluster (topic, category) in a seeded order, so a
    small selection still covers every cluster."""
    by_cluster: dict[str, dict[str, list[Prompt]]] = {}
    for p in prompts:
        by_cluster.setdefault(p.cluster, {}).setdefault(p.group or p.id, []).append(p)
    queues = [stable_order(by_cluster[c], seed) for c in stable_order(by_cluster, seed)]
    keep: set[str] = set()
    n = 0
    for rnd in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if rnd < len(q) and n < n_groups:
                keep.add(q[rnd])
                n += 1
    return [p for p in prompts if (p.group or p.id) in keep]


def select_prompts(cfg: BuildConfig) -> list[Prompt]:
    """The build's prompts: the chosen kinds' scenario files, filtered by family and sized per kind."""
    prompts = load_scenarios(
        cfg.scenarios or None, families=cfg.families or None, include_input_variation=cfg.include_input_variation,
        kinds=cfg.kinds, instructed_mode=cfg.instructed_mode,
    )
    sized: list[Prompt] = []
    for kind in dict.fromkeys(p.kind for p in prompts):
        ps = [p for p in prompts if p.kind == kind]
        if kind == "instructed_pairs" and cfg.max_statements is not None:
            ps = spread_groups(ps, cfg.max_statements, cfg.seed)
        elif kind == "control" and cfg.max_control_prompts is not None:
            ps = spread_groups(ps, cfg.max_control_prompts, cfg.seed)
        elif kind not in ("instructed_pairs", "control") and cfg.max_prompts_per_family is not None:
            ps = whole_groups(ps, cfg.max_prompts_per_family, cfg.seed)
        sized.extend(ps)
    keep = {p.id for p in sized}
    prompts = [p for p in prompts if p.id in keep]
    missing = [k for k in cfg.kinds if k not in DEFAULT_KINDS and not any(p.kind == k for p in prompts)]
    if missing:
        raise BuildError(
            f"No prompts of kind(s) {missing}: --scenarios {cfg.scenarios} / --families {cfg.families} left none. "
            "Add their built-in files to --scenarios (e.g. instructed_pairs, control, incentive_sale) or drop them "
            "from --kinds."
        )
    if not prompts:
        raise BuildError("No prompts selected; check --kinds / --scenarios / --families / --max-prompts-per-family.")
    return prompts


def sample_plan(cfg: BuildConfig, p: Prompt) -> tuple[int, int]:
    """(samples, max_new_tokens) of a sampled prompt: control requests are short and sampled once by default."""
    if p.kind == "control":
        return cfg.control_samples_per_prompt, cfg.control_max_new_tokens
    if p.kind == "instructed_pairs":
        return cfg.instructed_samples_per_prompt, cfg.max_new_tokens
    return cfg.samples_per_prompt, cfg.max_new_tokens


def written_records(prompts: list[Prompt]) -> list[dict[str, Any]]:
    """Checkpoint-shaped records of the written completions (``n_new_tokens`` 0: nothing was generated)."""
    return [
        {"key": f"{p.id}#0", "prompt_id": p.id, "sample_index": 0, "sample_seed": 0, "completion": p.fixed_completion,
         "n_new_tokens": 0, "finished": True, "prompt_hash": p.text_hash}
        for p in prompts
        if not p.generated
    ]


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
    """Generate what ``ckpt`` lacks for the sampled prompts (written ones are skipped; :func:`sample_plan` sets each
    prompt's samples and length); returns (records in key order, n generated now, n found in the checkpoint).

    The model is loaded only if something is missing. ``shard=(rank, world)``: only requests ``rank::world`` (in
    request order), written to ``ckpt``; completions already in the merged ``completions.jsonl`` beside it count as
    done."""
    prompts = [p for p in prompts if p.generated]
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
    plan = {p.id: sample_plan(cfg, p) for p in prompts}
    reqs = [r for p in prompts for r in make_requests([(p.id, p.text)], plan[p.id][0], cfg.seed)]
    if shard is not None:
        reqs = reqs[shard[0] :: shard[1]]
    todo = [r for r in reqs if r.key not in records]
    if n_resumed:
        log.info("resuming: %d completions already in %s, %d to generate", n_resumed, ckpt, len(todo))
    if todo:
        if model is None or tokenizer is None:
            model, tokenizer = _load_model(cfg)
        judged = [p for p in prompts if p.fixed_label is None]  # control rows are labelled without a judge
        if judged:
            check_max_new_tokens(cfg.max_new_tokens, tokenizer,
                                 [k for p in judged for k in (*p.honest_keywords, *p.deceptive_keywords)])

        def save(batch) -> None:
            lines = []
            for c in batch:
                p = by_id[c.prompt_id]
                rec = {**asdict(c), "prompt_hash": p.text_hash}
                records[c.key] = rec
                lines.append(rec)
            append_jsonl(ckpt, lines)

        for max_new in sorted({plan[r.prompt_id][1] for r in todo}):
            generate_completions(
                model,
                tokenizer,
                [r for r in todo if plan[r.prompt_id][1] == max_new],
                max_new_tokens=max_new,
                temperature=cfg.temperature,
                batch_size=cfg.batch_size,
                on_batch=save,
                progress=cfg.progress,
            )
    keys = {r.key for r in reqs}
    selected = [records[k] for k in sorted(keys, key=lambda k: (k.split("#")[0], int(k.split("#")[1])))]
    return selected, len(todo), n_resumed
