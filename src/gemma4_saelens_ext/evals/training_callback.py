"""Cheap evals during SAE training: reconstruction + d-values on a held-out labelled batch every N steps.

Seam (SAELens 6.54): ``SAETrainer`` takes an ``evaluator`` callable, but ``fit()`` only calls it when W&B logging
is on (``_run_and_log_evals`` is inside ``if cfg.logger.log_to_wandb``), so it cannot serve offline runs.
``LanguageModelSAETrainingRunner.run`` builds the trainer and hands it to the public method
``run_trainer_with_interruption_handling(trainer)``; :func:`gemma4_saelens_ext.training.runner.attach_callbacks`
wraps that method on the runner instance (``train(..., callbacks=[hook])``), and :meth:`TrainingEvalHook.install`
wraps ``trainer.step`` on the trainer it receives, so the hook sees the live SAE, the step counter
and the trainer's ``activation_scaler`` (held-out activations are scaled exactly like training batches). No
SAELens code is copied or subclassed, and :meth:`TrainingEvalHook.install` works on a bare ``SAETrainer`` too.

Each evaluation is logged with ``logging``, appended as one JSON line to ``jsonl_path``, and sent to W&B
(``wandb.log(..., step=trainer.n_training_steps)``) when the run's ``cfg.logger.log_to_wandb`` is on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.reconstruction import reconstruction_metrics
from gemma4_saelens_ext.releases.sae_ops import encode_decode

logger = logging.getLogger(__name__)

__all__ = ["TrainingEvalHook"]


@dataclass
class TrainingEvalHook:
    """``acts``: held-out activations [n, d_in] (pooled, as the SAE sees them); ``labels``: honest/deceptive
    strings or 0/1 (ambiguous rows dropped); ``groups``: the prompt group of each row. ``n_permutations > 0`` adds a
    d_max p-value (costs more): against the group-flip null when ``groups`` is given, else row permutations."""

    acts: Any
    labels: Any
    groups: Any = None
    every_n_steps: int = 100
    jsonl_path: str | Path | None = None
    n_permutations: int = 0
    top_n: int = 5
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        keep, y = S.encode_labels(self.labels)
        x = np.asarray(self.acts.detach().cpu() if hasattr(self.acts, "detach") else self.acts, dtype=np.float32)
        if len(x) != len(keep):
            raise ValueError(f"held-out batch: {len(x)} activations but {len(keep)} labels")
        self._x = torch.as_tensor(x[keep])
        self._y = y
        self._groups = None if self.groups is None else np.asarray(self.groups)[keep]
        S.check_binary_labels(y, what="training-hook held-out batch")

    @torch.no_grad()
    def evaluate(self, sae: Any, step: int, scaler: Any = None) -> dict[str, Any]:
        x = self._x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
        if scaler is not None:
            x = scaler.scale(x)
        f_np, xh = encode_decode(sae, x)
        rec = reconstruction_metrics(x.float().cpu().numpy(), xh, f_np)
        d = S.fast_cohens_d(f_np, self._y)
        summ = S.d_summary(d, top_n=self.top_n)
        rec_out = {"step": int(step), "time": time.time(), **{f"heldout/{k}": v for k, v in rec.items()},
                   "heldout/d_max": summ["d_max"], "heldout/n_d_above_1": summ["n_above"],
                   "heldout/top_latents": summ["top_latents"], "heldout/n_pos": int(self._y.sum()),
                   "heldout/n_neg": int((1 - self._y).sum())}
        if self.n_permutations:
            from gemma4_saelens_ext.evals.dvalues import dvalue_analysis

            r = dvalue_analysis(f_np, self._y, groups=self._groups, n_permutations=self.n_permutations, n_bootstrap=20,
                                min_class_size=2, seed=step)
            rec_out["heldout/p_d_max"] = r.p_d_max
            rec_out["heldout/n_groups"] = r.n_groups
        return rec_out

    def _log(self, rec: dict[str, Any], trainer: Any = None) -> None:
        self.history.append(rec)
        logger.info("training eval step %d: EV %.4f L0 %.2f alive %d d_max %.3f", rec["step"],
                    rec["heldout/explained_variance"], rec["heldout/l0"], rec["heldout/alive"], rec["heldout/d_max"])
        if self.jsonl_path is not None:
            p = Path(self.jsonl_path)
            p.parent.mkdir(parents=True, exist_ok=True)
            with p.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
        cfg = getattr(trainer, "cfg", None)
        if cfg is not None and getattr(getattr(cfg, "logger", None), "log_to_wandb", False):
            import wandb

            wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float)) and k not in ("step", "time")},
                      step=rec["step"])

    def install(self, trainer: Any) -> Any:
        """Wrap ``trainer.step`` (instance attribute) so every ``every_n_steps`` completed steps we evaluate."""
        inner = trainer.step

        def step(batch: torch.Tensor) -> Any:
            out = inner(batch)
            done = trainer.n_training_steps + 1  # fit() increments the counter after step() returns
            if done % self.every_n_steps == 0:
                self._log(self.evaluate(trainer.sae, done, getattr(trainer, "activation_scaler", None)), trainer)
            return out

        trainer.step = step
        return trainer
