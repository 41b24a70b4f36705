"""The demo SAE trains on every completion of the train prompts (ambiguous ones included), never on eval prompts."""

from __future__ import annotations

import pandas as pd
import pytest

from gemma4_saelens_ext.pipeline.config import DemoError
from gemma4_saelens_ext.pipeline.rows import training_rows


def _dataset(tmp_path, **cols):
    (tmp_path / "ds" / "data").mkdir(parents=True)
    pd.DataFrame(cols).to_parquet(tmp_path / "ds" / "data" / "all.parquet")
    return tmp_path / "ds"


def test_train_prompts_only_every_label(tmp_path):
    ds = _dataset(
        tmp_path,
        text=["a", "b", "c", "d", "e"],
        label=["honest", "ambiguous", "deceptive", "honest", "honest"],
        prompt_split=["train", "train", "eval", "train", "input_variation"],
    )
    desc, n = training_rows(ds, tmp_path / "train.parquet")
    got = pd.read_parquet(tmp_path / "train.parquet")
    assert n == 3 and list(got.text) == ["a", "b", "d"] and "prompt_split" in desc
    assert set(got.label) == {"honest", "ambiguous"}


def test_no_train_prompt_is_an_error_and_old_datasets_fall_back(tmp_path):
    ds = _dataset(tmp_path, text=["a"], label=["honest"], prompt_split=["eval"])
    with pytest.raises(DemoError, match="prompt_split == 'train'"):
        training_rows(ds, tmp_path / "t.parquet")
    old = _dataset(tmp_path / "old", text=["a", "b"], label=["honest", "ambiguous"])
    desc, n = training_rows(old, tmp_path / "t2.parquet")  # no column, no train split: every completion
    assert n == 2 and desc.endswith("all.parquet")
