"""Upstream checkpoint layouts -> SAELens TopK SAE, checked against a TopK forward written from the definition."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import gemma4_saelens_ext.releases as rel
from gemma4_saelens_ext.releases.checkpoint import CheckpointError, UnsafeCheckpointError
from gemma4_saelens_ext.releases.convert import MissingConfigError, load_upstream_sae
from gemma4_saelens_ext.releases.registry import register_release, unregister_release
from gemma4_saelens_ext.releases.spec import ReleaseSpec, SAESpec

D_IN, D_SAE, K = 1536, 6144, 16  # the published shapes
SAE_ID = "blocks.25.hook_resid_post"


def reference_topk(x, W_enc, b_enc, W_dec, b_dec, k, subtract_b_dec):
    """TopK SAE from the definition: W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""
    x_c = x - b_dec if subtract_b_dec else x
    pre = x_c @ W_enc + b_enc
    vals, idx = torch.topk(pre, k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    return z, z @ W_dec + b_dec


@pytest.fixture(scope="module")
def weights():
    g = torch.Generator().manual_seed(0)
    W_enc = torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5
    W_dec = torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5
    b_enc = torch.randn(D_SAE, generator=g) * 0.1
    b_dec = torch.randn(D_IN, generator=g)
    x = torch.randn(64, D_IN, generator=g) * 2
    return {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec, "x": x}


def _layout(w, name):
    """Re-express canonical weights in one upstream layout."""
    if name == "saelens":
        return {k: w[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if name == "saelens_transposed":
        return {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"].T.contiguous(), "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
    if name == "linear":  # nn.Linear(d_in, d_sae) / nn.Linear(d_sae, d_in)
        return {
            "encoder.weight": w["W_enc"].T.contiguous(),
            "encoder.bias": w["b_enc"],
            "decoder.weight": w["W_dec"].T.contiguous(),
            "decoder.bias": w["b_dec"],
        }
    if name == "linear_transposed":
        return {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"], "decoder.bias": w["b_dec"]}
    if name == "mixed":  # encoder stored nn.Linear-style, decoder SAELens-style
        return {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
    raise AssertionError(name)


def _write(folder: Path, sd, cfg, fname="sae.pt"):
    folder.mkdir(parents=True, exist_ok=True)
    if fname.endswith(".safetensors"):
        save_file(sd, str(folder / fname))
    else:
        torch.save(sd, folder / fname)
    if cfg is not None:
        (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder / fname


def _load_release(folder: Path, fname: str, name: str, **spec_kwargs):
    from sae_lens import SAE

    spec = ReleaseSpec(name, saes=(SAESpec(SAE_ID, fname, layer=25, **spec_kwargs),), local_dir=str(folder))
    register_release(spec, replace_existing=True)
    try:
        return SAE.from_pretrained(name, SAE_ID)
    finally:
        unregister_release(name)


def _check(sae, w, subtract):
    z_ref, xhat_ref = reference_topk(w["x"], w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, subtract)
    with torch.no_grad():
        z = sae.encode(w["x"])
        xhat = sae.decode(z)
        out = sae(w["x"])
    assert torch.equal(z != 0, z_ref != 0), "different active latents"
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xhat, xhat_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, xhat_ref, rtol=1e-4, atol=1e-4)
    assert int((z != 0).sum(-1).max()) <= K


@pytest.mark.parametrize("layout", ["saelens", "saelens_transposed", "linear", "linear_transposed", "mixed"])
@pytest.mark.parametrize("subtract", [True, False])
def test_layout_equivalence_published_shapes(tmp_path, weights, layout, subtract):
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "k": K, "apply_b_dec_to_input": subtract}
    _write(tmp_path, _layout(weights, layout), cfg)
    sae = _load_release(tmp_path, "sae.pt", f"test-{layout}-{subtract}")
    from sae_lens import TopKSAE

    assert isinstance(sae, TopKSAE)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (D_IN, D_SAE, K)
    assert sae.cfg.apply_b_dec_to_input is subtract
    md = sae.cfg.metadata
    assert md.model_name == "google/gemma-4-E2B"
    assert md.hook_name == "blocks.25.hook_resid_post"
    assert md.hf_hook_name == "model.language_model.layers.25"
    assert md.precision == "nf4" and md.layer == 25
    _check(sae, weights, subtract)


@pytest.mark.parametrize(
    ("layout", "expected"), [("saelens", True), ("linear", False)], ids=["W-names-subtract", "linear-names-no-subtract"]
)
def test_b_dec_default_follows_key_convention(tmp_path, weights, layout, expected, caplog):
    _write(tmp_path, _layout(weights, layout), {"d_in": D_IN, "d_sae": D_SAE, "k": K})
    with caplog.at_level("WARNING"):
        sae = _load_release(tmp_path, "sae.pt", f"test-default-{layout}")
    assert sae.cfg.apply_b_dec_to_input is expected
    assert "does not say whether b_dec is subtracted" in caplog.text
    _check(sae, weights, expected)
    # the spec can override the default, and the forward follows the override
    sae2 = _load_release(tmp_path, "sae.pt", f"test-override-{layout}", apply_b_dec_to_input=not expected)
    _check(sae2, weights, not expected)


def test_trainer_checkpoint_prefix_and_safetensors(tmp_path, weights):
    # the author's trainer checkpoint: weights nested beside a `config` (d_in, d_sae, k, activation), DDP prefix
    sd = {f"module.{k}": v for k, v in _layout(weights, "linear").items()}
    config = {"d_in": D_IN, "d_sae": D_SAE, "k": K, "activation": "topk"}
    path = _write(tmp_path / "a", {"sae_state_dict": sd, "config": config, "step": 100},
                  {"layer": 25, "apply_b_dec_to_input": True})
    sae = load_upstream_sae(path)
    assert sae.cfg.apply_b_dec_to_input is True and sae.cfg.metadata.layer == 25
    _check(sae, weights, True)

    st = _write(tmp_path / "b", _layout(weights, "saelens"),
                {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": K, "apply_b_dec_to_input": False},
                "w.safetensors")
    _check(load_upstream_sae(st), weights, False)


def test_config_names_no_real_file_uses_are_refused_with_the_keys_found(tmp_path, weights):
    # other libraries' names (sparsify, dictionary_learning, ...) are not guessed at: the error lists what was there
    path = _write(tmp_path, _layout(weights, "saelens"), {"d_model": D_IN, "num_latents": D_SAE, "top_k": K})
    with pytest.raises(CheckpointError, match=r"lacks d_in, d_sae, k.*Keys found: \['d_model', 'num_latents', 'top_k'\]"):
        load_upstream_sae(path)
    path = _write(tmp_path, {"enc.weight": torch.zeros(32, 8), "dec.weight": torch.zeros(8, 32)}, SMALL)
    with pytest.raises(CheckpointError, match=r"unrecognised state-dict layout.*dec\.weight\(8, 32\).*enc\.weight\(32, 8\)"):
        load_upstream_sae(path)


def test_bfloat16_checkpoint_converted_to_float32(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {"W_enc": torch.randn(8, 32, generator=g).bfloat16(), "W_dec": torch.randn(32, 8, generator=g).bfloat16()}
    path = _write(tmp_path, sd, {"d_in": 8, "d_sae": 32, "k": 4})
    sae = load_upstream_sae(path)
    assert sae.W_enc.dtype == torch.float32
    torch.testing.assert_close(sae.b_enc, torch.zeros(32))  # absent biases are zeros
    x = torch.randn(5, 8, generator=g)
    z_ref, xhat_ref = reference_topk(x, sd["W_enc"].float(), torch.zeros(32), sd["W_dec"].float(), torch.zeros(8), 4, True)
    torch.testing.assert_close(sae.decode(sae.encode(x)), xhat_ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ errors
SMALL = {"d_in": 8, "d_sae": 32, "k": 4}


def _small_sd():
    return {"W_enc": torch.randn(8, 32), "W_dec": torch.randn(32, 8), "b_enc": torch.zeros(32), "b_dec": torch.zeros(8)}


def test_missing_cfg_json(tmp_path):
    path = _write(tmp_path, _small_sd(), None)
    with pytest.raises(MissingConfigError, match=r"cfg\.json not found at .*d_in, d_sae and k"):
        load_upstream_sae(path)
    # through SAE.from_pretrained the error names the file of the release folder
    with pytest.raises(rel.ReleaseFilesNotFoundError, match=r"cfg\.json not found in local release folder"):
        _load_release(tmp_path, "sae.pt", "test-missing-cfg")


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(SMALL))
    (tmp_path / "garbage.pt").write_bytes(os.urandom(512))
    with pytest.raises(CheckpointError, match="could not be read as a torch checkpoint") as ei:
        load_upstream_sae(tmp_path / "garbage.pt")
    assert not isinstance(ei.value, UnsafeCheckpointError)
    good = _write(tmp_path, _small_sd(), None, "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_upstream_sae(tmp_path / "trunc.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_upstream_sae(tmp_path / "bad.safetensors")
    (tmp_path / "cfg.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_upstream_sae(tmp_path / "good.pt")


class _Payload:
    def __reduce__(self):  # would run code on unpickling
        return (os.system, ("echo pwned > pwned.txt",))


class _SmallSAE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(8, 32)
        self.decoder = torch.nn.Linear(32, 8)


@pytest.mark.parametrize("kind", ["module", "object_in_dict", "raw_pickle"])
def test_pickled_objects_refused(tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(SMALL))
    path = tmp_path / "sae.pt"
    if kind == "module":
        torch.save(_SmallSAE(), path)
    elif kind == "object_in_dict":
        torch.save({**_small_sd(), "extra": _Payload()}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="contains pickled Python objects"):
        load_upstream_sae(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_wrong_shapes(tmp_path):
    sd = _small_sd()
    sd["W_enc"] = torch.randn(8, 16)
    path = _write(tmp_path, sd, SMALL)
    with pytest.raises(CheckpointError, match=r"W_enc has shape \(8, 16\).*d_in=8, d_sae=32.*Keys found"):
        load_upstream_sae(path)
    sd = _small_sd()
    sd["b_dec"] = torch.zeros(32)
    _write(tmp_path, sd, SMALL)
    with pytest.raises(CheckpointError, match=r"b_dec has shape \(32,\), expected \(8,\)"):
        load_upstream_sae(path)
    # cfg.json that disagrees with the published shapes
    _write(tmp_path, _small_sd(), {"d_in": D_IN, "d_sae": D_SAE, "k": K})
    with pytest.raises(CheckpointError, match="expected"):
        load_upstream_sae(path)


def test_unknown_layout_lists_keys(tmp_path):
    path = _write(tmp_path, {"enc_w": torch.zeros(8, 32), "dec_w": torch.zeros(32, 8)}, SMALL)
    with pytest.raises(CheckpointError, match=r"unrecognised state-dict layout.*dec_w\(32, 8\).*enc_w\(8, 32\)"):
        load_upstream_sae(path)
    path = _write(tmp_path, {**_small_sd(), "threshold": torch.zeros(32)}, SMALL)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['threshold'\]"):
        load_upstream_sae(path)
    both = {**_small_sd(), "decoder.bias": torch.zeros(8)}
    path = _write(tmp_path, both, SMALL)
    with pytest.raises(CheckpointError, match="ambiguous b_dec"):
        load_upstream_sae(path)


def test_bad_cfg_values(tmp_path):
    path = _write(tmp_path, _small_sd(), {"d_in": 8, "d_sae": 32})
    with pytest.raises(CheckpointError, match=r"lacks k: .*Keys found: \['d_in', 'd_sae'\]"):
        load_upstream_sae(path)
    _write(tmp_path, _small_sd(), {**SMALL, "architecture": "jumprelu"})
    with pytest.raises(CheckpointError, match=r"only TopK.*Keys found: \['architecture', 'd_in'"):
        load_upstream_sae(path)
    sd = _small_sd()
    sd["W_dec"][0, 0] = float("nan")
    _write(tmp_path, sd, SMALL)
    with pytest.raises(CheckpointError, match="NaN"):
        load_upstream_sae(path)
