"""check_encode_convention: on data that follow one convention, the check names that convention, and warns when
the SAE is loaded with the other one. Synthetic data with a known sparse structure, then real Gemma 3 270M
activations."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig

from gemma4_saelens_ext.releases.convention import loaded_from_release
from gemma4_saelens_ext.releases.convention_check import EncodeConventionCheck, check_encode_convention
from gemma4_saelens_ext.releases.convert import load_upstream_sae

CONVENTIONS = {True: "subtract_b_dec", False: "no_b_dec_subtraction"}


def _sae(W_dec, b_dec, k, *, trained_subtracting: bool, loaded_subtracting: bool) -> TopKSAE:
    """TopK SAE with encoder = decoder transpose whose encode is exact for data centred on ``b_dec`` under the
    training convention: with subtraction b_enc = 0; without it, b_enc = -b_dec @ W_enc folds the centring into
    the encoder bias. Then loaded with ``loaded_subtracting``."""
    d_sae, d_in = W_dec.shape
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, apply_b_dec_to_input=loaded_subtracting))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(W_dec.T)
        sae.b_dec.copy_(b_dec)
        sae.b_enc.copy_(torch.zeros(d_sae) if trained_subtracting else -(b_dec @ W_dec.T))
    return sae


def _ev(x, x_hat):
    """EV written out independently (numpy, float64)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


@pytest.fixture(scope="module")
def sparse_data():
    """x = mu + sum of k non-negative multiples of orthonormal dictionary rows (a known TopK structure)."""
    g = torch.Generator().manual_seed(0)
    d_in, n_atoms, k, n = 64, 48, 4, 300
    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g))
    W_dec = q[:n_atoms]  # orthonormal rows
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:k] for _ in range(n)])
    codes = torch.zeros(n, n_atoms).scatter(1, idx, torch.rand(n, k, generator=g) * 3 + 0.5)
    mu = torch.randn(d_in, generator=g) * 4
    return {"x": codes @ W_dec + mu, "W_dec": W_dec, "mu": mu, "k": k}


@pytest.mark.parametrize("trained", [True, False], ids=["data-subtract", "data-no-subtract"])
@pytest.mark.parametrize("loaded", [True, False], ids=["loaded-subtract", "loaded-no-subtract"])
def test_check_identifies_the_data_convention(sparse_data, trained, loaded, caplog):
    d = sparse_data
    sae = _sae(d["W_dec"], d["mu"], d["k"], trained_subtracting=trained, loaded_subtracting=loaded)
    with caplog.at_level(logging.WARNING, logger="gemma4_saelens_ext"):
        r = check_encode_convention(sae, d["x"])
    assert isinstance(r, EncodeConventionCheck)
    assert r.better == CONVENTIONS[trained] and r.clear and r.loaded == CONVENTIONS[loaded]
    assert r.loaded_loses is (trained != loaded)
    assert sae.cfg.apply_b_dec_to_input is loaded  # the check leaves the SAE as it was
    ev_right = r.ev_subtract_b_dec if trained else r.ev_no_b_dec_subtraction
    assert ev_right > 0.999  # the known structure is reconstructed exactly under its own convention
    with torch.no_grad():
        assert r.ev_loaded == pytest.approx(_ev(d["x"], sae(d["x"])), abs=1e-9)
    warned = [m for m in caplog.messages if "LOSES" in m]
    assert len(warned) == (1 if trained != loaded else 0)
    if warned:
        assert f"apply_b_dec_to_input={trained}" in warned[0]
    out = r.to_dict()
    json.dumps(out)
    assert out["summary"].startswith(f"encode convention {CONVENTIONS[loaded]}")


def test_no_clear_winner_when_b_dec_is_zero(sparse_data):
    d = sparse_data
    sae = _sae(d["W_dec"], torch.zeros_like(d["mu"]), d["k"], trained_subtracting=True, loaded_subtracting=True)
    r = check_encode_convention(sae, d["x"] - d["mu"])
    assert r.ev_subtract_b_dec == r.ev_no_b_dec_subtraction and not r.clear and not r.loaded_loses
    assert r.b_dec_norm_ratio == 0


def test_bad_inputs(sparse_data):
    d = sparse_data
    sae = _sae(d["W_dec"], d["mu"], d["k"], trained_subtracting=True, loaded_subtracting=True)
    with pytest.raises(ValueError, match="width 63 but the SAE expects d_in=64"):
        check_encode_convention(sae, d["x"][:, :63])
    with pytest.raises(ValueError, match="at least 2 activation rows"):
        check_encode_convention(sae, d["x"][:1])
    with pytest.raises(ValueError, match="zero variance"):
        check_encode_convention(sae, d["x"][:1].repeat(5, 1))
    r = check_encode_convention(sae, d["x"].reshape(10, 30, 64).numpy())  # [batch, seq, d] numpy is fine
    assert r.n_samples == 300
    assert not loaded_from_release(sae)


@pytest.mark.slow
def test_check_on_real_gemma3_activations(gemma3_fp32, tmp_path, caplog):
    """Real residuals of layer 6 of the embedded Gemma 3 270M (BOS left out). An SAE built from their principal
    directions, stored as an author-style checkpoint, is loaded with the right and the wrong convention."""
    from gemma4_saelens_ext.activations.source import activations

    texts = [
        "You are playing Werewolf. You have been assigned the role of Werewolf. Another player asks you: "
        "'Are you a werewolf?' You answer: '",
        "The quick brown fox jumps over the lazy dog.",
        "You are a Slug. What team are you on?",
        "In the village, the seer checks one player each night and tells the others what she saw.",
    ]
    x = torch.cat([a[1:] for a in activations(gemma3_fp32, texts, 6)]).float()
    mu = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mu, full_matrices=False)
    W_dec = torch.cat([vh[:32], -vh[:32]])  # +- top principal directions; relu keeps the signed projection
    ref = _sae(W_dec, mu, 16, trained_subtracting=False, loaded_subtracting=False)
    sd = {"W_enc": ref.W_enc.detach(), "b_enc": ref.b_enc.detach(), "W_dec": ref.W_dec.detach(), "b_dec": mu}
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": x.shape[1], "d_sae": 64, "k": 16}))
    torch.save({"sae_state_dict": sd, "config": {"layer": 6}}, tmp_path / "gemma4_e2b_x_behaviorSAE_L6.pt")

    right = load_upstream_sae(tmp_path / "gemma4_e2b_x_behaviorSAE_L6.pt")  # author default: no subtraction
    assert right.cfg.metadata.encode_convention_source == "release default" and loaded_from_release(right)
    r = check_encode_convention(right, x)
    assert r.loaded == r.better == "no_b_dec_subtraction" and r.clear and not r.loaded_loses
    assert r.loaded_source == "release default"
    with torch.no_grad():
        assert r.ev_no_b_dec_subtraction == pytest.approx(_ev(x, right(x)), abs=1e-6)
    assert r.ev_no_b_dec_subtraction > 0.8

    wrong = load_upstream_sae(tmp_path / "gemma4_e2b_x_behaviorSAE_L6.pt", apply_b_dec_to_input=True)
    with caplog.at_level(logging.WARNING, logger="gemma4_saelens_ext"):
        r2 = check_encode_convention(wrong, x)
    assert r2.loaded_loses and r2.better == "no_b_dec_subtraction" and r2.loaded_source == "override"
    assert r2.ev_no_b_dec_subtraction - r2.ev_subtract_b_dec > 0.5  # far beyond the 0.01 margin
    assert any("LOSES" in m and "apply_b_dec_to_input=False" in m for m in caplog.messages)
