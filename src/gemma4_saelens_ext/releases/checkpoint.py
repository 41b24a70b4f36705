"""Read an SAE checkpoint file and find its weights wherever they are nested.

Two file shapes are read:

* a plain state dict (``{"W_enc": ..., "b_dec": ...}`` or ``{"encoder.weight": ...}``), possibly with training
  buffers such as ``feature_counts`` beside the weights;
* a trainer checkpoint, e.g. what SolshineCode/nanochat-SAE's ``SAETrainer`` saves::

      {"step": int, "epoch": int, "sae_state_dict": {...weights...}, "optimizer_state_dict": {...},
       "scheduler_state_dict": {...}, "config": {"d_in": ..., "d_sae": ..., "k": ..., ...},
       "feature_counts": Tensor[d_sae], "best_val_loss": float}

The weights are the one dict (at any depth up to :data:`MAX_DEPTH`) whose keys name an SAE encoder or decoder
(:data:`WEIGHT_ALIASES`, after stripping a ``module.``-style prefix); whatever sits beside it is ignored. A dict
named ``config`` at the top level or beside the weights is returned as the checkpoint's embedded config. When no dict, or more than one, holds SAE weights, the error names every key in the file.

Files are read with ``torch.load(weights_only=True)`` (or safetensors): a checkpoint that needs Python code to be
unpickled, at any depth, is refused, never executed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "LoadedCheckpoint",
    "WEIGHT_ALIASES",
    "read_checkpoint",
    "load_state_dict_file",
    "strip_prefix",
    "describe_keys",
]

#: SAELens parameter -> the key names it is stored under (SAELens/Anthropic names, then ``nn.Linear`` names).
WEIGHT_ALIASES: dict[str, tuple[str, ...]] = {
    "W_enc": ("W_enc", "encoder.weight"),
    "W_dec": ("W_dec", "decoder.weight"),
    "b_enc": ("b_enc", "encoder.bias"),
    "b_dec": ("b_dec", "decoder.bias"),
}
_MATRIX_NAMES = frozenset(WEIGHT_ALIASES["W_enc"] + WEIGHT_ALIASES["W_dec"])
_KNOWN_NAMES = frozenset(a for names in WEIGHT_ALIASES.values() for a in names)
#: what torch itself prepends: DistributedDataParallel (``module.``) and ``torch.compile`` (``_orig_mod.``)
_STRIP_PREFIXES = ("module.", "_orig_mod.")
#: the embedded config of the author's trainer checkpoint (nanochat-SAE ``SAETrainer``)
_CONFIG_KEYS = ("config",)
#: how deep the weights may be nested (``{"checkpoint": {"sae_state_dict": {...}}}`` is depth 2)
MAX_DEPTH = 4
_MAX_LISTED = 200


class CheckpointError(ValueError):
    """A checkpoint or its ``cfg.json`` cannot be converted (corrupt, unknown layout, wrong shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint holds pickled Python objects/code; it is refused instead of being unpickled."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """The SAE weights found in a file, where they were, and the config embedded beside them (if any)."""

    tensors: dict[str, torch.Tensor]
    #: path of the weight dict inside the file, e.g. ``"sae_state_dict"``; ``""`` for a plain state dict
    where: str = ""
    #: the embedded ``config`` dict (scalars only), empty when the file has none
    config: dict[str, Any] = field(default_factory=dict)
    #: every key in the file with its shape or type (for error messages)
    keys: tuple[str, ...] = ()


def strip_prefix(sd: dict[str, Any]) -> dict[str, Any]:
    """Drop a common ``module.``/``_orig_mod.`` prefix when it hides the SAE key names."""
    for prefix in _STRIP_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd) and not (set(sd) & _KNOWN_NAMES):
            stripped = {k[len(prefix) :]: v for k, v in sd.items()}
            if set(stripped) & _KNOWN_NAMES:
                return stripped
    return sd


def describe_keys(obj: Any, prefix: str = "", depth: int = 0) -> list[str]:
    """``["sae_state_dict.W_enc(1536, 6144)", "step: int", ...]``: every key of a loaded checkpoint."""
    out: list[str] = []
    if not isinstance(obj, dict):
        return out
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out.append(f"{name}{tuple(v.shape)}")
        elif isinstance(v, dict) and depth < MAX_DEPTH and v:
            out.extend(describe_keys(v, f"{name}.", depth + 1))
        else:
            out.append(f"{name}: {type(v).__name__}")
    return out


def _listing(keys: list[str] | tuple[str, ...]) -> str:
    shown = list(keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"[{', '.join(shown)}]{more}"


def _weight_dicts(obj: dict, parent: dict, path: str = "", depth: int = 0) -> list[tuple[str, dict, dict]]:
    """``(path, dict, parent)`` for every dict (to ``MAX_DEPTH``) whose keys name an SAE encoder/decoder matrix."""
    found = []
    keys = strip_prefix({str(k): v for k, v in obj.items()})
    if any(k in _MATRIX_NAMES and isinstance(v, torch.Tensor) for k, v in keys.items()):
        found.append((path, obj, parent))
    if depth < MAX_DEPTH:
        for k, v in obj.items():
            if isinstance(v, dict):
                found += _weight_dicts(v, obj, f"{path}.{k}" if path else str(k), depth + 1)
    return found


def _embedded_config(*holders: dict) -> dict[str, Any]:
    """The first ``config`` dict among ``holders`` (top level first), scalars and lists kept."""
    for holder in holders:
        for key in _CONFIG_KEYS:
            cfg = holder.get(key)
            if isinstance(cfg, dict) and not any(isinstance(v, torch.Tensor) for v in cfg.values()):
                return dict(cfg)
    return {}


def _load_raw(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    with path.open("rb") as fh:
        head = fh.read(4)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError/EOFError/... for bad files
        msg = str(e)
        globals_found = re.findall(r"GLOBAL ([\w.]+)", msg)
        if globals_found or (head[:1] == b"\x80" and "Weights only load failed" in msg and head[:2] != b"\x80\x02"):
            what = f" (it references {', '.join(sorted(set(globals_found)))})" if globals_found else ""
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it contains pickled Python objects{what}, and loading it would run code. "
                "Only plain state dicts of tensors are accepted (torch.load(..., weights_only=True)). If you trust "
                "the file, re-save its weights with torch.save(module.state_dict(), path) or as safetensors."
            ) from e
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint (corrupt or truncated file?): "
            f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"
        ) from e


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load ``path`` (``.pt``/``.pth``/``.bin`` with ``weights_only=True``, or ``.safetensors``) and find the weights.

    Raises :class:`CheckpointError` naming every key in the file when no dict, or more than one, holds SAE weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAE weights not found: {path}")
    obj = _load_raw(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
    keys = tuple(describe_keys(obj))
    hits = _weight_dicts(obj, obj)
    if len(hits) > 1:
        raise CheckpointError(
            f"{path}: several dicts hold SAE weights ({[p or '<top level>' for p, _, _ in hits]}); cannot tell which "
            f"one is the SAE. Re-save the one you want as a plain state dict. Keys found: {_listing(keys)}"
        )
    if not hits:
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and not any(isinstance(v, dict) for v in obj.values()):
            # a flat dict of unknown tensors: convert_state_dict names the layout problem
            return LoadedCheckpoint(tensors=tensors, keys=keys)
        raise CheckpointError(
            f"{path} holds no SAE weights (no W_enc/W_dec or encoder.weight/decoder.weight at any depth). "
            f"Keys found: {_listing(keys)}"
        )
    where, weights, parent = hits[0]
    tensors = {str(k): v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(str(k) for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if dropped:
        logger.debug("ignoring non-tensor entries of %s[%s]: %s", path, where, dropped)
    if where:
        logger.debug("%s: SAE weights found under %r (beside %s)", path, where, sorted(map(str, obj)))
    return LoadedCheckpoint(tensors=tensors, where=where, config=_embedded_config(obj, parent), keys=keys)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The SAE weight tensors of ``path`` (see :func:`read_checkpoint`), without the embedded config."""
    return read_checkpoint(path).tensors
