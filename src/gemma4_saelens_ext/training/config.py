"""Training configs: the YAML file (``model`` / ``sae`` / ``runner``) read into a :class:`TrainingSpec`, and the
``gemma4-sae train`` options (:class:`TrainConfig`). No torch or SAELens at import (the CLI reads this).

A config file has three sections:

```yaml
model:            # how the activation source is built (gemma4_saelens_ext.models.load_model)
  source: gemma-3-270m          # embedded name, local folder or Hub id
  precision: nf4                # nf4 | nf4-bf16 | int8 | fp16 | bf16 | fp32 | nf4-fp32compute
  layer: 12                     # residual stream after decoder layer 12 -> blocks.12.hook_resid_post
  truncate: true                # load only layers 0..12 (activations are identical; less memory)
  cache_activations: auto       # auto: when the dataset has fewer tokens than training_tokens, extract it once
                                # into SAELens's cached-activations format and train from that (true / false)
sae:              # TopKTrainingSAEConfig fields
  d_in: 640
  d_sae: 2560
  k: 16
runner:           # any LanguageModelSAERunnerConfig field
  dataset_path: builtin:roleplay-corpus
  training_tokens: 200000
```

``model_name`` / ``hook_name`` / ``model_class_name`` in the runner config are derived from the ``model`` section
(hook names are TransformerLens-style), and the model is passed as ``override_model``: our
:class:`~gemma4_saelens_ext.source.Gemma4ActivationSource`. W&B is off unless ``runner.logger.log_to_wandb: true``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from simple_parsing.helpers import field as sfield

from gemma4_saelens_ext.options import layer_field, positional, precision_field
from gemma4_saelens_ext.models.layers import hook_name, parse_layer
from gemma4_saelens_ext.models.precision import PRECISIONS, get_precision

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainingSpec", "load_training_config", "BUILTIN_DATASETS", "resolve_dataset_path"]

_SECTIONS = ("model", "sae", "runner")


def _builtin_dir(name: str) -> Path:
    return Path(str(files("gemma4_saelens_ext").joinpath("data", name)))


#: local datasets shipped in the package (``datasets.load_dataset`` reads the folder offline)
BUILTIN_DATASETS = {"roleplay-corpus": "corpus"}


def resolve_dataset_path(path: str) -> str:
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise ValueError(f"Unknown builtin dataset {name!r}; builtin datasets: {', '.join(BUILTIN_DATASETS)}")
        return str(_builtin_dir(BUILTIN_DATASETS[name]))
    return path


@dataclass
class TrainingSpec:
    """A parsed training config: what to load, what SAE, and the SAELens runner settings (YAML: ``model.source``,
    ``model.precision``, ``model.layer``, ``model.truncate``, ``model.cache_activations``, ``sae.*``, ``runner.*``)."""

    source: str
    """model.source: embedded name, local folder or Hub id"""
    precision: str
    """model.precision: nf4, nf4-bf16, int8, fp16, bf16, fp32 or nf4-fp32compute"""
    layer: int
    """model.layer: the residual stream after this decoder layer (blocks.L.hook_resid_post)"""
    sae: dict[str, Any]
    """sae: TopKTrainingSAEConfig fields (d_in, d_sae, k, ...)"""
    runner: dict[str, Any]
    """runner: LanguageModelSAERunnerConfig fields (dataset_path, training_tokens, lr, ...)"""
    truncate: bool = True
    """model.truncate: load only layers 0..layer (activations are identical; less memory)"""
    cache_activations: str | bool = "auto"
    """model.cache_activations: auto (cache when the dataset has fewer tokens than the budget), true or false"""
    config_path: str | None = None
    """the YAML file read (None for a dict)"""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """the config as read, with overrides applied"""

    @property
    def hook_name(self) -> str:
        return hook_name(self.layer)

    def runner_config(self):
        """The ``LanguageModelSAERunnerConfig`` (with a ``TopKTrainingSAEConfig``) this spec describes."""
        from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

        runner = copy.deepcopy(self.runner)
        log_cfg = runner.pop("logger", {}) or {}
        log_cfg.setdefault("log_to_wandb", False)
        runner["dataset_path"] = resolve_dataset_path(runner.get("dataset_path", ""))
        runner.setdefault("is_dataset_tokenized", False)
        runner.setdefault("streaming", False)
        runner.setdefault("dataset_trust_remote_code", False)
        runner.setdefault("device", "cpu")
        if runner.get("seqpos_slice") is not None:
            runner["seqpos_slice"] = tuple(runner["seqpos_slice"])
        return LanguageModelSAERunnerConfig(
            sae=TopKTrainingSAEConfig(**self.sae),
            model_name=self.source,
            model_class_name="AutoModelForCausalLM",
            hook_name=self.hook_name,
            logger=LoggingConfig(**log_cfg),
            **runner,
        )


@dataclass
class TrainConfig:
    """``gemma4-sae train``: a training config (shipped name or YAML path) plus the overrides most runs change."""

    config: str = positional("CONFIG")
    """a shipped training config's name (demo_gemma3_270m_nf4, seed_gemma4_e2b_L25_nf4) or a YAML path"""
    out: Optional[str] = None
    """folder for the trained SAE (runner.output_path)"""
    dataset: Optional[str] = None
    """dataset folder, Hub id or builtin:roleplay-corpus (runner.dataset_path)"""
    model: Optional[str] = None
    """embedded name, local folder or Hub id (model.source)"""
    precision: Optional[str] = precision_field(None)
    """load precision of the model (model.precision)"""
    layer: Union[int, str, None] = layer_field()
    """residual stream after this decoder layer: an int or blocks.L.hook_resid_post (model.layer)"""
    seed: Optional[int] = None
    """SAELens seed (runner.seed)"""
    training_tokens: Optional[int] = None
    """token budget (runner.training_tokens)"""
    set: list[str] = sfield(default_factory=list, metavar="KEY=VALUE")
    """further overrides of the config, e.g. --set runner.lr=0.0003 sae.k=32"""

    def overrides(self) -> dict[str, Any]:
        """The dotted overrides these options stand for (``--set`` first, named options win)."""
        out: dict[str, Any] = {}
        for item in self.set:
            if "=" not in item:
                raise ValueError(f"--set expects KEY=VALUE (e.g. runner.training_tokens=20000), got {item!r}")
            k, v = item.split("=", 1)
            out[k] = yaml.safe_load(v)
        named = {
            "runner.output_path": self.out, "runner.dataset_path": self.dataset, "model.source": self.model,
            "model.precision": self.precision, "model.layer": self.layer, "runner.seed": self.seed,
            "runner.training_tokens": self.training_tokens,
        }  # fmt: skip
        out.update({k: v for k, v in named.items() if v is not None})
        return out


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] not in _SECTIONS:
        raise ValueError(f"Override {key!r} must start with one of {', '.join(_SECTIONS)} (e.g. runner.training_tokens).")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def load_training_config(config: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainingSpec:
    """Read a YAML config (or dict) and apply dotted overrides such as ``{"runner.training_tokens": 4096}``."""
    path = None
    if isinstance(config, dict):
        raw = copy.deepcopy(config)
    else:
        from gemma4_saelens_ext.paths import resolve_project_file

        path = resolve_project_file(config, "training_configs")
        raw = yaml.safe_load(path.read_text()) or {}
    for k, v in (overrides or {}).items():
        _set_dotted(raw, k, v)
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"Unknown config sections {sorted(unknown)}; expected {', '.join(_SECTIONS)}.")
    model = raw.get("model") or {}
    for req in ("source", "layer"):
        if req not in model:
            raise ValueError(f"Training config needs model.{req}.")
    precision = str(model.get("precision", "nf4"))
    get_precision(precision)  # fail early with the list of valid names
    sae = dict(raw.get("sae") or {})
    for req in ("d_in", "d_sae", "k"):
        if req not in sae:
            raise ValueError(f"Training config needs sae.{req} (TopK SAE: d_in, d_sae, k).")
    runner = raw.get("runner") or {}
    ctx, nbuf = int(runner.get("context_size", 128)), int(runner.get("n_batches_in_buffer", 20))
    bs = int(runner.get("train_batch_size_tokens", 4096))
    if nbuf * ctx < bs:
        raise ValueError(
            f"runner.n_batches_in_buffer * context_size = {nbuf * ctx} < train_batch_size_tokens = {bs}: SAELens's "
            f"mixing buffer cannot fill a batch; set n_batches_in_buffer >= {-(-bs // ctx)}."
        )
    try:
        layer = parse_layer(model["layer"])  # the form only; the range is checked against the model (build_source)
    except ValueError as e:
        raise ValueError(f"model.layer: {e}") from None
    return TrainingSpec(
        source=str(model["source"]),
        precision=precision,
        layer=layer,
        truncate=bool(model.get("truncate", True)),
        cache_activations=model.get("cache_activations", "auto"),
        sae=sae,
        runner=dict(raw.get("runner") or {}),
        config_path=str(path) if path else None,
        raw=raw,
    )


def valid_precisions() -> tuple[str, ...]:
    return PRECISIONS
