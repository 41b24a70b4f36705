"""SAE loading and batched encode/decode for evals, plus the control SAE and the shape checks (the suite's list of
SAEs, and its in-suite training, live in :mod:`.saes`).

Kept apart from the statistics so those stay pure; everything here touches torch modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

from gemma4_saelens_ext.releases.sae_ops import encode_decode  # re-exported: the evals' import path

logger = logging.getLogger(__name__)

__all__ = [
    "sae_from_entry", "encode_decode", "random_sae_like", "check_sae_matches", "saved_sae_config", "sae_layer",
    "decoder_rows", "encode_unit", "ENCODE_UNITS",
]


def sae_from_entry(entry: Any, *, device: str = "cpu") -> SAE:
    """The SAE a suite entry names: an ``SAE`` as is; a folder saved by SAELens (``{"path": ...}`` or a str path); or
    a release (``{"release": ..., "sae_id": ...}``), through :mod:`gemma4_saelens_ext.releases.folders`, whose errors
    name the file, the close names or what to fetch."""
    if isinstance(entry, SAE):
        return entry
    if isinstance(entry, (str, Path)):
        entry = {"path": str(entry)}
    if not isinstance(entry, dict):
        raise TypeError(f"SAE entry must be an SAE, a path or a dict with path / release+sae_id, got {type(entry)}")
    from gemma4_saelens_ext.releases.folders import load_release, load_sae_folder

    if entry.get("path"):
        return load_sae_folder(entry["path"], device=device)  # a damaged folder's error names the file
    if entry.get("release"):
        return load_release(entry["release"], entry.get("sae_id"), device=device)
    raise ValueError(f"SAE entry {entry} needs `path` or `release` (+ `sae_id`).")


@torch.no_grad()
def random_sae_like(sae: SAE, *, seed: int = 0) -> SAE:
    """Control SAE: same class, config and shape, random unit-norm decoder rows, encoder = decoder transpose,
    zero biases. If a probe on its latents matches the trained SAE's, the SAE's training added nothing."""
    ctrl = SAE.from_dict(sae.cfg.to_dict())
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(sae.cfg.d_sae, sae.cfg.d_in, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    state = {}
    for name, p in ctrl.state_dict().items():
        if name == "W_dec":
            state[name] = w.to(p.dtype)
        elif name == "W_enc":
            state[name] = w.T.contiguous().to(p.dtype)
        else:
            state[name] = torch.zeros_like(p) if name.startswith("b_") else p.clone()
    ctrl.load_state_dict(state)
    return ctrl.to(sae.W_dec.device)


def sae_layer(sae: SAE) -> str | None:
    return getattr(sae.cfg.metadata, "hook_name", None)


def check_sae_matches(sae: SAE, *, d_model: int | None = None, layer: int | None = None, lm: Any = None, what: str = "SAE") -> None:
    """Fail before long work: SAE d_in vs the model width, SAE hook layer vs the layer the activations come from."""
    if d_model is not None and sae.cfg.d_in != d_model:
        raise ValueError(
            f"{what}: d_in={sae.cfg.d_in} but the model's residual width is {d_model}; this SAE was trained on a "
            "different model (or a different hook). Pick the SAE for this model."
        )
    hook = sae_layer(sae)
    if layer is not None and hook and lm is not None:
        try:
            sae_l = lm.resolve_layer(hook)
        except ValueError:
            logger.warning("%s hook %r does not name a decoder layer of this model; skipping the layer check.", what, hook)
            return
        if sae_l != layer:
            raise ValueError(
                f"{what} was trained on hook {hook!r} (layer {sae_l}) but the activations are taken at layer {layer}; "
                f"set model.layer to {sae_l} or use an SAE for layer {layer}."
            )


def saved_sae_config(spec: Any) -> tuple[str, dict[str, Any]] | None:
    """``(folder, cfg.json)`` of an SAE given as a folder, checked without loading its weights (a missing or damaged
    folder is an error naming the file); None for any other spec."""
    from gemma4_saelens_ext.releases.folders import check_sae_folder

    path = spec if isinstance(spec, (str, Path)) else spec.get("path") if isinstance(spec, dict) else None
    return (str(path), check_sae_folder(path)) if path else None


def decoder_rows(sae: SAE, latents: list[int]) -> np.ndarray:
    return sae.W_dec[list(latents)].detach().float().cpu().numpy()


#: what an SAE is applied to: one residual vector per token (latents then pooled over the completion), or the
#: completion's pooled residual (an SAE trained on pooled vectors, like the seed release's 38 activations)
ENCODE_UNITS = ("tokens", "pooled")


def encode_unit(sae: SAE, spec: Any = None, override: str = "auto") -> tuple[str, str]:
    """``(unit, why)``: the suite's ``encode`` setting when not ``auto``; else the SAE's metadata
    (``activation_unit``); else ``pooled`` for the Gemma 4 behavior releases (their card: trained on pooled
    completion vectors); else ``tokens`` (SAELens trains on token activations)."""
    if override != "auto":
        if override not in ENCODE_UNITS:
            raise ValueError(f"encode must be auto, tokens or pooled, got {override!r}")
        return override, "suite setting `encode`"
    meta = getattr(sae.cfg, "metadata", None)
    unit = getattr(meta, "activation_unit", None) if meta is not None else None
    if unit is None and hasattr(meta, "get"):
        unit = meta.get("activation_unit")
    if unit in ENCODE_UNITS:
        return str(unit), "SAE metadata activation_unit"
    if isinstance(spec, dict) and spec.get("release"):
        from gemma4_saelens_ext.releases.convention import follows_author_convention

        if follows_author_convention(spec["release"]):
            return "pooled", "Gemma 4 behavior release (its card: trained on pooled completion activations)"
    return "tokens", "trained on token activations (SAELens); latents pooled over the completion"
