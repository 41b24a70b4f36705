"""The one atomic write: new content or the old file, never a half-written one, and no temporary files left."""

from __future__ import annotations

import json

import pytest

from gemma4_saelens_ext.io import atomic_path, atomic_write, atomic_write_json


def test_text_bytes_json_roundtrip(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert atomic_write(tmp_path / "b.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    assert json.loads(atomic_write_json(tmp_path / "c.json", {"x": [1, 2]}).read_text()) == {"x": [1, 2]}
    atomic_write(tmp_path / "a.txt", "replaced")
    assert (tmp_path / "a.txt").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "data.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new con")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.parquet"]
    with pytest.raises(TypeError, match="atomic_write_json"):
        atomic_write(target, {"not": "text"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        atomic_write_json(target, object())
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.parquet"]


def test_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x.bin"):
            pass
    assert not list(tmp_path.iterdir())


def test_build_cached_runs_the_builder_once_under_concurrency(tmp_path):
    """Two builders racing for one cache folder: the file lock lets one build, the other finds it complete."""
    import threading
    import time

    from gemma4_saelens_ext.models.embedded import build_cached

    calls = []

    def builder(out):
        calls.append(threading.get_ident())
        time.sleep(0.3)
        (out / "weights.bin").write_bytes(b"x" * 10)

    target = tmp_path / "models" / "m"
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_cached(target, builder))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [target, target]
    assert (target / "weights.bin").read_bytes() == b"x" * 10 and (target / ".complete").exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".m.") and p.is_dir()]  # no temp folder left


def test_to_jsonable_is_strict_json():
    import json
    import math

    import numpy as np
    import torch

    from gemma4_saelens_ext.io import to_jsonable

    obj = {"nan": float("nan"), "inf": np.float32("inf"), "ninf": -math.inf, "arr": np.arange(3),
           "i": np.int64(4), "b": np.bool_(True), "t": (1, 2.5), "dt": torch.float16, 5: None}
    out = to_jsonable(obj)
    assert out == {"nan": None, "inf": "inf", "ninf": "-inf", "arr": [0, 1, 2], "i": 4, "b": True, "t": [1, 2.5],
                   "dt": "float16", "5": None}
    json.dumps(out, allow_nan=False)  # strict JSON: raises on NaN/inf floats
