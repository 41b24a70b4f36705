"""One extraction pass per row set gives the numbers the separate passes gave (issue 18): on the embedded Gemma 3
270M at fp32 and nf4, against separate ``activations()`` calls (pooled raw, per-token latents pooled, the pooled
residual encoded, every-token activations of a row subset run as its own batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gemma4_saelens_ext.activations.source import activations
from gemma4_saelens_ext.evals.data import scripted_rows
from gemma4_saelens_ext.evals.extraction import Encoder, extract
from gemma4_saelens_ext.evals.groups import sample_groups
from gemma4_saelens_ext.evals.reconstruction import reconstruction_metrics
from gemma4_saelens_ext.evals.saeio import encode_decode

LAYER, BATCH, MAXLEN = 6, 4, 64
#: one pass vs a separate pass of the subset, every-token activations and the reconstruction metrics on them
#: (ev_rel: |delta EV| / |1 - EV|, i.e. the relative change of the unexplained share)
TOL = {"fp32": {"token": 1e-5, "ev_rel": 1e-5, "mse_rel": 1e-5, "l0": 1e-9},
       "nf4": {"token": 2e-2, "ev_rel": 1e-3, "mse_rel": 1e-3, "l0": 0.25}}


def _rows(n=12, per_group=2):
    """``n`` scripted rows, ``per_group`` of each prompt group (texts of several lengths)."""
    rows, seen = [], {}
    split = scripted_rows(["slug_snail", "werewolf"], seed=0)
    for r in split["train"] + split["eval"]:
        if seen.get(r["group"], 0) < per_group and len(rows) < n:
            seen[r["group"]] = seen.get(r["group"], 0) + 1
            rows.append(r)
    return rows


def _saes(d_in):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    topk = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=128, k=8))
    jump = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=96))
    with torch.no_grad():
        for sae in (topk, jump):
            for p in sae.parameters():
                p.copy_(torch.randn_like(p) * 0.05)
        jump.threshold.fill_(0.5)
    return [Encoder("topk", topk, "tokens"), Encoder("jumprelu", jump, "tokens"),
            Encoder("topk pooled", topk, "pooled")]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "nf4"])
def test_one_pass_equals_separate_passes(precision, request):
    lm = request.getfixturevalue(f"gemma3_{precision}")
    rows = _rows()
    texts, starts = [r["text"] for r in rows], [int(r["completion_start"]) for r in rows]
    encoders = _saes(lm.d_model)
    sub = sample_groups([r["group"] for r in rows], 6, seed=0)  # reconstruction's sample: whole groups
    assert 0 < len(sub) < len(rows)
    ra = extract(lm, texts, LAYER, completion_start=starts, pooling="mean", encoders=encoders, keep_tokens=sub,
                 batch_size=BATCH, max_length=MAXLEN)
    kw = dict(completion_start=starts, batch_size=BATCH, max_length=MAXLEN)
    # the separate passes the suite made before: pooled raw, then once per SAE (token_fn), then the pooled residual
    pooled = activations(lm, texts, LAYER, pooling="mean", **kw).numpy().astype(np.float32)
    np.testing.assert_array_equal(ra.pooled, pooled)  # bit for bit
    for e in encoders:
        if e.unit == "tokens":
            ref = activations(lm, texts, LAYER, pooling="mean", token_fn=lambda t, s=e.sae: torch.as_tensor(
                encode_decode(s, t)[0]), **kw).numpy().astype(np.float32)
        else:
            ref = encode_decode(e.sae, pooled)[0]
        np.testing.assert_array_equal(ra.latents[e.name], ref, err_msg=e.name)
    assert ra.latents["topk"].shape == (len(rows), 128) and (ra.latents["topk"] != 0).any()
    # every-token activations of the subset, run before as their own (differently padded) batches
    sep = activations(lm, [texts[i] for i in sub], LAYER, pooling="none", batch_size=BATCH, max_length=MAXLEN)
    tok_ref = np.concatenate([t[1:].numpy() for t in sep]).astype(np.float32)
    tok = ra.token_matrix(sub)
    assert tok.shape == tok_ref.shape
    # stated tolerance: the same token's residual computed in another (differently padded) batch differs by float
    # rounding only. fp32: relative error per token <= 1e-5 (measured 9e-7). nf4 computes in fp16, so padding
    # changes the rounding of its accumulations: <= 2e-2 per token (measured 6e-3); EV and MSE then move by ~1e-4
    # of the unexplained share (measured 1.3e-4 and 2e-5), L0 by < 0.01 (TOL).
    rel = np.linalg.norm(tok - tok_ref, axis=1) / np.linalg.norm(tok_ref, axis=1)
    tol = TOL[precision]
    assert rel.max() <= tol["token"], rel.max()
    for e in encoders[:2]:
        a = reconstruction_metrics(tok, encode_decode(e.sae, tok)[1], encode_decode(e.sae, tok)[0])
        b = reconstruction_metrics(tok_ref, encode_decode(e.sae, tok_ref)[1], encode_decode(e.sae, tok_ref)[0])
        ev_a, ev_b = a["explained_variance"], b["explained_variance"]
        assert abs(ev_a - ev_b) <= tol["ev_rel"] * abs(1 - ev_b)
        assert abs(a["mse"] - b["mse"]) <= tol["mse_rel"] * b["mse"] and abs(a["l0"] - b["l0"]) <= tol["l0"]
    assert ra.nbytes()["tokens"] == tok.nbytes and ra.nbytes()["token_rows"] == len(sub)
    with pytest.raises(ValueError, match="were not kept"):
        ra.token_matrix([i for i in range(len(rows)) if i not in set(sub.tolist())][:1])
