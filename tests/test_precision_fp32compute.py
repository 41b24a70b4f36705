"""``nf4-fp32compute`` against the seed's ``nf4`` (fp16 compute): the same nf4 weights, so layer activations agree
to rounding. Measured on the development machine, x86 with AVX512-BF16 (relative L2 error over the non-BOS tokens
of ``conftest.TEXTS``, layer-L residual):

==================  =====================  ==========================  =====================
model, layer        nf4 runs on            fp32compute vs nf4          nf4 vs fp32 (context)
==================  =====================  ==========================  =====================
gemma-3-270m, L6    packed bf16 kernel     3.3e-3 (max token 6.2e-3)   0.10
gemma-3-270m, L6    generic path           4.5e-4 (max token 9.5e-4)   0.10
gemma-4-tiny, L3    packed bf16 kernel     3.6e-2 (max token 1.0e-1)   0.67 (random weights)
gemma-4-tiny, L3    generic path           5.4e-3 (max token 1.6e-2)   0.67
==================  =====================  ==========================  =====================

"packed bf16 kernel": what bitsandbytes runs for ``nf4`` on CPUs with AVX512-BF16 (weights repacked, matmuls in
bf16 whatever the compute dtype); "generic path": its dequantize-then-matmul path, the one CPUs without AVX512-BF16
(AVX2-only x86) run, forced here. ``nf4-fp32compute`` always takes the generic path (fp32 matmuls on every CPU).
The stated tolerance: relative error <= 1e-2 on Gemma 3 270M and <= 0.1 on the random tiny Gemma 4 (whose random
weights amplify rounding), and in every case under 1/10 of what nf4 quantization itself moves the activations.
"""

from __future__ import annotations

import functools

import pytest
import torch

from conftest import TEXTS

pytestmark = pytest.mark.slow

#: (model, layer, tolerance on the relative error vs nf4)
CASES = [("gemma-3-270m", 6, 1e-2), ("gemma-4-tiny", 3, 0.1)]


def _generic(lm) -> list[bool]:
    import bitsandbytes as bnb

    return [not m.support_avx512bf16_for_cpu for m in lm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]


@functools.lru_cache(maxsize=None)
def _acts(source: str, layer: int, precision: str, force_generic: bool = False) -> torch.Tensor:
    from gemma4_saelens_ext.activations.source import activations
    from gemma4_saelens_ext.models.load import load_model

    lm = load_model(source, precision, truncate_after_layer=layer)
    if precision == "nf4-fp32compute":
        assert _generic(lm) and all(_generic(lm))  # fp32 matmuls on every CPU
    if force_generic:  # the dequantize + matmul path that CPUs without AVX512-BF16 take
        import bitsandbytes as bnb

        for m in lm.model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = False
    return torch.cat([t[1:] for t in activations(lm, TEXTS, layer, pooling="none")])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("source,layer,tol", CASES)
@pytest.mark.parametrize("nf4_generic", [False, True], ids=["nf4-bnb-default-path", "nf4-generic-path"])
def test_fp32compute_matches_fp16compute_nf4(source, layer, tol, nf4_generic):
    seed = _acts(source, layer, "nf4", nf4_generic)
    fast = _acts(source, layer, "nf4-fp32compute")
    err = _rel(fast, seed)
    assert torch.isfinite(fast).all()
    assert err <= tol, err
    assert err <= 0.1 * _rel(seed, _acts(source, layer, "fp32")), err
