"""The activation source inside SAELens: hook aliases, early stop, and the real training runner end to end."""

import pytest
import torch
from sae_lens import SAE

from conftest import TEXTS
from gemma4_saelens_ext.activations.source import Gemma4ActivationSource, activations
from gemma4_saelens_ext.training.config import load_training_config
from gemma4_saelens_ext.training.runner import train


def test_hook_aliases_and_stop_at_layer(gemma4_tiny):
    names = ["blocks.2.hook_resid_post", "model.layers.4"]
    src = Gemma4ActivationSource(gemma4_tiny, names)
    tokens = gemma4_tiny.tokenizer(TEXTS[0], return_tensors="pt").input_ids
    out, cache = src.run_with_cache(tokens, names_filter=names[:1], stop_at_layer=3)
    assert out is None  # stopped after layer 2: no logits computed
    ref = activations(gemma4_tiny, TEXTS[:1], 2)[0]
    torch.testing.assert_close(cache[names[0]][0], ref)
    _, cache = src.run_with_cache(tokens, names_filter=names[1:])
    torch.testing.assert_close(cache[names[1]][0], activations(gemma4_tiny, TEXTS[:1], 4)[0])
    with pytest.raises(ValueError, match="matches no residual-stream module"):
        Gemma4ActivationSource(gemma4_tiny, ["blocks.2.attn.hook_z"])


def test_config_errors(tmp_path):
    cfg = load_training_config("training_configs/demo_gemma3_270m_nf4.yaml")
    assert cfg.hook_name == "blocks.12.hook_resid_post" and cfg.precision == "nf4"
    seed = load_training_config("training_configs/seed_gemma4_e2b_L25_nf4.yaml")
    rc = seed.runner_config()
    assert (rc.sae.d_in, rc.sae.d_sae, rc.sae.k, rc.hook_name) == (1536, 6144, 16, "blocks.25.hook_resid_post")
    assert rc.model_name == "google/gemma-4-E2B" and not rc.logger.log_to_wandb
    with pytest.raises(ValueError, match="Valid precisions"):
        load_training_config("training_configs/demo_gemma3_270m_nf4.yaml", {"model.precision": "q4"})
    with pytest.raises(ValueError, match="n_batches_in_buffer >= 4"):
        load_training_config("training_configs/demo_gemma3_270m_nf4.yaml", {"runner.n_batches_in_buffer": 2})
    from gemma4_saelens_ext.training.runner import build_source

    bad = load_training_config(
        {"model": {"source": "gemma-4-tiny", "precision": "fp32", "layer": 2}, "sae": {"d_in": 1536, "d_sae": 64, "k": 4},
         "runner": {"train_batch_size_tokens": 256}}
    )
    with pytest.raises(ValueError, match="sae.d_in=1536 does not match the model's hidden size 64"):
        build_source(bad)


def test_demo_config_trains_through_runner(tmp_path, gemma3_nf4):
    """Reduced budget of the demo config: a TopK SAE beating the mean-only baseline on held-out activations."""
    out = tmp_path / "sae"
    sae, path = train(
        "training_configs/demo_gemma3_270m_nf4.yaml",
        {
            "model.layer": 6,
            "sae.d_sae": 1280,
            "runner.training_tokens": 32_000,
            "runner.train_batch_size_tokens": 128,
            "runner.lr": 0.002,
            "runner.output_path": str(out),
            "runner.checkpoint_path": str(tmp_path / "ck"),
        },
    )
    loaded = SAE.load_from_disk(str(out))
    assert type(loaded).__name__ == "TopKSAE" and loaded.cfg.k == 16
    assert loaded.cfg.metadata.hook_name == "blocks.6.hook_resid_post"
    assert loaded.cfg.metadata.precision == "nf4"
    held_out = [
        "You are a Knight in the castle game. A knave asks you who you serve. You answer: 'The king.'",
        "It is night in the village. The werewolves open their eyes and choose a victim.",
        "As a Liberal, you must find the Fascists before they elect their leader.",
    ]
    # BOS rows dropped: training excludes special tokens (exclude_special_tokens: true)
    x = torch.cat([a[1:] for a in activations(gemma3_nf4, held_out, 6)])
    with torch.no_grad():
        x_hat = loaded.decode(loaded.encode(x))
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    # mean-only baseline: 0. Measured 0.475 at this budget (2026-12-02, seeded runner, CPU); the bound leaves room
    # for run-to-run noise but fails for an SAE that learned little (an untrained TopK SAE is far below 0)
    assert ev > 0.3, f"held-out EV {ev:.3f}"
    assert ((loaded.encode(x) != 0).sum(-1) <= 16).all()


def test_eval_hook_runs_inside_the_real_runner(tmp_path, gemma4_tiny):
    """TrainingEvalHook fires every N steps of LanguageModelSAETrainingRunner.run() and logs to JSONL."""
    import json
    import math

    from gemma4_saelens_ext.evals.training_callback import TrainingEvalHook

    honest = [f"You are a Slug. Asked your team, you answer: 'Slug, of course {i}.'" for i in range(6)]
    deceptive = [f"You are a Slug. Asked your team, you answer: 'Snail, I swear {i}.'" for i in range(6)]
    acts = activations(gemma4_tiny, honest + deceptive, 3, pooling="mean")
    hook = TrainingEvalHook(acts, ["honest"] * 6 + ["deceptive"] * 6, every_n_steps=4, jsonl_path=tmp_path / "h.jsonl")
    cfg = {
        "model": {"source": "gemma-4-tiny", "precision": "fp32", "layer": 3},
        "sae": {"d_in": 64, "d_sae": 128, "k": 8},
        "runner": {
            "dataset_path": "builtin:roleplay-corpus",
            "context_size": 32,
            "training_tokens": 16 * 128,
            "train_batch_size_tokens": 128,
            "store_batch_size_prompts": 8,
            "n_batches_in_buffer": 8,
            "n_batches_for_norm_estimate": 2,
            "exclude_special_tokens": True,
            "output_path": str(tmp_path / "sae"),
            "checkpoint_path": str(tmp_path / "ck"),
        },
    }
    train(cfg, callbacks=[hook])
    records = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    assert all(math.isfinite(r["heldout/explained_variance"]) and r["heldout/n_pos"] == 6 for r in records)
    assert records[-1]["heldout/l0"] <= 8


def test_configs_resolve_outside_the_checkout(tmp_path, monkeypatch):
    from gemma4_saelens_ext.evals.suite_file import load_suite

    monkeypatch.chdir(tmp_path)
    assert load_training_config("training_configs/demo_gemma3_270m_nf4.yaml").layer == 12
    assert load_training_config("demo_gemma3_270m_nf4").source == "gemma-3-270m"
    assert load_suite("evals/demo.yaml").name
    with pytest.raises(FileNotFoundError, match="training_configs"):
        load_training_config("no_such_config.yaml")
