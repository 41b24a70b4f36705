"""Batched steering: every direction and alpha of a prompt in one batch, the prompt computed once up to the hooked
layer and branched there, gives the completions of one ``generate_completions`` call per direction and alpha (the
previous design) at the same seeds; and it does not depend on how the rows are split into calls."""

from __future__ import annotations

import pytest
import torch

from gemma4_saelens_ext.activations.source import steering_hook
from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests
from gemma4_saelens_ext.evals.steering import random_directions, steered_completions

pytestmark = pytest.mark.slow

ROWS = [{"prompt": "You are playing Werewolf. You are a villager. Another player asks you: 'Are you a werewolf?' "
                   "You answer: '", "prompt_id": "w"},
        {"prompt": "You are on team Slug.\nYou answer: '", "prompt_id": "s"}]


def one_call_per_direction(lm, layer, dirs, rows, *, scale, alphas, seed, max_new_tokens):
    """The reference: generate_completions per (direction, alpha), steered by steering_hook (no hook at alpha 0).
    One prompt per call: a shorter prompt left-padded beside a longer one gets rounding-level different logits (the
    sampler's documented caveat; with bnb's bf16 CPU kernels such a difference can flip a draw), which would test
    the padding, not the branching."""
    reqs = make_requests([(f"{i}:{r['prompt_id']}", r["prompt"]) for i, r in enumerate(rows)], 1, seed)
    out = {}
    for name, u in dirs.items():
        out[name] = []
        for a in alphas:
            with steering_hook(lm, layer, torch.as_tensor(u, dtype=torch.float32) * scale, a):
                comps = generate_completions(lm.model, lm.tokenizer, reqs, max_new_tokens=max_new_tokens,
                                             batch_size=1, progress=False)
            by_key = {c.key: c.completion for c in comps}
            out[name].append([by_key[r.key] for r in reqs])
    return out


def _check(lm, layer, scale, alphas=(-1.0, 0.0, 1.0), max_new_tokens=5):
    dirs = {f"random {i}": v for i, v in enumerate(random_directions(lm.d_model, 2, 5))}
    kw = dict(scale=scale, alphas=list(alphas), seed=3, max_new_tokens=max_new_tokens)
    batched = steered_completions(lm, layer, dirs, ROWS, **kw)
    assert batched == one_call_per_direction(lm, layer, dirs, ROWS, **kw)
    assert steered_completions(lm, layer, dirs, ROWS, max_rows=2, **kw) == batched  # rows split over calls
    # not vacuous: the pushes change the text
    assert any(batched[k][0] != batched[k][-1] for k in dirs)


def test_batched_steering_gemma3(gemma3_fp32):
    """fp32: the same tokens. (At nf4 on a CPU with AVX512-BF16, bitsandbytes computes in bf16 with rounding that
    depends on the batch shape, so a draw on a near-tie can flip between batch layouts; the next test bounds that.)"""
    _check(gemma3_fp32, 6, scale=200.0, alphas=(0.0, 1.0))


def test_branched_prefill_matches_each_row_alone_nf4(gemma3_nf4):
    """The prompt run once to layer 6 and branched there, then one step per row, against each row's own forward:
    the next-token logits agree to bf16 rounding."""
    from gemma4_saelens_ext.activations.source import branched_prefill, steering_rows_hook

    lm = gemma3_nf4
    ids = lm.tokenizer(ROWS[0]["prompt"], return_tensors="pt")["input_ids"]
    deltas = torch.as_tensor(random_directions(lm.d_model, 3, 1), dtype=torch.float32) * 100.0
    deltas[1] = 0.0
    with torch.no_grad(), steering_rows_hook(lm, 6, deltas):
        cache = branched_prefill(lm, 6, ids[:, :-1], 3)
        out = lm.model(input_ids=ids[:, -1:].expand(3, 1), cache=cache, attention_mask=torch.ones(3, ids.shape[1],
                       dtype=torch.long)).logits[:, -1].float()  # fmt: skip
    for r in range(3):
        with torch.no_grad(), steering_rows_hook(lm, 6, deltas[r : r + 1]):
            ref = lm.model(input_ids=ids).logits[0, -1].float()
        assert float((out[r] - ref).norm() / ref.norm()) < 2e-2
        assert int(out[r].argmax()) == int(ref.argmax())


@pytest.mark.parametrize("layer", [1, 4], ids=["before-kv-sharing", "among-kv-shared-layers"])
def test_batched_steering_gemma4_kv_sharing(gemma4_tiny, layer):
    """Gemma 4's last layers reuse an earlier layer's keys and values; branching before or among them."""
    assert gemma4_tiny.model.config.num_kv_shared_layers > 0
    _check(gemma4_tiny, layer, scale=100.0, max_new_tokens=5)
