"""The eval suite's schema: one dataclass per YAML section, a docstring under every field, and :func:`load_suite`,
which parses and validates a suite without loading a model or data (YAML keys, names, precisions, the SAE source and
its training config), so a mistake fails in seconds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.options import config_from_dict

logger = logging.getLogger(__name__)

__all__ = [
    "SuiteConfig", "ModelSpec", "DatasetSpec", "StatsSpec", "ReconstructionSpec", "DValuesSpec", "ProbesSpec",
    "SteeringSpec", "StabilitySpec", "TopLatentsSpec", "PortabilitySpec", "ControlSpec", "load_suite",
    "SAE_KEYS", "SUITE_OWNED_TRAINING_KEYS", "training_overrides", "SUITE_RANGES", "check_suite_values",
]


@dataclass
class ModelSpec:
    """The model the activations come from (:func:`gemma4_saelens_ext.models.load_model`)."""

    source: str = "gemma-3-270m"
    """Embedded model name, local folder or Hub id."""
    precision: str = "nf4"
    """Weight precision: nf4, nf4-bf16, int8, fp16, bf16 or fp32."""
    layer: int | str | None = None
    """Decoder layer index or hook name (``blocks.L.hook_resid_post``); default: the SAE's hook."""
    batch_size: int = 8
    """Texts per forward pass."""
    max_length: int = 256
    """Tokens per text; longer texts are truncated."""


@dataclass
class DatasetSpec:
    """The labelled behavior rows the suite evaluates on."""

    path: str | None = None
    """Dataset folder from ``gemma4-sae build-dataset``, a parquet/JSONL file with a ``split`` column, or a Hub id."""
    train_split: str = "train"
    """Split the latents are chosen on (and an in-suite SAE is trained on)."""
    eval_split: str = "eval"
    """Split the chosen latents are measured on (other prompts)."""
    input_variation_split: str | None = "input_variation"
    """Split with the same questions under several templates (the positive control); None: no control rows."""
    scripted_families: list[str] | None = None
    """Demo only: scripted completions from these scenario families (no sampling) instead of ``path``."""
    max_rows_per_split: int | None = None
    """Row limit per split, met by a seeded sample of whole prompt groups; None: every row."""


@dataclass
class StatsSpec:
    """Permutation nulls, bootstraps and the primary test (see docs/evals.md)."""

    n_permutations: int = 1000
    """Group flips for the d-value nulls (enumerated exactly when 2^groups <= this)."""
    n_bootstrap: int = 1000
    """Group-bootstrap resamples for confidence intervals."""
    probe_permutations: int = 100
    """Group flips for the probe null (each one refits the grouped CV)."""
    min_class_size: int = 10
    """Rows per class below which a d-value or probe result carries a small-sample warning."""
    threshold: float = 1.0
    """|d| above which a latent is counted (the count has its own group-flip null)."""
    top_n: int = 10
    """Latents chosen on train for the primary (replication) test."""
    alpha: float = 0.05
    """Significance level (the primary test, and the Holm-adjusted others)."""
    row_level_diagnostic: bool = True
    """Also report the row-level null on the eval split, labelled as a diagnostic (it assumes independent rows)."""
    cluster: str | None = None
    """A row column (e.g. family, scenario, source_file) that is the unit of inference, joined with the prompt
    groups: every null, bootstrap and fold then works on whole clusters. None: detected (the first of family,
    scenario, source_file, source within which the labels are constant; see docs/evals.md)."""
    detect_cluster: bool = True
    """With ``cluster`` unset, look for a coarser column within which the labels are constant and use it."""


@dataclass
class ReconstructionSpec:
    """Explained variance, L0, alive latents, MSE, and the LM loss with the SAE spliced in."""

    enabled: bool = True
    """Run this family."""
    token_level: bool = True
    """Measure on every completion token (BOS excluded); False: on the pooled vectors."""
    lm_loss: bool = True
    """Also the LM loss with the SAE's reconstruction spliced in (needs every layer loaded)."""
    max_texts: int = 64
    """Texts measured, a seeded sample of whole prompt groups."""


@dataclass
class DValuesSpec:
    """Cohen's d per latent (always run: its latents feed steering, stability and the top-latent table)."""

    enabled: bool = True
    """Kept for symmetry; d-values run regardless."""


@dataclass
class ControlSpec:
    """The positive control: a contrast known to be real, analysed with the same grouped machinery."""

    enabled: bool = True
    """Run the positive control."""
    contrast: list[str] = field(default_factory=lambda: ["V3", "neutral"])
    """Input-variation contrast (variant, reference variant): the same questions under two templates."""
    min_groups: int = 6
    """Fewest question groups for the control to be able to reach p < 0.05 (2/2^G <= 0.05 needs G >= 6)."""
    scripted_fallback: bool = True
    """With fewer groups in the dataset, use scripted completions of the built-in sandbagging questions (labelled)."""


@dataclass
class ProbesSpec:
    """Grouped cross-validated logistic probes on latents, raw activations, a lexical baseline and a control SAE."""

    enabled: bool = True
    """Run this family."""
    n_splits: int = 5
    """Folds of the grouped CV (needs at least this many prompt groups)."""
    lexical_chars: int = 30
    """Leading characters of the completion the lexical (bag-of-words) baseline sees."""
    raw: bool = True
    """Also probe the raw (pooled) activations."""
    control_sae: bool = True
    """Also probe a random SAE of the same shape (does the SAE's training add anything?)."""


@dataclass
class SteeringSpec:
    """Add an SAE-decoded direction to the residual stream at several strengths and judge the completions."""

    enabled: bool = True
    """Run this family (needs every layer loaded)."""
    alphas: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    """Steering strengths, in units of ``scale``."""
    top_n: int = 5
    """Latents (chosen on train) whose decoder rows make the direction."""
    weighting: str = "d"
    """How the decoder rows are weighted: d, sign or uniform."""
    max_new_tokens: int = 12
    """Tokens generated per steered prompt."""
    temperature: float = 1.0
    """Sampling temperature."""
    n_prompts: int = 32
    """Prompts steered, a seeded sample of whole groups."""
    judge: str = "keyword"
    """Judge of the steered completions (``keyword`` or ``llm:NAME``)."""
    n_random_directions: int = 19
    """Control directions: this many random unit directions at the same scale; the SAE direction's rank among them
    is a test whose smallest p is 1/(1 + n): 19 or more lets it reach 0.05."""
    mean_difference: bool = True
    """Also sweep the raw mean-difference direction."""
    scale: str = "residual_norm"
    """``residual_norm``: alpha = 1 adds a vector as long as the mean residual; ``projection_std``: alpha = 1 adds one
    standard deviation of the residuals' projection on the direction (gentler where a few outlier dimensions dominate
    the residual norm, as in Gemma)."""


@dataclass
class StabilitySpec:
    """d_max under resampling: does the same latent come out on top?"""

    enabled: bool = True
    """Run this family."""
    seeds: list[int] = field(default_factory=lambda: [101, 107, 113])
    """One resample per seed."""
    threshold: float = 0.3
    """Largest |d_max(resample) - d_max(reference)| for a resample to count as stable."""
    top_n: int = 5
    """Top latents listed per resample and compared with the reference's (overlap)."""
    mode: str = "auto"
    """regenerate (new completions for the train prompts), bootstrap (whole groups resampled) or auto (regenerate
    when the whole model is loaded)."""
    samples_per_prompt: int | None = None
    """Completions per prompt when regenerating; None: the train split's rows per prompt."""
    max_new_tokens: int = 16
    """Tokens generated per completion when regenerating."""


@dataclass
class TopLatentsSpec:
    """The texts that activate the chosen latents most."""

    enabled: bool = True
    """Run this family."""
    n_latents: int = 5
    """Latents shown."""
    n_examples: int = 2
    """Top-activating texts shown per latent."""


@dataclass
class PortabilitySpec:
    """The same texts at other precisions through one SAE, with the retrain rule."""

    enabled: bool = True
    """Run this family."""
    precisions: list[str] = field(default_factory=lambda: ["nf4", "int8", "fp16", "bf16", "fp32"])
    """Precisions the model is loaded at in turn."""
    training_precision: str | None = None
    """The precision the SAE was trained at; None: the suite's model precision."""
    max_ev_drop: float = 0.20
    """Largest explained-variance drop before the report says to retrain at that precision."""
    max_alive_shift: float = 0.50
    """Largest relative change in alive latents before the report says to retrain."""
    max_texts: int = 64
    """Texts measured per precision, a seeded sample of whole groups."""


@dataclass
class SuiteConfig:
    """One eval suite: which SAE, which model and data, and the settings of every family."""

    name: str
    """Suite name, written into the report."""
    sae: dict[str, Any]
    """Where the SAE comes from: ``{path: DIR}`` (saved by SAELens), ``{release: R, sae_id: ID}``
    (``SAE.from_pretrained``), or ``{train: CONFIG, overrides: {KEY: VALUE}}``: trained first with
    :func:`gemma4_saelens_ext.training.train` (a shipped training config name or a YAML path; dotted overrides such
    as ``runner.training_tokens``) on the suite's model, precision, layer and train split, into ``<output>/sae``."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """The model the activations come from."""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    """The labelled rows."""
    output_dir: str = "runs/evals"
    """Report folder."""
    pooling: str = "mean"
    """How a completion's token activations become one vector: last, mean or max."""
    encode: str = "auto"
    """What the SAE is applied to: tokens (latents per token, pooled over the completion), pooled (the pooled
    residual) or auto (from the SAE's metadata; see :func:`gemma4_saelens_ext.evals.saeio.encode_unit`)."""
    seed: int = 0
    """Seed of every sample, null and resample (and of an in-suite SAE's training)."""
    other_saes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """More SAEs for the probe comparison, name -> ``{path: ...}`` or ``{release: ..., sae_id: ...}``."""
    stats: StatsSpec = field(default_factory=StatsSpec)
    """Nulls, bootstraps and the primary test."""
    reconstruction: ReconstructionSpec = field(default_factory=ReconstructionSpec)
    """Reconstruction family."""
    dvalues: DValuesSpec = field(default_factory=DValuesSpec)
    """d-value family."""
    control: ControlSpec = field(default_factory=ControlSpec)
    """Positive control."""
    probes: ProbesSpec = field(default_factory=ProbesSpec)
    """Probe family."""
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    """Steering family."""
    stability: StabilitySpec = field(default_factory=StabilitySpec)
    """Stability family."""
    top_latents: TopLatentsSpec = field(default_factory=TopLatentsSpec)
    """Top-latent table."""
    portability: PortabilitySpec = field(default_factory=PortabilitySpec)
    """Precision portability family."""
    source_file: str | None = None
    """The YAML file the suite was read from (set by :func:`load_suite`)."""


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
