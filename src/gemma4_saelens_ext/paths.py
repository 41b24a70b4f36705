"""Where things are: the shipped YAML configs (training configs and eval suites, package data addressable by
name), and whether a string names a Hub repo or a local path (:func:`looks_like_hub_id`).

They live in ``gemma4_saelens_ext/configs/{training,evals}/`` inside the package, so an installed wheel has them; the
repository's top-level ``training_configs/`` and ``evals/`` are links to those folders (one copy, for users to read
and copy). A path is tried as given first (a user's own file), then as a shipped config's file name or bare name, so
``gemma4-sae train demo_gemma3_270m_nf4`` and ``load_suite("demo")`` work from any directory, checkout or not.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIRS", "resolve_project_file", "shipped_configs", "looks_like_hub_id"]

_PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
#: folder name as users write it (``training_configs/x.yaml``) -> the package folder holding those files
CONFIG_DIRS = {"training_configs": _PACKAGE_CONFIGS / "training", "evals": _PACKAGE_CONFIGS / "evals"}


def shipped_configs(folder: str) -> dict[str, Path]:
    """Name -> path of every config shipped in ``folder`` (``training_configs`` or ``evals``)."""
    return {p.stem: p for p in sorted(CONFIG_DIRS[folder].glob("*.yaml"))}


def resolve_project_file(path: str | Path, folder: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    d = CONFIG_DIRS[folder]
    name = p.name if p.suffix == ".yaml" else f"{p.name}.yaml"
    if (d / name).is_file():
        return d / name
    raise FileNotFoundError(
        f"{path} is neither a file nor a shipped config; shipped {folder}: "
        f"{', '.join(shipped_configs(folder)) or 'none'}."
    )


def looks_like_hub_id(s: str | Path) -> bool:
    """True for a Hugging Face Hub repo id (``owner/name``): exactly one slash, not absolute or relative
    (``/``, ``.``, ``~``), no data-file suffix, and no local folder of its first component (``runs/ds`` is local
    when ``runs`` exists here). A local path the caller has already found to exist is not asked about."""
    s = str(s)
    return not (s.startswith((".", "/", "~")) or Path(s).suffix in (".parquet", ".jsonl", ".json", ".yaml", ".txt")
                or s.count("/") != 1 or Path(s.split("/")[0]).exists())
