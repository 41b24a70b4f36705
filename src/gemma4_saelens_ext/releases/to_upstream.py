"""SAELens ``TopKSAE`` -> upstream checkpoint (state dict + ``cfg.json`` dict), the inverse of :mod:`.convert`.

Used by :func:`gemma4_saelens_ext.releases.export_sae` for the upstream copy of an exported release.
"""

from __future__ import annotations

from typing import Any

import torch

from gemma4_saelens_ext.releases.spec import UPSTREAM_LAYOUTS

__all__ = ["UPSTREAM_LAYOUTS", "saelens_to_upstream"]



@torch.no_grad()
def saelens_to_upstream(sae: Any, layout: str = "linear") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Turn an inference SAELens ``TopKSAE`` into an upstream ``(state_dict, cfg.json dict)``.

    ``rescale_acts_by_decoder_norm`` is folded into the weights (the upstream forward has no such option),
    which leaves the forward pass unchanged. Normalised-input SAEs and non-TopK architectures are refused.
    """
    if layout not in UPSTREAM_LAYOUTS:
        raise ValueError(f"unknown upstream layout {layout!r}; choose one of {UPSTREAM_LAYOUTS}")
    arch = sae.cfg.architecture()
    if arch != "topk":
        raise ValueError(f"the upstream layout only holds TopK SAEs; this SAE is {arch!r} (export it in SAELens format)")
    if sae.cfg.normalize_activations != "none":
        raise ValueError(
            f"normalize_activations={sae.cfg.normalize_activations!r} cannot be expressed in the upstream layout"
        )
    W_enc = sae.W_enc.detach().float().cpu().clone()
    W_dec = sae.W_dec.detach().float().cpu().clone()
    b_enc = sae.b_enc.detach().float().cpu().clone()
    b_dec = sae.b_dec.detach().float().cpu().clone()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=-1).clamp(min=1e-8)
        W_enc *= norms[None, :]
        b_enc *= norms
        W_dec /= norms[:, None]
    if layout == "linear":
        sd = {
            "encoder.weight": W_enc.T.contiguous(),
            "encoder.bias": b_enc,
            "decoder.weight": W_dec.T.contiguous(),
            "decoder.bias": b_dec,
        }
    else:
        sd = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    meta = sae.cfg.metadata
    cfg = {
        "architecture": "topk",
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "k": int(sae.cfg.k),
        "apply_b_dec_to_input": bool(sae.cfg.apply_b_dec_to_input),
        "dtype": "float32",
        "layout": layout,
    }
    for key in ("model_name", "hook_name", "layer", "precision"):
        if meta.get(key) is not None:
            cfg[key] = meta.get(key)
    return sd, cfg
