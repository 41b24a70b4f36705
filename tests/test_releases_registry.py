"""Release registration through SAELens's own lookup; offline loading from the HF cache; CLI listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gemma4_saelens_ext.releases as rel
from gemma4_saelens_ext.releases.loader import ReleaseFilesNotFoundError
from gemma4_saelens_ext.releases.registry import register_release, register_releases, unregister_release
from gemma4_saelens_ext.releases.spec import LOADER_NAME, ReleaseSpec, SAESpec
from hf_cache import write_hf_cache

PUBLISHED = "Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit"
PUBLISHED_FILE = "gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit.pt"
SAE_ID = "blocks.25.hook_resid_post"


def published_like_files(tmp: Path, seed: int = 0) -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """A checkpoint at the published shapes in nn.Linear layout + its cfg.json."""
    g = torch.Generator().manual_seed(seed)
    sd = {
        "encoder.weight": torch.randn(6144, 1536, generator=g) / 40,
        "encoder.bias": torch.randn(6144, generator=g) * 0.1,
        "decoder.weight": torch.randn(1536, 6144, generator=g) / 80,
        "decoder.bias": torch.randn(1536, generator=g),
    }
    torch.save(sd, tmp / "w.pt")
    cfg = {"d_in": 1536, "d_sae": 6144, "k": 16, "apply_b_dec_to_input": False, "layer": 25}
    return {PUBLISHED_FILE: (tmp / "w.pt").read_bytes(), "cfg.json": json.dumps(cfg).encode()}, sd


def test_builtin_release_is_in_saelens_directory():
    from sae_lens.loading import pretrained_sae_loaders as L
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory, get_repo_id_and_folder_name

    names = register_releases()
    assert PUBLISHED in names
    entry = get_pretrained_saes_directory()[PUBLISHED]
    assert entry.repo_id == PUBLISHED and entry.model == "google/gemma-4-E2B"
    assert entry.conversion_func == LOADER_NAME
    assert entry.saes_map == {SAE_ID: PUBLISHED_FILE}
    assert get_repo_id_and_folder_name(PUBLISHED, SAE_ID) == (PUBLISHED, PUBLISHED_FILE)
    assert L.get_conversion_loader_name(PUBLISHED) == LOADER_NAME
    assert L.NAMED_PRETRAINED_SAE_LOADERS[LOADER_NAME] is rel.registry.gemma4_behavior_loader
    assert L.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER_NAME] is rel.registry.gemma4_behavior_config_getter


def test_saelens_listing_tools_show_releases():
    from sae_lens.evals import all_loadable_saes, get_saes_from_regex

    register_releases()
    mine = ReleaseSpec("test-listing", saes=(SAESpec(SAE_ID, "a.pt", layer=25),), local_dir="/tmp")
    register_release(mine)
    try:
        rows = all_loadable_saes()
        assert (PUBLISHED, SAE_ID, 0.995, 16.0) in rows
        assert ("test-listing", SAE_ID, 1.0, 0.0) in rows  # SAELens's defaults when a release reports none
        assert get_saes_from_regex(r"Solshine/.*", r"blocks\.25\..*") == [(PUBLISHED, SAE_ID, 0.995, 16.0)]
    finally:
        unregister_release("test-listing")


def test_registration_idempotent_and_never_overrides_saelens():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    register_releases()
    d = get_pretrained_saes_directory()
    snapshot = dict(d)
    assert register_releases() == register_releases()
    assert get_pretrained_saes_directory() is d and dict(d) == snapshot
    assert all(d[k] is v for k, v in snapshot.items())

    spec = ReleaseSpec("gpt2-small-res-jb", saes=(SAESpec("x", "x.pt", layer=0),), local_dir="/tmp")
    with pytest.raises(ValueError, match="already used by SAELens"):
        register_release(spec)
    assert d["gpt2-small-res-jb"] is snapshot["gpt2-small-res-jb"]

    mine = ReleaseSpec("test-idem", saes=(SAESpec(SAE_ID, "a.pt", layer=25),), local_dir="/tmp")
    register_release(mine)
    register_release(mine)  # same spec: no-op
    other = ReleaseSpec("test-idem", saes=(SAESpec(SAE_ID, "b.pt", layer=25),), local_dir="/tmp")
    with pytest.raises(ValueError, match="different spec"):
        register_release(other)
    register_release(other, replace_existing=True)
    assert d["test-idem"].saes_map == {SAE_ID: "b.pt"}
    unregister_release("test-idem")
    assert "test-idem" not in d


def test_reregisters_after_directory_cache_clear():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    register_releases()
    get_pretrained_saes_directory.cache_clear()
    assert PUBLISHED not in get_pretrained_saes_directory()
    register_releases()
    assert PUBLISHED in get_pretrained_saes_directory()


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown precision"):
        SAESpec(SAE_ID, "a.pt", layer=25, precision="nf3")
    with pytest.raises(ValueError, match="exactly one of repo_id or local_dir"):
        ReleaseSpec("r", saes=(SAESpec(SAE_ID, "a.pt", layer=25),))
    s = SAESpec(SAE_ID, "sub/a.pt", layer=25)
    assert s.format == "upstream" and s.files == ("sub/a.pt", "sub/cfg.json")
    s = SAESpec(SAE_ID, SAE_ID, layer=25)
    assert s.format == "saelens" and s.files == (f"{SAE_ID}/cfg.json", f"{SAE_ID}/sae_weights.safetensors")
    comp = rel.upstream_release("someone/gemma4_e2b_other_behaviorSAE_topk_k16_L25_bnb4bit")
    assert comp.saes[0].path == "gemma4_e2b_other_behaviorSAE_topk_k16_L25_bnb4bit.pt" and comp.saes[0].layer == 25


def test_published_release_from_hf_cache_offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 + files in the HF cache layout: SAE.from_pretrained on the registered release name."""
    from sae_lens import SAE, TopKSAE

    files, sd = published_like_files(tmp_path)
    cache = tmp_path / "hub"
    write_hf_cache(cache, PUBLISHED, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    register_releases()
    sae = SAE.from_pretrained(PUBLISHED, SAE_ID)
    assert isinstance(sae, TopKSAE)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (1536, 6144, 16)
    md = sae.cfg.metadata
    assert (md.model_name, md.hook_name, md.precision, md.layer) == ("google/gemma-4-E2B", SAE_ID, "nf4", 25)
    assert md.release == PUBLISHED
    torch.testing.assert_close(sae.W_enc, sd["encoder.weight"].T)
    torch.testing.assert_close(sae.W_dec, sd["decoder.weight"].T)

    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    cfg = load_sae_config_from_huggingface(PUBLISHED, SAE_ID)
    assert cfg["architecture"] == "topk" and cfg["k"] == 16


def test_missing_files_offline_error_names_repo_and_command(tmp_path, monkeypatch):
    from sae_lens import SAE

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    register_releases()
    with pytest.raises(ReleaseFilesNotFoundError) as ei:
        SAE.from_pretrained(PUBLISHED, SAE_ID)
    msg = str(ei.value)
    assert PUBLISHED in msg and PUBLISHED_FILE in msg and "HF_HUB_OFFLINE=1" in msg
    assert f"huggingface-cli download {PUBLISHED} {PUBLISHED_FILE} cfg.json" in msg


def test_cli_releases_lists_builtin(capsys, tmp_path):
    from gemma4_saelens_ext.cli import main

    assert main(["releases", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["release"] == PUBLISHED)
    assert row["sae_id"] == SAE_ID and row["precision"] == "nf4" and row["layer"] == 25
    assert main(["releases"]) == 0
    assert PUBLISHED in capsys.readouterr().out
    assert main(["releases", "--register-local", str(tmp_path)]) == 1  # not an exported folder: clear message, no traceback
    assert "release.json" in capsys.readouterr().err


ISOLATION_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as L
    from sae_lens.loading import pretrained_saes_directory as P

    UNRELATED = "gpt2-small-res-jb"
    d = P.get_pretrained_saes_directory()
    entries_before = {k: (v, repr(v)) for k, v in d.items()}
    loaders, getters = L.NAMED_PRETRAINED_SAE_LOADERS, L.NAMED_PRETRAINED_SAE_CONFIG_GETTERS
    loaders_before, getters_before = dict(loaders), dict(getters)

    def lookups():
        out = {}
        for name, e in P.get_pretrained_saes_directory().items():
            sid = next(iter(e.saes_map))
            out[name] = (P.get_repo_id_and_folder_name(name, sid), P.get_config_overrides(name, sid),
                         L.get_conversion_loader_name(name), P.get_norm_scaling_factor(name, sid))
        return out

    lookups_before = lookups()
    sae1, cfg1, _ = SAE.from_pretrained_with_cfg_and_sparsity(UNRELATED, "blocks.0.hook_resid_pre")

    import gemma4_saelens_ext
    from gemma4_saelens_ext import releases as R
    R.register_releases(); R.register_releases()

    assert P.get_pretrained_saes_directory() is d
    assert L.NAMED_PRETRAINED_SAE_LOADERS is loaders and L.NAMED_PRETRAINED_SAE_CONFIG_GETTERS is getters
    assert all(loaders[k] is f for k, f in loaders_before.items())
    assert all(getters[k] is f for k, f in getters_before.items())
    assert set(loaders) - set(loaders_before) == {R.spec.LOADER_NAME} == set(getters) - set(getters_before)
    for k, (obj, text) in entries_before.items():
        assert d[k] is obj and repr(d[k]) == text, k
    added = set(d) - set(entries_before)
    assert added == {s.release for s in R.list_releases()}, added
    after = lookups()
    assert all(after[k] == v for k, v in lookups_before.items())

    sae2, cfg2, _ = SAE.from_pretrained_with_cfg_and_sparsity(UNRELATED, "blocks.0.hook_resid_pre")
    assert type(sae1) is type(sae2) and cfg1 == cfg2
    sd1, sd2 = sae1.state_dict(), sae2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)

    # the published release, offline, from the HF cache (env set before huggingface_hub was imported)
    sae = SAE.from_pretrained(sys.argv[1], "blocks.25.hook_resid_post")
    assert sae.cfg.d_sae == 6144 and sae.cfg.metadata.precision == "nf4"
    print("ISOLATION-OK", len(added))
    """
)


def test_plugin_import_leaves_unrelated_release_unchanged(tmp_path):
    """Fresh interpreter, real HF_HUB_OFFLINE=1: stock SAELens lookup/loading of another release is unaffected."""
    from sae_lens import StandardSAE, StandardSAEConfig

    cache = tmp_path / "hub"
    ref = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64))
    ref.cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    ref.cfg.metadata.model_name = "gpt2-small"
    ref.save_model(tmp_path / "gpt2sae")
    write_hf_cache(
        cache,
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {f"blocks.0.hook_resid_pre/{f.name}": f.read_bytes() for f in (tmp_path / "gpt2sae").iterdir()},
    )
    files, _ = published_like_files(tmp_path)
    write_hf_cache(cache, PUBLISHED, files)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", ISOLATION_SCRIPT, PUBLISHED],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ISOLATION-OK" in proc.stdout
