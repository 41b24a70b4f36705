"""The dataset files of a build: parquet splits, the dataset card (huggingface_hub ``DatasetCard``) and the
manifest, each written atomically.

``datasets.load_dataset(DIR)`` reads the folder through the card's ``configs:`` header (config ``default``: the
pooled splits; config ``all``: every completion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gemma4_saelens_ext.io import atomic_path, atomic_write, atomic_write_json
from gemma4_saelens_ext.versions import package_versions as versions

__all__ = ["COLUMNS", "SPLITS", "write_parquet", "write_splits", "dataset_card", "write_card", "write_manifest",
           "versions", "format_counts"]

#: fixed columns of every parquet file (plus one ``label_<judge>`` column per judge)
COLUMNS: dict[str, str] = {
    "text": "string",
    "prompt": "string",
    "completion": "string",
    "completion_start": "int64",
    "label": "string",
    "scenario": "string",
    "prompt_id": "string",
    "sample_index": "int64",
    "sample_seed": "int64",
    "key": "string",
    "kind": "string",
    "variant": "string",
    "role": "string",
    "group": "string",
    "n_new_tokens": "int64",
    "finished": "bool",
    "split": "string",
    #: the split of the row's prompt group (train / eval / input_variation), pooled or not: what an unsupervised
    #: SAE may train on (every completion of the train prompts) without seeing eval prompts
    "prompt_split": "string",
}
#: the splits of the default config, in order
SPLITS = ("train", "eval", "input_variation")


def write_parquet(path: Path, rows: list[dict], label_cols: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
    schema = pa.schema([(c, types[t]) for c, t in COLUMNS.items()] + [(c, pa.string()) for c in label_cols])
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_splits(out: Path, rows: list[dict], label_cols: list[str]) -> dict[str, int]:
    """``data/{train,eval,input_variation}.parquet`` (a file per non-empty split; a stale one of an empty split is
    removed) and ``data/all.parquet``; returns the split sizes."""
    split_rows = {
        "train": [r for r in rows if r["split"] == "train"],
        "eval": [r for r in rows if r["split"] == "eval"],
        "input_variation": [r for r in rows if r["split"].startswith("input_")],
    }
    for s, rs in split_rows.items():
        if rs:
            write_parquet(out / "data" / f"{s}.parquet", rs, label_cols)
        else:
            (out / "data" / f"{s}.parquet").unlink(missing_ok=True)
    write_parquet(out / "data" / "all.parquet", rows, label_cols)
    return {s: len(rs) for s, rs in split_rows.items()}


def dataset_card(splits: dict[str, int], manifest: dict[str, Any]):
    """The dataset card: card data whose ``configs`` map splits to files, and a short description."""
    from huggingface_hub import DatasetCard, DatasetCardData

    present = [s for s in SPLITS if splits.get(s)]
    files = [{"split": s, "path": f"data/{s}.parquet"} for s in present]
    if not present:
        # every pool empty (allow_empty_pool): the default config must still name a file, or load_dataset fails
        files = [{"split": "unpooled", "path": "data/all.parquet"}]
    data = DatasetCardData(
        configs=[
            {"config_name": "default", "default": True, "data_files": files},
            {"config_name": "all", "data_files": [{"split": "train", "path": "data/all.parquet"}]},
        ]
    )
    g = manifest["config"]
    body = "\n".join(
        [
            "# Behavior dataset (gemma4_saelens_ext)",
            "",
            f"Completions of role-play prompts by `{g['model']}` at precision `{g['precision']}`, temperature "
            f"{g['temperature']}, seed {g['seed']}, labelled by {', '.join(manifest['judges_used'])} "
            f"(primary: `{g['primary_judge']}`).",
            "",
            "Labels say whether a completion keeps the role the prompt assigned (honest) or drifts from it (deceptive). "
            "They measure role consistency under instruction, not strategic deception.",
            "",
            "| split | rows |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in splits.items()],
            "",
            "Splits: `train`/`eval` are the same-prompt balanced behavior pool split by prompt group; `input_variation` "
            "holds neutral / V0 / V3 rows; config `all` holds every completion with its `split` "
            "(`unpooled` = not in any pool). See manifest.json for settings, versions and counts.",
            "",
        ]
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_card(out: Path, splits: dict[str, int], manifest: dict[str, Any]) -> Path:
    return atomic_write(Path(out) / "README.md", str(dataset_card(splits, manifest)))


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_json(Path(out) / "manifest.json", manifest, ensure_ascii=False)


def format_counts(counts: dict[str, int]) -> str:
    """A plain-text table of 'split/scenario/label' counts."""
    if not counts:
        return "(no rows)"
    parts = [k.split("/") for k in counts]
    w = [max(len(p[i]) for p in parts + [["split", "scenario", "label"]]) for i in range(3)]
    head = f"{'split':<{w[0]}}  {'scenario':<{w[1]}}  {'label':<{w[2]}}  count"
    body = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {n}" for (a, b, c), n in zip(parts, counts.values())]
    return "\n".join([head, *body])
