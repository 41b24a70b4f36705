"""SAE loading (or training, for a suite that says ``sae.train``) and batched encode/decode for evals, plus the
control SAE and the pre-flight shape checks.

Kept apart from the statistics so those stay pure; everything here touches torch modules."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

logger = logging.getLogger(__name__)

__all__ = [
    "load_sae", "train_suite_sae", "encode_decode", "random_sae_like", "check_sae_matches", "check_before_loading",
    "sae_layer", "decoder_rows", "encode_unit", "ENCODE_UNITS",
]


def load_sae(spec: Any, *, device: str = "cpu") -> SAE:
    """``spec``: an ``SAE``; a folder saved by SAELens (``{"path": ...}`` or a str path); or a release
    (``{"release": ..., "sae_id": ...}`` through ``SAE.from_pretrained``, so our releases' converter applies)."""
    if isinstance(spec, SAE):
        return spec
    if isinstance(spec, (str, Path)):
        spec = {"path": str(spec)}
    if not isinstance(spec, dict):
        raise TypeError(f"SAE spec must be an SAE, a path or a dict with path / release+sae_id, got {type(spec)}")
    from gemma4_saelens_ext.releases.folders import load_release, load_sae_folder

    if spec.get("path"):
        return load_sae_folder(spec["path"], device=device)  # a damaged folder's error names the file
    if spec.get("release"):
        return load_release(spec["release"], spec.get("sae_id"), device=device)  # close names of a misspelling
    raise ValueError(f"SAE spec {spec} needs `path` or `release` (+ `sae_id`).")


def train_suite_sae(cfg: Any, rows: list[dict], out: Path) -> tuple[SAE, dict[str, Any]]:
    """The SAE of a suite with ``sae.train``: :func:`gemma4_saelens_ext.training.train` (SAELens's
    ``LanguageModelSAETrainingRunner`` through our activation source) at the suite's model, precision and layer, on
    the texts of ``rows`` (the train split, every label; never an eval prompt) written to ``out/sae_data/train.parquet``
    (SAELens reads the folder offline), saved to ``out/sae``. Returns the saved SAE and the report's SAE section."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gemma4_saelens_ext.evals.spec import training_overrides
    from gemma4_saelens_ext.training.config import load_training_config
    from gemma4_saelens_ext.training.runner import train

    data = Path(out) / "sae_data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), data / "train.parquet")
    spec = load_training_config(cfg.sae["train"], training_overrides(cfg, str(data), str(out)))
    logger.info("training the suite's SAE with %s (%d texts, %s tokens)", spec.config_path or "a config dict",
                len(rows), spec.runner.get("training_tokens"))
    t0 = time.perf_counter()
    _, path = train(spec)
    cache = Path(spec.runner["checkpoint_path"]) / "activation_cache"  # training.prepare_activation_cache's default
    section = {"kind": "trained in-suite (gemma4_saelens_ext.training.train, SAELens runner)",
               "train": str(cfg.sae["train"]), "config_path": spec.config_path,
               "overrides": dict(cfg.sae.get("overrides") or {}), "path": str(path), "training_texts": len(rows),
               "training": {k: spec.raw[k] for k in ("model", "sae", "runner") if k in spec.raw},
               "from_cached_activations": cache.exists(), "train_seconds": round(time.perf_counter() - t0, 1)}
    return load_sae({"path": str(path)}), section


@torch.no_grad()
def encode_decode(sae: SAE, x: Any, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(latents [n, d_sae], reconstruction [n, d_in]) as float32 numpy, batched to bound memory."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.shape[-1] != sae.cfg.d_in:
        raise ValueError(f"activations have width {x.shape[-1]} but the SAE expects d_in={sae.cfg.d_in}.")
    dev, dt = sae.W_dec.device, sae.W_dec.dtype
    feats, recon = [], []
    was_training = sae.training
    sae.eval()
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device=dev, dtype=dt)
        f = sae.encode(xb)
        feats.append(f.float().cpu())
        recon.append(sae.decode(f).float().cpu())
    if was_training:
        sae.train()
    if not feats:
        return np.zeros((0, sae.cfg.d_sae), np.float32), np.zeros((0, sae.cfg.d_in), np.float32)
    return torch.cat(feats).numpy(), torch.cat(recon).numpy()


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


def _saved_cfg(spec: Any) -> tuple[str, dict[str, Any]] | None:
    """``(folder, cfg.json)`` of an SAE given as a folder, checked without loading its weights (a missing or damaged
    folder is an error naming the file); None for any other spec."""
    from gemma4_saelens_ext.releases.folders import check_sae_folder

    path = spec if isinstance(spec, (str, Path)) else spec.get("path") if isinstance(spec, dict) else None
    return (str(path), check_sae_folder(path)) if path else None


def check_before_loading(cfg: Any) -> None:
    """A suite's layer (``model.layer``, else the SAE's hook) and each SAE folder's ``d_in`` (its cfg.json) against
    the model's config.json, before any SAE or model loads (:func:`gemma4_saelens_ext.models.check_checkpoint`)."""
    from gemma4_saelens_ext.models.load import check_checkpoint

    source = cfg.model.source
    fix = "this SAE was trained on another model: pick the SAE for this model (or set model.source to its model)"
    main = _saved_cfg(cfg.sae)
    hook = ((main[1].get("metadata") or {}).get("hook_name") or main[1].get("hook_name")) if main else None
    if cfg.model.layer is not None:
        check_checkpoint(source, layer=cfg.model.layer, layer_field="model.layer")
    elif hook:
        check_checkpoint(source, layer=hook, layer_field=f"SAE {main[0]} hook_name (model.layer is unset)",
                         layer_fix=fix)
    for what, spec in [("sae", cfg.sae), *((f"other_saes.{k}", v) for k, v in cfg.other_saes.items())]:
        saved = _saved_cfg(spec)
        if saved and saved[1].get("d_in") is not None:
            check_checkpoint(source, d_in=int(saved[1]["d_in"]), d_in_field=f"{what} ({saved[0]}) d_in", d_in_fix=fix)


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
