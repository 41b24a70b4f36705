"""Layers and hook names: the leaf every room shares (no torch at import).

A residual-stream hook is written TransformerLens-style, ``blocks.L.hook_resid_post`` (:func:`hook_name`), or as
the HF module path of the decoder layer, ``model.layers.L`` (:func:`module_path`); :func:`parse_layer` reads
either, or a bare int, back to ``L``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["LAYER_PATHS", "hook_name", "module_path", "parse_layer", "find_decoder_layers"]

#: Candidate attribute paths of the decoder-layer list, most specific first.
LAYER_PATHS = ("model.language_model.layers", "model.layers", "language_model.layers", "layers")
_TL_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


def _get_attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def find_decoder_layers(model: Any) -> tuple[str, Any]:
    """Return ``(path, layers)`` for Gemma 3/4 causal LMs and the multimodal ``model.language_model`` layout."""
    from torch import nn

    for path in LAYER_PATHS:
        try:
            layers = _get_attr_path(model, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise ValueError(
        f"Could not find decoder layers in {type(model).__name__} (looked for {', '.join(LAYER_PATHS)}). "
        "Pass a Gemma-family causal LM checkpoint."
    )


def parse_layer(hook: int | str, n_layers: int | None = None, layers_path: str | None = None) -> int:
    """The decoder layer a hook names: ``12``, ``"12"``, ``"blocks.12.hook_resid_post"`` or an HF module path
    ``"model.layers.12"`` (under ``layers_path``; None: any known Gemma layout). With ``n_layers`` the layer is also
    range-checked; without it (no model at hand) only its form is."""
    if isinstance(hook, bool):
        raise TypeError("layer must be an int or a hook name")
    paths = (layers_path,) if layers_path else LAYER_PATHS
    if isinstance(hook, int):
        layer = hook
    else:
        s = str(hook).strip()
        hf = "|".join(re.escape(p) for p in paths)
        m = _TL_RESID.match(s) or re.fullmatch(r"(\d+)", s) or re.fullmatch(rf"(?:{hf})\.(\d+)", s)
        if not m:
            bound = f" with 0 <= L < {n_layers}" if n_layers is not None else ""
            raise ValueError(
                f"Hook name {hook!r} matches no residual-stream module. Use 'blocks.L.hook_resid_post' "
                f"or '{layers_path or 'model.layers'}.L'{bound}."
            )
        layer = int(m.group(1))
    if n_layers is not None and not 0 <= layer < n_layers:
        raise ValueError(f"Layer {layer} is out of range: this model has {n_layers} layers (0..{n_layers - 1}).")
    if layer < 0:
        raise ValueError(f"Layer {layer} is negative: layers count from 0.")
    return layer


def hook_name(layer: int) -> str:
    """The TransformerLens-style name of layer ``layer``'s residual stream: ``blocks.L.hook_resid_post``."""
    return f"blocks.{int(layer)}.hook_resid_post"


def module_path(layers_path: str, layer: int) -> str:
    """The HF module path of decoder layer ``layer`` under ``layers_path`` (``model.layers.L``)."""
    return f"{layers_path}.{int(layer)}"

