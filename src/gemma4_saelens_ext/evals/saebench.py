"""SAEBench-compatible result files, one per SAE and eval type, beside ``report.json``.

SAEBench (github.com/adamkarvonen/SAEBench) writes one JSON per (SAE, eval) with these top-level keys:
``eval_type_id``, ``eval_config``, ``eval_id`` (one UUID per run), ``datetime_epoch_millis``,
``eval_result_metrics`` (categories of flat metrics), ``eval_result_details`` (a list), ``eval_result_unstructured``,
``sae_bench_commit_hash``, ``sae_lens_id``, ``sae_lens_release_id``, ``sae_lens_version``, ``sae_cfg_dict``. This
module writes two of its eval types:

* ``core`` (``saebench/core/<id>_eval_results.json``): every category and metric of SAEBench's core schema
  (:data:`CORE_METRICS`), filled from the suite's reconstruction row of the SAE (mapping in docs/evals.md);
* ``sparse_probing`` (``saebench/sparse_probing/<id>_eval_results.json``): written when a caller has the numbers
  (:func:`write_saebench_results` with ``sparse_probing=``; the detection card fills it), metrics
  :data:`SPARSE_PROBING_METRICS`, one ``eval_result_details`` entry per dataset.

A metric SAEBench requires that this run did not compute (or that came out NaN) is written as ``-1`` (SAEBench's own
stand-in for NaN) and named in ``eval_result_unstructured["not_computed"]``. ``sae_bench_commit_hash`` says the file
was written by this package, not by SAEBench. :func:`validate_saebench` checks a document against the schema implemented here.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TOP_LEVEL_KEYS", "CORE_METRICS", "CORE_CONFIG_KEYS", "SPARSE_PROBING_METRICS", "SPARSE_PROBING_CONFIG_KEYS",
    "SAEBenchInfo", "core_output", "sparse_probing_output", "validate_saebench", "write_saebench_results",
    "write_saebench_files",
]

#: SAEBench's top-level keys and their JSON types (``None`` allowed where SAEBench allows null)
TOP_LEVEL_KEYS: dict[str, tuple[type, ...]] = {
    "eval_type_id": (str,), "eval_config": (dict,), "eval_id": (str,), "datetime_epoch_millis": (int,),
    "eval_result_metrics": (dict,), "eval_result_details": (list,), "eval_result_unstructured": (dict, type(None)),
    "sae_bench_commit_hash": (str,), "sae_lens_id": (str, type(None)), "sae_lens_release_id": (str, type(None)),
    "sae_lens_version": (str, type(None)), "sae_cfg_dict": (dict, type(None)),
}
#: core: category -> required metric -> type
CORE_METRICS: dict[str, dict[str, type]] = {
    "model_behavior_preservation": {"kl_div_score": float, "kl_div_with_ablation": float, "kl_div_with_sae": float},
    "model_performance_preservation": {"ce_loss_score": float, "ce_loss_with_ablation": float,
                                       "ce_loss_with_sae": float, "ce_loss_without_sae": float},
    "reconstruction_quality": {"explained_variance": float, "mse": float, "cossim": float},
    "shrinkage": {"l2_norm_in": float, "l2_norm_out": float, "l2_ratio": float, "relative_reconstruction_bias": float},
    "sparsity": {"l0": float, "l1": float},
    "token_stats": {"total_tokens_eval_reconstruction": int, "total_tokens_eval_sparsity_variance": int},
    "misc_metrics": {"freq_over_1_percent": float, "freq_over_10_percent": float,
                     "normalized_freq_over_1_percent": float, "normalized_freq_over_10_percent": float,
                     "average_max_encoder_cosine_sim": float, "average_max_decoder_cosine_sim": float,
                     "frac_alive": float},
}
#: SAEBench's CoreEvalConfig fields
CORE_CONFIG_KEYS = (
    "model_name", "llm_dtype", "batch_size_prompts", "n_eval_reconstruction_batches",
    "n_eval_sparsity_variance_batches", "dataset", "context_size", "compute_kl", "compute_ce_loss",
    "compute_l2_norms", "compute_sparsity_metrics", "compute_variance_metrics",
    "compute_featurewise_density_statistics", "compute_featurewise_weight_based_metrics",
    "exclude_special_tokens_from_reconstruction", "verbose",
)
_KS = (1, 2, 5, 10, 20, 50, 100)
#: sparse probing: category -> metric -> required? (``llm_test_accuracy`` is the one required metric)
SPARSE_PROBING_METRICS: dict[str, dict[str, bool]] = {
    "llm": {"llm_test_accuracy": True, **{f"llm_top_{k}_test_accuracy": False for k in _KS}},
    "sae": {"sae_test_accuracy": False, **{f"sae_top_{k}_test_accuracy": False for k in _KS}},
}
#: SAEBench's SparseProbingEvalConfig fields
SPARSE_PROBING_CONFIG_KEYS = (
    "random_seed", "dataset_names", "probe_train_set_size", "probe_test_set_size", "context_length",
    "sae_batch_size", "llm_batch_size", "llm_dtype", "model_name", "k_values", "lower_vram_usage",
)
WRITER = "not SAEBench: written by gemma4-saelens-ext"


@dataclass
class SAEBenchInfo:
    """Who the results are about (the ``sae_row_info`` of :func:`write_saebench_results`)."""

    name: str
    """The SAE's row label in the suite."""
    sae_cfg_dict: dict[str, Any] | None = None
    """``sae.cfg.to_dict()``."""
    release: str | None = None
    """SAELens release id (None for a folder or an in-suite SAE)."""
    sae_id: str | None = None
    """SAELens SAE id within the release."""
    sae_lens_version: str | None = None
    eval_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    """One UUID per run (shared by every SAE of a suite run, as SAEBench does)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Goes to ``eval_result_unstructured`` (source, encoding unit, suite, split)."""

    @property
    def unique_id(self) -> str:
        base = f"{self.release}_{self.sae_id}" if self.release else f"custom_{self.name}"
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in base.replace(".", "_"))


def _number(v: Any, kind: type) -> int | float:
    """SAEBench writes NaN as -1; so do we (and for what was not computed)."""
    if v is None or isinstance(v, str) or (isinstance(v, float) and not math.isfinite(v)):
        return -1
    return int(v) if kind is int else float(v)


def _envelope(eval_type: str, info: SAEBenchInfo, config: dict[str, Any], metrics: dict[str, Any],
              details: list[dict[str, Any]], unstructured: dict[str, Any]) -> dict[str, Any]:
    return {
        "eval_type_id": eval_type, "eval_config": config, "eval_id": info.eval_id,
        "datetime_epoch_millis": int(time.time() * 1000), "eval_result_metrics": metrics,
        "eval_result_details": details, "eval_result_unstructured": {**info.extra, **unstructured},
        "sae_bench_commit_hash": WRITER, "sae_lens_id": info.sae_id, "sae_lens_release_id": info.release,
        "sae_lens_version": info.sae_lens_version, "sae_cfg_dict": info.sae_cfg_dict,
    }


def core_output(info: SAEBenchInfo, rec: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A core-eval document from one SAE's reconstruction row (``report["reconstruction"]["saes"][i]``:
    ``explained_variance``, ``mse``, ``l0``, ``n_samples``, ``core`` and, when computed, ``lm_loss``)."""
    core, lm = dict(rec.get("core") or {}), dict(rec.get("lm_loss") or {})
    src = {**core, "explained_variance": rec.get("explained_variance"), "mse": rec.get("mse"), "l0": rec.get("l0"),
           "kl_div_score": lm.get("kl_div_score"), "kl_div_with_ablation": lm.get("kl_div_with_ablation"),
           "kl_div_with_sae": lm.get("kl_div_with_sae"), "ce_loss_score": lm.get("ce_loss_score"),
           "ce_loss_with_ablation": lm.get("ce_zero_ablation"), "ce_loss_with_sae": lm.get("ce_spliced"),
           "ce_loss_without_sae": lm.get("ce_clean"), "total_tokens_eval_reconstruction": lm.get("n_tokens"),
           "total_tokens_eval_sparsity_variance": rec.get("n_samples")}
    metrics = {cat: {k: _number(src.get(k), t) for k, t in ms.items()} for cat, ms in CORE_METRICS.items()}
    missing = [k for ms in CORE_METRICS.values() for k in ms if _number(src.get(k), float) == -1 and src.get(k) != -1]
    cfg = {k: None for k in CORE_CONFIG_KEYS}
    cfg.update({k: v for k, v in (config or {}).items() if k in CORE_CONFIG_KEYS})
    unstructured = {"not_computed": missing, "measured_on": rec.get("unit"), "split": rec.get("split"),
                    "alive": rec.get("alive"), "d_sae": rec.get("d_sae"),
                    "mse_definition": "mean over samples and dimensions of (x - x_hat)^2 (per element)"}
    return _envelope("core", info, cfg, metrics, [], unstructured)


def sparse_probing_output(info: SAEBenchInfo, results: Mapping[str, Any]) -> dict[str, Any]:
    """A sparse-probing document. ``results``: ``{"llm": {metric: value}, "sae": {metric: value}, "details":
    [{"dataset_name": ..., metric: value, ...}], "config": {SparseProbingEvalConfig field: value},
    "unstructured": {...}}``; metric names as in :data:`SPARSE_PROBING_METRICS` (an unknown name is an error)."""
    metrics: dict[str, dict[str, Any]] = {}
    for cat, names in SPARSE_PROBING_METRICS.items():
        given = dict(results.get(cat) or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"sparse_probing.{cat}: unknown metrics {unknown}; SAEBench's are {list(names)}")
        metrics[cat] = {k: (None if given.get(k) is None and not req else _number(given.get(k), float))
                        for k, req in names.items()}
    allowed = {"dataset_name", *SPARSE_PROBING_METRICS["llm"], *SPARSE_PROBING_METRICS["sae"]}
    details = []
    for d in results.get("details") or []:
        bad = sorted(set(d) - allowed)
        if bad or "dataset_name" not in d:
            raise ValueError(f"sparse_probing detail needs dataset_name and metrics from {sorted(allowed)}; got {bad}")
        details.append({k: d.get(k) if k == "dataset_name" else
                        (None if d.get(k) is None and k != "llm_test_accuracy" else _number(d.get(k), float))
                        for k in ["dataset_name", *SPARSE_PROBING_METRICS["llm"], *SPARSE_PROBING_METRICS["sae"]]})
    cfg = {k: None for k in SPARSE_PROBING_CONFIG_KEYS}
    cfg.update({k: v for k, v in (results.get("config") or {}).items() if k in SPARSE_PROBING_CONFIG_KEYS})
    return _envelope("sparse_probing", info, cfg, metrics, details, dict(results.get("unstructured") or {}))


def validate_saebench(doc: Mapping[str, Any]) -> None:
    """Check a document against the schema implemented here (top-level keys and types, every required metric of
    its eval type, metric types, flat categories); a ValueError lists every problem."""
    errs = [f"missing top-level key {k!r}" for k in TOP_LEVEL_KEYS if k not in doc]
    errs += [f"{k} should be {'/'.join(t.__name__ for t in ts)}, got {type(doc[k]).__name__}"
             for k, ts in TOP_LEVEL_KEYS.items() if k in doc and not isinstance(doc[k], ts)]
    errs += [f"unexpected top-level key {k!r}" for k in doc if k not in TOP_LEVEL_KEYS]
    kind, m = doc.get("eval_type_id"), doc.get("eval_result_metrics") or {}
    if kind == "core":
        spec = {c: {k: (t, True) for k, t in ms.items()} for c, ms in CORE_METRICS.items()}
        keys = CORE_CONFIG_KEYS
    elif kind == "sparse_probing":
        spec = {c: {k: (float, req) for k, req in ms.items()} for c, ms in SPARSE_PROBING_METRICS.items()}
        keys = SPARSE_PROBING_CONFIG_KEYS
        for i, d in enumerate(doc.get("eval_result_details") or []):
            if not isinstance(d.get("dataset_name"), str) or not isinstance(d.get("llm_test_accuracy"), (int, float)):
                errs.append(f"eval_result_details[{i}] needs dataset_name (str) and llm_test_accuracy (number)")
    else:
        raise ValueError(f"unknown eval_type_id {kind!r}; this module writes core and sparse_probing")
    errs += [f"eval_config misses {k!r}" for k in keys if k not in (doc.get("eval_config") or {})]
    for cat, ms in spec.items():
        got = m.get(cat)
        if not isinstance(got, dict):
            errs.append(f"eval_result_metrics misses category {cat!r}")
            continue
        errs += [f"{cat}.{k}: unknown metric" for k in got if k not in ms]
        for k, (t, req) in ms.items():
            v = got.get(k)
            if v is None:
                if req:
                    errs.append(f"{cat}.{k}: required metric missing")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or (t is int and not isinstance(v, int)):
                errs.append(f"{cat}.{k}: expected {t.__name__}, got {type(v).__name__}")
    if errs:
        raise ValueError("not a valid SAEBench result: " + "; ".join(errs))


def write_saebench_results(out_dir: str | Path, sae_row_info: SAEBenchInfo, core_metrics: Mapping[str, Any] | None,
                           sparse_probing: Mapping[str, Any] | None = None, *,
                           core_config: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<out_dir>/saebench/core/<id>_eval_results.json`` (from a reconstruction row, when given) and
    ``<out_dir>/saebench/sparse_probing/<id>_eval_results.json`` (when ``sparse_probing`` results are given; see
    :func:`sparse_probing_output`). Each document is validated before it is written. Returns eval type -> path."""
    from gemma4_saelens_ext.io import atomic_write, to_jsonable

    docs = {}
    if core_metrics is not None:
        docs["core"] = core_output(sae_row_info, core_metrics, core_config)
    if sparse_probing is not None:
        docs["sparse_probing"] = sparse_probing_output(sae_row_info, sparse_probing)
    paths = {}
    for kind, doc in docs.items():
        doc = to_jsonable(doc)
        validate_saebench(doc)
        path = Path(out_dir) / "saebench" / kind / f"{sae_row_info.unique_id}_eval_results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(doc, indent=2))
        paths[kind] = path
    return paths


def write_saebench_files(out: Path, report: Mapping[str, Any], saes: list[Any]) -> dict[str, dict[str, Any]]:
    """The suite's SAEBench files: per SAE the core results (when the reconstruction family ran) and the sparse-probing
    results (when the detection card ran: its ``saebench_sparse_probing[name]``). Returns SAE name -> {eval type:
    path or None}."""
    rec = {r["name"]: r for r in (report.get("reconstruction") or {}).get("saes", [])}
    probing = (report.get("detection") or {}).get("saebench_sparse_probing") or {}
    settings, ds = report["settings"], report.get("dataset", {})
    m, rc = settings["model"], settings["reconstruction"]
    config = {"model_name": m["source"], "llm_dtype": m["precision"], "batch_size_prompts": m["batch_size"],
              "dataset": ds.get("path") or f"scripted:{','.join(ds.get('families') or [])}",
              "context_size": m["max_length"], "compute_kl": bool(rc["lm_loss"]),
              "compute_ce_loss": bool(rc["lm_loss"]),
              "compute_l2_norms": True, "compute_sparsity_metrics": True, "compute_variance_metrics": True,
              "compute_featurewise_density_statistics": False, "compute_featurewise_weight_based_metrics": False,
              "exclude_special_tokens_from_reconstruction": True, "verbose": False,
              "n_eval_sparsity_variance_batches": 1}
    eval_id, out_paths = str(uuid.uuid4()), {}
    for s in saes:
        src = s.entry
        info = SAEBenchInfo(s.name, s.sae.cfg.to_dict(), src.get("release"), src.get("sae_id"),
                            report.get("versions", {}).get("sae-lens"), eval_id,
                            {"suite": report.get("suite"), "sae_name": s.name, "primary": s.primary,
                             "encode": s.unit, "source": {k: src[k] for k in ("path", "release", "sae_id", "train")
                                                          if src.get(k) is not None}})
        r = rec.get(s.name)
        cfg = {**config, "n_eval_reconstruction_batches": -(-int(r.get("n_texts") or 0) // 4)} if r else config
        sp = probing.get(s.name)
        if sp is not None:
            sp = {**sp, "config": {"model_name": m["source"], "llm_dtype": m["precision"],
                                   "llm_batch_size": m["batch_size"], "context_length": m["max_length"],
                                   **(sp.get("config") or {})}}
        paths = write_saebench_results(out, info, r, sp, core_config=cfg)
        out_paths[s.name] = {k: str(paths[k]) if k in paths else None for k in ("core", "sparse_probing")}
    return out_paths
