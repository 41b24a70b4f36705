"""Hugging Face cache folders for offline tests: files laid out the way ``huggingface_hub`` stores a repo
(``models--OWNER--NAME/refs/main`` -> ``snapshots/<commit>/<path>`` -> symlinks into ``blobs/``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Gemma Scope 2's residual SAEs for Gemma 3 270M (SAELens release ``gemma-scope-2-270m-pt-res``)
GEMMA_SCOPE_2_REPO = "google/gemma-scope-2-270m-pt"
GEMMA_SCOPE_2_RELEASE = "gemma-scope-2-270m-pt-res"
GEMMA_SCOPE_2_ID = "layer_12_width_16k_l0_medium"


def write_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` into ``cache`` the way huggingface_hub does (refs/main -> snapshot -> blob symlinks)."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    return snap


def gemma_scope_2_files(tmp: Path, *, d_in: int = 640, d_sae: int = 1024, layer: int = 12, seed: int = 0) -> dict:
    """The files SAELens's ``gemma_3`` loader reads for ``resid_post/layer_{layer}_width_16k_l0_medium``:
    ``params.safetensors`` with ``w_enc`` [d_in, d_sae], ``w_dec`` [d_sae, d_in], ``b_enc`` [d_sae], ``b_dec``
    [d_in], ``threshold`` [d_sae] (the loader reads d_in/d_sae from ``w_enc``'s shape, so a narrower width than the
    id's 16k loads the same way), and ``config.json`` with the keys the loader reads (``architecture: jump_relu``,
    ``model_name``, ``hf_hook_point_in``). The weights are random unit directions (encoder = decoder transpose),
    not Gemma Scope's: this tests the loading path and the table row, not the SAE."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_sae, d_in, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    sd = {"w_enc": w.T.contiguous(), "w_dec": w.contiguous(), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in),
          "threshold": torch.full((d_sae,), 2.0)}
    save_file(sd, str(tmp / "gemma_scope_2_params.safetensors"))
    folder = f"resid_post/layer_{layer}_width_16k_l0_medium"
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
           "hf_hook_point_in": f"model.layers.{layer}.output"}
    return {f"{folder}/params.safetensors": (tmp / "gemma_scope_2_params.safetensors").read_bytes(),
            f"{folder}/config.json": json.dumps(cfg).encode()}


def behavior_release_files(tmp: Path, name: str, *, d_in: int, d_sae: int, k: int, layer: int, seed: int = 0) -> dict:
    """An upstream-layout behavior SAE (``nn.Linear`` keys in a torch ``.pt`` + ``cfg.json``), as the Gemma 4
    behavior releases publish it, at any width."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = {"encoder.weight": torch.randn(d_sae, d_in, generator=g) / d_in**0.5,
          "encoder.bias": torch.zeros(d_sae), "decoder.weight": torch.randn(d_in, d_sae, generator=g) / d_sae**0.5,
          "decoder.bias": torch.zeros(d_in)}
    torch.save(sd, tmp / f"{name}.pt")
    cfg = {"d_in": d_in, "d_sae": d_sae, "k": k, "apply_b_dec_to_input": False, "layer": layer}
    return {f"{name}.pt": (tmp / f"{name}.pt").read_bytes(), "cfg.json": json.dumps(cfg).encode()}
