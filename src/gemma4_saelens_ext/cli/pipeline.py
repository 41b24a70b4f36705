"""``gemma4-sae demo`` and ``gemma4-sae extract`` (data-parallel under torchrun)."""

from __future__ import annotations

import sys

from gemma4_saelens_ext.activations.config import ExtractConfig
from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.pipeline.config import DemoConfig


def _run_demo(cfg: DemoConfig) -> int:
    from gemma4_saelens_ext.pipeline.demo import DemoError, run_demo

    try:
        run_demo(cfg)
    except DemoError as e:  # a stage failed: its error and traceback are in stages.json
        print(f"gemma4-sae demo: error: {e}", file=sys.stderr)
        return 1
    return 0


def _run_extract(cfg: ExtractConfig) -> int:
    from gemma4_saelens_ext.activations.distributed import cmd_extract

    return cmd_extract(cfg)


COMMANDS = (
    Command("demo", "behavior dataset -> SAE -> eval report -> model card, in one folder (resumable)", DemoConfig,
            _run_demo),
    Command("extract", "layer activations for a text list; shards over ranks under torchrun --nproc-per-node N",
            ExtractConfig, _run_extract),
)  # fmt: skip
