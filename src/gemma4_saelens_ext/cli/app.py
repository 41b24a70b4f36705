"""The ``gemma4-sae`` command. Every subcommand is a config dataclass plus a ``run(cfg) -> int``: its flags and
``--help`` come from the dataclass fields and the docstrings under them (``simple_parsing``), and ``--config-file
FILE.yaml`` reads the same fields from YAML (flags given on the command line win).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.options import config_from_dict

logger = logging.getLogger("gemma4_saelens_ext")

__all__ = ["build_parser", "main"]


#: modules with a ``COMMANDS`` tuple, in the order ``gemma4-sae --help`` lists them
_COMMAND_MODULES = (
    "gemma4_saelens_ext.cli.train",
    "gemma4_saelens_ext.cli.dataset",
    "gemma4_saelens_ext.cli.pipeline",
    "gemma4_saelens_ext.cli.evals",
    "gemma4_saelens_ext.cli.releases",
)


def _commands() -> list[Command]:
    return [c for m in _COMMAND_MODULES for c in importlib.import_module(m).COMMANDS]


def _config_defaults(cls: type, argv: Sequence[str]) -> Any:
    """The config instance ``--config-file FILE`` describes (None without one): unknown keys are an error."""
    path = None
    for i, a in enumerate(argv):
        if a == "--config-file" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config-file="):
            path = a.split("=", 1)[1]
    if path is None:
        return None
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"--config-file {path}: no such file")
    data = yaml.safe_load(p.read_text()) or {}
    if isinstance(data, dict):
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        return config_from_dict(cls, data, f"--config-file {path}")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    except TypeError as e:  # a required option missing from the file
        raise SystemExit(f"--config-file {path}: {e}; give it in the file") from None


def _add(sub: Any, cmd: Command, argv: Sequence[str], path: tuple[str, ...] = ()) -> None:
    from simple_parsing import DashVariant

    p = sub.add_parser(
        cmd.name, aliases=list(cmd.aliases), help=cmd.help, description=cmd.description or cmd.help,
        add_option_string_dash_variants=DashVariant.DASH,
    )  # fmt: skip
    if cmd.subcommands:
        inner = p.add_subparsers(dest=f"{cmd.name}_command", required=True, metavar="COMMAND")
        for c in cmd.subcommands:
            _add(inner, c, argv, (*path, cmd.name))
        return
    if cmd.config is not None and is_dataclass(cmd.config):
        head = [a for a in argv if not a.startswith("-")][: len(path) + 1]  # the command words typed
        chosen = any(head == [*path, name] for name in (cmd.name, *cmd.aliases))
        p.add_argument("--config-file", metavar="FILE.yaml", help="read these options from a YAML file (flags win)")
        p.add_arguments(cmd.config, dest="cfg", default=_config_defaults(cmd.config, argv) if chosen else None)
    p.set_defaults(func=cmd.run)


def build_parser(argv: Sequence[str] = ()) -> Any:
    """The ``gemma4-sae`` parser (``argv`` is only read for ``--config-file``)."""
    import simple_parsing

    parser = simple_parsing.ArgumentParser(
        prog="gemma4-sae", description="Train, load and evaluate behavior SAEs on Gemma models (SAELens plugin).",
        add_option_string_dash_variants=simple_parsing.DashVariant.DASH,
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _commands():
        _add(sub, cmd, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.func(getattr(args, "cfg", None)) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
