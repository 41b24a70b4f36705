"""``gemma4-sae build-dataset``: the command-line face of :func:`gemma4_saelens_ext.behavior.build.build_dataset`.

The top-level dispatcher calls :func:`add_parser`; ``python -m gemma4_saelens_ext.behavior.cli build-dataset ...``
works on its own too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["add_parser", "run", "main"]

log = logging.getLogger(__name__)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from gemma4_saelens_ext.precision import PRECISIONS

    p = subparsers.add_parser(
        "build-dataset",
        help="sample role-play completions, label them and write a balanced dataset SAELens can train on",
        description="Scenarios -> seeded samples -> judges -> same-prompt balanced pools -> parquet dataset folder "
        "(datasets.load_dataset(OUT) reads it; use OUT as SAELens dataset_path).",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="gemma-3-270m", help="embedded name, local dir or Hub id (default gemma-3-270m)")
    p.add_argument("--precision", default="nf4", choices=PRECISIONS, help="load precision (default nf4)")
    p.add_argument("--scenarios", type=_csv, default=[], help="comma list of scenario files, folders or built-in family names (default: all built-in)")
    p.add_argument("--families", type=_csv, default=[], help="comma list of families to keep")
    p.add_argument("--no-input-variation", dest="include_input_variation", action="store_false", help="skip the neutral/V0/V3 prompts")
    p.add_argument("--max-prompts-per-family", type=int, default=None, help="keep the first N prompts of each family")
    p.add_argument("--samples-per-prompt", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16, help="rows per generate() call")
    p.add_argument("--judges", type=_csv, default=["keyword", "paraphrase"], help="comma list: keyword, paraphrase, llm, llm:ID")
    p.add_argument("--primary-judge", default="keyword", help="judge deciding `label` and the pools (a judge name or consortium_majority / consortium_unanimous)")
    p.add_argument("--llm-batch-size", type=int, default=10, help="samples per LLM judge request")
    p.add_argument("--eval-fraction", type=float, default=0.3, help="share of prompt groups in the eval split")
    p.add_argument("--no-balance-input-variation", dest="balance_input_variation", action="store_false")
    p.add_argument("--allow-empty-pool", action="store_true", help="write the dataset even if no prompt has both classes")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the build already in --out")
    g.add_argument("--overwrite", action="store_true", help="replace the build already in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from gemma4_saelens_ext.behavior.build import BuildConfig, BuildError, build_dataset, format_counts
    from gemma4_saelens_ext.behavior.pools import PoolError
    from gemma4_saelens_ext.behavior.scenarios import ScenarioError

    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    fields = BuildConfig.__dataclass_fields__
    cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        result = build_dataset(cfg)
        if result is None:  # a torchrun rank > 0: rank 0 writes the dataset and reports
            return 0
    except (BuildError, PoolError, ScenarioError, ValueError, FloatingPointError) as e:
        print(f"build-dataset: error: {e}", file=sys.stderr)
        return 2
    m = result.manifest
    print(format_counts(m["counts"]))
    print(
        f"{m['n_completions']} completions ({result.n_generated} generated now, {result.n_resumed} resumed); "
        f"splits {m['split_sizes']}; written to {result.out}"
    )
    for a in m["agreement"]:
        if a["agreement_both_decisive"] is not None:
            print(f"agreement {a['a']} vs {a['b']}: {a['agreement_both_decisive']:.2f} on {a['n_both_decisive']} decisive")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gemma4-sae")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
