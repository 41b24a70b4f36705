"""``release.json``: the manifest of an exported release folder (one entry per SAE, the paths of its copies).

:func:`gemma4_saelens_ext.releases.export_sae` writes it (:func:`write_manifest`, keeping the entries of the other
SAEs already exported into the folder); :func:`gemma4_saelens_ext.releases.register_local_release` reads it back
into a :class:`~gemma4_saelens_ext.releases.registry.ReleaseSpec` (:func:`release_spec_from_folder`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from gemma4_saelens_ext.io import atomic_write_json, to_jsonable
from gemma4_saelens_ext.releases.spec import GEMMA4_E2B, ReleaseSpec, SAESpec

__all__ = ["MANIFEST_FILENAME", "previous_entries", "write_manifest", "release_spec_from_folder"]

MANIFEST_FILENAME = "release.json"


def previous_entries(out_dir: Path, release: str, sae_id: str, formats: set[str]) -> list[dict[str, Any]]:
    """Entries of the other SAEs already exported into ``out_dir`` (several SAEs per release folder).

    Refuses a folder holding another release, and a second upstream-layout SAE (its ``cfg.json`` sits at the root).
    """
    path = out_dir / MANIFEST_FILENAME
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    if old.get("release") != release:
        raise ValueError(f"{out_dir} already holds release {old.get('release')!r}, not {release!r}")
    entries = [e for e in old.get("saes", []) if e.get("sae_id") != sae_id]
    if "upstream" in formats and any("upstream" in e.get("paths", {}) for e in entries):
        raise ValueError(
            f"{out_dir} already holds an upstream-layout SAE (its cfg.json sits at the root); "
            "export this SAE's upstream copy to another folder"
        )
    return entries


def write_manifest(
    out_dir: Path,
    *,
    release: str,
    repo_id: str | None,
    sae_id: str,
    paths: Mapping[str, str],
    metadata: Mapping[str, Any],
    cfg: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> Path:
    """Add (or replace) ``sae_id``'s entry in ``out_dir/release.json``; returns the manifest's path."""
    entry = {
        "sae_id": sae_id,
        "paths": dict(paths),
        **{k: metadata[k] for k in ("layer", "precision", "model_name", "hook_name", "hf_hook_name")},
        "architecture": cfg.get("architecture"),
        "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
        "k": cfg.get("k"),
        "variance_explained": metrics.get("explained_variance"),
        "l0": metrics.get("l0"),
        "metrics": dict(metrics),
    }
    manifest = {
        "release": release,
        "model": metadata["model_name"],
        "repo_id": repo_id,
        "saes": previous_entries(out_dir, release, sae_id, set(paths)) + [entry],
    }
    return atomic_write_json(out_dir / MANIFEST_FILENAME, to_jsonable(manifest))


def release_spec_from_folder(
    folder: str | Path, *, release: str | None = None, prefer: Literal["saelens", "upstream"] = "saelens"
):
    """The ``ReleaseSpec`` of an exported folder, from its ``release.json``.

    ``prefer`` picks which copy each SAE id loads from when the folder holds both formats.
    """
    folder = Path(folder).expanduser().resolve()
    path = folder / MANIFEST_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: not an exported release folder. For other folders build a ReleaseSpec "
            "with local_dir=... and call register_release()."
        )
    manifest = json.loads(path.read_text())
    saes = []
    for entry in manifest["saes"]:
        paths: dict[str, str] = entry["paths"]
        fmt = prefer if prefer in paths else next(iter(paths))
        saes.append(
            SAESpec(
                sae_id=entry["sae_id"],
                path=paths[fmt],
                format=fmt,  # type: ignore[arg-type]
                layer=int(entry["layer"]),
                precision=entry.get("precision", "nf4"),
                model_name=entry.get("model_name"),
                hook_name=entry.get("hook_name"),
                hf_hook_name=entry.get("hf_hook_name"),
                variance_explained=entry.get("variance_explained"),
                l0=entry.get("l0"),
            )
        )
    return ReleaseSpec(
        release=release or manifest["release"],
        saes=tuple(saes),
        local_dir=str(folder),
        model=manifest.get("model", GEMMA4_E2B),
        description=manifest.get("description", ""),
    )
