"""The shipped YAML configs: training configs and eval suites, package data addressable by name.

They live in ``gemma4_saelens_ext/configs/{training,evals}/`` inside the package, so an installed wheel has them; the
repository's top-level ``training_configs/`` and ``evals/`` are links to those folders (one copy, for users to read
and copy). A path is tried as given first (a user's own file), then as a shipped config's file name or bare name, so
``gemma4-sae train demo_gemma3_270m_nf4`` and ``load_suite("demo")`` work from any directory, checkout or not.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIRS", "resolve_project_file", "shipped_configs"]

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
