"""The ``gemma4-sae`` command: ``train``, ``build-dataset``, ``evals``, ``export``, ``releases``, ``demo``, ``models``.

Each pipeline stage owns its subcommand (an ``add_parser(subparsers)`` function in its package), so this module only
dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

logger = logging.getLogger("gemma4_saelens_ext")

#: modules that contribute subcommands through ``add_parser(subparsers)``
_SUBCOMMAND_MODULES = (
    "gemma4_saelens_ext.behavior.cli",
    "gemma4_saelens_ext.evals.cli",
    "gemma4_saelens_ext.releases.cli",
    "gemma4_saelens_ext.pipeline.cli",
)


def _parse_value(v: str) -> Any:
    import yaml

    return yaml.safe_load(v)


def _cmd_train(args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.training import train

    overrides = {}
    for item in args.set or []:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. runner.training_tokens=20000), got {item!r}")
        k, v = item.split("=", 1)
        overrides[k] = _parse_value(v)
    if args.out:
        overrides["runner.output_path"] = args.out
    if args.dataset:
        overrides["runner.dataset_path"] = args.dataset
    sae, out = train(args.config, overrides)
    print(f"Trained {type(sae).__name__} d_in={sae.cfg.d_in} d_sae={sae.cfg.d_sae} -> {out}")
    print(f"Reload with: SAE.load_from_disk({str(out)!r})")
    return 0


def _cmd_models(_args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.embedded import EMBEDDED_MODELS
    from gemma4_saelens_ext.precision import _PRESETS

    print("Embedded models:")
    for name, (desc, _) in EMBEDDED_MODELS.items():
        print(f"  {name:26s} {desc}")
    print("Precisions:")
    for name, p in _PRESETS.items():
        print(f"  {name:10s} {p.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemma4-sae", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a TopK SAE from a training_configs/*.yaml through SAELens's runner")
    p.add_argument("config", help="a shipped config's name (demo_gemma3_270m_nf4, seed_gemma4_e2b_L25_nf4) or a YAML path")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. runner.training_tokens=20000")
    p.add_argument("--out", "--output", dest="out", help="output folder (runner.output_path)")
    p.add_argument("--dataset", help="dataset folder or Hub id (runner.dataset_path)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("models", help="list embedded models and precisions")
    p.set_defaults(func=_cmd_models)

    for mod_name in _SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
