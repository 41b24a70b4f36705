"""Make a truncated nf4 Gemma 4 load bit-identical to the full load.

Truncation slices the rows of ``per_layer_model_projection`` (a Linear that bitsandbytes quantizes). The nf4 codes
and per-block absmax of the kept rows are the same either way (rows are whole 64-element blocks), but double quant
subtracts the *mean of all blocks' absmax* before quantizing the absmax to 8 bits (``bitsandbytes.functional.
quantize_4bit``: ``offset = _absmax.mean()``), and that mean changes when rows are dropped. The change is tiny but a
deep stack amplifies it (on the random-init E2B shape, layer 25 differed by 0.5 relative). Here the full weight
(a few MB, read from the source checkpoint) is quantized exactly as the loader quantizes it, and the quantized data
and statistics of the kept rows are sliced out of it, so the truncated model holds the full model's quantization.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["match_full_quantization"]

_KEY = "per_layer_model_projection.weight"


def _source_weight(src: Path) -> torch.Tensor | None:
    from safetensors import safe_open

    for f in sorted(src.glob("*.safetensors")):
        with safe_open(f, framework="pt") as fh:
            for key in fh.keys():
                if key.endswith(_KEY) and not key.startswith(("model.vision", "model.audio")):
                    return fh.get_tensor(key)
    return None


@torch.no_grad()
def match_full_quantization(model: nn.Module, src: Path) -> bool:
    """Replace the truncated model's 4-bit ``per_layer_model_projection`` by the matching rows of the full weight's
    quantization. Returns True when replaced; False (with a log line) when there is nothing to do or the check that
    the 4-bit codes agree fails (then the loaded weight is kept)."""
    import bitsandbytes as bnb

    module = next((m for n, m in model.named_modules() if n.endswith("per_layer_model_projection")), None)
    weight = getattr(module, "weight", None)
    qs = getattr(weight, "quant_state", None)
    if qs is None or qs.state2 is None or getattr(qs, "packing_format_for_cpu", False):
        return False  # not 4-bit, no double quant (nothing differs), or already repacked by a forward
    full = _source_weight(src)
    if full is None or full.shape[0] <= qs.shape[0]:
        return False
    rows, cols = qs.shape
    data_full, qs_full = bnb.functional.quantize_4bit(
        full.to(device=weight.device, dtype=qs.dtype).contiguous(), blocksize=qs.blocksize, compress_statistics=True,
        quant_type=qs.quant_type, quant_storage=weight.quant_storage,
    )  # fmt: skip
    n_elem = rows * cols
    data = data_full.reshape(-1)[: n_elem * 4 // (8 * weight.quant_storage.itemsize)].reshape(-1, 1)
    if not torch.equal(data, weight.data):
        logger.warning("nf4 codes of the truncated %s differ from the full weight's; keeping the loaded quantization",
                       _KEY)  # fmt: skip
        return False
    n_blocks = -(-n_elem // qs.blocksize)
    qs_full.absmax = qs_full.absmax[:n_blocks].clone()
    qs_full.state2.absmax = qs_full.state2.absmax[: -(-n_blocks // qs_full.state2.blocksize)].clone()
    qs_full.shape = torch.Size((rows, cols))
    module.weight = bnb.nn.Params4bit(
        data=data.clone(), requires_grad=False, quant_state=qs_full, blocksize=qs.blocksize, compress_statistics=True,
        quant_type=qs.quant_type, quant_storage=weight.quant_storage, module=module, bnb_quantized=True,
    )  # fmt: skip
    module.quant_state = qs_full
    logger.info("Truncated %s re-quantized with the full weight's double-quant statistics (offset %.6f -> %.6f)",
                _KEY, float(qs.offset), float(qs_full.offset))  # fmt: skip
    return True
