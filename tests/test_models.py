"""Loading at every precision, truncated/text-only checkpoints, Gemma 4 layouts, and the errors users hit."""

import json
import shutil

import pytest
import torch

from conftest import ROLEPLAY, TEXTS
from gemma4_saelens_ext.models.embedded import embedded_model_path
from gemma4_saelens_ext.models.load import load_model
from gemma4_saelens_ext.models.layers import parse_layer
from gemma4_saelens_ext.activations.source import activations


def _rel_err(acts, ref):
    # BOS (position 0) is excluded: its residual is ~1e5 and would hide the error on real tokens
    num = sum(((a - r)[1:] ** 2).sum() for a, r in zip(acts, ref))
    den = sum((r[1:] ** 2).sum() for r in ref)
    return float((num / den).sqrt())


def test_gemma3_270m_is_real_pretrained(gemma3_fp32):
    assert type(gemma3_fp32.model).__name__ == "Gemma3ForCausalLM"
    assert (gemma3_fp32.n_layers, gemma3_fp32.d_model) == (18, 640)
    tok = gemma3_fp32.tokenizer
    enc = tok(ROLEPLAY, return_tensors="pt")
    assert enc.input_ids[0, 0] == tok.bos_token_id  # Gemma: BOS prepended by the tokenizer
    out = gemma3_fp32.model.generate(**enc, max_new_tokens=10, do_sample=False)
    answer = tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert sum(c.isalpha() for c in answer) >= 5, answer
    # what random weights cannot do: predict plain English far better than chance (chance cross-entropy over a
    # 262k vocabulary is ln(262144) = 12.5 nats; a random-init model sits near it)
    text = tok("The sun rises in the east and sets in the west. Water boils at one hundred degrees.", return_tensors="pt")
    with torch.no_grad():
        loss = gemma3_fp32.model(**text, labels=text.input_ids).loss.item()
    assert loss < 5.0, loss
    print(f"pretrained Gemma 3 270M cross-entropy on plain English: {loss:.2f} nats")


@pytest.mark.parametrize("precision,max_rel", [("nf4", 0.35), ("int8", 0.10), ("bf16", 0.03)])
def test_quantized_activations_close_to_fp32(gemma3_fp32, gemma3_nf4, precision, max_rel):
    ref = activations(gemma3_fp32, TEXTS, 12)
    lm = gemma3_nf4 if precision == "nf4" else load_model("gemma-3-270m", precision)
    acts = activations(lm, TEXTS, 12)
    err = _rel_err(acts, ref)
    print(f"{precision}: layer-12 relative error vs fp32 = {err:.4f}")
    assert 0 < err < max_rel
    if precision == "nf4":
        assert lm.model.is_loaded_in_4bit
        enc = lm.tokenizer(ROLEPLAY, return_tensors="pt")
        out = lm.model.generate(**enc, max_new_tokens=10, do_sample=False)
        answer = lm.tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
        assert sum(c.isalpha() for c in answer) >= 5, answer


@pytest.mark.slow  # loads the embedded model
def test_fp16_overflow_is_reported(caplog):
    lm = load_model("gemma-3-270m", "fp16")
    with caplog.at_level("WARNING"):
        activations(lm, TEXTS[:1], 12)
    assert "Non-finite" in caplog.text and "fp16" in caplog.text


@pytest.mark.parametrize("precision", ["fp32", "nf4"])
def test_early_stop_and_truncation_are_exact_gemma3(gemma3_fp32, gemma3_nf4, precision):
    full = gemma3_fp32 if precision == "fp32" else gemma3_nf4
    stopped = activations(full, TEXTS, 6)
    unstopped = activations(full, TEXTS, 6, stop_at_layer=False)
    trunc = load_model("gemma-3-270m", precision, truncate_after_layer=6)
    assert len(trunc.layers) == 7 and trunc.n_layers == 18
    truncated = activations(trunc, TEXTS, 6)
    for a, b, c in zip(stopped, unstopped, truncated):
        assert torch.equal(a, b)
        assert torch.equal(a, c)
    with pytest.raises(ValueError, match="truncated after layer 6"):
        trunc.resolve_layer(7)


@pytest.mark.parametrize("source", ["gemma-4-tiny", "gemma-4-e2b-mini"])
def test_gemma4_per_layer_inputs_shared_kv_and_truncation(source):
    lm = load_model(source, "fp32")
    inner = lm.model.model
    cfg = lm.model.config
    assert cfg.hidden_size_per_layer_input > 0 and cfg.num_kv_shared_layers > 0
    assert inner.embed_tokens_per_layer.weight.shape[1] == cfg.num_hidden_layers * cfg.hidden_size_per_layer_input
    assert any(layer.self_attn.is_kv_shared_layer for layer in lm.layers)
    if source == "gemma-4-e2b-mini":
        assert lm.d_model == 1536
    # per-layer inputs really feed the layers: zeroing the PLE table changes layer-1 activations
    base = activations(lm, TEXTS, 1)
    saved = inner.embed_tokens_per_layer.weight.clone()
    inner.embed_tokens_per_layer.weight.data.zero_()
    try:
        changed = activations(lm, TEXTS, 1)
    finally:
        inner.embed_tokens_per_layer.weight.data.copy_(saved)
    assert not torch.allclose(base[0], changed[0])
    # truncated after a sliding layer: kept up to the next full-attention layer; PLE table sliced; exact
    trunc = load_model(source, "fp32", truncate_after_layer=0)
    kept = len(trunc.layers)
    assert kept < lm.n_layers
    assert trunc.model.config.layer_types == cfg.layer_types[:kept]
    assert trunc.model.model.embed_tokens_per_layer.weight.shape[1] == kept * cfg.hidden_size_per_layer_input
    for a, b in zip(activations(lm, TEXTS, 0), activations(trunc, TEXTS, 0)):
        assert torch.equal(a, b)


@pytest.mark.slow  # loads Gemma 4 at nf4, full and truncated
def test_gemma4_nf4_truncation_exact():
    """The sliced PLE projection gets the full weight's double-quant statistics (its absmax mean shifts when rows are
    dropped, and deep stacks amplify that): truncated nf4 activations equal the full nf4 load's bit for bit."""
    full = load_model("gemma-4-e2b-mini", "nf4")
    trunc = load_model("gemma-4-e2b-mini", "nf4", truncate_after_layer=2)
    qs = trunc.model.model.per_layer_model_projection.weight.quant_state
    assert qs.shape[0] == len(trunc.layers) * 256 < full.model.model.per_layer_model_projection.weight.quant_state.shape[0]
    for a, b in zip(activations(trunc, TEXTS, 2), activations(full, TEXTS, 2)):
        assert torch.equal(a, b)


def test_gemma4_multimodal_layout_text_only_and_full():
    mm = load_model("gemma-4-tiny-multimodal", "fp32", text_only=False)
    assert type(mm.model).__name__ == "Gemma4ForConditionalGeneration"
    assert mm.layers_path == "model.language_model.layers"
    assert mm.module_path(2) == "model.language_model.layers.2"
    assert mm.resolve_layer("model.language_model.layers.2") == 2
    text = load_model("gemma-4-tiny-multimodal", "fp32", text_only=True)
    assert type(text.model).__name__ == "Gemma4ForCausalLM" and text.layers_path == "model.layers"
    for a, b in zip(activations(mm, TEXTS, 2), activations(text, TEXTS, 2)):
        assert torch.equal(a, b)
    trunc = load_model("gemma-4-tiny-multimodal", "nf4", truncate_after_layer=1)
    assert type(trunc.model).__name__ == "Gemma4ForCausalLM"
    full_nf4 = load_model("gemma-4-tiny-multimodal", "nf4", text_only=True)  # the truncated load changes no value
    torch.testing.assert_close(activations(trunc, TEXTS, 1, pooling="mean"),
                               activations(full_nf4, TEXTS, 1, pooling="mean"), rtol=0, atol=0)


def test_pooling_and_completion_span(gemma4_tiny):
    texts = ["Q: who are you? A: I am a Slug.", "Q: team? A: Snail"]
    starts = [t.index("A:") for t in texts]
    per_tok = activations(gemma4_tiny, texts, 3)
    enc = gemma4_tiny.tokenizer(texts[0], return_offsets_mapping=True)
    span = [i for i, (s, _) in enumerate(enc["offset_mapping"]) if i > 0 and s >= starts[0]]
    mean = activations(gemma4_tiny, texts, 3, pooling="mean", completion_start=starts)
    last = activations(gemma4_tiny, texts, 3, pooling="last")
    mx = activations(gemma4_tiny, texts, 3, pooling="max", batch_size=1)
    torch.testing.assert_close(mean[0], per_tok[0][span].mean(0))
    torch.testing.assert_close(last[1], per_tok[1][-1])
    torch.testing.assert_close(mx[0], per_tok[0][1:].max(0).values)
    # batching with padding does not change results
    single = [activations(gemma4_tiny, [t], 3)[0] for t in texts]
    for a, b in zip(per_tok, single):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_layer_and_hook_errors(gemma4_tiny):
    assert parse_layer("blocks.3.hook_resid_post", 6) == 3
    assert parse_layer("model.layers.3", 6) == 3
    with pytest.raises(ValueError, match="this model has 6 layers"):
        gemma4_tiny.resolve_layer(6)
    with pytest.raises(ValueError, match="matches no residual-stream module"):
        gemma4_tiny.resolve_layer("blocks.3.hook_mlp_out")
    with pytest.raises(ValueError, match="Unknown precision 'int4'"):
        load_model("gemma-4-tiny", "int4")
    with pytest.raises(ValueError, match="this model has 6 layers"):
        load_model("gemma-4-tiny", "fp32", truncate_after_layer=9)


def test_non_causal_lm_and_bad_sources(tmp_path):
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ValueError, match="not a causal language model"):
        load_model(str(bad), "fp32")
    with pytest.raises(ValueError, match="neither an embedded model"):
        load_model(str(tmp_path / "missing" / "x" / "y"), "fp32")


def test_hub_id_offline_from_populated_cache(tmp_path, monkeypatch):
    """The real Hub code path (snapshot_download) resolves from the HF cache with HF_HUB_OFFLINE=1."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="hf download google/gemma-4-E2B"):
        load_model("google/gemma-4-E2B", "nf4")
    repo = tmp_path / "hub" / "models--google--gemma-4-tiny-test"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    shutil.copytree(embedded_model_path("gemma-4-tiny"), snap, ignore=shutil.ignore_patterns(".complete"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    lm = load_model("google/gemma-4-tiny-test", "nf4", truncate_after_layer=1)
    assert lm.source == "google/gemma-4-tiny-test" and lm.model.is_loaded_in_4bit
    # the Hub-cache snapshot is the embedded checkpoint: the same activations as loading that one directly
    ref = load_model("gemma-4-tiny", "nf4", truncate_after_layer=1, keep_in_pool=False)
    torch.testing.assert_close(activations(lm, TEXTS, 1, pooling="last"), activations(ref, TEXTS, 1, pooling="last"),
                               rtol=0, atol=0)


def _mapped_file(t: torch.Tensor) -> str | None:
    """The file a tensor's memory lies in (None: anonymous memory), from /proc/self/maps."""
    ptr = t.data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= ptr < hi:
            return fields[5] if len(fields) > 5 else None
    return None


@pytest.mark.slow  # loads models
def test_lookups_on_cpu_identical_memory_mapped_and_offload_hook_replaced():
    """The lookup placement (device_map with the tables on "cpu") gives the plain load's activations bit for bit, the
    tables stay memory-mapped from the safetensors cache, and accelerate's CPU-offload hook (what dispatch_model puts
    on a "cpu" module next to a GPU: weights moved to the GPU every forward) is replaced by CPU execution."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    from gemma4_saelens_ext.models.placement import run_lookups_on_cpu

    plain = load_model("gemma-4-e2b-mini", "nf4", truncate_after_layer=2, lookups_on_cpu=False)
    lk = load_model("gemma-4-e2b-mini", "nf4", truncate_after_layer=2, lookups_on_cpu=True)
    ref = activations(plain, TEXTS, 2)
    for a, b in zip(ref, activations(lk, TEXTS, 2)):
        assert torch.equal(a, b)
    table = lk.model.model.embed_tokens_per_layer
    assert isinstance(table._hf_hook, AlignDevicesHook) and table._hf_hook.io_same_device
    assert (_mapped_file(table.weight) or "").endswith("model.safetensors")
    assert lk.device.type == "cpu"

    emb = plain.model.model.embed_tokens_per_layer
    add_hook_to_module(emb, AlignDevicesHook(execution_device="cpu", offload=True))
    assert emb.weight.device.type == "meta"  # offloaded: the weight lives in the hook's weights map
    assert run_lookups_on_cpu(plain.model, {"model.embed_tokens_per_layer": "cpu", "model.layers": "cuda:0"}) == [
        "model.embed_tokens_per_layer"
    ]
    assert emb.weight.device.type == "cpu" and not emb._hf_hook.offload
    for a, b in zip(ref, activations(plain, TEXTS, 2)):
        assert torch.equal(a, b)


@pytest.mark.slow  # loads models at nf4
def test_truncated_nf4_cpu_loads_reuse_the_quantized_layers(tmp_path, monkeypatch):
    """The first truncated nf4 CPU load saves its quantized layers; the next load reads them (tables via a symlink to
    the derived checkpoint, not copied) and gives the same activations bit for bit."""
    monkeypatch.setenv("GEMMA4_SAE_CACHE", str(tmp_path))
    first = load_model("gemma-4-e2b-mini", "nf4", truncate_after_layer=2)
    (qcache,) = (tmp_path / "derived").glob("*-L3-nf4")
    assert (qcache / "lookups-model.safetensors").is_symlink()
    assert (qcache / "model-quantized.safetensors").stat().st_size < (qcache / "lookups-model.safetensors").stat().st_size
    second = load_model("gemma-4-e2b-mini", "nf4", truncate_after_layer=2)
    assert second.model.is_loaded_in_4bit and type(second.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    for a, b in zip(activations(first, TEXTS, 2), activations(second, TEXTS, 2)):
        assert torch.equal(a, b)
