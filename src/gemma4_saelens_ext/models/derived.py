"""Derived checkpoints, built on demand (cached, atomic) from a Gemma-family checkpoint folder:

* **text-only**: a ``Gemma4ForConditionalGeneration`` checkpoint rewritten as ``Gemma4ForCausalLM`` (vision/audio
  towers dropped), so residual-stream work never loads the encoders.
* **truncated**: only layers ``0..L`` are kept (plus, for Gemma 4, the matching slice of the packed per-layer
  embedding table, which is large and never quantized by bitsandbytes). The unembedding is tied to the input
  embedding in Gemma, so nothing is kept for it, and the forward pass is stopped at layer L anyway.

Tensors are streamed one by one (safetensors slices), so deriving from a multi-GB checkpoint needs little RAM.
:func:`gemma4_saelens_ext.models.load_model` decides what to derive; this module only writes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from gemma4_saelens_ext.models.checkpoint_config import is_multimodal, read_config, text_config
from gemma4_saelens_ext.models.embedded import build_cached, cache_dir

__all__ = ["kept_layer_count", "derived_config", "rewrite_key", "derive_checkpoint", "derived_path", "checkpoint_to_load"]

_MULTIMODAL_DROP_PREFIXES = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.")


def kept_layer_count(text_cfg: dict[str, Any], layer: int) -> int:
    """Layers to keep so that layer ``layer`` is computed exactly as in the full model.

    Gemma 4's config forces its last layer to full attention; if layer L is a sliding layer, keep layers up to the
    next full-attention layer so L keeps its own attention type (the extra layers are never run: we stop at L).
    """
    n = layer + 1
    types = text_cfg.get("layer_types")
    if text_cfg.get("model_type", "").startswith("gemma4") and types:
        while n < len(types) and types[n - 1] != "full_attention":
            n += 1
    return n


def derived_config(cfg: dict[str, Any], keep_layers: int | None, text_only: bool) -> dict[str, Any]:
    """config.json of the derived checkpoint: layers cut to ``keep_layers``; text-only -> a ``Gemma4ForCausalLM``."""
    multimodal = is_multimodal(cfg)
    text_cfg = dict(text_config(cfg))
    n_full = text_cfg["num_hidden_layers"]
    if keep_layers is not None:
        text_cfg["num_hidden_layers"] = keep_layers
        if text_cfg.get("layer_types"):
            text_cfg["layer_types"] = text_cfg["layer_types"][:keep_layers]
        if isinstance(text_cfg.get("per_layer_config"), dict):
            text_cfg["per_layer_config"] = {
                k: v for k, v in text_cfg["per_layer_config"].items() if int(k) < keep_layers
            }
        if text_cfg.get("num_kv_shared_layers"):
            first_shared = n_full - text_cfg["num_kv_shared_layers"]
            text_cfg["num_kv_shared_layers"] = max(0, keep_layers - first_shared)
    if text_only and multimodal:
        new_cfg = dict(text_cfg, architectures=["Gemma4ForCausalLM"])
    elif multimodal:
        new_cfg = dict(cfg, text_config=text_cfg)
    else:
        new_cfg = text_cfg
    new_cfg["_derived_from"] = {"kept_layers": keep_layers, "original_layers": n_full}
    return new_cfg


def rewrite_key(
    cfg: dict[str, Any], key: str, keep_layers: int | None, text_only: bool
) -> tuple[str, int | None, int | None] | None:
    """``(new_key, rows, cols)`` of checkpoint tensor ``key`` in the derived checkpoint, where ``rows``/``cols`` cut
    the tensor to its first rows/columns (None: all); None when the tensor is dropped."""
    multimodal = is_multimodal(cfg)
    ple = text_config(cfg).get("hidden_size_per_layer_input") or 0
    pfx = "model.language_model." if multimodal else "model."
    if text_only and multimodal:
        if key.startswith(_MULTIMODAL_DROP_PREFIXES):
            return None
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        pfx = "model."
    inner = key[len(pfx) :] if key.startswith(pfx) else None
    rows = cols = None
    if keep_layers is not None:
        m = re.match(r"layers\.(\d+)\.", inner or "")
        if m and int(m.group(1)) >= keep_layers:
            return None
        if key == "lm_head.weight" and cfg.get("tie_word_embeddings", True):
            return None
        if ple and inner == "embed_tokens_per_layer.weight":
            cols = keep_layers * ple
        elif ple and inner == "per_layer_model_projection.weight":
            rows = keep_layers * ple
    return key, rows, cols


def derive_checkpoint(src: Path, out: Path, keep_layers: int | None, text_only: bool) -> None:
    """Write the derived checkpoint tensor by tensor, reading only the kept rows/columns (safetensors slices), so
    deriving from a multi-GB checkpoint needs little RAM."""
    from safetensors import safe_open

    from gemma4_saelens_ext.models.embedded import SAFETENSORS_DTYPES, write_safetensors_streaming

    cfg = read_config(src)
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{src} has no *.safetensors weights; only safetensors checkpoints are supported.")
    index: dict[str, str] = {}
    for f in files:
        with safe_open(f, framework="pt") as fh:
            plan: dict[str, tuple[str, int | None, int | None]] = {}
            shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
            for key in fh.keys():
                new = rewrite_key(cfg, key, keep_layers, text_only)
                if new is None:
                    continue
                sl = fh.get_slice(key)
                shape = list(sl.get_shape())
                if new[1] is not None:
                    shape[0] = new[1]
                if new[2] is not None:
                    shape[1] = new[2]
                plan[new[0]] = (key, new[1], new[2])
                shapes[new[0]] = (tuple(shape), SAFETENSORS_DTYPES[sl.get_dtype()])

            def fill(name: str, view: torch.Tensor, row0: int) -> None:
                key, _rows, cols = plan[name]
                sl = fh.get_slice(key)
                if view.dim() == 0:
                    view.copy_(fh.get_tensor(key))
                elif cols is None:
                    view.copy_(sl[row0 : row0 + view.shape[0]])
                else:
                    view.copy_(sl[row0 : row0 + view.shape[0], :cols])

            if shapes:
                write_safetensors_streaming(out / f.name, shapes, fill)
                index.update({k: f.name for k in shapes})
    if len(files) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    new_cfg = derived_config(cfg, keep_layers, text_only)
    new_cfg["_derived_from"]["source"] = str(src)
    (out / "config.json").write_text(json.dumps(new_cfg, indent=2))
    copy_tokenizer_files(src, out)


def derived_path(src: Path, keep_layers: int | None, text_only: bool) -> Path:
    import hashlib

    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    tag = f"{src.name}-{key}-{'text' if text_only else 'full'}-L{keep_layers if keep_layers is not None else 'all'}"
    return cache_dir() / "derived" / tag


def checkpoint_to_load(path: Path, cfg: dict[str, Any], keep: int | None, text_only: bool) -> Path:
    if keep is None and not (is_multimodal(cfg) and text_only):
        return path
    return build_cached(derived_path(path, keep, text_only), lambda out: derive_checkpoint(path, out, keep, text_only))


#: files beside the weights that a derived checkpoint keeps as they are (the tokenizer and generation settings)
_TOKENIZER_FILES = ("special_tokens_map.json", "generation_config.json", "chat_template.jinja")


def copy_tokenizer_files(src: Path, out: Path) -> list[str]:
    """Copy the tokenizer (``tokenizer*``), chat template and generation config of checkpoint ``src`` into ``out``,
    so a derived checkpoint loads with the same tokenizer; returns the names copied."""
    names = []
    for f in Path(src).iterdir():
        if f.is_file() and (f.name.startswith("tokenizer") or f.name in _TOKENIZER_FILES):
            (Path(out) / f.name).write_bytes(f.read_bytes())
            names.append(f.name)
    return names
