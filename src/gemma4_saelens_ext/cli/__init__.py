"""The ``gemma4-sae`` command line: one entry point (:func:`main`), the shared options, and one module per
subcommand group, each holding the command's config dataclass import and a ``run(cfg) -> int``.

May import: every room's *config* modules (light: dataclasses, no torch), and the rooms themselves only inside a
command's ``run``, so ``gemma4-sae --help`` loads neither torch, transformers nor sae_lens.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gemma4-sae`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from gemma4_saelens_ext.cli.app import main as _main

    return _main(argv)
