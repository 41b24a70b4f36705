"""``gemma4-sae demo``: behavior dataset -> TopK SAE (SAELens runner) -> eval suite -> model card, in one folder.

Stages (each writes under ``--out``, default ``runs/demo``). A finished stage is reused only when the settings it
depends on are unchanged (a chained hash per stage in ``stages.json``): changing ``--precision`` redoes the dataset
and every later stage; ``--fresh`` redoes everything.

1. ``dataset``: :func:`gemma4_saelens_ext.behavior.build_dataset` on the chosen model/precision -> ``DIR/dataset``
2. ``train``: :func:`gemma4_saelens_ext.training.train` with the demo config, ``runner.dataset_path`` = the built
   dataset -> ``DIR/sae``
3. ``eval``: :func:`gemma4_saelens_ext.evals.suite.run_suite` on the trained SAE -> ``DIR/report`` (``report.json``,
   ``report.md``, plots)
4. ``export``: :func:`gemma4_saelens_ext.releases.export_sae` -> ``DIR/release`` (``README.md`` model card with Hub
   front matter, SAELens weights)

``DIR/stages.json`` records status, seconds and errors per stage; a failing stage stops the run, is recorded with
its error, and leaves earlier outputs in place, so a re-run resumes from it.

Each piece of work is done once: the stages share one loaded model per precision (a
:func:`~gemma4_saelens_ext.models.pool.model_pool` around the run; training and eval reuse the dataset stage's
model), and the input-variation prompts are not sampled when the eval could not use them (fewer question groups
than the positive control's ``min_groups``, which then falls back to scripted rows, and training never reads them).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.io import atomic_write_json
from gemma4_saelens_ext.models.pool import model_pool
from gemma4_saelens_ext.pipeline.config import DemoConfig, DemoError
from gemma4_saelens_ext.pipeline.rows import group_count, has_split, input_variation_used, split_sizes, training_rows

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DemoError", "run_demo", "STAGES", "check_disk", "summary_table", "stage_hashes"]

STAGES = ("dataset", "train", "eval", "export")


# ------------------------------------------------------------------------------------------------------------ helpers
def check_disk(path: str | Path, min_free_gb: float) -> float:
    """Free GB at ``path`` (its nearest existing parent); a UserError below ``min_free_gb``
    (:func:`gemma4_saelens_ext.io.check_disk_space`)."""
    from gemma4_saelens_ext.io import check_disk_space

    return check_disk_space(path, min_free_gb * 1e9, "the demo (model cache, dataset, SAE and report)") / 1e9


def _finite_numbers(obj: Any, where: str = "report") -> list[str]:
    """Paths of non-finite floats in a JSON-like object (empty when all numbers are finite)."""
    bad: list[str] = []
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            bad += _finite_numbers(v, f"{where}[{i}]")
    return bad


def summary_table(stages: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'stage':<10} {'status':<9} {'seconds':>9}  output / error", "-" * 72]
    total = 0.0
    for name in STAGES:
        s = stages.get(name, {"status": "pending"})
        sec = s.get("seconds")
        total += sec or 0.0
        info = s.get("error") or s.get("output") or ""
        lines.append(f"{name:<10} {s['status']:<9} {'' if sec is None else f'{sec:9.1f}':>9}  {info}")
    lines.append(f"{'total':<10} {'':<9} {total:9.1f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------- stages
def _stage_dataset(cfg: DemoConfig, d: Path) -> dict[str, Any]:
    from gemma4_saelens_ext.behavior import BuildConfig, build_dataset

    out = d / "dataset"
    use_iv = input_variation_used(cfg, load_suite_config(cfg))
    if not use_iv:
        logger.info("dataset: input-variation prompts not sampled (the eval's positive control would not use them)")
    kinds = list(dict.fromkeys([*cfg.kinds, *(["input_variation"] if use_iv else [])]))
    bc = BuildConfig(
        out=str(out),
        model=cfg.model,
        precision=cfg.precision,
        families=list(cfg.families),
        max_prompts_per_family=cfg.max_prompts_per_family,
        samples_per_prompt=cfg.samples_per_prompt,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        kinds=kinds,
        include_input_variation=use_iv,
        max_statements=cfg.max_statements or (60 if cfg.quick else None),
        max_control_prompts=cfg.max_control_prompts or (8 if cfg.quick else None),
        allow_empty_pool=True,
        # an interrupted build resumes from its completions checkpoint
        resume=(out / "manifest.json").exists() or (out / "raw").exists(),
        progress=cfg.progress,
    )
    res = build_dataset(bc)
    return {"output": str(out), "rows": len(res.rows), "generated": res.n_generated, "resumed": res.n_resumed,
            "input_variation_sampled": use_iv, "kinds": bc.kinds}


def _model_overrides(cfg: DemoConfig) -> dict[str, Any]:
    ov: dict[str, Any] = {"model.source": cfg.model, "model.precision": cfg.precision}
    if cfg.layer is not None:
        ov["model.layer"] = cfg.layer
    return ov


def _stage_train(cfg: DemoConfig, d: Path) -> dict[str, Any]:
    from gemma4_saelens_ext.training.runner import train

    out = d / "sae"
    # a folder holding one train.parquet: ``datasets.load_dataset`` (inside SAELens) reads it offline as split "train"
    data = d / "sae_data"
    data.mkdir(exist_ok=True)
    src, rows = training_rows(d / "dataset", data / "train.parquet")
    ov: dict[str, Any] = {
        "runner.dataset_path": str(data),
        "runner.output_path": str(out),
        "runner.checkpoint_path": str(d / "sae_checkpoints"),
        "runner.seed": cfg.seed,
        **_model_overrides(cfg),
    }
    if cfg.quick:
        ov.update({
            "runner.training_tokens": 2048, "runner.train_batch_size_tokens": 128, "runner.store_batch_size_prompts": 4,
            "runner.n_batches_in_buffer": 4, "runner.n_eval_batches": 1, "runner.eval_batch_size_prompts": 2,
            "runner.n_batches_for_norm_estimate": 2, "runner.context_size": 32,
            "runner.dead_feature_window": 50, "runner.feature_sampling_window": 50,
        })  # fmt: skip
    if cfg.training_tokens is not None:
        ov["runner.training_tokens"] = cfg.training_tokens
    if _eval_needs_full_model(cfg, d):
        ov["model.truncate"] = False  # the eval will generate: load the whole model once, for both stages (same acts)
    ov.update(cfg.train_overrides)
    t0 = time.perf_counter()
    sae, path = train(cfg.config, ov)
    cache = Path(ov["runner.checkpoint_path"]) / "activation_cache"  # training.prepare_activation_cache's default
    return {"output": str(path), "training_data": src, "training_rows": rows, "d_in": int(sae.cfg.d_in),
            "d_sae": int(sae.cfg.d_sae), "from_cached_activations": cache.exists(),
            "train_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def load_suite_config(cfg: DemoConfig, d: Path | None = None) -> Any:
    from gemma4_saelens_ext.evals.suite_file import load_suite

    return load_suite(cfg.suite, sae={"path": str((d or Path(cfg.out)) / "sae")}, output_dir=str(d / "report") if d else None)


def _eval_needs_full_model(cfg: DemoConfig, d: Path) -> bool:
    """What ``run_suite`` loads the whole model for (the rest needs layers up to the SAE's only)."""
    s = _suite_overrides(cfg, d, log=False)[0]
    return ((s.reconstruction.enabled and s.reconstruction.lm_loss) or s.steering.enabled
            or (s.stability.enabled and s.stability.mode == "regenerate"))


def _suite_overrides(cfg: DemoConfig, d: Path, log: bool = True) -> tuple[Any, str]:
    suite = load_suite_config(cfg, d)
    suite.name = f"demo-{cfg.model}-{cfg.precision}"
    suite.model.source = cfg.model
    suite.model.precision = cfg.precision  # evaluate at the precision the SAE was trained at
    suite.model.layer = None  # the trained SAE's hook
    suite.portability.training_precision = cfg.precision
    min_n = max(suite.stats.min_class_size, suite.probes.n_splits)
    if cfg.quick:
        suite.model.batch_size, suite.model.max_length = 16, 64
        suite.dataset.scripted_families = ["slug_snail", "werewolf"]
        suite.reconstruction.lm_loss = False
        suite.stats.n_permutations, suite.stats.n_bootstrap, suite.stats.probe_permutations = 200, 100, 5
        suite.stats.min_class_size = 3
        suite.probes.n_splits = 3
        suite.reconstruction.max_texts = 4
        suite.steering.alphas, suite.steering.n_prompts, suite.steering.max_new_tokens = [-1.0, 0.0, 1.0], 2, 4
        suite.steering.n_random_directions = 2
        suite.stability.seeds = [101, 107]
        suite.portability.precisions, suite.portability.max_texts = ["nf4", "fp32"], 4
        min_n = 3
    ds = d / "dataset"
    if suite.dataset.input_variation_split and not has_split(ds, suite.dataset.input_variation_split):
        suite.dataset.input_variation_split = None  # not sampled (see input_variation_used): the control's fallback
    sizes = {s: split_sizes(ds, s) for s in ("train", "eval")}
    if all(min(h, dc) >= min_n for h, dc in sizes.values()) and group_count(ds, "eval") >= 2:
        suite.dataset.path = str(ds)
        # grouped CV needs a prompt group per fold: never more folds than eval groups
        suite.probes.n_splits = max(2, min(suite.probes.n_splits, group_count(ds, "eval")))
        suite.dataset.scripted_families = None
        kind = f"built dataset {ds} (train/eval honest,deceptive = {sizes})"
    else:
        # the tiny budgets can leave too few labelled rows; evaluate the trained SAE on the scripted demo rows
        kind = (
            f"scripted demo families {suite.dataset.scripted_families} (the built dataset has {sizes} honest/deceptive "
            f"rows in train/eval, fewer than {min_n} per class or under 2 eval prompt groups; raise "
            "--samples-per-prompt/--max-prompts-per-family)"
        )
        if log:
            logger.warning("eval: %s", kind)
        from gemma4_saelens_ext.evals.data import scripted_rows

        ev = scripted_rows(suite.dataset.scripted_families, seed=suite.seed)["eval"]
        suite.probes.n_splits = max(2, min(suite.probes.n_splits, len({r["group"] for r in ev})))
    return suite, kind


def _stage_eval(cfg: DemoConfig, d: Path) -> dict[str, Any]:
    from gemma4_saelens_ext.evals.suite import run_suite

    suite, kind = _suite_overrides(cfg, d)
    out = run_suite(suite, output_dir=str(d / "report"))
    report = json.loads((out / "report.json").read_text())
    bad = _finite_numbers(report)
    return {"output": str(out), "dataset": kind, "non_finite": bad[:20],
            "plots": sorted(p.name for p in out.glob("*.png"))}  # fmt: skip


def _stage_export(cfg: DemoConfig, d: Path) -> dict[str, Any]:
    from sae_lens import SAE

    from gemma4_saelens_ext.releases import export_sae

    sae = SAE.load_from_disk(str(d / "sae"))
    report = json.loads((d / "report" / "report.json").read_text())
    metrics: dict[str, float] = {}
    rec = report.get("reconstruction") or {}
    for k, v in rec.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
            metrics[f"reconstruction_{k}"] = float(v)
    res = export_sae(
        sae,
        d / "release",
        release=f"demo-{Path(cfg.model).name}-{cfg.precision}",
        model_name=cfg.model,
        precision=cfg.precision,
        metrics=metrics or None,
        notes=f"Trained by `gemma4-sae demo` on {d / 'dataset'}; eval report in {d / 'report'}.",
    )
    if res.model_card is not None:
        shutil.copyfile(res.model_card, d / "report" / "MODEL_CARD.md")
    return {"output": str(res.out_dir), "model_card": str(res.model_card)}


_RUNNERS: dict[str, Callable[[DemoConfig, Path], dict[str, Any]]] = {
    "dataset": _stage_dataset, "train": _stage_train, "eval": _stage_eval, "export": _stage_export,
}  # fmt: skip
_DONE_MARKERS = {
    "dataset": "dataset/manifest.json", "train": "sae/cfg.json", "eval": "report/report.json",
    "export": "release/README.md",
}  # fmt: skip
#: the DemoConfig fields each stage's output depends on (besides the stages before it)
_STAGE_SETTINGS = {
    "dataset": ("model", "precision", "samples_per_prompt", "max_prompts_per_family", "max_new_tokens", "families",
                "seed", "quick", "kinds", "max_statements", "max_control_prompts"),
    "train": ("layer", "config", "training_tokens", "train_overrides"),
    "eval": ("suite",),
    "export": (),
}  # fmt: skip
#: each stage's outputs under --out (removed when the stage must be redone with other settings)
_STAGE_OUTPUTS = {"dataset": ("dataset",), "train": ("sae_data", "sae", "sae_checkpoints"), "eval": ("report",),
                  "export": ("release",)}  # fmt: skip


def stage_hashes(cfg: DemoConfig, derived: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """A hash per stage of the settings it depends on, chained: a change upstream changes every later hash.
    ``derived``: per stage, decisions taken from other settings (e.g. whether input-variation prompts are sampled)."""
    import hashlib

    out, prev = {}, ""
    conf = asdict(cfg)
    for name in STAGES:
        payload = json.dumps({"upstream": prev, **{k: conf[k] for k in _STAGE_SETTINGS[name]},
                              **(derived or {}).get(name, {})}, sort_keys=True, default=str)
        prev = out[name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return out


def run_demo(cfg: DemoConfig, *, echo: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run (or resume) the four stages; returns the ``stages.json`` content. Raises :class:`DemoError` on failure."""
    from gemma4_saelens_ext.training.config import load_training_config
    from gemma4_saelens_ext.training.runner import check_model_fit

    from gemma4_saelens_ext.io import check_out, output_lock

    d = check_out(cfg.out)
    free = check_disk(d, cfg.min_free_gb)
    # config errors before any work: the training config with the demo's settings (its layer and SAE width against
    # the model's config.json) and the suite
    check_model_fit(load_training_config(cfg.config, {**_model_overrides(cfg), **cfg.train_overrides}))
    suite = load_suite_config(cfg, d)
    with output_lock(d):  # a second demo into the same folder is refused
        return _run(cfg, d, free, suite, echo)


def _run(cfg: DemoConfig, d: Path, free: float, suite: Any, echo: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    if cfg.fresh and d.exists():
        for name in ("dataset", "sae_data", "sae", "sae_checkpoints", "report", "release", "stages.json"):
            p = d / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    sj = d / "stages.json"
    state: dict[str, Any] = json.loads(sj.read_text()) if sj.exists() else {}
    stages: dict[str, dict[str, Any]] = state.get("stages", {})
    state.update(config=asdict(cfg), free_disk_gb=round(free, 1))
    # recorded only when the prompts are left out, so datasets built before this decision existed stay valid
    hashes = stage_hashes(cfg, {} if input_variation_used(cfg, suite) else {"dataset": {"input_variation": False}})
    with model_pool() as pool:  # one model load per precision for the whole run (see the module docstring)
        failed = _run_stages(cfg, d, sj, state, stages, hashes, echo)
    state["model_loads"] = [{"precision": k.precision, "truncated_after": t} for k, t in pool.loads]
    state["stages"] = stages
    atomic_write_json(sj, state, default=str)
    echo(summary_table(stages))
    if failed:
        raise DemoError(
            f"demo stage {failed!r} failed: {stages[failed]['error']} (details in {sj}; earlier outputs kept, "
            "re-run the same command to resume, or add --fresh to start over with new settings)"
        )
    echo(f"[demo] report: {d / 'report'}  model card: {d / 'release' / 'README.md'}")
    return stages


def _run_stages(cfg: DemoConfig, d: Path, sj: Path, state: dict[str, Any], stages: dict[str, dict[str, Any]],
                hashes: dict[str, str], echo: Callable[[str], None]) -> str | None:
    """Run or reuse each stage in order; returns the name of the stage that failed (None: all done)."""
    failed: str | None = None
    for name in STAGES:
        prev = stages.get(name, {})
        done = (d / _DONE_MARKERS[name]).exists() and prev.get("status") in ("done", "reused")
        if done and prev.get("settings_hash") == hashes[name]:
            stages[name] = {**prev, "status": "reused"}
            echo(f"[demo] {name}: reusing {prev.get('output')} (--fresh to redo)")
            continue
        if prev and prev.get("settings_hash") not in (None, hashes[name]):
            echo(f"[demo] {name}: settings changed since the last run; redoing it")
            for o in _STAGE_OUTPUTS[name]:
                shutil.rmtree(d / o, ignore_errors=True)
        echo(f"[demo] {name}: running")
        t0 = time.perf_counter()
        stages[name] = {"status": "running"}
        state["stages"] = stages
        atomic_write_json(sj, state, default=str)
        try:
            info = _RUNNERS[name](cfg, d)
            stages[name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 2),
                            "settings_hash": hashes[name], **info}
        except Exception as e:  # noqa: BLE001 - recorded, then re-raised as DemoError
            stages[name] = {
                "status": "failed",
                "seconds": round(time.perf_counter() - t0, 2),
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-4000:],
            }
            failed = name
        for later in STAGES[STAGES.index(name) + 1 :]:
            if stages.get(later, {}).get("status") in ("done", "reused") and stages[name]["status"] == "done":
                stages[later]["status"] = "stale"  # upstream changed: redo
        state["stages"] = stages
        atomic_write_json(sj, state, default=str)
        echo(f"[demo] {name}: {stages[name]['status']} in {stages[name]['seconds']:.1f}s")
        if failed:
            break
    return failed
