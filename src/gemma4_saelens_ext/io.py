"""Atomic file writes: the whole new content or the old file, never half of one (a kill, a full disk, a crash).

The content goes to a temporary file in the target's folder (same filesystem, so the rename is atomic), is flushed
to disk, and replaces the target with ``os.replace``; on any error the temporary file is removed and the target is
untouched.

* ``atomic_write(path, text_or_bytes)`` and ``atomic_write_json(path, obj)`` for content we hold in memory;
* ``to_jsonable(obj)``: the one JSON sanitiser (numpy and torch scalars -> python, tuples -> lists, NaN -> None,
  +-inf -> "inf"/"-inf", objects with ``to_dict`` -> dicts, anything else -> its string), so every JSON file the
  package writes is strict JSON;
* ``atomic_path(path)`` for libraries that want a file name to write to (pyarrow, safetensors, torch)::

      with atomic_path(out / "data.parquet") as tmp:
          pq.write_table(table, tmp)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write", "atomic_write_json", "to_jsonable"]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; when the block ends without error it replaces ``path``."""
    path = Path(path)
    # a unique hidden name per call (threads and processes may write the same target); created by the writer with
    # the usual permissions (umask), unlike mkstemp's 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {path}")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write takes str or bytes, got {type(data).__name__}; use atomic_write_json for objects.")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, **dumps_kw: Any) -> Path:
    """``json.dumps(obj, indent=indent, **dumps_kw)`` written atomically; returns the path."""
    return atomic_write(path, json.dumps(obj, indent=indent, **dumps_kw))


def to_jsonable(obj: Any) -> Any:
    """A value every strict JSON/YAML writer accepts (see the module docstring); no numpy or torch import."""
    if isinstance(obj, dict) or (hasattr(obj, "items") and hasattr(obj, "keys")):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if type(obj).__module__ == "numpy":
        if hasattr(obj, "tolist"):  # arrays and numpy scalars -> python
            return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        if math.isinf(obj):  # e.g. a perfectly separating latent's d: kept visible, the JSON stays strict
            return "inf" if obj > 0 else "-inf"
        return obj if math.isfinite(obj) else None
    if type(obj).__module__ == "torch" and type(obj).__name__ == "dtype":
        return str(obj).replace("torch.", "")
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return str(obj)
