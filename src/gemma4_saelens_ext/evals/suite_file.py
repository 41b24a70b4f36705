"""Read and check an eval suite: :func:`load_suite` parses a YAML file (or a mapping) into the schema of :mod:`.spec`
and validates it without loading a model or data (keys, types, ranges, names, precisions, the SAE source and its
training config), so a mistake fails in seconds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.evals.spec import SuiteConfig
from gemma4_saelens_ext.options import config_from_dict

logger = logging.getLogger(__name__)

__all__ = ["load_suite", "SAE_KEYS", "SUITE_OWNED_TRAINING_KEYS", "training_overrides", "SUITE_RANGES",
           "check_suite_values"]


#: the keys of ``suite.sae``
SAE_KEYS = ("path", "release", "sae_id", "train", "overrides")
#: training settings the suite sets itself for an in-suite SAE (from its model section, train split and output)
SUITE_OWNED_TRAINING_KEYS = {
    "model.source": "model.source", "model.precision": "model.precision", "model.layer": "model.layer",
    "runner.dataset_path": "dataset.train_split", "runner.output_path": "output_dir",
    "runner.checkpoint_path": "output_dir",
}


def training_overrides(cfg: SuiteConfig, dataset_dir: str, out: str) -> dict[str, Any]:
    """The dotted overrides an in-suite SAE is trained with: the suite's model, precision and layer (the training
    config's layer when the suite names none), seed, training rows and output folders, then ``sae.overrides``."""
    ov: dict[str, Any] = {"model.source": cfg.model.source, "model.precision": cfg.model.precision,
                          "runner.dataset_path": dataset_dir, "runner.output_path": str(Path(out) / "sae"),
                          "runner.checkpoint_path": str(Path(out) / "sae_checkpoints"), "runner.seed": cfg.seed}
    if cfg.model.layer is not None:
        ov["model.layer"] = cfg.model.layer
    ov.update(cfg.sae.get("overrides") or {})
    return ov


def _check_sae(cfg: SuiteConfig) -> None:
    sae = cfg.sae
    if isinstance(sae, dict) and "fit" in sae:
        raise ValueError("suite.sae.fit was removed; use `sae.train: demo_gemma3_270m_nf4` (trained with "
                         "gemma4_saelens_ext.training.train; settings under `sae.overrides`, e.g. "
                         "{runner.training_tokens: 20000, sae.d_sae: 640}).")
    if not isinstance(sae, dict) or not ({"path", "release", "train"} & set(sae)):
        raise ValueError("suite.sae needs `path`, `release` (+ `sae_id`) or `train` (a training config name or path).")
    unknown = sorted(set(sae) - set(SAE_KEYS))
    if unknown:
        raise ValueError(f"suite.sae: unknown keys {unknown}; valid keys: {list(SAE_KEYS)}")
    if "train" not in sae:
        if "overrides" in sae:
            raise ValueError("suite.sae.overrides applies to `sae.train` only.")
        return
    from gemma4_saelens_ext.training.config import load_training_config

    ov = sae.get("overrides") or {}
    if not isinstance(ov, dict):
        raise ValueError("suite.sae.overrides must be a mapping of dotted keys, e.g. {runner.training_tokens: 20000}")
    owned = sorted(set(ov) & set(SUITE_OWNED_TRAINING_KEYS))
    if owned:
        raise ValueError(f"suite.sae.overrides sets {owned}, which the suite sets itself; set "
                         f"{sorted({SUITE_OWNED_TRAINING_KEYS[k] for k in owned})} in the suite instead.")
    load_training_config(sae["train"], training_overrides(cfg, "<train split>", "<out>"))  # names, sections, sizes


_POS = dict(low=1, integer=True)
#: the ranges of the suite's numbers (key -> check_range kwargs); a value outside makes a result wrong or meaningless
SUITE_RANGES: dict[str, dict[str, Any]] = {
    "model.batch_size": _POS, "model.max_length": _POS, "dataset.max_rows_per_split": _POS,
    "stats.n_permutations": _POS, "stats.n_bootstrap": _POS, "stats.probe_permutations": _POS,
    "stats.min_class_size": _POS, "stats.threshold": dict(low=0, low_open=True), "stats.top_n": _POS,
    "stats.alpha": dict(low=0, high=1, low_open=True, high_open=True), "reconstruction.max_texts": _POS,
    "control.min_groups": _POS, "probes.n_splits": dict(low=2, integer=True), "probes.lexical_chars": _POS,
    "steering.top_n": _POS, "steering.max_new_tokens": _POS, "steering.temperature": dict(low=0),
    "steering.n_prompts": _POS, "stability.threshold": dict(low=0, low_open=True), "stability.top_n": _POS,
    "stability.samples_per_prompt": _POS, "stability.max_new_tokens": _POS, "top_latents.n_latents": _POS,
    "top_latents.n_examples": _POS, "portability.max_ev_drop": dict(low=0, high=1), "portability.max_texts": _POS,
    "portability.max_alive_shift": dict(low=0),
}  # fmt: skip


def check_suite_values(cfg: SuiteConfig) -> None:
    """Every number of the suite in its range (:data:`SUITE_RANGES`) and the lists that must not be empty; the error
    names the key, e.g. ``stats.alpha=5 is out of range: it must be in (0, 1)``."""
    from gemma4_saelens_ext.errors import UserError, check_range

    for key, kw in SUITE_RANGES.items():
        section, name = key.split(".")
        check_range(key, getattr(getattr(cfg, section), name), **kw)
    for steer_alpha in cfg.steering.alphas:
        check_range("steering.alphas", steer_alpha)
    if cfg.steering.enabled and not cfg.steering.alphas:
        raise UserError("steering.alphas is empty.", "give the steering strengths, e.g. [-1, 0, 1].")
    if cfg.stability.enabled and not cfg.stability.seeds:
        raise UserError("stability.seeds is empty.", "give one seed per resample, e.g. [101, 107, 113].")
    if cfg.control.enabled and len(cfg.control.contrast) != 2:
        raise UserError(f"control.contrast={cfg.control.contrast!r} must name two variants.",
                        "give [variant, reference], e.g. [V3, neutral].")


def load_suite(path_or_dict: str | Path | dict[str, Any], **overrides: Any) -> SuiteConfig:
    """Parse and validate a suite (no model or data loads). ``overrides`` replace top-level keys."""
    from gemma4_saelens_ext.errors import UserError, expect_mapping

    if isinstance(path_or_dict, dict):
        data, src = dict(path_or_dict), None
    else:
        from gemma4_saelens_ext.paths import read_yaml_mapping, resolve_project_file

        src = str(resolve_project_file(path_or_dict, "evals"))
        data = read_yaml_mapping(src, f"suite {src}")
    data = expect_mapping(f"suite {src or '<dict>'}", data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    for req in ("name", "sae"):
        if req not in data:
            raise UserError(f"suite {src or '<dict>'}: missing required key {req!r}",
                            "see docs/evals.md for the suite's keys.")
    cfg: SuiteConfig = config_from_dict(SuiteConfig, data, "suite")
    check_suite_values(cfg)
    cfg.source_file = src
    if cfg.pooling not in ("last", "mean", "max"):
        raise ValueError(f"suite.pooling must be last, mean or max, got {cfg.pooling!r}")
    from gemma4_saelens_ext.evals.steering import check_scale_kind  # imports torch: after the file's checks
    from gemma4_saelens_ext.models.precision import get_precision

    get_precision(cfg.model.precision)
    check_scale_kind(cfg.steering.scale)
    for p in cfg.portability.precisions:
        get_precision(p)
    if cfg.dataset.path is None and not cfg.dataset.scripted_families:
        raise ValueError("suite.dataset needs `path` (a built dataset) or `scripted_families` (demo).")
    _check_sae(cfg)
    if cfg.probes.n_splits < 2:
        raise ValueError("probes.n_splits must be >= 2")
    if cfg.steering.weighting not in ("d", "sign", "uniform"):
        raise ValueError(f"steering.weighting must be d, sign or uniform, got {cfg.steering.weighting!r}")
    if cfg.stability.mode not in ("auto", "regenerate", "bootstrap"):
        raise ValueError(f"stability.mode must be auto, regenerate or bootstrap, got {cfg.stability.mode!r}")
    if cfg.encode not in ("auto", "tokens", "pooled"):
        raise ValueError(f"suite.encode must be auto, tokens or pooled, got {cfg.encode!r}")
    if cfg.steering.enabled and cfg.steering.n_random_directions < 1:
        raise ValueError("steering.n_random_directions must be >= 1 (the random-direction control)")
    if cfg.stats.n_permutations < 1000:
        logger.warning("stats.n_permutations=%d < 1000: p-values are coarse.", cfg.stats.n_permutations)
    return cfg
