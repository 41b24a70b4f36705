"""Read and check an eval suite: :func:`load_suite` parses a YAML file (or a mapping) into the schema of :mod:`.spec`
and validates it without loading a model or data (keys, types, ranges, names, precisions, the SAE source and its
training config), so a mistake fails in seconds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.evals.saes import (  # noqa: F401  (re-exported: the suite's SAE schema)
    SOURCE_KEYS, SUITE_OWNED_TRAINING_KEYS, check_saes, normalize_saes, primary_entry, training_overrides,
)
from gemma4_saelens_ext.evals.spec import SuiteConfig
from gemma4_saelens_ext.options import config_from_dict

logger = logging.getLogger(__name__)

__all__ = ["load_suite", "SUITE_OWNED_TRAINING_KEYS", "training_overrides", "SUITE_RANGES", "check_suite_values"]


def _with_primary(data: dict[str, Any], sae: dict[str, Any]) -> None:
    """An ``sae=`` override on a suite that lists ``saes``: it replaces the primary entry's source (its name,
    ``encode`` and ``primary`` stay)."""
    entries = [dict(e) if isinstance(e, dict) else e for e in data["saes"]]
    prim = primary_entry([e for e in entries if isinstance(e, dict)] or [{}])
    keep = {k: v for k, v in prim.items() if k in ("name", "encode", "primary")}
    entries[entries.index(prim)] = {**keep, **sae}
    data["saes"] = entries
    if any(k in sae for k in SOURCE_KEYS):
        data.pop("sae", None)


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
    """Parse and validate a suite (no model or data loads). ``overrides`` replace top-level keys; ``sae=`` replaces
    the primary SAE (the rest of a ``saes`` list stays). The SAEs end up in ``cfg.saes`` (normalized; the older
    ``sae:`` + ``other_saes:`` fold in, see :mod:`.saes`)."""
    from gemma4_saelens_ext.errors import UserError, expect_mapping

    if isinstance(path_or_dict, dict):
        data, src = dict(path_or_dict), None
    else:
        from gemma4_saelens_ext.paths import read_yaml_mapping, resolve_project_file

        src = str(resolve_project_file(path_or_dict, "evals"))
        data = read_yaml_mapping(src, f"suite {src}")
    data = expect_mapping(f"suite {src or '<dict>'}", data)
    sae_override = overrides.pop("sae", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if sae_override is not None:
        if data.get("saes"):
            _with_primary(data, sae_override)
        else:
            data["sae"] = sae_override
    if "name" not in data:
        raise UserError(f"suite {src or '<dict>'}: missing required key 'name'",
                        "see docs/evals.md for the suite's keys.")
    data["saes"] = normalize_saes(data, f"suite {src}" if src else "suite")  # the older sae/other_saes fold in
    data.pop("sae", None)
    data.pop("other_saes", None)
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
    check_saes(cfg)
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
