"""Named precision presets -> ``from_pretrained`` keyword arguments.

One string in a config line picks how the base model is loaded. ``nf4`` is the seed card's exact setting
(bitsandbytes nf4, double quant, fp16 compute); the other presets are what portability evals compare against.

``nf4-fp32compute`` is an opt-in speed setting, not a protocol: the same nf4 + double-quant weights as ``nf4``, with
the 4-bit matrix multiplies computed in float32 instead of float16. On CPUs without float16 arithmetic (AVX2-only
x86) bitsandbytes' fp16 path is several times slower; the activations differ from ``nf4`` by rounding only (the
measured bound is in docs/models.md and tests/test_precision_fp32compute.py). On CPUs with AVX512-BF16 bitsandbytes
repacks the weights and computes in bf16 whatever the compute dtype; this preset turns that kernel off
(``generic_cpu_kernel``) so its matmuls are fp32 on every CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PRECISIONS", "QUANTIZED", "UNQUANTIZED", "Precision", "get_precision", "from_pretrained_kwargs", "require_bitsandbytes"]


def _torch_dtype(name: str | None) -> Any:
    if name is None:
        return None
    import torch

    return getattr(torch, name)


@dataclass(frozen=True)
class Precision:
    """A named way to load the base model (torch dtypes are held by name, so reading the presets imports no torch)."""

    name: str
    #: torch dtype name of the non-quantized modules (embeddings, norms, per-layer tables); None = the checkpoint's
    #: own dtype, which is what the seed's ``from_pretrained(..., quantization_config=bnb)`` call (no dtype) gave
    dtype_name: str | None
    #: "nf4", "int8" or None
    quant: str | None = None
    #: torch dtype name of the bnb 4-bit compute dtype
    compute_dtype_name: str | None = None
    description: str = ""
    #: keep bitsandbytes on its dequantize + matmul CPU path (no AVX512-BF16 repacked kernel, which computes in bf16
    #: whatever ``compute_dtype`` says), so the compute dtype holds on every CPU
    generic_cpu_kernel: bool = False

    @property
    def quantized(self) -> bool:
        return self.quant is not None

    @property
    def dtype(self) -> Any:
        """``torch.dtype`` of the non-quantized modules (None: the checkpoint's own)."""
        return _torch_dtype(self.dtype_name)

    @property
    def compute_dtype(self) -> Any:
        """``torch.dtype`` of the bnb 4-bit compute (None when not nf4)."""
        return _torch_dtype(self.compute_dtype_name)


_PRESETS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("nf4", None, "nf4", "float16", "bitsandbytes nf4 + double quant, fp16 compute (seed card)"),
        Precision("nf4-bf16", "bfloat16", "nf4", "bfloat16", "bitsandbytes nf4 + double quant, bf16 compute"),
        Precision("int8", None, "int8", None, "bitsandbytes LLM.int8 (fp16 matmuls)"),
        Precision("fp16", "float16", description="unquantized float16"),
        Precision("bf16", "bfloat16", description="unquantized bfloat16"),
        Precision("fp32", "float32", description="unquantized float32"),
        Precision("nf4-fp32compute", None, "nf4", "float32",
                  "nf4 + double quant weights as `nf4`, fp32 compute (fast CPU path; not the seed's fp16-compute protocol)",
                  generic_cpu_kernel=True),
    )
}
PRECISIONS: tuple[str, ...] = tuple(_PRESETS)
#: the presets that need bitsandbytes, and those that do not (named in the missing-dependency messages)
QUANTIZED: tuple[str, ...] = tuple(n for n, p in _PRESETS.items() if p.quantized)
UNQUANTIZED: tuple[str, ...] = tuple(n for n, p in _PRESETS.items() if not p.quantized)


def get_precision(name: str | Precision) -> Precision:
    if isinstance(name, Precision):
        return name
    key = str(name).lower().strip()
    if key not in _PRESETS:
        raise ValueError(f"Unknown precision {name!r}. Valid precisions: {', '.join(PRECISIONS)}.")
    return _PRESETS[key]


def require_bitsandbytes() -> None:
    from gemma4_saelens_ext.errors import MissingDependencyError

    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # an ImportError, or a broken install's own error (a missing CUDA library)
        raise MissingDependencyError(
            f"The quantized precisions ({', '.join(QUANTIZED)}) need bitsandbytes, which did not import ({e}).",
            f"`pip install -U bitsandbytes`, or pick an unquantized precision ({', '.join(UNQUANTIZED)}).",
        ) from e


def from_pretrained_kwargs(name: str | Precision) -> dict[str, Any]:
    """kwargs for ``AutoModelForCausalLM.from_pretrained`` (also valid as SAELens ``model_from_pretrained_kwargs``)."""
    p = get_precision(name)
    kwargs: dict[str, Any] = {"dtype": p.dtype if p.dtype is not None else "auto"}
    if p.quant is not None:
        require_bitsandbytes()
        from transformers import BitsAndBytesConfig

        if p.quant == "nf4":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=p.compute_dtype,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    return kwargs
