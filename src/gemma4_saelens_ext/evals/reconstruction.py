"""Reconstruction quality of an SAE on a set of activations, and the LM loss with the SAE spliced in.

Formulas (x: activations [n, d], x_hat = SAE(x), f = latents [n, d_sae]):

* explained variance ``EV = 1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2`` (one number over all
  samples; the same quantity as ``sae_lens.evals.ExplainedVarianceCalculator``, computed in float64);
* ``MSE = mean over samples and dimensions of (x - x_hat)^2`` (per element);
* ``L0 = mean_i #{j : f_ij != 0}``;
* ``alive = #{j : f_ij != 0 for some i}`` (on this eval set, so it depends on its size: the seed's 181/6144 was
  measured on 38 samples);
* LM loss: next-token cross-entropy of the model as is (``ce_clean``), with layer L's output replaced by the
  SAE reconstruction (``ce_spliced``) and by zeros (``ce_zero``); ``ce_loss_score = (ce_zero - ce_spliced) /
  (ce_zero - ce_clean)`` is SAELens's ``ce_loss_score`` (1 = lossless). SAELens's ``get_recons_loss`` needs a
  TransformerLens-style ``run_with_hooks`` model, so the splice is a forward hook on the HF decoder layer here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["reconstruction_metrics", "sae_reconstruction", "lm_loss_with_sae"]


def reconstruction_metrics(x: Any, x_hat: Any, feats: Any) -> dict[str, float]:
    """EV, MSE, L0, alive and n for one set of activations (pure; see the module docstring for formulas)."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    f = np.asarray(feats)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape} differ in shape")
    if x.shape[0] == 0:
        raise ValueError("no activations to evaluate (empty split?)")
    resid = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(0, keepdims=True)) ** 2).sum()
    ev = float(1.0 - resid / total) if total > 0 else (1.0 if resid == 0 else 0.0)
    nz = f != 0
    return {
        "explained_variance": ev,
        "mse": float(resid / x.size),
        "l0": float(nz.sum(1).mean()),
        "alive": int(nz.any(0).sum()),
        "d_sae": int(f.shape[1]),
        "n_samples": int(x.shape[0]),
    }


def sae_reconstruction(sae: Any, x: Any, *, batch_size: int = 4096) -> tuple[dict[str, float], np.ndarray]:
    """Run ``x`` through the SAE; return (metrics, latents)."""
    from gemma4_saelens_ext.evals.saeio import encode_decode

    feats, recon = encode_decode(sae, x, batch_size=batch_size)
    return reconstruction_metrics(np.asarray(x, dtype=np.float32), recon, feats), feats


@torch.no_grad()
def lm_loss_with_sae(
    lm: Any, sae: Any, texts: Sequence[str], layer: int, *, batch_size: int = 4, max_length: int = 256
) -> dict[str, float]:
    """CE loss clean / SAE-spliced / zero-ablated at ``layer`` over ``texts`` (BOS and padding excluded)."""
    from gemma4_saelens_ext.activations.source import layer_output_tensor

    if not texts:
        raise ValueError("lm_loss_with_sae: no texts")
    if getattr(lm, "truncated_after", None) is not None:
        raise ValueError("LM loss needs the full model; load it without truncate_after_layer.")
    tok, model = lm.tokenizer, lm.model
    mode = {"m": "clean"}
    dev, dt = sae.W_dec.device, sae.W_dec.dtype

    def hook(_m: Any, _i: Any, output: Any) -> Any:
        if mode["m"] == "clean":
            return None
        hs = layer_output_tensor(output)
        if mode["m"] == "zero":
            new = torch.zeros_like(hs)
        else:
            new = sae.decode(sae.encode(hs.to(device=dev, dtype=dt))).to(device=hs.device, dtype=hs.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    n_tok = 0
    handle = lm.layers[layer].register_forward_hook(hook)
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length, padding_side="right")
            ids = enc["input_ids"].to(lm.device)
            am = enc["attention_mask"].to(lm.device)
            tgt = ids[:, 1:]
            valid = am[:, 1:].bool()
            n_tok += int(valid.sum())
            for m in sums:
                mode["m"] = m
                logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits[:, :-1].float()
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
                sums[m] += float(ce[valid].sum())
    finally:
        handle.remove()
    clean, spliced, zero = (sums[k] / max(n_tok, 1) for k in ("clean", "spliced", "zero"))
    denom = zero - clean
    return {
        "ce_clean": clean,
        "ce_spliced": spliced,
        "ce_zero_ablation": zero,
        "ce_loss_increase": spliced - clean,
        "ce_loss_score": float((zero - spliced) / denom) if abs(denom) > 1e-12 else float("nan"),
        "n_tokens": n_tok,
    }
