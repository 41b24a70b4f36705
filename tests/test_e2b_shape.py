"""Gemma 4 E2B at its real shape, on the meta device (no weights, ~seconds): the config, module paths, parameter
counts and layer-25 handling of the loader for ``google/gemma-4-E2B`` (CausalLM and the multimodal wrapper), and the
lookups-on-CPU device map. The 4.63B ``gemma-4-e2b-shape`` checkpoint itself is only built by the benchmark."""

from __future__ import annotations

import pytest
import torch

from gemma4_saelens_ext.models.embedded import e2b_text_config
from gemma4_saelens_ext.models.derived import derived_config, kept_layer_count, rewrite_key
from gemma4_saelens_ext.models.layers import find_decoder_layers, parse_layer
from gemma4_saelens_ext.models.placement import lookup_device_map, meta_model

H, V, PLE, N = 1536, 262144, 256, 35
FULL = [4, 9, 14, 19, 24, 29, 34]


def _independent_layer_count(layers: range) -> int:
    """Decoder-layer parameters from the architecture description alone (not from transformers)."""
    total = 0
    for i in layers:
        hd = 512 if i in FULL else 256
        shared = i >= N - 20  # the last 20 layers reuse earlier layers' K/V: no k/v projections or norms
        total += H * 8 * hd * 2 + hd  # q, o, q_norm
        if not shared:
            total += H * hd * 2 + hd  # k, v (1 KV head), k_norm
        mlp = 12288 if shared else 6144  # double-wide MLP on the KV-shared layers
        total += 3 * H * mlp
        total += 2 * H * PLE  # per-layer input gate and projection
        total += 5 * H + 1  # four block norms + post-per-layer-input norm (H each) ... and the layer scalar
    return total


def _e2b_multimodal_config():
    from transformers import Gemma4Config

    return Gemma4Config(text_config=e2b_text_config().to_dict(), vision_config=None, audio_config=None)


@pytest.fixture(scope="module")
def causal():
    return meta_model(e2b_text_config(), multimodal=False)


def test_config_and_parameter_counts(causal):
    cfg = causal.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (N, H, 8, 1)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == FULL
    assert cfg.sliding_window == 512
    assert [causal.model.layers[i].self_attn.head_dim for i in (0, 4, 25, 29)] == [256, 512, 256, 512]
    assert (cfg.num_kv_shared_layers, cfg.final_logit_softcapping, cfg.tie_word_embeddings) == (20, 30.0, True)
    assert cfg.rope_parameters["full_attention"]["rope_theta"] == 1e6
    assert cfg.rope_parameters["full_attention"]["partial_rotary_factor"] == 0.25
    assert cfg.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    inner = causal.model
    n_layers = sum(p.numel() for p in inner.layers.parameters()) + sum(b.numel() for n, b in inner.layers.named_buffers() if "layer_scalar" in n)
    assert n_layers == _independent_layer_count(range(N))
    assert inner.embed_tokens.weight.numel() == V * H  # 0.40B
    assert inner.embed_tokens_per_layer.weight.shape == (V, N * PLE)  # 2.35B
    total = causal.num_parameters()  # tied lm_head counted once
    print(f"E2B shape: {total / 1e9:.3f}B params, layers {n_layers / 1e9:.3f}B")
    assert abs(total / 1e9 - 4.63) < 0.005 and abs(n_layers / 1e9 - 1.86) < 0.005
    assert causal.lm_head.weight is inner.embed_tokens.weight


@pytest.mark.parametrize("multimodal,text_only", [(False, True), (True, True), (True, False)])
def test_layer25_truncation_matches_the_derived_model(multimodal, text_only):
    """Every kept checkpoint tensor (rewritten as the loader does) has exactly the shape the derived config builds."""
    cfg = _e2b_multimodal_config() if multimodal else e2b_text_config()
    full = meta_model(cfg, multimodal)
    raw = cfg.to_dict()
    text = raw.get("text_config", raw)
    layers_path, layers = find_decoder_layers(full)
    assert layers_path == ("model.language_model.layers" if multimodal else "model.layers") and len(layers) == N
    L = parse_layer("blocks.25.hook_resid_post", N, layers_path)
    assert L == parse_layer(f"{layers_path}.25", N, layers_path) == 25
    keep = kept_layer_count(text, L)
    assert keep == 30  # layer 25 is sliding: kept up to full-attention layer 29, so 25 keeps its attention type

    new_cfg = derived_config(raw, keep, text_only)
    out_multimodal = multimodal and not text_only
    if out_multimodal:
        from transformers import Gemma4Config

        derived_cfg = Gemma4Config(**{k: v for k, v in new_cfg.items() if k != "_derived_from"})
    else:
        from transformers import Gemma4TextConfig

        derived_cfg = Gemma4TextConfig(**{k: v for k, v in new_cfg.items() if k != "_derived_from"})
    derived = meta_model(derived_cfg, out_multimodal)
    d_path, d_layers = find_decoder_layers(derived)
    assert len(d_layers) == keep and d_path == ("model.language_model.layers" if out_multimodal else "model.layers")
    text_model = derived.get_submodule(d_path.rsplit(".", 1)[0])
    assert text_model.config.num_kv_shared_layers == 15 and text_model.first_kv_shared_layer_idx == 15
    assert d_layers[25].self_attn.is_kv_shared_layer and text_model.config.layer_types[25] == "sliding_attention"
    assert d_layers[25].self_attn.head_dim == 256 and d_layers[29].self_attn.head_dim == 512

    expected = {k: tuple(t.shape) for k, t in derived.state_dict().items() if k != "lm_head.weight"}
    got = {}
    for key, t in full.state_dict().items():
        new = rewrite_key(raw, key, keep, text_only)
        if new is None:
            continue
        name, rows, cols = new
        got[name] = tuple(t[:rows, :cols].shape) if cols is not None else tuple(t[:rows].shape)
    assert got == expected
    ple_key = f"{d_path.rsplit('.', 1)[0]}.embed_tokens_per_layer.weight"
    assert got[ple_key] == (V, keep * PLE)


@pytest.mark.parametrize("multimodal", [False, True])
def test_lookup_device_map_covers_every_parameter_once(multimodal):
    model = meta_model(_e2b_multimodal_config() if multimodal else e2b_text_config(), multimodal)
    dm = lookup_device_map(model, "cuda:0")
    text = "model.language_model" if multimodal else "model"
    assert dm[f"{text}.embed_tokens"] == dm[f"{text}.embed_tokens_per_layer"] == dm["lm_head"] == "cpu"
    assert dm[f"{text}.layers"] == dm[f"{text}.per_layer_model_projection"] == "cuda:0"
    on_cpu = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        owners = [k for k in dm if name.startswith(k + ".")]
        assert len(owners) == 1, (name, owners)
        on_cpu += p.numel() if dm[owners[0]] == "cpu" and owners[0] != "lm_head" else 0
    # the two tables: 2.75B of E2B's 4.63B parameters stay off the accelerator
    assert on_cpu == V * H + V * N * PLE


def test_streamed_builder_writes_a_loadable_checkpoint(tmp_path):
    """The writer the 9.3 GB E2B-shape build uses, on a small config with the same structure (shared KV, double-wide
    MLP, per-layer inputs): transformers loads it, every tensor is written where the header says."""
    from safetensors import safe_open

    from gemma4_saelens_ext.models.embedded import build_streamed_gemma4
    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import activations

    cfg = e2b_text_config(vocab_size=512, vocab_size_per_layer_input=512, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=10, num_attention_heads=2, head_dim=16, global_head_dim=32,
                          hidden_size_per_layer_input=8, num_kv_shared_layers=4, sliding_window=16)  # fmt: skip
    build_streamed_gemma4(tmp_path, cfg, "small-e2b-like", dtype=torch.float32)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as fh:
        ple = fh.get_tensor("model.embed_tokens_per_layer.weight")
        assert ple.shape == (512, 80) and 0.015 < float(ple.std()) < 0.025  # normal(0, 0.02)
        assert torch.equal(fh.get_tensor("model.layers.9.layer_scalar"), torch.ones(1))
    lm = load_model(str(tmp_path), "fp32")
    acts = activations(lm, ["The quick brown fox."], 6)
    assert acts[0].shape[1] == 64 and torch.isfinite(acts[0]).all()
