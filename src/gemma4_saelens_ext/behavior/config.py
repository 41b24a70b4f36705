"""What a dataset build depends on (``BuildConfig``), what it returns (``BuildResult``) and its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from simple_parsing.helpers import choice

from gemma4_saelens_ext.behavior.kinds import DEFAULT_KINDS, INSTRUCTED_MODES, check_instructed_mode, check_kinds
from gemma4_saelens_ext.errors import UserError, check_range
from gemma4_saelens_ext.io import check_out
from gemma4_saelens_ext.options import precision_field, split_csv, switch

__all__ = ["BuildConfig", "BuildError", "BuildResult", "BUILD_FORMAT", "GENERATION_KEYS", "CONSORTIUM_NAMES"]

BUILD_FORMAT = 1
#: settings that change what a completion is; a resumed build must match them
GENERATION_KEYS = ("model", "precision", "seed", "temperature", "max_new_tokens", "control_max_new_tokens")
CONSORTIUM_NAMES = ("consortium_majority", "consortium_unanimous")


class BuildError(UserError, RuntimeError):
    """The build cannot go on; the message says what to change (a user error: exit status 2)."""


def check_prompt_limit(n: int | None, flag: str = "--max-prompts-per-family") -> None:
    check_range(flag, n, low=1, integer=True,
                fix="give a positive count, or the flag without a value (None) for every prompt.")


@dataclass
class BuildConfig:
    """``gemma4-sae build-dataset``: everything a build depends on (the manifest stores it). Defaults mirror the seed
    protocol: 8 samples per prompt at temperature 1, the keyword judge on the first 30 characters decides the label.
    ``kinds`` adds the other dataset kinds (instructed pairs, incentive, control) to the same folder; each kind
    labels by its own rule (:mod:`gemma4_saelens_ext.behavior.kinds`)."""

    out: str
    """output folder (datasets.load_dataset(OUT) reads it; use it as SAELens's dataset_path)"""
    model: str = "gemma-3-270m"
    """embedded name, local folder or Hub id of the model that writes the completions"""
    precision: str = precision_field("nf4")
    """load precision of that model"""
    kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    """dataset kinds to build into the folder: role_play, input_variation, instructed_pairs, incentive, control (each
    with its own label rule, see docs/datasets.md; the `kind` column tells them apart)"""
    instructed_mode: str = choice(*INSTRUCTED_MODES, default="off_policy")
    """instructed_pairs: off_policy writes each true statement as the assistant's text (label = the instruction, no
    generation); on_policy samples the model's answer to the statement's question (label = the answer key's verdict)"""
    scenarios: list[str] = field(default_factory=list)
    """scenario files, folders or built-in file names (default: the built-in files of the chosen kinds)"""
    families: list[str] = field(default_factory=list)
    """keep only these scenario families (role_play / input_variation: always; another kind only when one of its
    families is named; default: all)"""
    include_input_variation: bool = switch(True)
    """also sample the neutral / V0 / V3 input-variation prompts (--no-include-input-variation skips them)"""
    max_prompts_per_family: Optional[int] = None
    """at most N prompts of each role_play / input_variation / incentive family, taken as whole prompt groups in a
    seeded order (default: all)"""
    max_statements: Optional[int] = None
    """instructed_pairs: at most N statements (groups), a seeded choice spread over the topics (default: all 381)"""
    max_control_prompts: Optional[int] = None
    """control: at most N requests, a seeded choice spread over the categories (default: all 64)"""
    samples_per_prompt: int = 8
    """completions sampled per role_play, input_variation and incentive prompt"""
    instructed_samples_per_prompt: int = 2
    """instructed_pairs on_policy: answers sampled per (statement, instruction) prompt"""
    control_samples_per_prompt: int = 1
    """control: completions sampled per request"""
    seed: int = 0
    """sampling seed (each completion is seeded by its prompt and sample index, so batching never changes it)"""
    max_new_tokens: int = 32
    """tokens generated per completion (control completions: control_max_new_tokens)"""
    control_max_new_tokens: int = 16
    """tokens generated per control completion (short: they only set a false-positive threshold)"""
    temperature: float = 1.0
    """sampling temperature"""
    batch_size: int = 16
    """rows per generate() call"""
    judges: list[str] = field(default_factory=lambda: ["keyword", "paraphrase"])
    """judges to run: keyword, paraphrase, llm or llm:ID (the LLM judge reads its key from the environment)"""
    primary_judge: str = "keyword"
    """the judge deciding `label` and the pools: a judge name, consortium_majority or consortium_unanimous"""
    llm_batch_size: int = 10
    """completions per LLM-judge request"""
    eval_fraction: float = 0.3
    """share of prompt groups in the eval split"""
    balance_input_variation: bool = switch(True)
    """balance the input-variation split per prompt like the others"""
    allow_empty_pool: bool = switch(False)
    """write the dataset even when no prompt has both classes (otherwise an error)"""
    resume: bool = switch(False)
    """continue the build already in --out (generation settings must match)"""
    overwrite: bool = switch(False)
    """replace the build already in --out"""
    progress: bool = switch(True)
    """show progress bars"""

    def __post_init__(self) -> None:
        self.scenarios, self.families = split_csv(self.scenarios), split_csv(self.families)
        self.judges = split_csv(self.judges)
        self.kinds = check_kinds(split_csv(self.kinds), "--kinds")
        check_instructed_mode(self.instructed_mode)
        check_prompt_limit(self.max_prompts_per_family)
        check_prompt_limit(self.max_statements, "--max-statements")
        check_prompt_limit(self.max_control_prompts, "--max-control-prompts")
        check_out(self.out)  # an existing file there, or a folder that cannot be written: said before any work
        # every value is checked here, while the command line is read: a refused setting never reaches the folder
        for name in ("samples_per_prompt", "instructed_samples_per_prompt", "control_samples_per_prompt",
                     "max_new_tokens", "control_max_new_tokens", "batch_size", "llm_batch_size"):
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low=1, integer=True)
        check_range("--temperature", self.temperature, low=0,
                    fix="set --temperature >= 0 (0 = greedy, 1 = the seed's).")
        check_range("--eval-fraction", self.eval_fraction, low=0, high=1, high_open=True,
                    fix="set --eval-fraction to the share of prompt groups held out, in [0, 1), e.g. 0.3.")
        if not self.judges:
            raise UserError("--judges is empty.", "give at least one judge, e.g. --judges keyword.")
        if self.resume and self.overwrite:
            raise UserError("build-dataset: give --resume or --overwrite, not both.")

    def generation_identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GENERATION_KEYS}


@dataclass
class BuildResult:
    """What :func:`~gemma4_saelens_ext.behavior.build_dataset` built: the folder, its manifest and every row."""

    out: Path
    """the dataset folder (``data/*.parquet``, ``manifest.json``, ``README.md`` card, ``raw/`` checkpoint)"""
    manifest: dict[str, Any]
    """the ``manifest.json`` content (settings, kinds and label rules, split sizes, judge agreement)"""
    rows: list[dict[str, Any]]
    """every completion row (``all.parquet``), each with its kind, label, label rule, group and split"""
    n_generated: int
    """completions sampled by this call"""
    n_resumed: int
    """completions read back from the checkpoint of an earlier, interrupted build"""
