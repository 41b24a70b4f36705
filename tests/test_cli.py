"""The ``gemma4-sae`` CLI: every command's flags and --help come from a config dataclass with a docstring under each
field; the shared flags mean the same thing everywhere; --config-file reads the same fields from YAML."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

import pytest
import yaml

from gemma4_saelens_ext.cli.app import _commands, build_parser, main
from gemma4_saelens_ext.errors import UserError
from gemma4_saelens_ext.models.precision import PRECISIONS


def _leaf_commands():
    out = []
    for c in _commands():
        if c.subcommands:
            out += [((c.name, s.name), s) for s in c.subcommands]
        else:
            out.append(((c.name,), c))
    return out


def _configs():
    """Every command config, with nested config dataclasses (extract's ExtractionConfig) included."""
    seen, todo = [], [c.config for _, c in _leaf_commands() if c.config is not None]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        todo += [f.default_factory for f in dataclasses.fields(cls)
                 if dataclasses.is_dataclass(f.default_factory)]  # fmt: skip
    return seen


def _field_docstrings(cls) -> dict[str, str]:
    """Field -> the string literal right under it, read from the source with ``ast`` (independent of simple_parsing)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as ei:
        main([*argv, "--help"])
    assert ei.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_top_level_help_lists_every_command(capsys):
    text = _help(capsys)
    names = {c.name for c in _commands()}
    assert names >= {"train", "build-dataset", "demo", "extract", "evals", "export", "releases", "models"}
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", text), name


@pytest.mark.parametrize("cls", _configs(), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = _field_docstrings(cls)
    cli_fields = [f.name for f in dataclasses.fields(cls) if f.metadata.get("cmd", True) is not False]
    missing = [f for f in cli_fields if f not in docs]
    assert not missing, f"{cls.__name__}: fields without a docstring under them: {missing}"


@pytest.mark.parametrize("path", [p for p, _ in _leaf_commands() if p != ("models",)], ids=" ".join)
def test_command_help_shows_the_field_docstrings(capsys, path):
    cmd = dict(_leaf_commands())[path]
    text = _help(capsys, *path)
    for cls in [c for c in _configs() if c is cmd.config or any(
            f.default_factory is c for f in dataclasses.fields(cmd.config))]:  # fmt: skip
        cli_only = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cmd", True) is not False}
        for name, doc in _field_docstrings(cls).items():
            if name not in cli_only:
                continue
            words = " ".join(doc.split()[:4])
            assert words in text, f"{' '.join(path)} --help lacks the docstring of {cls.__name__}.{name}: {words!r}"


def test_shared_flags_mean_the_same_everywhere(capsys):
    """--precision offers the same choices, --layer takes LAYER (int or hook), --seed an int, in every command."""
    count = dict.fromkeys(("--out", "--model", "--precision", "--layer", "--seed"), 0)
    for path, cmd in _leaf_commands():
        if cmd.config is None:
            continue
        text = _help(capsys, *path)
        for flag in count:
            count[flag] += bool(re.search(rf"(^|[\s\[]){flag}[\s\]]", text))
        if "--precision" in text:
            assert "--precision {" + ",".join(PRECISIONS) + "}" in text, path
        if re.search(r"--layer\b", text):
            assert "--layer LAYER" in text, path
        if re.search(r"--seed\b", text):
            assert re.search(r"--seed \[?int", text), path
    assert all(n >= 3 for n in count.values()), count  # the shared flags really are shared


def test_layer_flag_takes_an_int_or_a_hook_name():
    parse = lambda *a: build_parser(list(a)).parse_args(list(a)).cfg  # noqa: E731
    assert parse("demo", "--layer", "7").layer == 7
    assert parse("train", "x", "--layer", "blocks.3.hook_resid_post").layer == "blocks.3.hook_resid_post"
    assert parse("extract", "--texts", "t", "--out", "o", "--layer", "model.layers.2").spec.layer == "model.layers.2"


def test_bad_precision_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["demo", "--precision", "int3"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "int3" in err and all(p in err for p in PRECISIONS)


def test_lists_booleans_and_optional_counts():
    parse = lambda *a: build_parser(list(a)).parse_args(list(a)).cfg  # noqa: E731
    cfg = parse("build-dataset", "--out", "o", "--families", "werewolf,slug_snail", "cats", "--no-progress",
                "--no-include-input-variation", "--max-prompts-per-family", "3")  # fmt: skip
    assert cfg.families == ["werewolf", "slug_snail", "cats"]
    assert (cfg.progress, cfg.include_input_variation, cfg.max_prompts_per_family) == (False, False, 3)
    assert parse("demo").max_prompts_per_family == 4
    assert parse("demo", "--max-prompts-per-family").max_prompts_per_family is None  # no value: every prompt
    with pytest.raises(ValueError, match="positive count"):
        parse("demo", "--max-prompts-per-family", "0")


def test_train_options_become_config_overrides():
    argv = ["train", "demo_gemma3_270m_nf4", "--out", "o", "--precision", "int8", "--layer", "5", "--seed", "3",
            "--set", "runner.lr=0.001", "sae.k=8", "--training-tokens", "4096"]  # fmt: skip
    ov = build_parser(argv).parse_args(argv).cfg.overrides()
    assert ov == {"runner.output_path": "o", "model.precision": "int8", "model.layer": 5, "runner.seed": 3,
                  "runner.lr": 0.001, "sae.k": 8, "runner.training_tokens": 4096}  # fmt: skip
    from gemma4_saelens_ext.training.config import load_training_config

    spec = load_training_config("demo_gemma3_270m_nf4", ov)
    assert (spec.precision, spec.layer, spec.sae["k"], spec.runner["seed"]) == ("int8", 5, 8, 3)


def test_config_file_gives_defaults_and_flags_win(tmp_path):
    f = tmp_path / "demo.yaml"
    f.write_text(yaml.safe_dump({"out": "runs/x", "samples-per-prompt": 3, "families": ["werewolf"], "seed": 9}))
    argv = ["demo", "--config-file", str(f), "--seed", "4"]
    cfg = build_parser(argv).parse_args(argv).cfg
    assert (cfg.out, cfg.samples_per_prompt, cfg.families, cfg.seed) == ("runs/x", 3, ["werewolf"], 4)
    assert cfg.max_new_tokens == 24  # untouched fields keep the dataclass default
    f.write_text(yaml.safe_dump({"sample_per_prompt": 3}))
    with pytest.raises(UserError, match=r"unknown keys \['sample_per_prompt'\] \(.*did you mean samples_per_prompt"):
        build_parser(argv).parse_args(argv)
    # a nested config (extract's spec) is a nested mapping in the file, checked key by key like the suite files
    f.write_text(yaml.safe_dump({"texts": "t.txt", "out": "o.safetensors", "spec": {"layer": 3, "pooling": "last"}}))
    argv = ["extract", "--config-file", str(f)]
    cfg = build_parser(argv).parse_args(argv).cfg
    assert (cfg.texts, cfg.spec.layer, cfg.spec.pooling, cfg.spec.batch_size) == ("t.txt", 3, "last", 8)
    f.write_text(yaml.safe_dump({"texts": "t.txt", "out": "o", "spec": {"layers": 3}}))
    with pytest.raises(UserError, match=r"spec: unknown keys \['layers'\] \(layers: did you mean layer"):
        build_parser(argv).parse_args(argv)


def test_evals_module_and_subcommand_are_the_same_command(capsys):
    from gemma4_saelens_ext.cli.evals import main as evals_main

    assert evals_main(["validate", "demo"]) == 0
    a = capsys.readouterr().out
    assert main(["evals", "validate", "demo"]) == 0
    assert capsys.readouterr().out == a and "ok (suite" in a
    argv = ["evals", "run", "demo", "--precision", "int8", "--layer", "4", "--seed", "2", "--out", "o", "--quick"]
    suite = build_parser(argv).parse_args(argv).cfg.load()
    assert (suite.model.precision, suite.model.layer, suite.seed, suite.output_dir) == ("int8", 4, 2, "o")
    assert suite.stats.n_permutations == 200
