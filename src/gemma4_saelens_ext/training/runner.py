"""Train a TopK SAE through SAELens's ``LanguageModelSAETrainingRunner`` with our activation source.

``model_name`` / ``hook_name`` / ``model_class_name`` in the runner config are derived from the spec's ``model``
section (hook names are TransformerLens-style), and the model is passed as ``override_model``: our
:class:`~gemma4_saelens_ext.activations.source.Gemma4ActivationSource`, so nothing after the hooked layer runs.
Callbacks (``train(..., callbacks=[...])``) see the live trainer: anything with an ``install(trainer)`` method,
such as the evals' :class:`~gemma4_saelens_ext.evals.training_callback.TrainingEvalHook`; training itself never
imports evals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.training.config import TrainingConfig, load_training_config

logger = logging.getLogger(__name__)

__all__ = ["check_model_fit", "build_source", "prepare_activation_cache", "build_runner", "attach_callbacks", "train",
           "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`train` returns. Unpacks as ``sae, output_path = train(...)`` too."""

    #: the trained SAELens SAE (TopK), with ``model_name``, ``hook_name`` and ``precision`` in ``sae.cfg.metadata``
    sae: Any
    #: the folder it was saved to (``SAE.load_from_disk(output_path)``); ``None`` when ``runner.output_path`` is null
    output_path: str | None
    #: the checked training config that produced it
    config: TrainingConfig

    def __iter__(self) -> Iterator[Any]:
        return iter((self.sae, self.output_path))


def check_model_fit(spec: TrainingConfig) -> None:
    """``model.layer`` and ``sae.d_in`` against the checkpoint's config.json, before any weights load (a ValueError
    naming the field and the fix; skipped, with a log line, when the config cannot be read without loading)."""
    from gemma4_saelens_ext.models.load import check_checkpoint

    check_checkpoint(spec.source, layer=spec.layer, d_in=int(spec.sae["d_in"]), layer_field="model.layer",
                     d_in_field="sae.d_in")


def build_source(spec: TrainingConfig):
    """Check the SAE fits the model (:func:`check_model_fit`), then load the model for ``spec``."""
    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import Gemma4ActivationSource

    check_model_fit(spec)
    truncate = spec.truncate
    if truncate and (spec.runner.get("logger") or {}).get("log_to_wandb"):
        # SAELens's W&B evals compute the LM loss with the SAE spliced in, which needs every layer.
        logger.info("log_to_wandb is on: loading all layers so SAELens's CE-loss evals are meaningful.")
        truncate = False
    # the model runs where the SAE trains; on an accelerator the lookup tables stay on the CPU (load_model default)
    device = str(spec.runner.get("device", "cpu"))
    lm = load_model(spec.source, spec.precision, truncate_after_layer=spec.layer if truncate else None, device=device)
    if int(spec.sae["d_in"]) != lm.d_model:
        raise ValueError(
            f"sae.d_in={spec.sae['d_in']} does not match the model's hidden size {lm.d_model} "
            f"({spec.source}); set sae.d_in: {lm.d_model}."
        )
    return Gemma4ActivationSource(lm, [spec.hook_name])


def prepare_activation_cache(spec: TrainingConfig, source, cfg) -> dict[str, Any] | None:
    """Write the activation cache and point ``cfg`` at it when ``spec.cache_activations`` asks for one (``auto``:
    the dataset has fewer tokens than ``training_tokens``). Returns the cache's summary, or None (live training)."""
    from gemma4_saelens_ext.activations.cache import dataset_sequences, should_cache, write_activation_cache

    mode = spec.cache_activations
    if cfg.use_cached_activations or mode in (False, "false", "off", None):
        return None
    seqs = dataset_sequences(source, cfg, max_tokens=None if mode is True else cfg.training_tokens)
    if seqs is None or not should_cache(mode, seqs.numel(), cfg.training_tokens):
        return None
    # the checkpoint folder as configured (SAELens appends a run id to cfg.checkpoint_path)
    base = spec.runner.get("checkpoint_path") or cfg.checkpoint_path
    path = spec.runner.get("cached_activations_path") or str(Path(base) / "activation_cache")
    info = write_activation_cache(source, cfg, path, seqs)
    cfg.use_cached_activations = True
    cfg.cached_activations_path = path
    logger.info(
        "Training from cached activations: %d dataset tokens < %d training tokens (%.1f passes)",
        info["tokens"], cfg.training_tokens, cfg.training_tokens / max(1, info["tokens"]),
    )
    return info


def build_runner(spec: TrainingConfig, source=None, **runner_kwargs: Any):
    """A ready ``LanguageModelSAETrainingRunner`` (our source passed as ``override_model``); with an activation cache
    written first when the dataset is smaller than the budget (:func:`prepare_activation_cache`)."""
    from sae_lens import LanguageModelSAETrainingRunner

    cfg = spec.runner_config()
    if not cfg.logger.log_to_wandb:
        os.environ.setdefault("WANDB_MODE", "disabled")
    source = source or build_source(spec)
    cache = prepare_activation_cache(spec, source, cfg)
    runner = LanguageModelSAETrainingRunner(cfg, override_model=source, **runner_kwargs)
    runner.activation_cache = cache  # type: ignore[attr-defined]
    return runner


def attach_callbacks(runner: Any, callbacks: Sequence[Any]) -> Any:
    """Make ``runner.run()`` call each callback's ``install(trainer)`` on the trainer it builds.

    Seam (SAELens 6.54): ``LanguageModelSAETrainingRunner.run`` builds the trainer and hands it to the public method
    ``run_trainer_with_interruption_handling(trainer)``; wrapping that method on the runner instance gives the
    callbacks the live trainer without copying or subclassing SAELens code."""
    if not callbacks:
        return runner
    inner = runner.run_trainer_with_interruption_handling

    def run_trainer(trainer: Any) -> Any:
        for cb in callbacks:
            cb.install(trainer)
        return inner(trainer)

    runner.run_trainer_with_interruption_handling = run_trainer
    return runner


def train(
    config: str | Path | dict[str, Any] | TrainingConfig,
    overrides: dict[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train and save a TopK SAE. Returns a :class:`TrainResult` (``.sae``, ``.output_path``; it also unpacks as
    ``sae, output_path``); reload with ``SAE.load_from_disk(output_path)``.

    Before any model loads: the config is checked (:func:`~gemma4_saelens_ext.training.config.load_training_config`)
    and so are the output and checkpoint folders (:func:`gemma4_saelens_ext.io.check_out`); the output folder is
    then locked for the run (:func:`gemma4_saelens_ext.io.output_lock`: a second run on it is refused).
    ``callbacks``: objects with ``install(trainer)``, attached to the trainer the runner builds
    (:func:`attach_callbacks`), e.g. :class:`gemma4_saelens_ext.evals.training_callback.TrainingEvalHook`; a
    :class:`~gemma4_saelens_ext.training.progress.TrainingProgress` bar is added unless one is given.
    """
    from contextlib import nullcontext

    from gemma4_saelens_ext.io import check_disk_space, check_out, output_lock
    from gemma4_saelens_ext.training.progress import TrainingProgress

    spec = config if isinstance(config, TrainingConfig) else load_training_config(config, overrides)
    out = spec.runner.get("output_path", "output")  # SAELens's default; None: nothing saved
    if out is not None:
        check_out(out, what="runner.output_path (--out)")
        # the saved SAE (encoder + decoder in fp32) and a checkpoint or two, before any model loads
        d_in, d_sae = int(spec.sae.get("d_in") or 0), int(spec.sae.get("d_sae") or 0)
        check_disk_space(out, 3 * 8 * d_in * d_sae + 50e6, f"training an SAE of d_in {d_in}, d_sae {d_sae}")
    if spec.runner.get("checkpoint_path"):
        check_out(spec.runner["checkpoint_path"], what="runner.checkpoint_path")
    if not any(isinstance(cb, TrainingProgress) for cb in callbacks):
        callbacks = [TrainingProgress(), *callbacks]
    with output_lock(out, what="runner.output_path (--out)") if out is not None else nullcontext():
        runner = build_runner(spec)
        attach_callbacks(runner, callbacks)
        sae = runner.run()
        _record_provenance(sae, spec)
        out = runner.cfg.output_path
        if out is not None:
            sae.save_inference_model(out)
            logger.info("Saved SAE to %s", out)
    return TrainResult(sae, out, spec)


def _record_provenance(sae: Any, spec: TrainingConfig) -> None:
    """Write the base-model precision and source into the SAE's metadata (saved in cfg.json)."""
    md = sae.cfg.metadata
    for key, value in (("model_name", spec.source), ("hook_name", spec.hook_name), ("precision", spec.precision)):
        try:
            setattr(md, key, value)
        except AttributeError:  # pragma: no cover - metadata without dynamic fields
            logger.warning("Could not record %s in SAE metadata", key)


