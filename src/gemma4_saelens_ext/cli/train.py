"""``gemma4-sae train`` (a training config through SAELens's runner) and ``gemma4-sae models``."""

from __future__ import annotations

from typing import Any

from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.training.config import TrainConfig


def _run_train(cfg: Any) -> int:
    from gemma4_saelens_ext.training.runner import train

    sae, out = train(cfg.config, cfg.overrides())
    print(f"Trained {type(sae).__name__} d_in={sae.cfg.d_in} d_sae={sae.cfg.d_sae} -> {out}")
    print(f"Reload with: SAE.load_from_disk({str(out)!r})")
    return 0


def _run_models(_cfg: Any) -> int:
    from gemma4_saelens_ext.models.embedded import EMBEDDED_MODELS
    from gemma4_saelens_ext.models.precision import _PRESETS

    print("Embedded models:")
    for name, (desc, _) in EMBEDDED_MODELS.items():
        print(f"  {name:26s} {desc}")
    print("Precisions:")
    for name, p in _PRESETS.items():
        print(f"  {name:10s} {p.description}")
    return 0


COMMANDS = (
    Command("train", "train a TopK SAE from a training config through SAELens's runner", TrainConfig, _run_train),
    Command("models", "list the embedded models and the precisions", None, _run_models),
)
