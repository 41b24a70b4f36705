"""Training configs: the YAML file (``model`` / ``sae`` / ``runner``) read into a :class:`TrainingConfig`, and the
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
:class:`~gemma4_saelens_ext.activations.source.Gemma4ActivationSource`. W&B is off unless ``runner.logger.log_to_wandb: true``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional, Union

from simple_parsing.helpers import field as sfield

from gemma4_saelens_ext.errors import UserError, check_device, check_keys, check_range, check_type, expect_mapping
from gemma4_saelens_ext.options import layer_field, positional, precision_field
from gemma4_saelens_ext.models.layers import hook_name, parse_layer
from gemma4_saelens_ext.models.precision import PRECISIONS, get_precision

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainingConfig", "load_training_config", "BUILTIN_DATASETS", "resolve_dataset_path"]

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
class TrainingConfig:
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

    def __post_init__(self) -> None:
        check_range("--training-tokens", self.training_tokens, low=1, integer=True)
        if self.out is not None:
            from gemma4_saelens_ext.io import check_out

            check_out(self.out)
        self.overrides()  # a malformed --set fails while the command line is read

    def overrides(self) -> dict[str, Any]:
        """The dotted overrides these options stand for (``--set`` first, named options win)."""
        import yaml

        out: dict[str, Any] = {}
        for item in self.set:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise UserError(f"--set expects KEY=VALUE (e.g. runner.training_tokens=20000), got {item!r}.")
            k, v = item.split("=", 1)
            try:
                out[k.strip()] = yaml.safe_load(v)
            except yaml.YAMLError:
                out[k.strip()] = v
        named = {
            "runner.output_path": self.out, "runner.dataset_path": self.dataset, "model.source": self.model,
            "model.precision": self.precision, "model.layer": self.layer, "runner.seed": self.seed,
            "runner.training_tokens": self.training_tokens,
        }  # fmt: skip
        out.update({k: v for k, v in named.items() if v is not None})
        return out


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] not in _SECTIONS or len(parts) < 2:
        raise UserError(f"Override {key!r} must start with one of {', '.join(_SECTIONS)} "
                        "(e.g. runner.training_tokens).",
                        "write the key as SECTION.FIELD, e.g. --set runner.training_tokens=20000.")
    cur = d
    for i, p in enumerate(parts[:-1]):
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise UserError(f"Override {key!r}: {'.'.join(parts[: i + 1])} is not a section.")
    cur[parts[-1]] = value


#: the ``model`` section's keys and their types
_MODEL_TYPES = {"source": str, "precision": str, "layer": Union[int, str], "truncate": bool,
                "cache_activations": Union[bool, str]}
#: runner fields the plugin sets itself, and where to set them instead
_DERIVED_RUNNER = {"model_name": "model.source", "hook_name": "model.layer", "model_class_name": "model.source",
                   "sae": "the sae section", "model_from_pretrained_kwargs": "model.precision"}
#: ranges of the settings that make a run useless (or a crash deep in torch) when wrong: key -> check_range kwargs
_RANGES = {
    "runner.training_tokens": dict(low=1, integer=True), "runner.train_batch_size_tokens": dict(low=1, integer=True),
    "runner.context_size": dict(low=1, integer=True), "runner.store_batch_size_prompts": dict(low=1, integer=True),
    "runner.n_batches_in_buffer": dict(low=1, integer=True), "runner.lr": dict(low=0, low_open=True),
    "sae.d_in": dict(low=1, integer=True), "sae.d_sae": dict(low=1, integer=True),
}  # fmt: skip


def _field_types(cls: type) -> dict[str, Any]:
    import dataclasses
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation this Python cannot resolve: check the names only
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def check_sections(raw: dict[str, Any], where: str) -> None:
    """Every key and value type of the ``model``, ``sae`` and ``runner`` sections (the SAELens fields are read from
    ``TopKTrainingSAEConfig`` / ``LanguageModelSAERunnerConfig`` / ``LoggingConfig``), then the ranges that would
    otherwise give a useless SAE or a late crash: all before any model loads."""
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

    check_keys(where, raw, _SECTIONS)
    model, sae, runner = (expect_mapping(f"{where}: {sec}", raw.get(sec), example=f"{sec}.FIELD: VALUE")
                          for sec in _SECTIONS)
    runner_types = {k: v for k, v in _field_types(LanguageModelSAERunnerConfig).items() if k not in _DERIVED_RUNNER}
    derived = sorted(set(runner) & set(_DERIVED_RUNNER))
    if derived:
        raise UserError(f"{where}: runner.{derived[0]} is set by the plugin from {_DERIVED_RUNNER[derived[0]]}.",
                        f"set {_DERIVED_RUNNER[derived[0]]} instead and remove runner.{derived[0]}.")
    for sec, values, types in (("model", model, _MODEL_TYPES), ("sae", sae, _field_types(TopKTrainingSAEConfig)),
                               ("runner", runner, runner_types)):
        check_keys(where, values, types, prefix=f"{sec}.")
        for k, v in values.items():
            if not (sec == "runner" and k == "logger"):
                check_type(f"{sec}.{k}", v, types[k])
    log_cfg = expect_mapping(f"{where}: runner.logger", runner.get("logger"))
    log_types = _field_types(LoggingConfig)
    check_keys(where, log_cfg, log_types, prefix="runner.logger.")
    for k, v in log_cfg.items():
        check_type(f"runner.logger.{k}", v, log_types[k])
    for key, kw in _RANGES.items():
        sec, name = key.split(".")
        check_range(key, {"sae": sae, "runner": runner}[sec].get(name), **kw)
    if "d_sae" in sae:
        check_range("sae.k", sae.get("k"), low=1, high=sae["d_sae"], integer=True,
                    fix=f"set sae.k between 1 and sae.d_sae={sae['d_sae']} (the latents active per token).")
    if str(model.get("cache_activations", "auto")).lower() not in ("auto", "true", "false", "on", "off"):
        raise UserError(f"model.cache_activations={model['cache_activations']!r} must be auto, true or false.")
    tokens, bs = runner.get("training_tokens"), runner.get("train_batch_size_tokens", 4096)
    if tokens is not None and tokens < bs:
        raise UserError(f"runner.training_tokens={tokens} is less than one batch "
                        f"(runner.train_batch_size_tokens={bs}): the SAE would be saved untrained.", f"set runner.training_tokens >= {bs}, or lower the batch.")
    check_device(runner.get("device", "cpu"), "runner.device")


def load_training_config(
    config: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None
) -> TrainingConfig:
    """Read a YAML config (or dict) and apply dotted overrides such as ``{"runner.training_tokens": 4096}``. Every
    section, key, type and range is checked here (:func:`check_sections`), before anything loads."""
    path = None
    if isinstance(config, dict):
        raw = copy.deepcopy(config)
    else:
        from gemma4_saelens_ext.paths import read_yaml_mapping, resolve_project_file

        path = resolve_project_file(config, "training_configs")
        raw = read_yaml_mapping(path, f"training config {path}")
    where = f"training config {path or '(a dict)'}"
    for k, v in (overrides or {}).items():
        _set_dotted(raw, k, v)
    check_keys(where, raw, _SECTIONS)
    model = expect_mapping(f"{where}: model", raw.get("model"), example="model.FIELD: VALUE")
    for req in ("source", "layer"):
        if req not in model:
            raise UserError(f"Training config needs model.{req}.", f"add model.{req} to {where}.")
    precision = str(model.get("precision", "nf4"))
    try:
        get_precision(precision)  # fail early with the list of valid names
    except ValueError as e:
        raise UserError(f"model.precision: {e}") from None
    sae = dict(expect_mapping(f"{where}: sae", raw.get("sae")))
    for req in ("d_in", "d_sae", "k"):
        if req not in sae:
            raise UserError(f"Training config needs sae.{req} (TopK SAE: d_in, d_sae, k).", f"add sae.{req}.")
    check_sections(raw, where)
    runner = raw.get("runner") or {}
    ctx, nbuf = int(runner.get("context_size", 128)), int(runner.get("n_batches_in_buffer", 20))
    bs = int(runner.get("train_batch_size_tokens", 4096))
    if nbuf * ctx < bs:
        raise UserError(
            f"runner.n_batches_in_buffer * context_size = {nbuf * ctx} < train_batch_size_tokens = {bs}: SAELens's "
            f"mixing buffer cannot fill a batch; set n_batches_in_buffer >= {-(-bs // ctx)}."
        )
    try:
        layer = parse_layer(model["layer"])  # the form only; the range is checked against the model (build_source)
    except ValueError as e:
        raise UserError(f"model.layer: {e}") from None
    return TrainingConfig(
        source=str(model["source"]),
        precision=precision,
        layer=layer,
        truncate=bool(model.get("truncate", True)),
        cache_activations=model.get("cache_activations", "auto"),
        sae=sae,
        runner=dict(runner),
        config_path=str(path) if path else None,
        raw=raw,
    )


def valid_precisions() -> tuple[str, ...]:
    return PRECISIONS
