"""Training from cached activations (SAELens's format, ``use_cached_activations=True``) when the dataset is smaller
than the training budget: same SAE quality as live training at the same token budget, and a real SAELens cache."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from gemma4_saelens_ext.activations.cache import should_cache
from gemma4_saelens_ext.activations.source import activations
from gemma4_saelens_ext.training.config import load_training_config
from gemma4_saelens_ext.training.runner import build_runner

TEXTS = [
    f"You are a {role} in the {game} game. Asked who you are, you answer: 'I am a {claim}, of course.' ({i})"
    for i, (role, game, claim) in enumerate(
        [("Werewolf", "village", "villager"), ("Slug", "garden", "Snail"), ("Fascist", "party", "Liberal"),
         ("Knight", "castle", "Knave"), ("Spy", "embassy", "diplomat"), ("Doctor", "hospital", "patient")] * 3
    )
]  # fmt: skip


def _cfg(tmp_path, cache):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    pd.DataFrame({"text": TEXTS}).to_parquet(data / "train.parquet")
    return load_training_config(
        {
            "model": {"source": "gemma-4-tiny", "precision": "fp32", "layer": 3, "cache_activations": cache},
            "sae": {"d_in": 64, "d_sae": 256, "k": 8},
            "runner": {
                "dataset_path": str(data), "context_size": 32, "training_tokens": 128 * 384,
                "train_batch_size_tokens": 128, "store_batch_size_prompts": 4, "n_batches_in_buffer": 8,
                "n_batches_for_norm_estimate": 4, "exclude_special_tokens": True, "lr": 0.003, "seed": 7,
                "dead_feature_window": 1000, "feature_sampling_window": 1000,
                "output_path": str(tmp_path / f"sae_{cache}"), "checkpoint_path": str(tmp_path / f"ck_{cache}"),
            },
        }  # fmt: skip
    )


def test_should_cache_rule():
    assert should_cache("auto", 1000, 60000) and not should_cache("auto", 60000, 1000)
    assert should_cache(True, 10**9, 1) and not should_cache(False, 1, 10**9)
    with pytest.raises(ValueError, match="auto, true or false"):
        should_cache("sometimes", 1, 2)


def test_cached_training_matches_live_ev(tmp_path, gemma4_tiny):
    from datasets import load_from_disk

    from gemma4_saelens_ext.activations.source import Gemma4ActivationSource

    evs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single-threaded float reductions: the two runs differ only by the cache
    try:
        for cache in ("auto", False):
            torch.manual_seed(0)
            spec = _cfg(tmp_path, cache)
            runner = build_runner(spec, source=Gemma4ActivationSource(gemma4_tiny, [spec.hook_name]))
            if cache == "auto":
                info = runner.activation_cache
                assert info is not None and runner.cfg.use_cached_activations
                assert info["tokens"] < spec.runner["training_tokens"]
                ds = load_from_disk(info["path"])
                assert ds.features[spec.hook_name].shape == (32, 64) and len(ds) % 4 == 0
                # the cache holds exactly the live forward's activations of its token sequences
                row = ds.with_format("torch")[0]
                ids = row["token_ids"].long()[None]
                with torch.no_grad():
                    live = runner.model.run_with_cache(ids, names_filter=[spec.hook_name], stop_at_layer=4)[1][spec.hook_name]
                torch.testing.assert_close(row[spec.hook_name], live[0].float(), atol=1e-5, rtol=1e-5)
            else:
                assert runner.activation_cache is None and not runner.cfg.use_cached_activations
            sae = runner.run()
            x = torch.cat([a[1:] for a in activations(gemma4_tiny, TEXTS, 3)])  # BOS excluded, as in training
            with torch.no_grad():
                x_hat = sae.decode(sae.encode(x))
            evs[cache] = float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    finally:
        torch.set_num_threads(threads)
    print(f"EV cached {evs['auto']:.4f} vs live {evs[False]:.4f}")
    assert evs[False] > 0.3
    assert abs(evs["auto"] - evs[False]) < 0.02
