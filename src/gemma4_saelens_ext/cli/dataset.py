"""``gemma4-sae build-dataset``: :class:`~gemma4_saelens_ext.behavior.config.BuildConfig` is its flags and ``--help``.

``python -m gemma4_saelens_ext.cli.dataset build-dataset ...`` is the same command (what ``torchrun`` launches).
"""

from __future__ import annotations

import sys

from gemma4_saelens_ext.behavior.config import BuildConfig
from gemma4_saelens_ext.cli.command import Command

__all__ = ["COMMANDS", "run", "main"]


def run(cfg: BuildConfig) -> int:
    from gemma4_saelens_ext.behavior.build import BuildError, build_dataset, format_counts
    from gemma4_saelens_ext.behavior.pools import PoolError
    from gemma4_saelens_ext.behavior.scenarios import ScenarioError

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
    for kind, k in m["kinds"].items():
        per_split = "; ".join(f"{s} {dict(c)} in {k['groups'].get(s, 0)} groups" for s, c in k["rows"].items())
        print(f"{kind} (label rule {k['label_rule']}): {per_split}")
    for a in m["agreement"]:
        if a["agreement_both_decisive"] is not None:
            print(f"agreement {a['a']} vs {a['b']}: {a['agreement_both_decisive']:.2f} on {a['n_both_decisive']} decisive")
    return 0


COMMANDS = (
    Command(
        "build-dataset", "build a labelled behavior dataset (role play, instructed pairs, incentive, control) SAELens "
        "can train on",
        BuildConfig, run,
        description="Dataset kinds -> seeded samples or written statements -> labels by each kind's rule -> grouped "
        "splits -> parquet dataset folder (datasets.load_dataset(OUT) reads it; use OUT as SAELens's dataset_path).",
    ),
)  # fmt: skip
