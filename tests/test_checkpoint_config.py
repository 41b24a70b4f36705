"""A checkpoint's layer count and hidden size read from its config alone (no weights), for every kind of source and
config layout, and the early checks built on them. Folders holding only a config.json make the point: if a check
ran after the load, it would fail on the missing weights instead."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from checkpoint_folders import config_only

from gemma4_saelens_ext.models.checkpoint_config import checkpoint_shape
from gemma4_saelens_ext.models.embedded import EMBEDDED_MODELS, built_embedded_path, embedded_model_path, embedded_shape
from gemma4_saelens_ext.models.load import check_checkpoint
from gemma4_saelens_ext.models.layers import parse_layer


@pytest.mark.parametrize("kind", ["gemma4-text", "gemma4-multimodal", "gemma3-text", "gemma3-multimodal"])
def test_shape_from_config_only(tmp_path, kind):
    """Gemma 4 and multimodal Gemma 3 keep the language model under text_config; the vision tower's own
    num_hidden_layers / hidden_size (Gemma 3's SigLIP: 27 / 1152) must not be taken instead."""
    shape = checkpoint_shape(config_only(tmp_path, kind, n_layers=6, hidden=96))
    assert (shape.n_layers, shape.d_model) == (6, 96)
    assert shape.origin.endswith("config.json")


def test_embedded_known_shapes_match_the_built_checkpoints():
    """The shapes used before an embedded model is built are those of the built checkpoint."""
    embedded_model_path("gemma-4-tiny")  # cheap to build; the others are compared when the cache has them
    compared = 0
    for name in EMBEDDED_MODELS:
        if built_embedded_path(name) is not None:
            shape = checkpoint_shape(name)
            assert (shape.n_layers, shape.d_model) == embedded_shape(name), name
            compared += 1
    assert compared >= 1
    assert embedded_shape("gemma-4-e2b-shape") == (35, 1536)  # Gemma 4 E2B's published text config


def test_embedded_not_built_uses_known_shape_and_builds_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GEMMA4_SAE_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="gemma4_saelens_ext.models.checkpoint_config"):
        shape = checkpoint_shape("gemma-3-270m")
    assert (shape.n_layers, shape.d_model) == (18, 640) and "known shape" in shape.origin
    assert "not built yet" in caplog.text
    assert not (tmp_path / "cache" / "models" / "gemma-3-270m").exists()
    with pytest.raises(ValueError, match=r"model\.layer=18: Layer 18 is out of range: this model has 18 layers"):
        check_checkpoint("gemma-3-270m", layer=18, layer_field="model.layer")


def test_hub_id_not_cached_offline_skips_fast(caplog):
    """HF_HUB_OFFLINE=1 (conftest) and nothing cached: no hang, no error; the checks after the load remain."""
    t0 = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="gemma4_saelens_ext.models.checkpoint_config"):
        assert checkpoint_shape("nobody/not-a-cached-model") is None
        assert check_checkpoint("nobody/not-a-cached-model", layer=999, d_in=1) is None
    assert time.perf_counter() - t0 < 5
    assert "checked after loading" in caplog.text


def test_hub_id_from_the_hf_cache(tmp_path, monkeypatch):
    """A Hub id whose config.json sits in the HF cache (the cache's real layout) is read offline."""
    from huggingface_hub import constants

    cfg_dir = config_only(tmp_path, "gemma4-multimodal", n_layers=8, hidden=128)
    repo = tmp_path / "hub" / "models--org--gemma"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_bytes(Path(cfg_dir, "config.json").read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    shape = checkpoint_shape("org/gemma")
    assert (shape.n_layers, shape.d_model) == (8, 128)
    with pytest.raises(ValueError, match=r"sae\.d_in=64 does not match the model's hidden size 128"):
        check_checkpoint("org/gemma", d_in=64, d_in_field="sae.d_in")


def test_not_a_source_and_not_a_causal_lm(tmp_path):
    with pytest.raises(ValueError, match="neither an embedded model, a model folder, nor a Hub id"):
        checkpoint_shape("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        checkpoint_shape(tmp_path / "empty")
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(ValueError, match="not a causal language model"):
        checkpoint_shape(tmp_path / "clf")


def test_parse_layer_is_the_one_parser():
    assert parse_layer("blocks.7.hook_resid_post") == 7  # no model at hand: the form only
    assert parse_layer("model.language_model.layers.7") == parse_layer("model.layers.7") == parse_layer("7") == 7
    assert parse_layer(7, 8) == 7
    with pytest.raises(ValueError, match="Layer 8 is out of range: this model has 8 layers"):
        parse_layer("blocks.8.hook_resid_post", 8)
    with pytest.raises(ValueError, match="negative"):
        parse_layer(-1)
    with pytest.raises(ValueError, match=re.escape("matches no residual-stream module")):
        parse_layer("blocks.3.hook_mlp_out")
    with pytest.raises(ValueError, match=re.escape("matches no residual-stream module")):
        parse_layer("model.language_model.layers.3", 8, "model.layers")  # a loaded model's own path only
