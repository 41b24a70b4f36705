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

__all__ = ["COLUMNS", "SPLITS", "write_parquet", "write_splits", "data_fingerprint", "dataset_card", "write_card",
           "write_manifest", "versions", "format_counts"]

#: fixed columns of every parquet file (plus one ``label_<judge>`` column per judge)
COLUMNS: dict[str, str] = {
    "text": "string",
    "prompt": "string",
    "completion": "string",
    "completion_start": "int64",
    "label": "string",
    #: id of the row's label rule (gemma4_saelens_ext.behavior.kinds.LABEL_RULES)
    "label_rule": "string",
    "scenario": "string",
    "prompt_id": "string",
    "sample_index": "int64",
    "sample_seed": "int64",
    "key": "string",
    "kind": "string",
    "variant": "string",
    "role": "string",
    "group": "string",
    #: a coarser unit than the group: the family (role play, incentive), statement topic, control category
    "cluster": "string",
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


def data_fingerprint(out: Path) -> str:
    """A hash of the folder's parquet files. ``datasets`` caches a local folder under its *basename* and its card's
    configs, not its files, so two builds in folders of the same name (``runs/a/ds``, ``runs/b/ds``) would share one
    cache entry and ``load_dataset`` (SAELens's ``dataset_path`` without streaming) would return the stale one; the
    fingerprint in each config's ``description`` keys the cache on the content."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((Path(out) / "data").glob("*.parquet")):
        h.update(f.name.encode("utf-8"))
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def dataset_card(splits: dict[str, int], manifest: dict[str, Any], fingerprint: str = ""):
    """The dataset card: card data whose ``configs`` map splits to files (each config's description carries the data
    fingerprint, see :func:`data_fingerprint`), and a short description."""
    from huggingface_hub import DatasetCard, DatasetCardData

    present = [s for s in SPLITS if splits.get(s)]
    files = [{"split": s, "path": f"data/{s}.parquet"} for s in present]
    if not present:
        # every pool empty (allow_empty_pool): the default config must still name a file, or load_dataset fails
        files = [{"split": "unpooled", "path": "data/all.parquet"}]
    about = f"gemma4_saelens_ext behavior dataset, data fingerprint {fingerprint or 'unknown'}"
    data = DatasetCardData(
        configs=[
            {"config_name": "default", "default": True, "data_files": files, "description": about},
            {"config_name": "all", "data_files": [{"split": "train", "path": "data/all.parquet"}],
             "description": about},
        ]
    )
    g = manifest["config"]
    kinds = manifest.get("kinds") or {}
    built = ", ".join(f"`{k}`" for k in kinds) or "none"
    body = "\n".join(
        [
            "# Behavior dataset (gemma4_saelens_ext)",
            "",
            f"Prompts answered by `{g['model']}` at precision `{g['precision']}`, temperature {g['temperature']}, seed "
            f"{g['seed']}; judged labels by {', '.join(manifest['judges_used'])} (primary: `{g['primary_judge']}`). "
            f"Kinds in this folder: {built}. The `kind` column tells them apart and `label_rule` names each row's "
            "rule; every table built from these rows should name it too.",
            "",
            *_kind_sections(kinds, manifest),
            "## Splits",
            "",
            "| split | rows |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in splits.items()],
            "",
            "Splits: `train`/`eval` hold whole groups (never a group in both), stratified by cluster: the role-play "
            "rows are the same-prompt balanced pool, the other kinds keep every decisive (or control) row in their "
            "natural layout. `input_variation` holds neutral / V0 / V3 rows; config `all` holds every completion "
            "with its `split` (`unpooled` = in no split: ambiguous rows, role-play rows outside the balanced pool). "
            "See manifest.json for settings, versions and counts.",
            "",
        ]
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _kind_sections(kinds: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """A section per kind: its label rule in words, rows per split and label, groups and clusters, group layout."""
    from gemma4_saelens_ext.behavior.kinds import LABEL_RULES

    if not kinds:
        return []
    lines = ["## Kinds and their label rules", ""]
    provenance = (manifest.get("scenarios") or {}).get("provenance") or {}
    for kind, k in kinds.items():
        labels = sorted({lab for c in k["rows"].values() for lab in c})
        lines += [f"### `{kind}`: label rule `{k['label_rule']}`", ""]
        lines += [LABEL_RULES.get(rule, rule) for rule in k["label_rule"].split(",")]
        if kind == "instructed_pairs":
            lines += [f"Statements ({fam}): {text}" for fam, text in provenance.items() if text]
        lines += ["", "| split | " + " | ".join(labels) + " | groups | clusters |",
                  "|---|" + "---|" * (len(labels) + 2)]
        for split, c in k["rows"].items():
            lines.append(f"| {split} | " + " | ".join(str(c.get(lab, 0)) for lab in labels)
                         + f" | {k['groups'].get(split, 0)} | {k['clusters'].get(split, 0)} |")
        lay = k["layout"]
        if any(lay.values()):
            lines.append(
                f"\nGroup label layout in train/eval: {lay['groups_both_labels']} groups hold both labels, "
                f"{lay['groups_honest_only']} only honest, {lay['groups_deceptive_only']} only deceptive."
            )
        lines.append("")
    return lines


def write_card(out: Path, splits: dict[str, int], manifest: dict[str, Any]) -> Path:
    return atomic_write(Path(out) / "README.md", str(dataset_card(splits, manifest, data_fingerprint(out))))


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
