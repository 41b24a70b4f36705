"""Orchestrates a dataset build: scenarios -> seeded samples (or written completions) -> labels by each kind's rule
-> pools/splits -> parquet + manifest.

Output folder layout (``datasets.load_dataset(DIR)`` reads it; SAELens ``dataset_path=DIR`` trains on ``train``)::

    DIR/README.md                   dataset card; its YAML header maps splits to files
    DIR/data/train.parquet          train groups: role-play balanced pool + the other kinds' rows (`kind` column)
    DIR/data/eval.parquet           eval groups, likewise
    DIR/data/input_variation.parquet  neutral / V0 / V3 rows (diagnostic split)
    DIR/data/all.parquet            every completion with its labels (config "all")
    DIR/manifest.json               settings, versions, judge settings, counts, agreement
    DIR/raw/build.json              generation identity, written first (tells a resumable build from another)
    DIR/raw/completions.jsonl       checkpoint: one line per completion, appended after every batch
    DIR/raw/judgements.jsonl        cache of LLM judge labels (local judges are recomputed; they are cheap)

Resume: completions already in the checkpoint are never generated again (keys are prompt_id#sample_index and seeds
are per key), LLM labels already cached are not requested again. Every file except the append-only JSONL
checkpoints is written atomically (:mod:`gemma4_saelens_ext.io`), so a kill never leaves a half-written file
behind; a truncated last JSONL line (a kill mid-write) is dropped and regenerated.

The steps live in their own modules: :mod:`.store` (checkpoints, resume guard), :mod:`.plan` (which prompts,
how many samples, sampling what is missing), :mod:`.sharding` (torchrun), :mod:`.writer` (parquet, card,
manifest); this module labels the completions, forms the pools and splits, and ties the steps together.

Labels follow each kind's rule (:mod:`.kinds`): role play and input variation by the primary judge; on-policy
instructed pairs and incentive prompts by the answer-key judge (column ``label_answer_key``); off-policy instructed
pairs by their instruction and control rows as ``control``, with no judge (their ``label_<judge>`` cells are null).
Role play is balanced per group; the other kinds keep their natural layout (the manifest records it per kind).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.behavior.config import (
    BUILD_FORMAT,
    CONSORTIUM_NAMES,
    GENERATION_KEYS,
    BuildConfig,
    BuildError,
    BuildResult,
)
from gemma4_saelens_ext.behavior.judges import (
    DECISIVE,
    UNLABELLED,
    AnswerKeyJudge,
    Judge,
    JudgeItem,
    KeywordJudge,
    consortium,
    label_counts,
    make_judges,
    pairwise_agreement,
)
from gemma4_saelens_ext.behavior.llm_judge import LLMJudge
from gemma4_saelens_ext.behavior.kinds import CONTROL
from gemma4_saelens_ext.behavior.plan import sample_missing, select_prompts, written_records
from gemma4_saelens_ext.behavior.pools import (
    NATURAL_KINDS,
    PoolError,
    balance_same_prompt,
    count_table,
    input_variation_split,
    kind_summary,
    split_groups,
)
from gemma4_saelens_ext.behavior.scenario_facts import statements_provenance
from gemma4_saelens_ext.behavior.scenarios import Prompt, scenario_fingerprint
from gemma4_saelens_ext.behavior.sharding import generate_sharded, merge_completion_shards
from gemma4_saelens_ext.behavior.store import append_jsonl, now, prepare_out, read_jsonl
from gemma4_saelens_ext.behavior.writer import (
    COLUMNS,
    format_counts,
    versions,
    write_card,
    write_manifest,
    write_splits,
)

__all__ = [
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "build_dataset",
    "read_jsonl",
    "merge_completion_shards",
    "format_counts",
    "COLUMNS",
    "BUILD_FORMAT",
    "GENERATION_KEYS",
]

log = logging.getLogger(__name__)

#: the judge (and ``label_`` column) of the answer_key rule
ANSWER_KEY = "answer_key"


def _judge(
    cfg: BuildConfig, judges: list[Judge], prompts: dict[str, Prompt], recs: list[dict], cache_path: Path
) -> dict[str, list[str]]:
    """Labels per judge (plus the consortia when there are >= 2 judges). LLM labels are cached in ``cache_path``
    under ``judge|model``; failures are not cached, so a resume asks again."""
    items = [JudgeItem(r["key"], prompts[r["prompt_id"]], r["completion"]) for r in recs]
    cache: dict[tuple[str, str], str] = {}
    for e in read_jsonl(cache_path, repair=True):
        cache[(e["judge"], e["key"])] = e["label"]
    out: dict[str, list[str]] = {}
    for j in judges:
        if not isinstance(j, LLMJudge):
            out[j.name] = j.label(items)
            continue
        model_tag = j.config.model
        labels = {it.key: cache.get((f"{j.name}|{model_tag}", it.key)) for it in items}
        todo = [it for it in items if labels[it.key] in (None, UNLABELLED)]
        if todo:
            from tqdm.auto import tqdm

            log.info("judge %s: %d samples to label (%d cached)", j.name, len(todo), len(items) - len(todo))
            bs = j.config.batch_size
            for i in tqdm(range(0, len(todo), bs), desc=f"judge {j.name}", disable=not cfg.progress):
                chunk = todo[i : i + bs]
                got = j.label_batch(chunk)
                fresh = []
                for it, lab in zip(chunk, got):
                    labels[it.key] = lab
                    if lab != UNLABELLED:  # failures are retried on resume, not cached
                        fresh.append({"judge": f"{j.name}|{model_tag}", "key": it.key, "label": lab})
                append_jsonl(cache_path, fresh)
        out[j.name] = [labels[it.key] or UNLABELLED for it in items]
    if len(judges) >= 2:
        base = {k: v for k, v in out.items()}
        out["consortium_majority"] = consortium(base, "majority")
        out["consortium_unanimous"] = consortium(base, "unanimous")
    return out


def _labels(
    cfg: BuildConfig, judges: list[Judge], prompts: dict[str, Prompt], recs: list[dict], cache_path: Path
) -> dict[str, dict[str, str]]:
    """judge name -> {key: label} over the judged rows (fixed-label rows are not judged); plus ``answer_key`` over
    the rows whose rule it is."""
    judged = [r for r in recs if prompts[r["prompt_id"]].fixed_label is None]
    lists = _judge(cfg, judges, prompts, judged, cache_path)
    labels = {name: {r["key"]: lab for r, lab in zip(judged, labs)} for name, labs in lists.items()}
    ak = [r for r in judged if prompts[r["prompt_id"]].label_rule == ANSWER_KEY]
    if ak and ANSWER_KEY not in labels:
        items = [JudgeItem(r["key"], prompts[r["prompt_id"]], r["completion"]) for r in ak]
        labels[ANSWER_KEY] = {r["key"]: lab for r, lab in zip(ak, AnswerKeyJudge().label(items))}
    return labels


def _rows(recs: list[dict], prompts: dict[str, Prompt], labels: dict[str, dict[str, str]], primary: str) -> list[dict]:
    rows = []
    for r in recs:
        p = prompts[r["prompt_id"]]
        if p.fixed_label is not None:
            label = p.fixed_label
        else:
            label = labels[ANSWER_KEY if p.label_rule == ANSWER_KEY else primary][r["key"]]
        row = {
            "text": p.text + r["completion"],
            "prompt": p.text,
            "completion": r["completion"],
            "completion_start": len(p.text),
            "label": label,
            "label_rule": p.label_rule,
            "scenario": p.family,
            "prompt_id": p.id,
            "sample_index": int(r["sample_index"]),
            "sample_seed": int(r["sample_seed"]),
            "key": r["key"],
            "kind": p.kind,
            "variant": p.variant,
            "role": p.role,
            "group": p.group,
            "cluster": p.cluster,
            "n_new_tokens": int(r["n_new_tokens"]),
            "finished": bool(r["finished"]),
            "split": "unpooled",
        }
        for name, labs in labels.items():
            row[f"label_{name}"] = labs.get(r["key"])
        rows.append(row)
    return rows


def _check_judges(cfg: BuildConfig) -> tuple[list[Judge], dict[str, str]]:
    judges, skipped = make_judges(cfg.judges, llm_overrides={"batch_size": cfg.llm_batch_size})
    if not judges:
        raise BuildError(f"No usable judge in {cfg.judges} ({skipped}); add `keyword` to --judges.")
    names = [j.name for j in judges] + (list(CONSORTIUM_NAMES) if len(judges) >= 2 else [])
    if cfg.primary_judge not in names:
        raise BuildError(
            f"--primary-judge {cfg.primary_judge!r} is not among the judges in use {names}"
            + (f" (skipped: {skipped})" if skipped else "")
            + "; pick one of them."
        )
    return judges, skipped


def _assign_splits(cfg: BuildConfig, rows: list[dict]) -> tuple[dict[str, str], Any, dict[str, Any]]:
    """Set every row's ``split`` (train / eval / input_* / unpooled) and ``prompt_split``; returns the group -> split
    assignment, the pool report and the input-variation counts.

    Role play: the group-balanced pool goes to its group's split. Instructed pairs, incentive, control: every row
    with a decisive (or control) label goes to its group's split, in its natural layout; ambiguous rows stay
    unpooled. Groups are split whole, stratified by cluster (family / topic / category), kind by kind; for the new
    kinds, clusters with a single selected group share one stratum."""
    behavior = [r for r in rows if r["kind"] == "role_play"]
    try:
        pool, pool_report = balance_same_prompt(behavior, seed=cfg.seed, min_per_class=1 if behavior else 0)
    except PoolError:
        if not cfg.allow_empty_pool:
            raise
        log.warning("the balanced pool is empty; writing the dataset anyway (--allow-empty-pool)")
        pool, pool_report = balance_same_prompt(behavior, seed=cfg.seed, min_per_class=0)
    natural = [r for r in rows if r["kind"] in NATURAL_KINDS]
    # every group gets a split (pooled or not), so an unsupervised SAE can train on all completions of the train
    # prompts (ambiguous ones included) while eval prompts stay unseen
    assign = split_groups(behavior, seed=cfg.seed, eval_fraction=cfg.eval_fraction, stratify_key="cluster")
    for kind in NATURAL_KINDS:  # per kind, so that every kind reaches both splits
        assign.update(split_groups([r for r in natural if r["kind"] == kind], seed=cfg.seed,
                                   eval_fraction=cfg.eval_fraction, stratify_key="cluster",
                                   pool_single_group_strata=True))
    pooled_keys = {r["key"]: assign[r["group"]] for r in pool}
    pooled_keys.update(
        {r["key"]: assign[r["group"]] for r in natural if r["label"] in DECISIVE or r["label"] == CONTROL}
    )
    iv_rows, iv_counts = input_variation_split(
        [r for r in rows if r["kind"] == "input_variation"], seed=cfg.seed, balance=cfg.balance_input_variation
    )
    iv_keys = {r["key"]: f"input_{r['variant']}" for r in iv_rows}
    for r in rows:
        r["split"] = pooled_keys.get(r["key"]) or iv_keys.get(r["key"]) or "unpooled"
        r["prompt_split"] = assign.get(r["group"], "train") if r["kind"] != "input_variation" else "input_variation"
    return assign, pool_report, iv_counts


def build_dataset(cfg: BuildConfig, *, model: Any = None, tokenizer: Any = None) -> BuildResult:
    """Run (or resume) a build. ``model``/``tokenizer`` may be passed to reuse a loaded model; otherwise
    ``gemma4_saelens_ext.models.load_model(cfg.model, cfg.precision)`` loads one, only if completions are missing.

    ``cfg.out`` is checked first and locked for the whole build (rank 0 under torchrun): a second build of the same
    folder, ``--resume`` included, is refused at once (:class:`~gemma4_saelens_ext.errors.OutputBusyError`) and
    never generates a completion twice."""
    from gemma4_saelens_ext.io import check_disk_space, check_out, output_lock

    check_out(cfg.out)
    check_disk_space(cfg.out, 200e6, "building a dataset (completions checkpoint, parquet splits, card)")
    if int(os.environ.get("RANK", "0")) != 0:
        return _build(cfg, model, tokenizer)
    with output_lock(cfg.out):
        return _build(cfg, model, tokenizer)


def _build(cfg: BuildConfig, model: Any, tokenizer: Any) -> BuildResult:
    t0 = time.time()
    judges, skipped = _check_judges(cfg)
    prompts = select_prompts(cfg)
    by_id = {p.id: p for p in prompts}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not generate_sharded(cfg, prompts, model, tokenizer):
            return None  # type: ignore[return-value]  # ranks > 0: rank 0 writes the dataset
        cfg = replace(cfg, resume=True, overwrite=False)
        model = tokenizer = None
    out = prepare_out(cfg)
    recs, n_gen, n_resumed = sample_missing(cfg, prompts, out / "raw" / "completions.jsonl", model, tokenizer)
    recs = sorted(recs + written_records(prompts), key=lambda r: (r["prompt_id"], int(r["sample_index"])))

    window = next((j.window for j in judges if isinstance(j, KeywordJudge)), 30)
    short = sum(
        1
        for r in recs
        if by_id[r["prompt_id"]].fixed_label is None and len(r["completion"]) < window and not r["finished"]
    )
    if short:
        log.warning(
            "%d of %d completions are shorter than the keyword window (%d chars) without having ended; consider a "
            "larger --max-new-tokens",
            short,
            len(recs),
            window,
        )

    labels = _labels(cfg, judges, by_id, recs, out / "raw" / "judgements.jsonl")
    rows = _rows(recs, by_id, labels, cfg.primary_judge)
    assign, pool_report, iv_counts = _assign_splits(cfg, rows)
    split_sizes = write_splits(out, rows, [f"label_{n}" for n in labels])

    counts = count_table(rows)
    judge_labels = {j.name: list(labels[j.name].values()) for j in judges}
    manifest = {
        "format": BUILD_FORMAT,
        "created": json.loads((out / "raw" / "build.json").read_text()).get("created"),
        "updated": now(),
        "config": asdict(cfg),
        "judges_used": [j.name for j in judges],
        "judges_skipped": skipped,
        "judge_settings": [j.settings() for j in judges],
        "scenarios": {
            "fingerprint": scenario_fingerprint(prompts),
            "files": sorted({p.source_file for p in prompts}),
            "n_prompts": len(prompts),
            "families": sorted({p.family for p in prompts}),
            "kinds": cfg.kinds,
            "instructed_mode": cfg.instructed_mode,
            "provenance": {fam: statements_provenance(f) for fam, f in sorted(
                {(p.family, p.source_file) for p in prompts if p.kind == "instructed_pairs"})},
        },
        "kinds": kind_summary(rows),
        "versions": versions(),
        "n_completions": len(rows),
        "n_generated_this_run": n_gen,
        "n_resumed": n_resumed,
        "short_completions": short,
        "split_sizes": split_sizes,
        "counts": counts,
        "label_counts": {k: label_counts(list(v.values())) for k, v in labels.items()},
        "agreement": pairwise_agreement(judge_labels) if len(judge_labels) >= 2 else [],
        "pool": pool_report.as_dict(),
        "input_variation_counts": iv_counts,
        "split_assignment": assign,
        "llm_judges": {
            j.name: {"requests": j.n_requests, "failed_batches": j.n_failed_batches, "disabled": j.disabled_reason}
            for j in judges
            if isinstance(j, LLMJudge)
        },
        "seconds": round(time.time() - t0, 2),
    }
    write_manifest(out, manifest)
    write_card(out, split_sizes, manifest)
    log.info("dataset written to %s\n%s", out, format_counts(counts))
    return BuildResult(out=out, manifest=manifest, rows=rows, n_generated=n_gen, n_resumed=n_resumed)
