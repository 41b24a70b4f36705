"""Seeded batched sampling on the embedded Gemma 3 270M (fp32): layout independence and the max_new_tokens check."""

from __future__ import annotations

import pytest

from gemma4_saelens_ext.behavior.build import BuildConfig, build_dataset, read_jsonl
from gemma4_saelens_ext.behavior.sampling import (
    check_max_new_tokens,
    generate_completions,
    make_requests,
    required_new_tokens,
)
from gemma4_saelens_ext.behavior.scenarios import load_scenarios

pytestmark = pytest.mark.slow

SCEN = """
family: g
roles:
  a: {name: Slug, keywords: [slug]}
  b: {name: Snail, keywords: [snail]}
setups: [{id: s, text: "You are a {role}.\\n"}]
questions: [{id: q, text: "Who are you?\\nYou answer: '"}]
"""


@pytest.fixture
def scen_dir(tmp_path):
    (tmp_path / "g.yaml").write_text(SCEN)
    return tmp_path


def test_required_tokens_and_too_small(gemma3_fp32):
    kws = [k for p in load_scenarios() for k in (*p.honest_keywords, *p.deceptive_keywords)]
    need = required_new_tokens(gemma3_fp32.tokenizer, kws)
    assert 6 <= need <= 30
    with pytest.raises(ValueError, match=rf"max_new_tokens=2 is too small.*--max-new-tokens {need}"):
        check_max_new_tokens(2, gemma3_fp32.tokenizer, kws)


def test_build_refuses_too_small_max_new_tokens(gemma3_fp32, scen_dir, tmp_path):
    cfg = BuildConfig(out=str(tmp_path / "o"), precision="fp32", scenarios=[str(scen_dir)], max_new_tokens=2, progress=False)
    with pytest.raises(ValueError, match="too small"):
        build_dataset(cfg, model=gemma3_fp32.model, tokenizer=gemma3_fp32.tokenizer)
    assert read_jsonl(tmp_path / "o" / "raw" / "completions.jsonl") == []


def test_sampling_seeded_and_batch_independent(gemma3_fp32):
    ps = load_scenarios(["werewolf"])[:3]
    reqs = make_requests([(p.id, p.text) for p in ps], 2, 11)
    kw = dict(max_new_tokens=8, progress=False)
    a = generate_completions(gemma3_fp32.model, gemma3_fp32.tokenizer, reqs, batch_size=6, **kw)
    b = generate_completions(gemma3_fp32.model, gemma3_fp32.tokenizer, reqs[::-1], batch_size=4, **kw)
    A = {c.key: c.completion for c in a}
    B = {c.key: c.completion for c in b}
    assert A == B  # same seed -> same completions, whatever the batch layout
    reqs2 = make_requests([(p.id, p.text) for p in ps], 2, 12)
    c = generate_completions(gemma3_fp32.model, gemma3_fp32.tokenizer, reqs2, batch_size=6, **kw)
    assert {x.key: x.completion for x in c} != A
    assert all(x.n_new_tokens <= 8 for x in a)


def test_unembedding_gets_a_contiguous_input(gemma3_fp32):
    """generate() hands Gemma 3's unembedding the prompt's last position as a strided view (a slow batched matmul on
    CPU); generate_completions makes it contiguous. (Gemma 4 slices before its KV-shared layers, so its view is
    already contiguous.)"""
    lm = gemma3_fp32
    head = lm.model.get_output_embeddings()
    seen: list[bool] = []
    handle = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].is_contiguous()))
    reqs = make_requests([("a", "The werewolf says: '"), ("b", "You are on team Slug.\nYou answer: '")], 1, 0)
    try:
        generate_completions(lm.model, lm.tokenizer, reqs, max_new_tokens=2, progress=False)
        assert seen and all(seen)
        seen.clear()
        enc = lm.tokenizer(["The werewolf says: '", "The villager says: '"], return_tensors="pt", padding=True)
        lm.model.generate(**enc, max_new_tokens=1, do_sample=False)  # without the fix (a view of 2 rows)
        assert seen == [False]
    finally:
        handle.remove()
