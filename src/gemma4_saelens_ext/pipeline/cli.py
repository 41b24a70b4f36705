"""``gemma4-sae demo`` and ``gemma4-sae extract`` (data-parallel under torchrun)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    from gemma4_saelens_ext.pipeline.demo import DemoConfig
    from gemma4_saelens_ext.pipeline.distributed import add_extract_args, cmd_extract

    d = DemoConfig()  # one source of truth for the defaults

    p = subparsers.add_parser(
        "demo",
        help="behavior dataset -> SAE -> eval report -> model card, in one folder (resumable)",
        description="Runs the four stages into --out; finished stages are reused unless --fresh.",
    )
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--model", default=d.model, help="embedded name, local dir or Hub id (google/gemma-4-E2B)")
    p.add_argument("--precision", default=d.precision)
    p.add_argument("--layer", type=int, default=None, help="SAE layer (default: the training config's)")
    p.add_argument("--config", default=d.config, help=f"training config (default {d.config})")
    p.add_argument("--suite", default=d.suite, help=f"eval suite (default {d.suite})")
    p.add_argument("--samples-per-prompt", type=int, default=d.samples_per_prompt)
    p.add_argument("--max-prompts", type=int, default=d.max_prompts or 0, help="prompts per scenario family (0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--families", default="", help="comma list of scenario families (default: all built-in)")
    p.add_argument("--training-tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true", help="tiny budgets everywhere (smoke test, CI)")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    p.add_argument("--min-free-gb", type=float, default=d.min_free_gb, help="refuse to start below this free disk space")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)

    e = subparsers.add_parser(
        "extract",
        help="layer activations for a text list; shards over ranks under torchrun --nproc-per-node N",
    )
    add_extract_args(e)
    e.set_defaults(func=cmd_extract)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.pipeline.demo import DemoConfig, DemoError, run_demo

    cfg = DemoConfig(
        out=args.out, model=args.model, precision=args.precision, layer=args.layer, config=args.config,
        suite=args.suite, samples_per_prompt=args.samples_per_prompt, max_prompts=args.max_prompts or None,
        max_new_tokens=args.max_new_tokens, families=[f for f in args.families.split(",") if f],
        training_tokens=args.training_tokens, seed=args.seed, quick=args.quick, fresh=args.fresh,
        min_free_gb=args.min_free_gb, progress=not args.no_progress,
    )  # fmt: skip
    try:
        run_demo(cfg)
    except DemoError as e:
        print(f"error: {e}")
        return 1
    return 0
