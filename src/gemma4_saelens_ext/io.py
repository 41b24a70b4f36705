"""Outputs that are never lost: atomic file writes, output paths checked before work, a lock per output.

Atomic writes: the whole new content or the old file, never half of one (a kill, a full disk, a crash).

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

Reading: :func:`read_records` is the one reader of a parquet or JSONL file's records, with the row or line number of
each (so an error can name it).

Before a long job writes anything, :func:`check_out` refuses an output path that cannot be written (an existing
file where a folder goes, a parent that is a file, a folder without write permission) and :func:`check_disk_space`
a disk too full for it; :func:`output_lock` then holds an exclusive lock on the output (a ``.NAME.lock`` file beside
it) for the whole job, so a second writer, ``--resume`` included, is refused at once instead of duplicating work.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Literal

from gemma4_saelens_ext.errors import OutputBusyError, UserError

__all__ = ["atomic_path", "atomic_write", "atomic_write_json", "to_jsonable", "check_out", "check_disk_space",
           "output_lock", "read_records"]


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


# ------------------------------------------------------------------------------------------------------ output paths
def _existing_ancestor(p: Path) -> Path:
    """The nearest part of ``p`` (itself or a parent) that exists (a parent that is a file stops the walk)."""
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def check_out(path: str | os.PathLike[str], *, kind: Literal["folder", "file"] = "folder", what: str = "--out") -> Path:
    """Refuse, before any work, an output that cannot be written: an existing file where a folder goes (a folder
    where a file goes), a parent that is a file, or a folder this process cannot create files in. Creates nothing."""
    p = Path(path).expanduser()
    if kind == "folder" and p.is_file():
        raise UserError(f"{what} {p} is an existing file, but this command writes a folder there.",
                        f"choose a new or empty folder for {what}, or move the file away.")
    if kind == "file" and p.is_dir():
        raise UserError(f"{what} {p} is an existing folder, but this command writes a file there.",
                        f"give a file name for {what} (e.g. {p / 'activations.safetensors'}).")
    base = _existing_ancestor(p.absolute() if kind == "folder" else p.absolute().parent)
    if not base.is_dir():
        raise UserError(f"{what} {p}: {base} is a file, so nothing can be created under it.",
                        f"choose a {what} outside {base}.")
    try:  # a real write: os.access says yes for root on a read-only file system
        probe = base / f".gemma4-sae-write-test-{os.getpid()}-{secrets.token_hex(3)}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {p}: cannot create files in {base} ({e.strerror or e}).",
                        f"choose a {what} in a folder you can write to.") from None
    return p


def check_disk_space(path: str | os.PathLike[str], need_bytes: float, what: str) -> float:
    """Free bytes at ``path`` (its nearest existing parent); a UserError when fewer than ``need_bytes``."""
    base = _existing_ancestor(Path(path).absolute())
    free = shutil.disk_usage(base if base.is_dir() else base.parent).free
    if free < need_bytes:
        raise UserError(f"Only {free / 1e9:.2f} GB free at {base}; {what} needs about {need_bytes / 1e9:.2f} GB.",
                        "free some space, or point the output (and GEMMA4_SAE_CACHE) at a larger disk.")
    return free


def _lock_files(p: Path) -> tuple[Path, Path]:
    return p.parent / f".{p.name}.lock", p.parent / f".{p.name}.lock.owner"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], *, what: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` (a folder or a file) while a job writes it. A second writer is
    refused at once with :class:`~gemma4_saelens_ext.errors.OutputBusyError` naming the holder: it never waits
    silently and never writes the same outputs twice. The lock (``.NAME.lock`` beside ``path``) is released when the
    block ends, also on an error or Ctrl-C, and by the OS when the process dies."""
    from filelock import FileLock, Timeout

    p = Path(path).expanduser().absolute()
    p.parent.mkdir(parents=True, exist_ok=True)
    lock_file, owner = _lock_files(p)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(owner.read_text())
            who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}: {holder['command']}"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise OutputBusyError(f"{what} {p} is being written by {who} (lock {lock_file}).",
                              f"wait until that job ends (add --resume afterwards if it stopped early), or choose "
                              f"another {what}.") from None
    try:
        import sys

        atomic_write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield p
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def read_records(path: str | Path, *, columns: list[str] | None = None) -> tuple[list[Any], list[int], str]:
    """``(records, numbers, unit)`` of a ``.parquet`` file (pyarrow; dicts, ``unit="row"``, 1-based row numbers;
    ``columns`` reads only those) or a JSONL file (one JSON value per line, blank lines skipped, ``unit="line"``,
    1-based line numbers). A line that is not JSON, or a column the file lacks, is refused naming it."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        if columns is not None:
            have = pq.read_schema(p).names
            if missing := [c for c in columns if c not in have]:
                raise UserError(f"{p} has no column {missing[0]!r} (columns: {have}).", "set --column.")
        rows = pq.read_table(p, columns=columns).to_pylist()
        return rows, list(range(1, len(rows) + 1)), "row"
    records, numbers = [], []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{p} line {n}: not valid JSON ({e.msg}).", "fix or remove that line.") from None
        numbers.append(n)
    return records, numbers, "line"
