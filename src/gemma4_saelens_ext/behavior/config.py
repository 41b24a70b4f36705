"""What a dataset build depends on (``BuildConfig``), what it returns (``BuildResult``) and its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BuildConfig", "BuildError", "BuildResult", "BUILD_FORMAT", "GENERATION_KEYS", "CONSORTIUM_NAMES"]

BUILD_FORMAT = 1
#: settings that change what a completion is; a resumed build must match them
GENERATION_KEYS = ("model", "precision", "seed", "temperature", "max_new_tokens")
CONSORTIUM_NAMES = ("consortium_majority", "consortium_unanimous")


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to change."""


@dataclass
class BuildConfig:
    """Everything a build depends on (the manifest stores it). Defaults mirror the seed protocol."""

    out: str
    model: str = "gemma-3-270m"
    precision: str = "nf4"
    #: scenario files, folders or built-in family names; empty = the whole built-in library
    scenarios: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    include_input_variation: bool = True
    #: at most N prompts of each family, taken as whole prompt groups in a seeded order (quick builds, tests)
    max_prompts_per_family: int | None = None
    samples_per_prompt: int = 8
    seed: int = 0
    max_new_tokens: int = 32
    temperature: float = 1.0
    batch_size: int = 16
    judges: list[str] = field(default_factory=lambda: ["keyword", "paraphrase"])
    #: a judge name or consortium_majority / consortium_unanimous; decides ``label`` and the pools
    primary_judge: str = "keyword"
    llm_batch_size: int = 10
    eval_fraction: float = 0.3
    balance_input_variation: bool = True
    #: write the dataset even when the balanced pool is empty (otherwise PoolError)
    allow_empty_pool: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def generation_identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GENERATION_KEYS}


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    n_generated: int
    n_resumed: int
