"""The published release loads right: three layouts x two encode conventions through an offline HF cache, the
author's convention for Solshine/gemma4_*behaviorSAE*, the user override, and the check that catches a wrong one."""

from __future__ import annotations

import functools
import json
import logging
import os

import pytest
import torch
from sae_lens import SAE, TopKSAE

import gemma4_saelens_ext.releases.convention as convention_mod
from gemma4_saelens_ext.releases.checkpoint import CheckpointError, UnsafeCheckpointError
from gemma4_saelens_ext.releases.convention import loaded_from_release
from gemma4_saelens_ext.releases.convert import load_upstream_sae
from gemma4_saelens_ext.releases.loader import gemma4_behavior_loader
from gemma4_saelens_ext.releases.registry import register_releases, set_encode_convention
from test_releases_registry import PUBLISHED, PUBLISHED_FILE, SAE_ID, write_hf_cache

D_IN, D_SAE, K = 48, 192, 8


def author_forward(x, W_enc, b_enc, W_dec, b_dec, k, subtract_b_dec):
    """The author's documented class: relu(x @ W_enc + b_enc), keep the k largest, decode z @ W_dec + b_dec.
    ``subtract_b_dec`` centres x first (SAELens's default). W_enc [d_in, d_sae], W_dec [d_sae, d_in]."""
    h = torch.relu((x - b_dec if subtract_b_dec else x) @ W_enc + b_enc)
    vals, idx = h.topk(k, dim=-1)
    z = torch.zeros_like(h).scatter(-1, idx, vals)
    return z, z @ W_dec + b_dec


class AuthorSAE(torch.nn.Module):
    """A minimal TopK SAE with the parameter names of the author's class (what a trainer's state_dict() holds)."""

    def __init__(self, w):
        super().__init__()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            setattr(self, name, torch.nn.Parameter(w[name].clone()))


@pytest.fixture(scope="module")
def weights():
    g = torch.Generator().manual_seed(3)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5,
        "b_dec": torch.randn(D_IN, generator=g) * 2,  # large enough that the two conventions differ
        "x": torch.randn(40, D_IN, generator=g) * 2 + 1,
    }


def trainer_checkpoint(w, config: dict) -> dict:
    """A checkpoint in the layout of nanochat-SAE's SAETrainer._save_checkpoint, with a real Adam + scheduler state."""
    sae = AuthorSAE(w)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loss = sum((p**2).sum() for p in sae.parameters()) * 0.0
    loss.backward()
    opt.step()
    sched.step()
    with torch.no_grad():  # the step with a zero loss moves nothing; keep the reference weights exact
        for name, p in sae.named_parameters():
            p.copy_(w[name])
    return {
        "step": 1,
        "epoch": 0,
        "sae_state_dict": sae.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler_state_dict": sched.state_dict(),
        "config": config,
        "feature_counts": torch.zeros(D_SAE),
        "best_val_loss": float("inf"),
    }


def layout_files(tmp_path, w, layout: str, subtract: bool) -> dict[str, bytes]:
    """Files of the release repo. ``subtract=False`` leaves every config silent (the author default applies);
    ``subtract=True`` states it: in cfg.json, or for the trainer checkpoint in its embedded config."""
    dims = {"d_in": D_IN, "d_sae": D_SAE, "k": K}
    flag = {"apply_b_dec_to_input": True} if subtract else {}
    if layout == "saelens":
        sd, cfg = {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}, {**dims, **flag, "layer": 25}
    elif layout == "linear":  # nn.Linear(d_in, d_sae) + nn.Linear(d_sae, d_in)
        sd = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
              "decoder.weight": w["W_dec"].T.contiguous(), "decoder.bias": w["b_dec"]}
        cfg = {**dims, **flag, "layer": 25}
    else:  # trainer checkpoint: sizes (and the flag) only in the embedded config
        sd = trainer_checkpoint(w, {**dims, **flag, "activation": "topk", "hook_point": SAE_ID, "batch_size": 4096})
        cfg = {"layer": 25} if subtract else None  # cfg.json without sizes, or no cfg.json at all
    torch.save(sd, tmp_path / "w.pt")
    files = {PUBLISHED_FILE: (tmp_path / "w.pt").read_bytes()}
    if cfg is not None:
        files["cfg.json"] = json.dumps(cfg).encode()
    return files


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    register_releases()
    return cache


def _check_forward(sae, w, subtract):
    z_ref, xhat_ref = author_forward(w["x"], w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], K, subtract)
    with torch.no_grad():
        z, out = sae.encode(w["x"]), sae(w["x"])
    assert torch.equal(z != 0, z_ref != 0), "different active latents"
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, xhat_ref, rtol=1e-5, atol=1e-5)
    # the other convention really differs on these weights, so the comparison above can fail
    assert not torch.equal(z != 0, author_forward(w["x"], *(w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")),
                                                 K, not subtract)[0] != 0)


@pytest.mark.parametrize("subtract", [False, True], ids=["author-default", "stated-subtract"])
@pytest.mark.parametrize("layout", ["saelens", "linear", "trainer"])
def test_release_layouts_and_conventions_from_offline_cache(tmp_path, offline_cache, weights, layout, subtract):
    write_hf_cache(offline_cache, PUBLISHED, layout_files(tmp_path, weights, layout, subtract))
    sae = SAE.from_pretrained(PUBLISHED, SAE_ID)
    assert isinstance(sae, TopKSAE) and (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (D_IN, D_SAE, K)
    assert sae.cfg.apply_b_dec_to_input is subtract
    md = sae.cfg.metadata
    assert md.encode_convention == ("subtract_b_dec" if subtract else "no_b_dec_subtraction")
    expected_source = {False: "release default", True: "checkpoint config" if layout == "trainer" else "cfg.json"}
    assert md.encode_convention_source == expected_source[subtract]
    assert md.release == PUBLISHED and md.layer == 25 and loaded_from_release(sae)
    if layout == "trainer":
        assert md.source_weights_key == "sae_state_dict"
    _check_forward(sae, weights, subtract)


def test_author_default_logged_once_and_overrides(tmp_path, offline_cache, weights, caplog):
    write_hf_cache(offline_cache, PUBLISHED, layout_files(tmp_path, weights, "saelens", subtract=False))
    convention_mod._LOGGED.clear()
    with caplog.at_level(logging.WARNING, logger="gemma4_saelens_ext"):
        for _ in range(2):
            assert SAE.from_pretrained(PUBLISHED, SAE_ID).cfg.apply_b_dec_to_input is False
    notes = [r for r in caplog.records if "author's published encode" in r.getMessage()]
    assert len(notes) == 1 and "check_encode_convention" in notes[0].getMessage()

    # per call: SAELens's converter= argument with the plugin's loader bound to an override
    conv = functools.partial(gemma4_behavior_loader, apply_b_dec_to_input=True)
    sae = SAE.from_pretrained(PUBLISHED, SAE_ID, converter=conv)
    assert sae.cfg.apply_b_dec_to_input is True and sae.cfg.metadata.encode_convention_source == "override"
    _check_forward(sae, weights, True)
    # per release: set_encode_convention, then reset to the default
    try:
        set_encode_convention(PUBLISHED, True)
        sae = SAE.from_pretrained(PUBLISHED, SAE_ID)
        assert sae.cfg.apply_b_dec_to_input is True and sae.cfg.metadata.encode_convention_source == "override"
    finally:
        set_encode_convention(PUBLISHED, None)
    assert SAE.from_pretrained(PUBLISHED, SAE_ID).cfg.metadata.encode_convention_source == "release default"


def test_other_repos_keep_key_name_default(tmp_path, weights):
    """Outside the author's releases, a silent cfg.json falls back to the key-name convention, as before."""
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE, "k": K}))
    torch.save({k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}, tmp_path / "someone_sae.pt")
    sae = load_upstream_sae(tmp_path / "someone_sae.pt")
    assert sae.cfg.apply_b_dec_to_input is True and sae.cfg.metadata.encode_convention_source == "key-name default"
    # the published file name alone selects the author's convention (a file downloaded by hand)
    torch.save({k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}, tmp_path / PUBLISHED_FILE)
    assert load_upstream_sae(tmp_path / PUBLISHED_FILE).cfg.metadata.encode_convention_source == "release default"


class _Payload:
    def __reduce__(self):  # would run code on unpickling
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickled_object_nested_in_trainer_checkpoint_refused(tmp_path, offline_cache, weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = trainer_checkpoint(weights, {"d_in": D_IN, "d_sae": D_SAE, "k": K, "activation": "topk"})
    ckpt["optimizer_state_dict"]["param_groups"][0]["hook"] = _Payload()  # two levels down
    torch.save(ckpt, tmp_path / "w.pt")
    write_hf_cache(offline_cache, PUBLISHED, {PUBLISHED_FILE: (tmp_path / "w.pt").read_bytes()})
    with pytest.raises(UnsafeCheckpointError, match="contains pickled Python objects"):
        SAE.from_pretrained(PUBLISHED, SAE_ID)
    with pytest.raises(UnsafeCheckpointError):
        load_upstream_sae(tmp_path / "w.pt")
    assert not (tmp_path / "pwned.txt").exists()


def test_unreadable_checkpoints_name_every_key(tmp_path, weights):
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "k": K, "activation": "topk"}
    ckpt = trainer_checkpoint(weights, cfg)
    ckpt["sae_state_dict"] = {"enc_w": weights["W_enc"], "dec_w": weights["W_dec"]}  # unknown names
    torch.save(ckpt, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="holds no SAE weights") as ei:
        load_upstream_sae(tmp_path / "a.pt")
    msg = str(ei.value)
    for key in ("sae_state_dict.enc_w(48, 192)", "sae_state_dict.dec_w(192, 48)", "feature_counts(192,)",
                "optimizer_state_dict.param_groups: list", "config.d_in: int", "step: int", "best_val_loss: float"):
        assert key in msg, key
    # two dicts holding SAE weights: which is the SAE cannot be told
    two = {"sae_state_dict": AuthorSAE(weights).state_dict(), "ema_state_dict": AuthorSAE(weights).state_dict(),
           "config": cfg}
    torch.save(two, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"several dicts hold SAE weights \(\['sae_state_dict', 'ema_state_dict'\]\)"):
        load_upstream_sae(tmp_path / "b.pt")
    # no cfg.json and no embedded config: the error says what is needed
    torch.save(AuthorSAE(weights).state_dict(), tmp_path / "c.pt")
    (tmp_path / "cfg.json").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"cfg\.json not found .*embeds a config"):
        load_upstream_sae(tmp_path / "c.pt")
