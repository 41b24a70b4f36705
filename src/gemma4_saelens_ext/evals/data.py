"""Behavior rows for evals: read a dataset folder written by ``gemma4-sae build-dataset`` (``data/<split>.parquet``),
a parquet/JSONL file, or a Hub dataset; or make a small *scripted* set from the scenario library for demos.

Rows are dicts with at least ``text``, ``prompt``, ``completion``, ``label`` (honest/deceptive/ambiguous) and
``completion_start`` (char offset of the completion in ``text``; derived when absent)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from gemma4_saelens_ext.paths import looks_like_hub_id

logger = logging.getLogger(__name__)

__all__ = ["load_rows", "check_rows", "scripted_rows", "completion_starts"]


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


def _numbered(nums: list[int]) -> str:
    return ", ".join(map(str, nums[:15])) + (f" (+{len(nums) - 15} more)" if len(nums) > 15 else "")


def check_rows(rows: list[dict], where: str, *, unit: str = "row", numbers: list[int] | None = None,
               required: Sequence[str] = ("label",)) -> list[dict]:
    """Every row (not only the first) has the ``required`` columns and a text (``text``, or ``prompt`` and
    ``completion``); a row that lacks one is named by number, never silently dropped."""
    from gemma4_saelens_ext.errors import UserError

    numbers = numbers or list(range(1, len(rows) + 1))
    for col in required:
        missing = [n for n, r in zip(numbers, rows) if r.get(col) is None]
        if missing:
            raise UserError(f"{where}: {len(missing)} of {len(rows)} {unit}s have no `{col}` ({unit}s "
                            f"{_numbered(missing)}).", f"give every {unit} a `{col}`.")
    no_text = [n for n, r in zip(numbers, rows)
               if not isinstance(r.get("text"), str) and not (isinstance(r.get("prompt"), str)
                                                               and isinstance(r.get("completion"), str))]
    if no_text:
        raise UserError(f"{where}: {len(no_text)} {unit}s have neither `text` nor `prompt` + `completion` "
                        f"({unit}s {_numbered(no_text)}).", f"give every {unit} its text.")
    return rows


def _read_file(p: Path) -> tuple[list[dict], list[int], str]:
    """Rows of a parquet or JSONL file with their (1-based) row or line numbers."""
    from gemma4_saelens_ext.errors import UserError
    from gemma4_saelens_ext.io import read_records

    rows, nums, unit = read_records(p)
    for n, r in zip(nums, rows):
        if not isinstance(r, dict):
            raise UserError(f"dataset file {p} line {n}: expected a JSON object per line, got {type(r).__name__}.")
    return rows, nums, unit


def load_rows(path: str, split: str) -> list[dict]:
    """Rows of ``split`` from a dataset folder (``data/<split>.parquet``), a file (filtered on a ``split``
    column, which every row must have) or a Hub dataset id. Every row is checked for a label and a text; an empty
    split is an error (said before any model work)."""
    from gemma4_saelens_ext.errors import MissingFileError, UserError

    p = Path(path)
    rows: list[dict]
    if p.is_dir() and (p / "data" / f"{split}.parquet").exists():
        rows = check_rows(_read_file(p / "data" / f"{split}.parquet")[0], str(p / "data" / f"{split}.parquet"))
    elif p.is_file():
        rows, nums, unit = _read_file(p)
        no_split = [n for n, r in zip(nums, rows) if r.get("split") is None]
        if no_split and len(no_split) == len(rows):
            raise UserError(
                f"dataset file {path} has no `split` column, so split {split!r} cannot be told apart from the others "
                "(train and eval would be the same rows).", "add a split column, or build the dataset with "
                "`gemma4-sae build-dataset`, which writes one file per split.")
        if no_split:
            raise UserError(f"dataset file {path}: {len(no_split)} of {len(rows)} {unit}s have no `split` ({unit}s "
                            f"{_numbered(no_split)}); they would be left out of every split.",
                            f"give every {unit} a split (train, eval, input_variation, ...).")
        keep = [i for i, r in enumerate(rows) if _in_split(str(r.get("split", "")), split)]
        rows = check_rows([rows[i] for i in keep], f"dataset file {path}", unit=unit, numbers=[nums[i] for i in keep])
    elif p.is_dir():
        avail = sorted(f.stem for f in (p / "data").glob("*.parquet")) if (p / "data").is_dir() else []
        raise UserError(f"dataset {path} has no split {split!r}; available: {avail}",
                        "set dataset.train_split / eval_split to one of them.")
    elif not looks_like_hub_id(path):
        raise MissingFileError(
            f"dataset {path} does not exist. Build it first: `gemma4-sae build-dataset --out {path}` (add --model and "
            "--precision as in your suite), or point dataset.path at an existing folder, parquet/JSONL file or Hub id."
        )
    else:
        from datasets import load_dataset

        rows = check_rows([dict(r) for r in load_dataset(path, split=split)], f"dataset {path} split {split!r}")
    if not rows:
        raise UserError(f"dataset {path}: split {split!r} is empty.", "choose a split that has rows.")
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
