"""Training: our YAML configs through SAELens's ``LanguageModelSAETrainingRunner``.

* :mod:`.config` — :class:`TrainingConfig` (``model`` / ``sae`` / ``runner`` sections), :func:`load_training_config`,
  the ``gemma4-sae train`` options (:class:`TrainConfig`); light, read by the CLI
* :mod:`.runner` — :func:`build_source`, :func:`build_runner`, :func:`train` (with ``callbacks``)
* :mod:`.progress` — :class:`TrainingProgress`, the callback that moves the training bar every 1% of the run

May import: ``models``, ``activations`` and the package's leaves; sae_lens. Never ``evals``: evaluation during
training plugs in as a callback (``train(..., callbacks=[hook])``).
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "TrainConfig": "config", "TrainingConfig": "config", "load_training_config": "config",
    "BUILTIN_DATASETS": "config", "resolve_dataset_path": "config",
    "check_model_fit": "runner", "build_source": "runner", "prepare_activation_cache": "runner",
    "build_runner": "runner", "attach_callbacks": "runner", "train": "runner", "TrainResult": "runner", "TrainingProgress": "progress",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
