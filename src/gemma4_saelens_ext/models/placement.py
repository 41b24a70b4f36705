"""Where a loaded model's modules live: the token lookups on the CPU, everything else on the accelerator.

Gemma 4's two embedding tables are lookups (a few rows per token) and are never quantized by bitsandbytes; in E2B
they hold 2.75B of the 4.63B parameters (5.5 GB in bf16) while the nf4 decoder layers take about 1 GB. Keeping them
on the CPU, memory-mapped from the safetensors file (transformers maps CPU tensors whose dtype matches the file's),
and sending only the looked-up rows to the device makes layer-25 extraction fit a small GPU.

The placement is a ``device_map`` for ``from_pretrained`` (:func:`lookup_device_map`): the tables (and the tied
unembedding, which extraction never runs) on ``"cpu"``, every other child of the text model on the device. One
correction is needed afterwards (:func:`run_lookups_on_cpu`): accelerate reads a ``"cpu"`` entry next to an
accelerator as *CPU offload*: it keeps the weights on the CPU but executes the module on the accelerator, copying
the whole table there at every forward (accelerate ``dispatch_model``: ``execution_device`` = main device for
``"cpu"`` modules). So for those modules the offload hook is removed (``remove_hook_from_module`` puts the weights
back on the CPU) and replaced by accelerate's own ``AlignDevicesHook(execution_device="cpu", io_same_device=True)``:
the ids go to the CPU, the lookup runs there, and only the ``[batch, seq, width]`` rows come back to the device.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["LOOKUP_MODULES", "lookup_device_map", "run_lookups_on_cpu", "default_lookups_on_cpu", "meta_model"]

#: children of the text model that are table lookups
LOOKUP_MODULES = ("embed_tokens", "embed_tokens_per_layer")


def default_lookups_on_cpu(device: str | torch.device, hooked_layer: int | None) -> bool:
    """On by default when a layer is hooked (extraction / training) and the device is an accelerator."""
    return hooked_layer is not None and torch.device(device).type != "cpu"


def meta_model(config: Any, multimodal: bool) -> nn.Module:
    """The model for ``config`` on the meta device (no memory, no weights): module names, shapes and counts."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def _text_model_path(model: nn.Module) -> str:
    from gemma4_saelens_ext.models.layers import find_decoder_layers

    layers_path, _ = find_decoder_layers(model)
    return layers_path.rsplit(".", 1)[0]


def lookup_device_map(model: nn.Module, device: str | torch.device) -> dict[str, str]:
    """``device_map`` putting the lookup tables and the unembedding on ``"cpu"`` and every other module on ``device``.

    ``model`` is any instance with the target layout (a :func:`meta_model` costs nothing). Keys are the children of
    the text model and the siblings of each of its ancestors, so the map covers every parameter exactly once.
    """
    dev = str(torch.device(device))
    text_path = _text_model_path(model)
    out: dict[str, str] = {}
    parts = text_path.split(".")
    for depth in range(len(parts)):
        parent = ".".join(parts[:depth])
        mod = model.get_submodule(parent) if parent else model
        for name, _child in mod.named_children():
            full = f"{parent}.{name}" if parent else name
            if name == parts[depth]:
                continue
            out[full] = "cpu" if name == "lm_head" else dev
    text = model.get_submodule(text_path)
    for name, _child in text.named_children():
        out[f"{text_path}.{name}"] = "cpu" if name in LOOKUP_MODULES else dev
    return out


def run_lookups_on_cpu(model: nn.Module, device_map: dict[str, str]) -> list[str]:
    """Make every ``"cpu"`` module of ``device_map`` execute on the CPU and return its output on the caller's device
    (see the module docstring for why accelerate's offload hook is replaced). Returns the modules changed."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module

    changed = []
    for name, where in device_map.items():
        if where != "cpu":
            continue
        module = model.get_submodule(name)
        if hasattr(module, "_hf_hook"):
            remove_hook_from_module(module)  # offload hook: detach puts the weights back on their CPU tensors
        module.to("cpu")  # buffers the offload hook placed on the device (parameters are CPU already: no copy)
        add_hook_to_module(module, AlignDevicesHook(execution_device="cpu", io_same_device=True))
        changed.append(name)
    logger.info("Lookups on the CPU (only looked-up rows move to the device): %s", ", ".join(changed))
    return changed
