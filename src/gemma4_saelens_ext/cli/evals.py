"""``gemma4-sae evals run|validate`` and ``python -m gemma4_saelens_ext.evals run|validate`` (the same command).

    gemma4-sae evals run demo [--out DIR] [--quick]          # a shipped suite by name, or a YAML path
    gemma4-sae evals validate gemma4_e2b_gf1_behavior_L25_nf4
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.io import check_out
from gemma4_saelens_ext.options import layer_field, positional, precision_field, switch

__all__ = ["COMMANDS", "EvalRunConfig", "ValidateConfig", "main"]


@dataclass
class EvalRunConfig:
    """``gemma4-sae evals run``: run a suite and write report.json, report.md and plots. The suite's YAML keys are
    documented in docs/evals.md; the options here override the few a run usually changes."""

    suite: str = positional("SUITE")
    """a shipped suite's name (demo, gemma4_e2b_gf1_behavior_L25_nf4) or a YAML path"""
    out: Optional[str] = None
    """report folder (default: the suite's output_dir)"""
    model: Optional[str] = None
    """base model instead of the suite's model.source"""
    precision: Optional[str] = precision_field(None)
    """load precision instead of the suite's model.precision"""
    layer: Union[int, str, None] = layer_field()
    """layer instead of the suite's model.layer (an int or blocks.L.hook_resid_post)"""
    seed: Optional[int] = None
    """seed for every resample instead of the suite's"""
    quick: bool = switch(False)
    """200 flips and group resamples, 10 probe flips: a smoke run (the report records the settings used)"""

    def __post_init__(self) -> None:
        if self.out is not None:
            check_out(self.out)

    def load(self):  # noqa: ANN201 - a SuiteConfig
        """The suite with these options applied (parsed and validated; nothing loads)."""
        from gemma4_saelens_ext.evals.suite import load_suite

        cfg = load_suite(self.suite, output_dir=self.out, seed=self.seed)
        for key, value in (("source", self.model), ("precision", self.precision), ("layer", self.layer)):
            if value is not None:
                setattr(cfg.model, key, value)
        if self.quick:
            cfg.stats.n_permutations, cfg.stats.n_bootstrap, cfg.stats.probe_permutations = 200, 200, 10
        return cfg


@dataclass
class ValidateConfig:
    """``gemma4-sae evals validate``: parse and check suites without loading a model or data."""

    suites: list[str] = positional("SUITE", nargs="+")
    """shipped suite names or YAML paths"""


def _run(cfg: EvalRunConfig) -> int:
    from gemma4_saelens_ext.evals.suite import run_suite

    out = run_suite(cfg.load())  # --out is already the suite's output_dir
    print(f"report: {out / 'report.md'}")
    return 0


def _validate(cfg: ValidateConfig) -> int:
    from gemma4_saelens_ext.evals.suite import load_suite

    for path in cfg.suites:
        suite = load_suite(path)
        print(f"{path}: ok (suite {suite.name!r}, model {suite.model.source} {suite.model.precision})")
    return 0


COMMANDS = (
    Command(
        "evals", "behavior evals of an SAE (d-values, probes, steering, ...) from a suite", aliases=("eval",),
        subcommands=(
            Command("run", "run a suite and write report.json / report.md / plots", EvalRunConfig, _run),
            Command("validate", "parse and check suites without loading anything", ValidateConfig, _validate),
        ),
    ),
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gemma4_saelens_ext.evals run X`` == ``gemma4-sae evals run X``."""
    from gemma4_saelens_ext.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("evals", "eval"):
        argv = ["evals", *argv]
    return cli_main(argv)
