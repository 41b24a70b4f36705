"""Export -> register as a local release -> SAE.from_pretrained round trips, model card, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from gemma4_saelens_ext.releases import export_sae, register_local_release, unregister_release

SAE_ID = "blocks.25.hook_resid_post"


def _topk_sae(d_in=64, d_sae=256, k=8, *, apply_b_dec=True, rescale=False, seed=0):
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(
        TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, apply_b_dec_to_input=apply_b_dec, rescale_acts_by_decoder_norm=rescale)
    )
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 1.0))
        sae.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)  # uneven decoder norms: folding must matter
    sae.cfg.metadata.hook_name = SAE_ID
    sae.cfg.metadata.model_name = "google/gemma-4-E2B"
    return sae


def _load(release: str, sae_id: str = SAE_ID):
    from sae_lens import SAE

    return SAE.from_pretrained(release, sae_id)


def _same_forward(a, b, x, *, exact: bool):
    with torch.no_grad():
        za, zb = a.encode(x), b.encode(x)
        ya, yb = a.decode(za), b.decode(zb)
    assert torch.equal(za != 0, zb != 0), "different active latents"
    if exact:
        assert torch.equal(za, zb) and torch.equal(ya, yb)
    else:
        torch.testing.assert_close(za, zb, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["linear", "saelens"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_round_trip_upstream_and_saelens(tmp_path, layout, apply_b_dec):
    sae = _topk_sae(apply_b_dec=apply_b_dec)
    res = export_sae(
        sae,
        tmp_path / "rel",
        release="me/test-behavior-sae",
        formats=("saelens", "upstream"),
        upstream_layout=layout,
        precision="nf4",
        metrics={"explained_variance": 0.93, "l0": 8.0, "alive": 200, "note": "text is dropped"},
    )
    assert res.upstream_weights.name == "test-behavior-sae.pt" and (tmp_path / "rel" / "cfg.json").is_file()
    x = torch.randn(32, 64) * 2
    for prefer, exact in (("upstream", layout == "saelens"), ("saelens", True)):
        spec = register_local_release(res.out_dir, release=f"test-rt-{layout}-{apply_b_dec}-{prefer}", prefer=prefer)
        assert spec.saes[0].format == prefer
        loaded = _load(spec.release)
        try:
            assert loaded.cfg.apply_b_dec_to_input is apply_b_dec
            md = loaded.cfg.metadata
            assert (md.model_name, md.hook_name, md.precision, md.layer) == ("google/gemma-4-E2B", SAE_ID, "nf4", 25)
            assert md.hf_hook_name == "model.language_model.layers.25"
            _same_forward(sae, loaded, x, exact=exact)
        finally:
            unregister_release(spec.release)


def test_rescaled_decoder_norm_is_folded_for_upstream(tmp_path):
    sae = _topk_sae(rescale=True)
    res = export_sae(sae, tmp_path, release="test-fold", formats=("upstream",), precision="nf4", model_card=False)
    up_cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert up_cfg["layout"] == "linear" and up_cfg["k"] == 8 and up_cfg["precision"] == "nf4"
    spec = register_local_release(res.out_dir)
    try:
        loaded = _load(spec.release)
        assert loaded.cfg.rescale_acts_by_decoder_norm is False
        _same_forward(sae, loaded, torch.randn(64, 64), exact=False)
    finally:
        unregister_release(spec.release)


def test_training_sae_exports_its_inference_form(tmp_path):
    from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(3)
    tsae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=32, d_sae=128, k=4))  # rescale_acts_by_decoder_norm=True
    with torch.no_grad():
        tsae.b_dec.normal_()
        tsae.b_enc.normal_(std=0.1)
        tsae.W_dec.mul_(torch.rand(128, 1) + 0.5)
    tsae.cfg.metadata.hook_name = "blocks.7.hook_resid_post"
    tsae.cfg.metadata.model_name = "gemma-3-270m"
    tsae.cfg.metadata.model_from_pretrained_kwargs = {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}
    res = export_sae(tsae, tmp_path, release="test-train", formats=("saelens", "upstream"))
    assert res.metadata["precision"] == "nf4" and res.metadata["layer"] == 7  # inferred from metadata
    assert res.metadata["hf_hook_name"] is None  # not a Hub Gemma 4 id: module path unknown, not guessed
    x = torch.randn(16, 32)
    with torch.no_grad():
        z_train = tsae.encode(x)
        y_train = tsae.decode(z_train)
    for prefer in ("saelens", "upstream"):
        spec = register_local_release(tmp_path, release=f"test-train-{prefer}", prefer=prefer)
        try:
            loaded = _load(spec.release, "blocks.7.hook_resid_post")
            with torch.no_grad():
                z = loaded.encode(x)
                torch.testing.assert_close(loaded.decode(z), y_train, rtol=1e-5, atol=1e-5)
            assert torch.equal(z != 0, z_train != 0)
        finally:
            unregister_release(spec.release)
    # the SAELens-format folder is stock SAELens: loadable without the plugin's loader
    stock = SAE.load_from_disk(res.saelens_dir)
    assert stock.cfg.metadata.precision == "nf4"


def test_model_card_front_matter(tmp_path):
    sae = _topk_sae()
    metrics_file = tmp_path / "report.json"
    metrics_file.write_text(json.dumps({"metrics": {"explained_variance": 0.99, "l0": 8, "mse": 0.01}, "n": "x"}))
    res = export_sae(
        sae, tmp_path / "out", release="me/card-test", precision="nf4", metrics=metrics_file, license="apache-2.0",
        notes="Labels mark role consistency, not deception."
    )
    text = res.model_card.read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["base_model"] == "google/gemma-4-E2B" and front["library_name"] == "saelens"
    assert front["license"] == "apache-2.0" and "nf4" in front["tags"]
    s = front["sae"]
    assert (s["architecture"], s["d_in"], s["d_sae"], s["k"]) == ("topk", 64, 256, 8)
    assert (s["layer"], s["hook_name"], s["training_precision"]) == (25, SAE_ID, "nf4")
    assert s["metrics"] == {"explained_variance": 0.99, "l0": 8, "mse": 0.01}
    assert "role consistency" in text and f'SAE.from_pretrained("me/card-test", "{SAE_ID}")' in text
    from huggingface_hub import ModelCard

    assert ModelCard(text).data.base_model == "google/gemma-4-E2B"  # the Hub's own parser reads it
    manifest = json.loads(res.manifest.read_text())
    assert manifest["saes"][0]["variance_explained"] == 0.99 and manifest["saes"][0]["l0"] == 8


def test_several_saes_in_one_release_folder(tmp_path):
    a, b = _topk_sae(seed=1), _topk_sae(seed=2)
    b.cfg.metadata.hook_name = "blocks.20.hook_resid_post"
    export_sae(a, tmp_path, release="test-multi", precision="nf4", formats=("saelens", "upstream"))
    export_sae(b, tmp_path, release="test-multi", precision="fp16")
    with pytest.raises(ValueError, match="already holds an upstream-layout SAE"):
        export_sae(b, tmp_path, release="test-multi", precision="fp16", formats=("upstream",))
    spec = register_local_release(tmp_path)
    try:
        assert sorted(s.sae_id for s in spec.saes) == ["blocks.20.hook_resid_post", SAE_ID]
        lb = _load("test-multi", "blocks.20.hook_resid_post")
        assert lb.cfg.metadata.precision == "fp16" and lb.cfg.metadata.layer == 20
        _same_forward(b, lb, torch.randn(8, 64), exact=True)
    finally:
        unregister_release("test-multi")
    with pytest.raises(ValueError, match="already holds release"):
        export_sae(a, tmp_path, release="other-name", precision="nf4")


def test_export_errors(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = _topk_sae()
    with pytest.raises(ValueError, match="training precision"):
        export_sae(sae, tmp_path / "a", release="r")
    with pytest.raises(ValueError, match="push_to_hub=True needs repo_id"):
        export_sae(sae, tmp_path / "b", release="r", precision="nf4", push_to_hub=True)
    with pytest.raises(ValueError, match="formats"):
        export_sae(sae, tmp_path / "c", release="r", precision="nf4", formats=("onnx",))
    std = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))
    std.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    with pytest.raises(ValueError, match="only holds TopK"):
        export_sae(std, tmp_path / "d", release="r", precision="nf4", formats=("upstream",))
    res = export_sae(std, tmp_path / "e", release="r", precision="nf4")  # SAELens format holds any architecture
    assert (res.saelens_dir / "sae_weights.safetensors").is_file()


def test_cli_export_and_list(tmp_path, capsys):
    from gemma4_saelens_ext.cli import main

    sae = _topk_sae()
    sae.save_model(tmp_path / "trained")
    (tmp_path / "m.json").write_text(json.dumps({"explained_variance": 0.9}))
    out = tmp_path / "exported"
    argv = ["export", str(tmp_path / "trained"), "--out", str(out), "--release", "test-cli", "--formats", "saelens",
            "upstream", "--precision", "nf4", "--metrics", str(tmp_path / "m.json")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "exported test-cli" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"README.md", "release.json", "cfg.json", "test-cli.pt", SAE_ID}
    assert main(["releases", "--register-local", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["release"] == "test-cli" and r["sae_id"] == SAE_ID for r in rows)
    _same_forward(sae, _load("test-cli"), torch.randn(8, 64), exact=True)
    unregister_release("test-cli")
    assert main(["export", str(tmp_path / "missing"), "--out", str(out), "--release", "x"]) == 2  # a user error
    assert "SAE folder" in (err := capsys.readouterr().err) and "does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_runner_trained_round_trip(tmp_path):
    """Train a TopK SAE with SAELens's runner on the embedded Gemma 3 270M (nf4), export upstream, reload."""
    from sae_lens import SAE

    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import activations
    from gemma4_saelens_ext.training.runner import train

    layer = 2
    cfg = {
        "model": {"source": "gemma-3-270m", "precision": "nf4", "layer": layer, "truncate": True},
        "sae": {"d_in": 640, "d_sae": 1280, "k": 8},
        "runner": {
            "dataset_path": "builtin:roleplay-corpus",
            "context_size": 32,
            "training_tokens": 2048,
            "train_batch_size_tokens": 256,
            "store_batch_size_prompts": 8,
            "n_batches_in_buffer": 8,
            "n_eval_batches": 1,
            "eval_batch_size_prompts": 2,
            "n_batches_for_norm_estimate": 2,
            "seed": 7,
            "output_path": str(tmp_path / "run"),
            "checkpoint_path": str(tmp_path / "run" / "ckpt"),
        },
    }
    trained, out_path = train(cfg)
    res = export_sae(trained, tmp_path / "export", release="test-runner-sae", formats=("upstream",))
    assert res.metadata["precision"] == "nf4" and res.metadata["layer"] == layer
    assert res.metadata["model_name"] == "gemma-3-270m"
    spec = register_local_release(res.out_dir)
    try:
        loaded = _load("test-runner-sae", f"blocks.{layer}.hook_resid_post")
        reference = SAE.load_from_disk(out_path)  # what the runner saved (SAELens inference form)
        lm = load_model("gemma-3-270m", "nf4", truncate_after_layer=layer)
        acts = torch.cat(activations(lm, ["You are a Werewolf. Another player asks: who are you?",
                                          "I am a Liberal, I answered."], layer))
        with torch.no_grad():
            z_train, y_train = trained.encode(acts), None
            y_train = trained.decode(z_train)
        for other in (loaded, reference):
            with torch.no_grad():
                z = other.encode(acts)
                assert torch.equal(z != 0, z_train != 0)
                torch.testing.assert_close(z, z_train, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(other.decode(z), y_train, rtol=1e-4, atol=1e-4)
    finally:
        unregister_release(spec.release)
