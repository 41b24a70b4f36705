"""``gemma4-sae demo`` and ``gemma4-sae extract`` (data-parallel under torchrun)."""

from __future__ import annotations

from gemma4_saelens_ext.cli import Command
from gemma4_saelens_ext.pipeline.config import DemoConfig
from gemma4_saelens_ext.pipeline.distributed import ExtractConfig, cmd_extract


def _run_demo(cfg: DemoConfig) -> int:
    from gemma4_saelens_ext.pipeline.demo import DemoError, run_demo

    try:
        run_demo(cfg)
    except DemoError as e:
        print(f"error: {e}")
        return 1
    return 0


COMMANDS = (
    Command("demo", "behavior dataset -> SAE -> eval report -> model card, in one folder (resumable)", DemoConfig,
            _run_demo),
    Command("extract", "layer activations for a text list; shards over ranks under torchrun --nproc-per-node N",
            ExtractConfig, cmd_extract),
)  # fmt: skip
