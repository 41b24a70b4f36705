"""One subcommand of ``gemma4-sae``: the leaf every command module imports (nothing heavy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, a one-line help, the config dataclass behind its flags and what runs it."""

    name: str
    help: str
    config: type | None = None
    run: Callable[[Any], int] | None = None
    aliases: tuple[str, ...] = ()
    description: str | None = None
    subcommands: tuple[Command, ...] = ()
