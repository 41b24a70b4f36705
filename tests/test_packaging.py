"""The shipped configs are package data addressable by name, and the repository's top-level folders are the same
files (one source of truth). CI additionally installs the built wheel outside the checkout (scripts/check_wheel.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma4_saelens_ext.paths import CONFIG_DIRS, resolve_project_file, shipped_configs
from gemma4_saelens_ext.releases.spec import SAELENS_CFG, SAELENS_WEIGHTS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder", ["training_configs", "evals"])
def test_top_level_folder_is_the_package_folder(folder):
    top = REPO / folder
    assert top.resolve() == CONFIG_DIRS[folder].resolve()  # a link, so the two can never differ
    assert sorted(p.name for p in top.glob("*.yaml")) == sorted(f"{n}.yaml" for n in shipped_configs(folder))
    assert len(shipped_configs(folder)) >= 2


def test_every_shipped_config_and_suite_resolves_by_name(tmp_path, monkeypatch):
    from gemma4_saelens_ext.evals import load_suite
    from gemma4_saelens_ext.training.config import load_training_config

    monkeypatch.chdir(tmp_path)  # outside the checkout
    import yaml

    for name in shipped_configs("training_configs"):
        spec = load_training_config(name)
        path = resolve_project_file(f"training_configs/{name}.yaml", "training_configs")
        raw = yaml.safe_load(path.read_text())
        assert spec.config_path == str(path) and spec.source == raw["model"]["source"]
        assert spec.hook_name == f"blocks.{int(raw['model']['layer'])}.hook_resid_post"
        assert (spec.sae["d_in"], spec.sae["d_sae"], spec.sae["k"]) == tuple(raw["sae"][k] for k in ("d_in", "d_sae", "k"))
        assert spec.runner_config().sae.k == raw["sae"]["k"]  # a real SAELens runner config
    for name in shipped_configs("evals"):
        assert load_suite(name).source_file.endswith(f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="shipped evals: demo, gemma4_e2b_gf1_behavior_L25_nf4"):
        load_suite("no_such_suite")
    mine = tmp_path / "mine.yaml"  # a user's own file wins over a shipped name
    mine.write_text((CONFIG_DIRS["evals"] / "demo.yaml").read_text().replace("demo-gemma3-270m-L6", "mine"))
    assert load_suite(str(mine)).name == "mine"


def test_saelens_file_names_match_saelens():
    """releases.spec spells SAELens's file names out (so reading a spec loads no SAELens); they must agree."""
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    assert (SAELENS_CFG, SAELENS_WEIGHTS) == (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME)
