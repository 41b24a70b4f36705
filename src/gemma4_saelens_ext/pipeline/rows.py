"""What rows each demo stage reads: the SAE's training rows, the split sizes and prompt groups the eval checks, and
whether the input-variation prompts are worth sampling at all."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.io import read_records
from gemma4_saelens_ext.pipeline.config import DemoConfig, DemoError

logger = logging.getLogger(__name__)

__all__ = ["group_count", "split_sizes", "has_split", "input_variation_used", "training_rows"]


def _column(dataset_dir: Path, split: str, column: str) -> list[Any]:
    """One column of a split's parquet file (empty when the split was not written)."""
    f = dataset_dir / "data" / f"{split}.parquet"
    return [r[column] for r in read_records(f, columns=[column])[0]] if f.exists() else []


def group_count(dataset_dir: Path, split: str) -> int:
    return len(set(_column(dataset_dir, split, "group")))


def split_sizes(dataset_dir: Path, split: str) -> tuple[int, int]:
    labels = _column(dataset_dir, split, "label")
    return labels.count("honest"), labels.count("deceptive")


def has_split(dataset_dir: Path, split: str) -> bool:
    return (dataset_dir / "data" / f"{split}.parquet").exists()


def input_variation_used(cfg: DemoConfig, suite: Any) -> bool:
    """Whether the eval would read the input-variation completions: the positive control uses them only with at
    least ``control.min_groups`` question groups (else it takes scripted rows); training never does. Decided from
    the prompt selection, before anything is sampled. ``suite``: the demo's eval suite config. Asked for in
    ``--kinds``, they are always sampled."""
    if "input_variation" in cfg.kinds:
        return True
    from gemma4_saelens_ext.behavior import BuildConfig
    from gemma4_saelens_ext.behavior.plan import select_prompts
    ctl = suite.control
    if not ctl.enabled:
        return False
    if not ctl.scripted_fallback:
        return True
    bc = BuildConfig(out="-", families=list(cfg.families), max_prompts_per_family=cfg.max_prompts_per_family,
                     seed=cfg.seed)  # fmt: skip
    groups = {p.group for p in select_prompts(bc) if p.kind == "input_variation" and p.variant in ctl.contrast}
    return len(groups) >= ctl.min_groups


def training_rows(ds: Path, dest: Path) -> tuple[str, int]:
    """Write the SAE's training rows to ``dest`` (SAELens reads the folder with ``load_dataset``); returns a description
    and the row count. The SAE is unsupervised: it trains on every completion of the *train prompts*, ambiguous ones
    included, and never on an eval prompt (``all.parquet`` rows with ``prompt_split == "train"``). Datasets built
    before that column existed: the balanced train split, or every completion when that split is empty."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    alls = ds / "data" / "all.parquet"
    if alls.exists():
        table = pq.read_table(alls)
        if "prompt_split" in table.column_names:
            sel = table.filter(pc.equal(table["prompt_split"], "train"))
            if sel.num_rows == 0:
                raise DemoError(f"{alls} has no row with prompt_split == 'train'; raise --max-prompts-per-family so "
                                "some prompts go to the train split.")  # fmt: skip
            pq.write_table(sel, dest)
            return f"{alls} rows with prompt_split == 'train'", sel.num_rows
    train = ds / "data" / "train.parquet"
    if train.exists() and sum(split_sizes(ds, "train")) > 0:
        src = train
    elif alls.exists():
        logger.warning("train split of %s is empty; training the SAE on every completion (%s)", ds, alls)
        src = alls
    else:
        raise DemoError(f"The built dataset {ds} has no data/train.parquet or data/all.parquet rows to train on.")
    shutil.copyfile(src, dest)
    return str(src), pq.read_metadata(dest).num_rows
