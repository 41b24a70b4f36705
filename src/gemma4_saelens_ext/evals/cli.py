"""``gemma4-sae evals ...`` and ``python -m gemma4_saelens_ext.evals ...`` (the same command).

    gemma4-sae evals run demo [--out DIR] [--quick]          # a shipped suite by name, or a YAML path
    gemma4-sae evals validate gemma4_e2b_gf1_behavior_L25_nf4
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_parser", "main"]


def _run(args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.evals.suite import load_suite, run_suite

    cfg = load_suite(args.suite)
    if args.quick:  # fewer resamples for a smoke run; the report records the settings used
        cfg.stats.n_permutations, cfg.stats.n_bootstrap, cfg.stats.probe_permutations = 200, 200, 10
    out = run_suite(cfg, output_dir=args.out)
    print(f"report: {out / 'report.md'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.evals.suite import load_suite

    for path in args.suite:
        cfg = load_suite(path)
        print(f"{path}: ok (suite {cfg.name!r}, model {cfg.model.source} {cfg.model.precision})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evals", aliases=["eval"],
                              help="behavior evals of an SAE (d-values, probes, steering, ...) from a suite YAML")
    sub = p.add_subparsers(dest="eval_cmd", required=True)
    r = sub.add_parser("run", help="run a suite and write report.json / report.md / plots")
    r.add_argument("suite", help="a shipped suite's name (demo, gemma4_e2b_gf1_behavior_L25_nf4) or a YAML path")
    r.add_argument("--out", "--output-dir", dest="out", default=None,
                   help="report folder (default: the suite's output_dir)")
    r.add_argument("--quick", action="store_true", help="200 permutations/bootstraps, 10 probe permutations")
    r.set_defaults(func=_run)
    v = sub.add_parser("validate", help="parse and check suite YAMLs without loading anything")
    v.add_argument("suite", nargs="+")
    v.set_defaults(func=_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m gemma4_saelens_ext.evals")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ev = add_parser(sub)
    # `python -m gemma4_saelens_ext.evals run X` == `gemma4-sae evals run X`
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("evals", "eval"):
        argv = ["evals", *argv]
    del ev
    args = parser.parse_args(argv)
    return int(args.func(args))
