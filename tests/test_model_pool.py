"""One model load per precision in a run: inside ``model_pool`` a loaded model serves every later request it can
(a full load serves truncated ones); portability loads each other precision once and lets it go; outside a pool
every call loads (real loads of the random tiny Gemma 4, counted by the pool)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEXTS
from gemma4_saelens_ext.activations.source import activations
from gemma4_saelens_ext.models.load import load_model
from gemma4_saelens_ext.models.pool import active_pool, model_pool

TINY = "gemma-4-tiny"


def test_pool_serves_each_precision_once():
    with model_pool() as pool:
        full = load_model(TINY, "fp32")
        assert load_model(TINY, "fp32", truncate_after_layer=2) is full  # a full load serves a truncated request
        assert load_model(TINY, "fp32", truncate_after_layer="blocks.3.hook_resid_post") is full
        trunc = load_model(TINY, "bf16", truncate_after_layer=3)
        assert trunc.truncated_after == 3
        assert load_model(TINY, "bf16", truncate_after_layer=1) is trunc  # layers <= 3 are there
        assert load_model(TINY, "bf16", truncate_after_layer=4) is not trunc  # layer 4 was dropped
        once = load_model(TINY, "fp16", truncate_after_layer=2, keep_in_pool=False)
        assert load_model(TINY, "fp16", truncate_after_layer=2) is not once  # not kept: loads again
        assert [pool.load_count(p) for p in ("fp32", "bf16", "fp16")] == [1, 2, 2]
        # one tokenizer per checkpoint, whatever the precision (parsed once; the same ids as a fresh parse)
        assert trunc.tokenizer is full.tokenizer and once.tokenizer is full.tokenizer
        # the shared full model gives the truncated load's activations exactly
        a = activations(full, TEXTS, 2, pooling="none")
    assert active_pool() is None and pool.entries == []  # closed: models let go
    b = activations(load_model(TINY, "fp32", truncate_after_layer=2), TEXTS, 2, pooling="none")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    fresh = load_model(TINY, "fp32")
    assert fresh is not full and fresh.tokenizer is not full.tokenizer  # outside a pool every call loads
    assert fresh.tokenizer(TEXTS)["input_ids"] == full.tokenizer(TEXTS)["input_ids"]


@pytest.mark.slow
def test_portability_loads_each_other_precision_once():
    from sae_lens import TopKSAE, TopKSAEConfig

    from gemma4_saelens_ext.evals.portability import run_portability

    torch.manual_seed(0)
    with model_pool() as pool:
        lm = load_model(TINY, "fp32")  # the run's model, as the suite holds it
        sae = TopKSAE(TopKSAEConfig(d_in=lm.d_model, d_sae=4 * lm.d_model, k=4))
        res = run_portability(sae, TEXTS, model_source=TINY, layer=2, precisions=["fp32", "bf16", "fp16"],
                              training_precision="fp32")
        assert [r["precision"] for r in res["rows"]] == ["fp32", "bf16", "fp16"]
        assert all(np.isfinite(r["explained_variance"]) for r in res["rows"])
        assert [pool.load_count(p) for p in ("fp32", "bf16", "fp16")] == [1, 1, 1]  # fp32 reused from the run
        assert [lm_ is lm for _k, _t, lm_ in pool.entries] == [True]  # the others were let go after use
