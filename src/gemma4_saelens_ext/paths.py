"""Find the project's YAML files (``training_configs/``, ``evals/``) from any working directory.

The configs live at the top of the repository, next to ``src/``. A path is tried as given (relative to the working
directory) first, then relative to the repository root of this (editable) install, then as a bare name in its folder,
so ``gemma4-sae demo`` and ``gemma4-sae train demo_gemma3_270m_nf4`` work outside the checkout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resolve_project_file", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_project_file(path: str | Path, folder: str) -> Path:
    p = Path(path)
    candidates = [p, REPO_ROOT / p, REPO_ROOT / folder / p.name, REPO_ROOT / folder / f"{p.name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{path} does not exist (looked in the working directory and in {REPO_ROOT / folder}); "
        f"see {folder}/ in the repository for examples."
    )
