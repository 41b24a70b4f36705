"""A training progress bar that moves: SAELens's own bar, updated at least every 1% of the run.

SAELens 6.54's ``SAETrainer.fit`` makes a tqdm bar over the training tokens but moves it only every 100 steps
(``_update_pbar(..., update_interval=100)``), so a short run (the README's 20k-token example is 78 steps) shows
0% until it ends. :class:`TrainingProgress` is a training callback (``install(trainer)``, see
:func:`gemma4_saelens_ext.training.runner.attach_callbacks`) that replaces the trainer's ``_update_pbar`` on that
trainer instance: the same bar, now in tokens, moved every ``max(1, steps // 100)`` steps and on the last one, with
the step count and the losses. No SAELens code is copied or subclassed.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TrainingProgress"]


class TrainingProgress:
    """Move SAELens's training bar at least every ``fraction`` of the run (default 1%). ``updates`` counts the moves
    and ``shown`` the token counts shown, so a run can be checked afterwards."""

    def __init__(self, fraction: float = 0.01):
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction} must be in (0, 1]")
        self.fraction = fraction
        self.updates = 0
        self.shown: list[int] = []
        self.total_steps = 0
        self.every = 1

    def install(self, trainer: Any) -> Any:
        cfg = trainer.cfg
        total = int(cfg.total_training_samples)
        self.total_steps = max(1, math.ceil(total / int(cfg.train_batch_size_samples)))
        self.every = max(1, int(self.total_steps * self.fraction))

        def update_pbar(step_output: Any, pbar: Any, update_interval: int = 100) -> None:  # noqa: ARG001
            step = int(trainer.n_training_steps)
            done = min(int(trainer.n_training_samples), total)
            if step % self.every and done < total:
                return
            if self.updates == 0:
                pbar.unit, pbar.unit_scale = "tok", True
            losses = " ".join(f"{k}={_item(v):.4g}" for k, v in step_output.losses.items())
            pbar.set_description(f"Training SAE step {step}/{self.total_steps}", refresh=False)
            pbar.set_postfix_str(losses, refresh=False)
            pbar.update(done - pbar.n)
            self.updates += 1
            self.shown.append(done)

        trainer._update_pbar = update_pbar
        return trainer


def _item(v: Any) -> float:
    return float(v.item()) if hasattr(v, "item") else float(v)
