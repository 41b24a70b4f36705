"""The build folder's raw state: JSONL checkpoints (append, read with repair) and the resume guard.

``raw/completions.jsonl`` and ``raw/judgements.jsonl`` are append-only: each batch is one ``write()`` + fsync, so a
kill leaves whole lines or one truncated last line, which :func:`read_jsonl` drops (and with ``repair`` cuts off).
``raw/build.json`` is written first and records the generation settings; :func:`prepare_out` compares them before
a build resumes and never deletes a folder that holds no build.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from gemma4_saelens_ext.behavior.config import BUILD_FORMAT, BuildConfig, BuildError
from gemma4_saelens_ext.io import atomic_write_json

__all__ = ["append_jsonl", "read_jsonl", "prepare_out", "now"]

log = logging.getLogger(__name__)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records with one write() call and fsync: a kill leaves whole lines or one truncated last line."""
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL checkpoint; a truncated last line (from a kill) is dropped, and with ``repair`` cut off the file."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    out: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for line in raw.split(b"\n"):
        end = pos + len(line) + 1
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if end <= len(raw):  # a bad line in the middle: not from a kill, refuse to guess
                    raise BuildError(f"{path} has a corrupt line at byte {pos}; delete the line or use --overwrite.")
                log.warning("dropping a truncated last line of %s (an interrupted write)", path)
                break
        good_end = min(end, len(raw))
        pos = end
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return out


def prepare_out(cfg: BuildConfig) -> Path:
    """Make ``cfg.out`` ready: refuse a foreign or finished folder unless ``resume`` (same generation settings) or
    ``overwrite``; create ``data/`` and ``raw/`` and write ``raw/build.json`` on a fresh start."""
    out = Path(cfg.out)
    raw = out / "raw"
    marker = raw / "build.json"
    ckpt = raw / "completions.jsonl"
    if marker.exists() and not (out / "manifest.json").exists() and not (ckpt.exists() and ckpt.stat().st_size):
        # a start that stopped before its first completion (a setting refused late, Ctrl-C during the model load)
        # holds nothing to lose: its settings are not kept, so a corrected rerun starts fresh
        log.info("%s holds a build that generated nothing yet; starting it afresh with these settings", out)
        for name in ("raw", "data"):
            shutil.rmtree(out / name, ignore_errors=True)
    if out.exists() and any(out.iterdir()):
        if not marker.exists() and not (out / "manifest.json").exists():
            raise BuildError(
                f"Output folder {out} is not empty and holds no dataset build; choose a new or empty --out "
                "(files that are not ours are never deleted)."
            )
        if cfg.overwrite:
            log.warning("--overwrite: removing the previous build in %s", out)
            for name in ("data", "raw"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("manifest.json", "README.md"):
                (out / name).unlink(missing_ok=True)
        elif not cfg.resume:
            prev = json.loads(marker.read_text()) if marker.exists() else {}
            ident = prev.get("generation", {})
            raise BuildError(
                f"Output folder {out} already holds a build ({', '.join(f'{k}={v}' for k, v in ident.items())}). "
                "Pass --resume to continue it, --overwrite to replace it, or choose another --out."
            )
        else:
            prev = json.loads(marker.read_text()) if marker.exists() else {}
            ident = prev.get("generation", {})
            diff = {k: (ident.get(k), v) for k, v in cfg.generation_identity().items() if ident.get(k) != v}
            if diff:
                raise BuildError(
                    f"Cannot resume the build in {out}: it was made with different settings "
                    + ", ".join(f"{k}: folder has {a!r}, you asked {b!r}" for k, (a, b) in diff.items())
                    + ". Use the folder's settings, --overwrite to replace it, or another --out."
                )
    raw.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    if not marker.exists():
        atomic_write_json(marker, {"format": BUILD_FORMAT, "generation": cfg.generation_identity(), "created": now()})
    return out
