"""The eval suite's schema: one dataclass per YAML section, a docstring under every field (reading and checking a
suite file: :mod:`.suite_file`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "SuiteConfig", "ModelConfig", "DatasetConfig", "StatsConfig", "ReconstructionConfig", "DValuesConfig",
    "ProbesConfig", "SteeringConfig", "StabilityConfig", "TopLatentsConfig", "PortabilityConfig", "ControlConfig",
    "DetectionConfig",
]


@dataclass
class ModelConfig:
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
class DatasetConfig:
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
class StatsConfig:
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
class ReconstructionConfig:
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
class DValuesConfig:
    """Cohen's d per latent (always run: its latents feed steering, stability and the top-latent table)."""

    enabled: bool = True
    """Kept for symmetry; d-values run regardless."""


@dataclass
class ControlConfig:
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
class ProbesConfig:
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
class DetectionConfig:
    """The detection card per dataset kind and the transfer matrix (docs/evals.md, "The detection card")."""

    enabled: bool = True
    """Run this family."""
    readers: list[str] = field(default_factory=lambda: ["dense", "sae_all", "sae_topk", "lexical"])
    """Readers trained on each kind's train groups: dense (standardised logistic regression on the pooled residual),
    dense_topk (on the k residual channels with the largest class mean difference), sae_all (on all of an SAE's
    latents), sae_topk (on its k latents with the largest class mean difference), lexical (bag of words on the
    completion's first ``probes.lexical_chars`` characters)."""
    k_values: list[int] = field(default_factory=lambda: [1, 2, 5])
    """k of the k-sparse readers (SAEBench's sparse probing uses 1, 2, 5)."""
    fpr: float = 0.01
    """False-positive rate on the control rows that sets the threshold for recall (needs >= 1/fpr control rows;
    with fewer, the card uses 1/n_control and says so)."""
    n_permutations: int = 1000
    """Label randomizations of each figure's grouped permutation test."""
    n_bootstrap: int = 1000
    """Group-bootstrap resamples of each figure's CI."""
    C: float = 1.0
    """Inverse L2 strength of every reader's logistic regression."""
    transfer: bool = True
    """Also test every reader on every other kind's eval split (the transfer matrix)."""

    def __post_init__(self) -> None:
        from gemma4_saelens_ext.evals.readers import READERS

        bad = [r for r in self.readers if r not in READERS]
        if bad:
            raise ValueError(f"detection.readers: unknown {bad}; valid: {list(READERS)}")
        if not 0 < self.fpr < 1:
            raise ValueError(f"detection.fpr must be in (0, 1), got {self.fpr}")
        if any(int(k) < 1 for k in self.k_values):
            raise ValueError(f"detection.k_values must be >= 1, got {self.k_values}")


@dataclass
class SteeringConfig:
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
class StabilityConfig:
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
class TopLatentsConfig:
    """The texts that activate the chosen latents most."""

    enabled: bool = True
    """Run this family."""
    n_latents: int = 5
    """Latents shown."""
    n_examples: int = 2
    """Top-activating texts shown per latent."""


@dataclass
class PortabilityConfig:
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
    saes: list[dict[str, Any]] = field(default_factory=list)
    """The SAEs, one row each in every table (:mod:`gemma4_saelens_ext.evals.saes`). Each entry: ``{path: DIR}``
    (saved by SAELens), ``{release: R, sae_id: ID}`` (``SAE.from_pretrained``: any SAELens release, or a Gemma 4
    behavior release through the plugin's loader), or ``{train: CONFIG, overrides: {KEY: VALUE}}`` (trained first
    with :func:`gemma4_saelens_ext.training.train`, a shipped training config name or a YAML path, on the suite's
    model, precision, layer and train split, into ``<output>/sae``); optional ``name`` (the row label), ``encode``
    (tokens / pooled, else the suite's ``encode``) and ``primary: true`` (default: the first entry)."""
    sae: dict[str, Any] | None = None
    """The older single-SAE form (one entry, as in ``saes``); becomes the primary entry of ``saes``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model the activations come from."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """The labelled rows."""
    output_dir: str = "runs/evals"
    """Report folder."""
    pooling: str = "mean"
    """How a completion's token activations become one vector: last, mean or max."""
    encode: str = "auto"
    """What each SAE is applied to (an entry's own ``encode`` wins): tokens (latents per token, pooled over the
    completion), pooled (the pooled residual) or auto (from the SAE's metadata; see
    :func:`gemma4_saelens_ext.evals.saeio.encode_unit`)."""
    seed: int = 0
    """Seed of every sample, null and resample (and of an in-suite SAE's training)."""
    other_saes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """With the older ``sae:``: more SAEs, name -> ``{path: ...}`` or ``{release: ..., sae_id: ...}`` (become
    entries of ``saes`` after the primary)."""
    stats: StatsConfig = field(default_factory=StatsConfig)
    """Nulls, bootstraps and the primary test."""
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    """Reconstruction family."""
    dvalues: DValuesConfig = field(default_factory=DValuesConfig)
    """d-value family."""
    control: ControlConfig = field(default_factory=ControlConfig)
    """Positive control."""
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    """Probe family."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    """Detection card and transfer matrix."""
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    """Steering family."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """Stability family."""
    top_latents: TopLatentsConfig = field(default_factory=TopLatentsConfig)
    """Top-latent table."""
    portability: PortabilityConfig = field(default_factory=PortabilityConfig)
    """Precision portability family."""
    source_file: str | None = None
    """The YAML file the suite was read from (set by :func:`load_suite`)."""
