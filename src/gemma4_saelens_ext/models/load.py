"""Load a Gemma-family causal LM at a named precision, find its decoder layers, and check a layer / SAE width
against a checkpoint before anything loads.

Sources: an embedded name (see :mod:`gemma4_saelens_ext.models.embedded`), a local folder, or a Hub id (found and read by
:mod:`gemma4_saelens_ext.models.checkpoint_config`). A multimodal Gemma 4 checkpoint is loaded text-only and a hooked layer
L loads only layers ``0..L``, through derived checkpoints (:mod:`gemma4_saelens_ext.models.derived`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gemma4_saelens_ext.errors import check_device
from gemma4_saelens_ext.models.checkpoint_config import (
    CheckpointShape,
    check_causal_lm,
    checkpoint_shape,
    is_multimodal,
    read_config,
    resolve_source,
    text_config,
)
from gemma4_saelens_ext.models.derived import checkpoint_to_load, kept_layer_count
from gemma4_saelens_ext.models.embedded import build_cached
from gemma4_saelens_ext.models.layers import find_decoder_layers, module_path, parse_layer
from gemma4_saelens_ext.models.placement import default_lookups_on_cpu, lookup_device_map, meta_model, run_lookups_on_cpu
from gemma4_saelens_ext.models.pool import LoadKey, active_pool
from gemma4_saelens_ext.models.precision import from_pretrained_kwargs, get_precision
from gemma4_saelens_ext.models.quantized_cache import quantized_path, save_quantized

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_model", "prepare_checkpoint", "check_checkpoint"]


def check_checkpoint(
    source: str | Path,
    *,
    layer: int | str | None = None,
    d_in: int | None = None,
    layer_field: str = "layer",
    d_in_field: str = "d_in",
    layer_fix: str | None = None,
    d_in_fix: str | None = None,
) -> CheckpointShape | None:
    """Check a layer and an SAE width against ``source``'s config before any weights load or download.

    The early check of the training, eval and demo commands (the same mistakes are caught again after the load).
    Raises ValueError naming ``layer_field`` / ``d_in_field`` and the fix (``layer_fix`` / ``d_in_fix``; default:
    set the field to a layer in range / to the hidden size). Returns the shape read, or None when no config can be
    read without loading (logged).
    """
    shape = checkpoint_shape(source)
    if shape is None:
        return None
    if layer is not None:
        try:
            parse_layer(layer, shape.n_layers)
        except ValueError as e:
            fix = layer_fix or f"set {layer_field} to a layer in 0..{shape.n_layers - 1}"
            raise ValueError(f"{layer_field}={layer!r}: {e} Read from {shape.origin}; {fix}.") from None
    if d_in is not None and int(d_in) != shape.d_model:
        raise ValueError(
            f"{d_in_field}={d_in} does not match the model's hidden size {shape.d_model} ({source}, read from "
            f"{shape.origin}); {d_in_fix or f'set {d_in_field}: {shape.d_model}'}."
        )
    return shape


@dataclass
class LoadedModel:
    """A loaded causal LM plus what the activation code needs to know about it."""

    model: nn.Module
    tokenizer: Any
    source: str
    precision: str
    layers_path: str
    layers: nn.ModuleList = field(repr=False)
    #: layer count of the original checkpoint (a truncated load keeps fewer modules)
    n_layers: int
    d_model: int
    truncated_after: int | None = None

    @property
    def device(self) -> torch.device:
        """Device of the decoder layers (inputs go there; the lookup tables may stay on the CPU)."""
        return next(self.layers.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the residual stream (the embedding's dtype)."""
        return self.model.get_input_embeddings().weight.dtype

    def resolve_layer(self, hook: int | str) -> int:
        layer = parse_layer(hook, self.n_layers, self.layers_path)
        if self.truncated_after is not None and layer > self.truncated_after:
            raise ValueError(
                f"Layer {layer} was dropped: this model was loaded truncated after layer {self.truncated_after}. "
                f"Load it with truncate_after_layer >= {layer} (or None)."
            )
        return layer

    def module_path(self, layer: int | str) -> str:
        """HF module path of the layer (``model.layers.L``); its output is the residual stream after the block."""
        return module_path(self.layers_path, self.resolve_layer(layer))


# ------------------------------------------------------------------------------------------------------ planning
def _plan(cfg: dict[str, Any], truncate_after_layer: int | str | None, text_only: bool) -> tuple[int | None, int | None]:
    """(hooked layer, layers to keep; None = all) for a load."""
    if truncate_after_layer is None:
        return None, None
    text_cfg = text_config(cfg)
    n_layers = int(text_cfg["num_hidden_layers"])
    layers_path = "model.language_model.layers" if is_multimodal(cfg) and not text_only else "model.layers"
    layer = parse_layer(truncate_after_layer, n_layers, layers_path)
    keep = kept_layer_count(text_cfg, layer)
    return layer, (keep if keep < n_layers else None)


def _generic_4bit_cpu_kernel(model: nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers off the AVX512-BF16 repacked CPU kernel (it casts to bf16 whatever the compute
    dtype), so they dequantize and multiply in their compute dtype (``Precision.generic_cpu_kernel``)."""
    import bitsandbytes as bnb

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


def prepare_checkpoint(source: str | Path, truncate_after_layer: int | str | None = None, text_only: bool = True) -> Path:
    """Build (once, cached) the derived checkpoint :func:`load_model` would load, without loading it: e.g. ahead of
    a timed or memory-measured run. Returns the folder."""
    path = resolve_source(source)
    cfg = read_config(path)
    check_causal_lm(cfg, path)
    return checkpoint_to_load(path, cfg, _plan(cfg, truncate_after_layer, text_only)[1], text_only)


# ---------------------------------------------------------------------------------------------------------- loading
def load_model(
    source: str | Path = "gemma-3-270m",
    precision: str = "nf4",
    *,
    truncate_after_layer: int | str | None = None,
    text_only: bool = True,
    device: str | torch.device = "cpu",
    lookups_on_cpu: bool | None = None,
    keep_in_pool: bool = True,
) -> LoadedModel:
    """Load a Gemma-family causal LM at a named precision.

    ``truncate_after_layer=L`` keeps only what layer L's residual stream needs (see module docstring).
    ``text_only`` loads a multimodal Gemma 4 checkpoint as ``Gemma4ForCausalLM``.
    ``lookups_on_cpu`` keeps the embedding tables (and the tied unembedding) on the CPU, memory-mapped, and moves
    only looked-up rows to ``device`` (:mod:`gemma4_saelens_ext.models.placement`); default: on when a layer is hooked
    (``truncate_after_layer``) and ``device`` is an accelerator.
    Errors (unknown precision, bad layer, non-causal-LM checkpoint, missing files) are raised before any weights load.
    Inside :func:`gemma4_saelens_ext.models.pool.model_pool` a loaded model that serves this request is returned
    instead of loading again (a full load serves a truncated request); a new load joins the pool unless
    ``keep_in_pool=False`` (a model used once).
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    check_device(device)  # cuda on a machine without CUDA: said here, not as an assertion deep in torch
    prec = get_precision(precision)
    kwargs = from_pretrained_kwargs(prec)
    path = resolve_source(source)
    cfg = read_config(path)
    check_causal_lm(cfg, path)
    text_cfg = text_config(cfg)
    n_layers = int(text_cfg["num_hidden_layers"])
    d_model = int(text_cfg["hidden_size"])
    multimodal = is_multimodal(cfg)

    layer, keep = _plan(cfg, truncate_after_layer, text_only)
    load_path = checkpoint_to_load(path, cfg, keep, text_only)

    load_multimodal = multimodal and not text_only
    auto = AutoModelForImageTextToText if load_multimodal else AutoModelForCausalLM
    if lookups_on_cpu is None:
        lookups_on_cpu = default_lookups_on_cpu(device, layer)
    pool = active_pool()
    pool_key = LoadKey(str(path), prec.name, str(torch.device(device)), bool(text_only), bool(lookups_on_cpu))
    if pool is not None and (hit := pool.find(pool_key, layer)) is not None:
        logger.info("Reusing the loaded %s at %s (one load per precision in this run)", source, prec.name)
        return hit
    device_map: dict[str, str] | None = None
    if lookups_on_cpu:
        from transformers import AutoConfig

        device_map = lookup_device_map(meta_model(AutoConfig.from_pretrained(str(load_path)), load_multimodal), device)
        if "quantization_config" in kwargs and torch.device(device).type != "cpu":
            # bitsandbytes refuses a device_map with "cpu" entries unless told they stay unquantized (the tables are
            # never quantized anyway)
            kwargs["quantization_config"].llm_int8_enable_fp32_cpu_offload = True
    elif prec.quantized:
        device_map = {"": str(device)}
    # truncated nf4 on the CPU: the quantized layers are cached after the first load (see quantized_cache)
    on_cpu = torch.device(device).type == "cpu"
    qcache = quantized_path(load_path, prec.name) if keep is not None and prec.quant == "nf4" and on_cpu else None
    dm = {"device_map": device_map} if device_map else {}
    if qcache is not None and (qcache / ".complete").exists():
        logger.info("Loading %s at %s from its quantized cache %s", source, prec.name, qcache)
        model = auto.from_pretrained(str(qcache), dtype=kwargs["dtype"], **dm)
    else:
        logger.info("Loading %s at %s from %s", source, prec.name, load_path)
        model = auto.from_pretrained(str(load_path), **kwargs, **dm)
        if device_map is None:
            model.to(device)
        if keep is not None and prec.quant == "nf4":
            from gemma4_saelens_ext.models.requantize import match_full_quantization

            match_full_quantization(model, path)  # the full load's double-quant statistics: bit-identical activations
        if qcache is not None:
            build_cached(qcache, lambda out: save_quantized(model, out, load_path))
    if lookups_on_cpu:
        run_lookups_on_cpu(model, device_map)
    if prec.generic_cpu_kernel:
        _generic_4bit_cpu_kernel(model)
    model.eval()
    model.requires_grad_(False)
    tokenizer = pool.tokenizers.get(pool_key.source) if pool is not None else None
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(load_path))
    layers_path, layers = find_decoder_layers(model)
    lm = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=str(source),
        precision=prec.name,
        layers_path=layers_path,
        layers=layers,
        n_layers=n_layers,
        d_model=d_model,
        truncated_after=layer if keep is not None else None,
    )
    if pool is not None:
        pool.record(pool_key, lm.truncated_after, lm, keep_in_pool)
    return lm
