"""Orchestrates a dataset build: scenarios -> seeded samples -> judges -> pools/splits -> parquet + manifest.

Output folder layout (``datasets.load_dataset(DIR)`` reads it; SAELens ``dataset_path=DIR`` trains on ``train``)::

    DIR/README.md                   dataset card; its YAML header maps splits to files
    DIR/data/train.parquet          same-prompt balanced behavior pool, train prompt groups
    DIR/data/eval.parquet           same-prompt balanced behavior pool, eval prompt groups
    DIR/data/input_variation.parquet  neutral / V0 / V3 rows (diagnostic split)
    DIR/data/all.parquet            every completion with its labels (config "all")
    DIR/manifest.json               settings, versions, judge settings, counts, agreement
    DIR/raw/build.json              generation identity, written first (tells a resumable build from another)
    DIR/raw/completions.jsonl       checkpoint: one line per completion, appended after every batch
    DIR/raw/judgements.jsonl        cache of LLM judge labels (local judges are recomputed; they are cheap)

Resume: completions already in the checkpoint are never generated again (keys are prompt_id#sample_index and seeds
are per key), LLM labels already cached are not requested again. Every file except the append-only JSONL
checkpoints is written to a temporary name and renamed, so a kill never leaves a half-written file behind; a
truncated last JSONL line (a kill mid-write) is dropped and regenerated.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from gemma4_saelens_ext.behavior.judges import (
    UNLABELLED,
    Judge,
    JudgeItem,
    KeywordJudge,
    LLMJudge,
    consortium,
    label_counts,
    make_judges,
    pairwise_agreement,
)
from gemma4_saelens_ext.behavior.pools import (
    PoolError,
    balance_same_prompt,
    count_table,
    input_variation_split,
    split_groups,
    stable_order,
)
from gemma4_saelens_ext.behavior.sampling import (
    check_max_new_tokens,
    generate_completions,
    make_requests,
)
from gemma4_saelens_ext.behavior.scenarios import Prompt, load_scenarios, scenario_fingerprint

__all__ = ["BuildConfig", "BuildError", "BuildResult", "build_dataset", "read_jsonl", "COLUMNS"]

log = logging.getLogger(__name__)

BUILD_FORMAT = 1
#: settings that change what a completion is; a resumed build must match them
GENERATION_KEYS = ("model", "precision", "seed", "temperature", "max_new_tokens")
CONSORTIUM_NAMES = ("consortium_majority", "consortium_unanimous")

#: fixed columns of every parquet file (plus one ``label_<judge>`` column per judge)
COLUMNS: dict[str, str] = {
    "text": "string",
    "prompt": "string",
    "completion": "string",
    "completion_start": "int64",
    "label": "string",
    "scenario": "string",
    "prompt_id": "string",
    "sample_index": "int64",
    "sample_seed": "int64",
    "key": "string",
    "kind": "string",
    "variant": "string",
    "role": "string",
    "group": "string",
    "n_new_tokens": "int64",
    "finished": "bool",
    "split": "string",
    #: the split of the row's prompt group (train / eval / input_variation), pooled or not: what an unsupervised
    #: SAE may train on (every completion of the train prompts) without seeing eval prompts
    "prompt_split": "string",
}


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to change."""


@dataclass
class BuildConfig:
    """Everything a build depends on (the manifest stores it). Defaults mirror the seed protocol."""

    out: str
    model: str = "gemma-3-270m"
    precision: str = "nf4"
    #: scenario files, folders or built-in family names; empty = the whole built-in library
    scenarios: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    include_input_variation: bool = True
    #: at most N prompts of each family, taken as whole prompt groups in a seeded order (quick builds, tests)
    max_prompts_per_family: int | None = None
    samples_per_prompt: int = 8
    seed: int = 0
    max_new_tokens: int = 32
    temperature: float = 1.0
    batch_size: int = 16
    judges: list[str] = field(default_factory=lambda: ["keyword", "paraphrase"])
    #: a judge name or consortium_majority / consortium_unanimous; decides ``label`` and the pools
    primary_judge: str = "keyword"
    llm_batch_size: int = 10
    eval_fraction: float = 0.3
    balance_input_variation: bool = True
    #: write the dataset even when the balanced pool is empty (otherwise PoolError)
    allow_empty_pool: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def generation_identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GENERATION_KEYS}


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    n_generated: int
    n_resumed: int


# --------------------------------------------------------------------------------------------------------- file I/O
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records with one write() call and fsync: a kill leaves whole lines or one truncated last line."""
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL checkpoint; a truncated last line (from a kill) is dropped, and with ``repair`` cut off the file."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    out: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for line in raw.split(b"\n"):
        end = pos + len(line) + 1
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if end <= len(raw):  # a bad line in the middle: not from a kill, refuse to guess
                    raise BuildError(f"{path} has a corrupt line at byte {pos}; delete the line or use --overwrite.")
                log.warning("dropping a truncated last line of %s (an interrupted write)", path)
                break
        good_end = min(end, len(raw))
        pos = end
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("gemma4-saelens-ext", "torch", "transformers", "datasets", "sae-lens", "bitsandbytes", "pyarrow"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# --------------------------------------------------------------------------------------------------------- folder
def _prepare_out(cfg: BuildConfig) -> Path:
    out = Path(cfg.out)
    raw = out / "raw"
    marker = raw / "build.json"
    if out.exists() and any(out.iterdir()):
        if not marker.exists() and not (out / "manifest.json").exists():
            raise BuildError(
                f"Output folder {out} is not empty and holds no dataset build; choose a new or empty --out "
                "(files that are not ours are never deleted)."
            )
        if cfg.overwrite:
            log.warning("--overwrite: removing the previous build in %s", out)
            for name in ("data", "raw"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("manifest.json", "README.md"):
                (out / name).unlink(missing_ok=True)
        elif not cfg.resume:
            prev = json.loads(marker.read_text()) if marker.exists() else {}
            ident = prev.get("generation", {})
            raise BuildError(
                f"Output folder {out} already holds a build ({', '.join(f'{k}={v}' for k, v in ident.items())}). "
                "Pass --resume to continue it, --overwrite to replace it, or choose another --out."
            )
        else:
            prev = json.loads(marker.read_text()) if marker.exists() else {}
            ident = prev.get("generation", {})
            diff = {k: (ident.get(k), v) for k, v in cfg.generation_identity().items() if ident.get(k) != v}
            if diff:
                raise BuildError(
                    f"Cannot resume the build in {out}: it was made with different settings "
                    + ", ".join(f"{k}: folder has {a!r}, you asked {b!r}" for k, (a, b) in diff.items())
                    + ". Use the folder's settings, --overwrite to replace it, or another --out."
                )
    raw.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    if not marker.exists():
        _atomic_write_text(
            marker,
            json.dumps(
                {"format": BUILD_FORMAT, "generation": cfg.generation_identity(), "created": _now()}, indent=2
            ),
        )
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------------- steps
def _whole_groups(prompts: list[Prompt], max_per_family: int, seed: int) -> list[Prompt]:
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


def _select_prompts(cfg: BuildConfig) -> list[Prompt]:
    prompts = load_scenarios(
        cfg.scenarios or None, families=cfg.families or None, include_input_variation=cfg.include_input_variation
    )
    if cfg.max_prompts_per_family is not None:
        prompts = _whole_groups(prompts, cfg.max_prompts_per_family, cfg.seed)
    if not prompts:
        raise BuildError("No prompts selected; check --scenarios / --families / --max-prompts-per-family.")
    return prompts


def _load_model(cfg: BuildConfig) -> tuple[Any, Any]:
    from gemma4_saelens_ext.models import load_model

    lm = load_model(cfg.model, cfg.precision)
    return lm.model, lm.tokenizer


def _sample(
    cfg: BuildConfig,
    prompts: list[Prompt],
    ckpt: Path,
    model: Any,
    tokenizer: Any,
    shard: tuple[int, int] | None = None,
) -> tuple[list[dict], int, int]:
    """Generate what ``ckpt`` lacks. ``shard=(rank, world)``: only requests ``rank::world`` (in request order), written
    to ``ckpt``; completions already in the merged ``completions.jsonl`` beside it count as done."""
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
            _append_jsonl(ckpt, lines)

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


def _judge(
    cfg: BuildConfig, judges: list[Judge], prompts: dict[str, Prompt], recs: list[dict], cache_path: Path
) -> dict[str, list[str]]:
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
                _append_jsonl(cache_path, fresh)
        out[j.name] = [labels[it.key] or UNLABELLED for it in items]
    if len(judges) >= 2:
        base = {k: v for k, v in out.items()}
        out["consortium_majority"] = consortium(base, "majority")
        out["consortium_unanimous"] = consortium(base, "unanimous")
    return out


def _rows(recs: list[dict], prompts: dict[str, Prompt], labels: dict[str, list[str]], primary: str) -> list[dict]:
    rows = []
    for i, r in enumerate(recs):
        p = prompts[r["prompt_id"]]
        row = {
            "text": p.text + r["completion"],
            "prompt": p.text,
            "completion": r["completion"],
            "completion_start": len(p.text),
            "label": labels[primary][i],
            "scenario": p.family,
            "prompt_id": p.id,
            "sample_index": int(r["sample_index"]),
            "sample_seed": int(r["sample_seed"]),
            "key": r["key"],
            "kind": p.kind,
            "variant": p.variant,
            "role": p.role,
            "group": p.group,
            "n_new_tokens": int(r["n_new_tokens"]),
            "finished": bool(r["finished"]),
            "split": "unpooled",
        }
        for name, labs in labels.items():
            row[f"label_{name}"] = labs[i]
        rows.append(row)
    return rows


def _write_parquet(path: Path, rows: list[dict], label_cols: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
    schema = pa.schema([(c, types[t]) for c, t in COLUMNS.items()] + [(c, pa.string()) for c in label_cols])
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _readme(splits: dict[str, int], manifest: dict[str, Any]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  default: true", "  data_files:"]
    present = [s for s in ("train", "eval", "input_variation") if splits.get(s)]
    for s in present:
        lines += [f"  - split: {s}", f"    path: data/{s}.parquet"]
    if not present:
        # every pool empty (allow_empty_pool): the default config must still name a file, or load_dataset fails
        lines += ["  - split: unpooled", "    path: data/all.parquet"]
    lines += ["- config_name: all", "  data_files:", "  - split: train", "    path: data/all.parquet", "---", ""]
    g = manifest["config"]
    lines += [
        "# Behavior dataset (gemma4_saelens_ext)",
        "",
        f"Completions of role-play prompts by `{g['model']}` at precision `{g['precision']}`, temperature "
        f"{g['temperature']}, seed {g['seed']}, labelled by {', '.join(manifest['judges_used'])} "
        f"(primary: `{g['primary_judge']}`).",
        "",
        "Labels say whether a completion keeps the role the prompt assigned (honest) or drifts from it (deceptive). "
        "They measure role consistency under instruction, not strategic deception.",
        "",
        "| split | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in splits.items()],
        "",
        "Splits: `train`/`eval` are the same-prompt balanced behavior pool split by prompt group; `input_variation` "
        "holds neutral / V0 / V3 rows; config `all` holds every completion with its `split` "
        "(`unpooled` = not in any pool). See manifest.json for settings, versions and counts.",
        "",
    ]
    return "\n".join(lines)


def format_counts(counts: dict[str, int]) -> str:
    """A plain-text table of 'split/scenario/label' counts."""
    if not counts:
        return "(no rows)"
    parts = [k.split("/") for k in counts]
    w = [max(len(p[i]) for p in parts + [["split", "scenario", "label"]]) for i in range(3)]
    head = f"{'split':<{w[0]}}  {'scenario':<{w[1]}}  {'label':<{w[2]}}  count"
    body = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {n}" for (a, b, c), n in zip(parts, counts.values())]
    return "\n".join([head, *body])


# --------------------------------------------------------------------------------------------------------- main
def _generate_sharded(cfg: BuildConfig, prompts: list[Prompt], model: Any, tokenizer: Any) -> bool:
    """Under ``torchrun``: every rank samples its slice ``rank::world`` of the requests into its own checkpoint, then
    rank 0 merges them into ``raw/completions.jsonl`` and goes on (judges, pools, files) alone. Because every
    completion has its own seed, the merged completions equal a one-process build's. Returns True on rank 0."""
    import torch.distributed as dist

    from gemma4_saelens_ext.dist import barrier as _barrier
    from gemma4_saelens_ext.dist import init_distributed as _init_dist

    rank, world, _local, device = _init_dist()
    try:
        status: list[Any] = [None]
        if rank == 0:
            try:
                _prepare_out(cfg)
            except BuildError as e:
                status[0] = str(e)
        dist.broadcast_object_list(status, src=0)
        if status[0]:
            raise BuildError(status[0])
        raw = Path(cfg.out) / "raw"
        # model caches (GGUF conversion, derived checkpoints) are built under a file lock: safe from every rank
        _sample(cfg, prompts, raw / f"completions.rank{rank}-of-{world}.jsonl", model, tokenizer, shard=(rank, world))
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
            _append_jsonl(main, new)
            added += len(new)
    for f in shards:
        f.unlink()
    log.info("merged %d rank checkpoints into %s (+%d completions)", len(shards), main, added)
    return added


def build_dataset(cfg: BuildConfig, *, model: Any = None, tokenizer: Any = None) -> BuildResult:
    """Run (or resume) a build. ``model``/``tokenizer`` may be passed to reuse a loaded model; otherwise
    ``gemma4_saelens_ext.models.load_model(cfg.model, cfg.precision)`` loads one, only if completions are missing."""
    t0 = time.time()
    if cfg.samples_per_prompt < 1:
        raise BuildError(f"samples_per_prompt must be >= 1, got {cfg.samples_per_prompt}.")
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
    prompts = _select_prompts(cfg)
    by_id = {p.id: p for p in prompts}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not _generate_sharded(cfg, prompts, model, tokenizer):
            return None  # type: ignore[return-value]  # ranks > 0: rank 0 writes the dataset
        cfg = replace(cfg, resume=True, overwrite=False)
        model = tokenizer = None
    out = _prepare_out(cfg)
    recs, n_gen, n_resumed = _sample(cfg, prompts, out / "raw" / "completions.jsonl", model, tokenizer)

    window = next((j.window for j in judges if isinstance(j, KeywordJudge)), 30)
    short = sum(1 for r in recs if len(r["completion"]) < window and not r["finished"])
    if short:
        log.warning(
            "%d of %d completions are shorter than the keyword window (%d chars) without having ended; consider a "
            "larger --max-new-tokens",
            short,
            len(recs),
            window,
        )

    labels = _judge(cfg, judges, by_id, recs, out / "raw" / "judgements.jsonl")
    rows = _rows(recs, by_id, labels, cfg.primary_judge)

    behavior = [r for r in rows if r["kind"] == "role_play"]
    try:
        pool, pool_report = balance_same_prompt(behavior, seed=cfg.seed, min_per_class=1 if behavior else 0)
    except PoolError:
        if not cfg.allow_empty_pool:
            raise
        log.warning("the balanced pool is empty; writing the dataset anyway (--allow-empty-pool)")
        pool, pool_report = balance_same_prompt(behavior, seed=cfg.seed, min_per_class=0)
    # every behavior group gets a split (pooled or not), so an unsupervised SAE can train on all completions of
    # the train prompts (ambiguous ones included) while eval prompts stay unseen
    assign = split_groups(behavior, seed=cfg.seed, eval_fraction=cfg.eval_fraction)
    pooled_keys = {r["key"]: assign[r["group"]] for r in pool}
    iv_rows, iv_counts = input_variation_split(
        [r for r in rows if r["kind"] == "input_variation"], seed=cfg.seed, balance=cfg.balance_input_variation
    )
    iv_keys = {r["key"]: f"input_{r['variant']}" for r in iv_rows}
    for r in rows:
        r["split"] = pooled_keys.get(r["key"]) or iv_keys.get(r["key"]) or "unpooled"
        r["prompt_split"] = assign.get(r["group"], "train") if r["kind"] == "role_play" else "input_variation"

    label_cols = [f"label_{n}" for n in labels]
    split_rows = {
        "train": [r for r in rows if r["split"] == "train"],
        "eval": [r for r in rows if r["split"] == "eval"],
        "input_variation": [r for r in rows if r["split"].startswith("input_")],
    }
    for s, rs in split_rows.items():
        if rs:
            _write_parquet(out / "data" / f"{s}.parquet", rs, label_cols)
        else:
            (out / "data" / f"{s}.parquet").unlink(missing_ok=True)
    _write_parquet(out / "data" / "all.parquet", rows, label_cols)

    counts = count_table(rows)
    judge_labels = {k: v for k, v in labels.items() if k not in CONSORTIUM_NAMES}
    manifest = {
        "format": BUILD_FORMAT,
        "created": json.loads((out / "raw" / "build.json").read_text()).get("created"),
        "updated": _now(),
        "config": asdict(cfg),
        "judges_used": [j.name for j in judges],
        "judges_skipped": skipped,
        "judge_settings": [j.settings() for j in judges],
        "scenarios": {
            "fingerprint": scenario_fingerprint(prompts),
            "files": sorted({p.source_file for p in prompts}),
            "n_prompts": len(prompts),
            "families": sorted({p.family for p in prompts}),
        },
        "versions": _versions(),
        "n_completions": len(rows),
        "n_generated_this_run": n_gen,
        "n_resumed": n_resumed,
        "short_completions": short,
        "split_sizes": {s: len(rs) for s, rs in split_rows.items()},
        "counts": counts,
        "label_counts": {k: label_counts(v) for k, v in labels.items()},
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
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    _atomic_write_text(out / "README.md", _readme(manifest["split_sizes"], manifest))
    log.info("dataset written to %s\n%s", out, format_counts(counts))
    return BuildResult(out=out, manifest=manifest, rows=rows, n_generated=n_gen, n_resumed=n_resumed)


