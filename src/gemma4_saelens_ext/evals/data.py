"""Behavior rows for evals: read a dataset folder written by ``gemma4-sae build-dataset`` (``data/<split>.parquet``),
a parquet/JSONL file, or a Hub dataset; or make a small *scripted* set from the scenario library for demos.

Rows are dicts with at least ``text``, ``prompt``, ``completion``, ``label`` (honest/deceptive/ambiguous) and
``completion_start`` (char offset of the completion in ``text``; derived when absent)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from gemma4_saelens_ext.paths import looks_like_hub_id

logger = logging.getLogger(__name__)

__all__ = ["load_rows", "scripted_rows", "completion_starts"]


def _finish(rows: list[dict]) -> list[dict]:
    for r in rows:
        if "text" not in r:
            r["text"] = r.get("prompt", "") + r.get("completion", "")
        if r.get("completion_start") is None:
            p, t = r.get("prompt", ""), r["text"]
            r["completion_start"] = len(p) if p and t.startswith(p) else max(t.find(r.get("completion", "")), 0)
        if not r.get("variant") and r.get("prompt_id"):
            r["variant"] = str(r["prompt_id"]).rsplit(".", 1)[-1]
    return rows


#: the builder writes the input-variation rows with split input_neutral / input_V0 / input_V3
_INPUT_VARIATION = "input_variation"


def _in_split(row_split: str, split: str) -> bool:
    if split == _INPUT_VARIATION:
        return row_split == split or row_split.startswith("input_")
    return row_split == split


def load_rows(path: str, split: str) -> list[dict]:
    """Rows of ``split`` from a dataset folder (``data/<split>.parquet``), a file (filtered on a ``split``
    column when it has one) or a Hub dataset id. An empty split is an error (said before any model work)."""
    p = Path(path)
    rows: list[dict]
    if p.is_dir() and (p / "data" / f"{split}.parquet").exists():
        import pyarrow.parquet as pq

        rows = pq.read_table(p / "data" / f"{split}.parquet").to_pylist()
    elif p.is_file():
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(p).to_pylist()
        else:
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        if rows and "split" not in rows[0]:
            raise ValueError(
                f"dataset file {path} has no `split` column, so split {split!r} cannot be told apart from the others "
                "(train and eval would be the same rows). Add a split column, or build the dataset with "
                "`gemma4-sae build-dataset`, which writes one file per split."
            )
        rows = [r for r in rows if _in_split(str(r.get("split", "")), split)]
    elif p.is_dir():
        avail = sorted(f.stem for f in (p / "data").glob("*.parquet")) if (p / "data").is_dir() else []
        raise ValueError(f"dataset {path} has no split {split!r}; available: {avail}")
    elif not looks_like_hub_id(path):
        raise FileNotFoundError(
            f"dataset {path} does not exist. Build it first: `gemma4-sae build-dataset --out {path}` (add --model and "
            "--precision as in your suite), or point dataset.path at an existing folder, parquet/JSONL file or Hub id."
        )
    else:
        from datasets import load_dataset

        rows = list(load_dataset(path, split=split))
    if not rows:
        raise ValueError(f"dataset {path}: split {split!r} is empty.")
    return _finish([dict(r) for r in rows])


_H_TEMPLATES = ("I'm a {k}.'\n", "I am a {k}!'\n", "{K}, of course.'\n", "A {k}.'\nThey nod.")
_D_TEMPLATES = ("I'm a {k}.'\n", "I am a {k}!'\n", "{K}, of course.'\n", "A {k}.'\nThey nod.")


def scripted_rows(
    families: Sequence[str] | None = None, *, n_templates: int = 4, eval_fraction: float = 0.3, seed: int = 0
) -> dict[str, list[dict]]:
    """Scripted (not sampled) completions for a demo: each role-play prompt gets ``n_templates`` honest answers
    (its honest keyword) and as many deceptive ones; input-variation prompts get one of each per variant.
    Splits by prompt group (hash with ``seed``). Real evaluations use a built dataset instead."""
    from gemma4_saelens_ext.behavior.scenarios import load_scenarios

    prompts = load_scenarios(None, families=families)
    out: dict[str, list[dict]] = {"train": [], "eval": [], "input_variation": []}
    for p in prompts:
        h = int(hashlib.sha256(f"{seed}:{p.group or p.id}".encode()).hexdigest(), 16) % 1000 / 1000
        split = "eval" if h < eval_fraction else "train"
        n = n_templates if p.kind == "role_play" else 1
        for lab, kws, tmpl in (("honest", p.honest_keywords, _H_TEMPLATES), ("deceptive", p.deceptive_keywords, _D_TEMPLATES)):
            for i in range(n):
                k = kws[i % len(kws)]
                comp = tmpl[i % len(tmpl)].format(k=k, K=k[:1].upper() + k[1:])
                row = {"prompt": p.text, "completion": comp, "text": p.text + comp, "completion_start": len(p.text),
                       "label": lab, "scenario": p.family, "prompt_id": p.id, "sample_seed": seed, "kind": p.kind,
                       "variant": p.variant, "group": p.group}
                if p.kind == "input_variation":
                    out["input_variation"].append({**row, "split": "input_variation"})
                else:
                    out[split].append({**row, "split": split})
    return out


def completion_starts(rows: Sequence[dict]) -> list[int]:
    return [int(r["completion_start"]) for r in rows]
