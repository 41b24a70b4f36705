"""The ``gemma4-sae`` command. Every subcommand is a config dataclass plus a ``run(cfg) -> int``: its flags and
``--help`` come from the dataclass fields and the docstrings under them (``simple_parsing``), and ``--config-file
FILE.yaml`` reads the same fields from YAML (flags given on the command line win).

One error path (:func:`main`): a user error (:class:`~gemma4_saelens_ext.errors.UserError`, or a ValueError /
FileNotFoundError raised by this package's own checks) anywhere, argument parsing and the configs'
``__post_init__`` checks included, prints one ``gemma4-sae: error: ...`` paragraph and exits 2; Ctrl-C exits 130
without a traceback; ``--debug`` shows the traceback of either. Anything else is a bug: its traceback is kept, with
where to report it, and the exit status is 1. A broken bitsandbytes fails only the quantized precisions.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.errors import BUG_REPORT, MissingFileError, UserError
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
    from gemma4_saelens_ext.paths import read_yaml_mapping

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"--config-file {path}: no such file.", "give the path of an existing YAML file.")
    data = {str(k).replace("-", "_"): v for k, v in read_yaml_mapping(p, f"--config-file {path}").items()}
    try:
        return config_from_dict(cls, data, f"--config-file {path}")
    except TypeError as e:  # a required option missing from the file
        raise UserError(f"--config-file {path}: {e}.", "give it in the file.") from None


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
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error (accepted anywhere)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _commands():
        _add(sub, cmd, argv)
    return parser


_PKG_DIR = Path(__file__).resolve().parents[1]


def _raised_by_us(e: BaseException) -> bool:
    """The innermost frame of ``e``'s traceback is in this package: one of its own checks raised it on purpose."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PKG_DIR)


def is_user_error(e: BaseException) -> bool:
    """A mistake the user can fix: a UserError (a missing optional dependency included), or a ValueError /
    FileNotFoundError one of this package's own checks raised. (A bare ImportError is a bug: a broken import.)"""
    ours = isinstance(e, (ValueError, FileNotFoundError)) and _raised_by_us(e)
    return isinstance(e, UserError) or ours


class _BitsandbytesGuard:
    """Import-time guard: the first time ``transformers`` is imported, try ``bitsandbytes``; when it fails (a broken
    CUDA library, a bad wheel), log why and mark it absent (``sys.modules`` entry None), so transformers and
    transformer_lens take their no-bitsandbytes paths and only the quantized precisions fail (with that reason)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        if "bitsandbytes" not in sys.modules:
            try:
                importlib.import_module("bitsandbytes")
            except Exception as e:  # noqa: BLE001 - any import failure: the package is unusable
                for m in [m for m in sys.modules if m == "bitsandbytes" or m.startswith("bitsandbytes.")]:
                    del sys.modules[m]
                sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
                from gemma4_saelens_ext.models.precision import QUANTIZED, UNQUANTIZED

                logger.warning("bitsandbytes failed to import (%s: %s); the quantized precisions (%s) are unavailable, "
                               "%s work.", type(e).__name__, e, ", ".join(QUANTIZED), "/".join(UNQUANTIZED))
        return None


def _guard_optional_imports() -> None:
    if "transformers" not in sys.modules and not any(isinstance(f, _BitsandbytesGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _BitsandbytesGuard())


def _interrupted(debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print("\ngemma4-sae: interrupted (Ctrl-C). Work already written is kept (outputs are written atomically); "
          "rerun the same command to resume.", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gemma4-sae`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status: 0 done, 1 a bug (with
    its traceback), 2 a user error (one paragraph naming the key, file or value and the fix), 130 Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    try:
        _guard_optional_imports()
        args = build_parser(argv).parse_args(argv)  # the configs' __post_init__ checks run here
        logging.basicConfig(
            level=logging.DEBUG if args.verbose or debug else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        for noisy in ("httpx", "urllib3", "filelock", "bitsandbytes"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        return int(args.func(getattr(args, "cfg", None)) or 0)
    except KeyboardInterrupt:
        return _interrupted(debug)
    except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
        if type(e).__name__ == "InterruptedException":  # SAELens's SIGINT/SIGTERM handler during training
            return _interrupted(debug)
        if is_user_error(e):
            if debug:
                traceback.print_exc()
            print(f"gemma4-sae: error: {e}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"\ngemma4-sae: unexpected error {type(e).__name__}. {BUG_REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
