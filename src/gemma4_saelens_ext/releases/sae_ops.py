"""Running an SAE on activations: batched encode/decode in eval mode, and explained variance.

One implementation for every caller (the evals' reconstruction and extraction, the training callback, the encode
convention check). ``EV = 1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2`` over all rows, in float64
(the same quantity as ``sae_lens.evals.ExplainedVarianceCalculator``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["encode_decode", "explained_variance"]


@torch.no_grad()
def encode_decode(
    sae: Any, x: Any, *, batch_size: int = 4096, apply_b_dec_to_input: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(latents ``[n, d_sae]``, reconstruction ``[n, d_in]``) of ``x`` (``[n, d_in]``, numpy or torch) as float32
    numpy, in batches on the SAE's device and dtype, with the SAE in eval mode; its training flag (and
    ``cfg.apply_b_dec_to_input``, when given here for the call) are restored afterwards."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    d_in, d_sae = int(sae.cfg.d_in), int(sae.cfg.d_sae)
    if x.shape[-1] != d_in:
        raise ValueError(f"activations have width {x.shape[-1]} but the SAE expects d_in={d_in}.")
    dev, dt = sae.W_dec.device, sae.W_dec.dtype
    saved, was_training = sae.cfg.apply_b_dec_to_input, sae.training
    if apply_b_dec_to_input is not None:
        sae.cfg.apply_b_dec_to_input = apply_b_dec_to_input
    sae.eval()
    feats, recon = [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            f = sae.encode(x[i : i + batch_size].to(device=dev, dtype=dt))
            feats.append(f.float().cpu())
            recon.append(sae.decode(f).float().cpu())
    finally:
        sae.cfg.apply_b_dec_to_input = saved
        sae.train(was_training)
    if not feats:
        return np.zeros((0, d_sae), np.float32), np.zeros((0, d_in), np.float32)
    return torch.cat(feats).numpy(), torch.cat(recon).numpy()


def explained_variance(x: Any, x_hat: Any) -> float:
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over rows, in float64. Activations with zero variance
    (a constant batch) have no explained variance: a ValueError says so."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape} differ in shape")
    total = float(((x - x.mean(0, keepdims=True)) ** 2).sum())
    if total <= 0:
        raise ValueError("activations have zero variance: explained variance is undefined")
    return 1.0 - float(((x - x_hat) ** 2).sum()) / total
