"""Package versions recorded in every output that should be reproducible (dataset manifests, eval reports)."""

from __future__ import annotations

import importlib.metadata
import platform

__all__ = ["package_versions"]

_PACKAGES = ("gemma4-saelens-ext", "sae-lens", "torch", "transformers", "datasets", "bitsandbytes", "pyarrow",
             "scikit-learn", "numpy", "scipy")


def package_versions() -> dict[str, str]:
    """Python and the stack's package versions ("not installed" for a missing one)."""
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
