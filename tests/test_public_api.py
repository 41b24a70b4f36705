"""The public API: a few entry points at the package root, each returning a documented dataclass, and a README whose
Python examples import only them."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import typing
from pathlib import Path

import numpy as np
import pytest

import gemma4_saelens_ext as pkg

ROOT = Path(__file__).resolve().parents[1]


def _return_type(fn):
    ann = inspect.signature(fn).return_annotation
    if isinstance(ann, str):  # `from __future__ import annotations`: resolve the name in the function's module
        ann = eval(ann, fn.__globals__)  # noqa: S307 - our own annotations
    return ann


def test_every_public_name_resolves():
    assert len(pkg.__all__) == len(set(pkg.__all__))
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    assert set(pkg.ENTRY_POINTS) <= set(pkg.__all__)
    assert 6 <= len(pkg.ENTRY_POINTS) <= 10
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        pkg.not_a_name  # noqa: B018


@pytest.mark.parametrize("name", pkg.ENTRY_POINTS)
def test_entry_point_returns_a_documented_dataclass(name):
    fn = getattr(pkg, name)
    assert callable(fn) and fn.__doc__, name
    ret = _return_type(fn)
    assert dataclasses.is_dataclass(ret), f"{name} returns {ret!r}, not a dataclass"
    assert ret.__name__ in pkg.__all__, f"{name}'s result type {ret.__name__} is not exported from the root"
    assert ret.__doc__ and not ret.__doc__.startswith(f"{ret.__name__}("), f"{ret.__name__} has no docstring"
    # the name `acts` is the one name for activations in public signatures
    params = inspect.signature(fn).parameters
    assert not {"X", "feats", "features"} & set(params), f"{name}: call activations `acts`"


def test_docs_api_lists_every_entry_point_with_its_result():
    text = (ROOT / "docs" / "api.md").read_text()
    for name in pkg.ENTRY_POINTS:
        res = _return_type(getattr(pkg, name)).__name__
        assert re.search(rf"^## `{name}` -> `{res}`$", text, re.M), f"docs/api.md has no section for {name} -> {res}"
        for field in dataclasses.fields(_return_type(getattr(pkg, name))):
            if field.name.startswith("null_"):
                continue  # listed as `null_*`
            assert f"`{field.name}`" in text, f"docs/api.md does not describe {res}.{field.name}"


def _python_blocks(md: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", md, re.S)


def test_readme_python_imports_only_the_public_api():
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    used: set[str] = set()
    for code in blocks:
        tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gemma4_saelens_ext"):
                assert node.module == "gemma4_saelens_ext", f"README imports from {node.module}: use the root"
                names = {a.name for a in node.names}
                assert names <= set(pkg.__all__), f"README imports {names - set(pkg.__all__)}: not public"
                used |= names
            elif isinstance(node, ast.Import):
                for a in node.names:
                    assert a.name == "gemma4_saelens_ext" or not a.name.startswith("gemma4_saelens_ext"), a.name
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "gemma4_saelens_ext":
                assert node.attr in pkg.__all__, f"README uses gemma4_saelens_ext.{node.attr}: not public"
                used.add(node.attr)
    assert {"train", "load_model", "run_suite", "register_releases"} <= used


def test_statistics_entry_points_run_and_return_their_dataclasses():
    """The two model-free entry points, on data with a planted effect in every group: the result types are what
    the annotations say, and the effect is found."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 4)
    y = np.tile([0, 1, 0, 1], 12)
    acts = rng.normal(size=(48, 5))
    acts[:, 2] += 2.5 * y  # latent 2 separates the labels in every group
    d = pkg.dvalue_analysis(acts, y, groups=groups, n_permutations=200, n_bootstrap=100, min_class_size=1)
    assert isinstance(d, pkg.DValueResult) and d.d_max_latent == 2 and d.p_d_max < 0.01 and d.n_groups == 12
    p = pkg.cross_validated_probe(acts, y, groups=groups, n_splits=4, n_permutations=20, n_bootstrap=50,
                                  min_class_size=1)
    assert isinstance(p, pkg.ProbeResult) and p.balanced_accuracy > 0.85 and p.n_groups == 12


def test_suite_result_stands_in_for_its_folder(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    r = pkg.SuiteResult(tmp_path, {})
    assert r / "report.json" == tmp_path / "report.json" and str(r) == str(tmp_path)
    assert Path(r) == tmp_path and [p.name for p in r.glob("*.json")] == ["report.json"]
    assert typing.get_type_hints(pkg.SuiteResult)["output_dir"] is Path


def test_load_sae_reads_a_saved_folder_and_names_a_missing_release(tmp_path):
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=48, k=4))
    sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    sae.save_model(tmp_path / "sae")
    got = pkg.load_sae(tmp_path / "sae")
    assert isinstance(got, pkg.LoadedSAE)
    assert (got.d_in, got.d_sae, got.hook_name, got.sae_id) == (16, 48, "blocks.3.hook_resid_post", None)
    torch.testing.assert_close(got.sae.W_enc, sae.W_enc)
    from gemma4_saelens_ext.errors import UserError

    with pytest.raises(UserError, match="did you mean"):
        pkg.load_sae("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bi", "blocks.25.hook_resid_post")
