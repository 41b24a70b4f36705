"""gemma4-saelens-ext: behavior SAEs on (quantized) Gemma 4 with SAELens.

The package is a set of rooms that follow the pipeline, each importing only the rooms before it:

``models`` (load a checkpoint at a precision) -> ``activations`` (the residual stream for SAELens and for analysis)
-> ``behavior`` (labelled datasets) -> ``training`` (SAELens's runner) -> ``releases`` (load / export SAEs) ->
``evals`` (statistics and eval families) -> ``pipeline`` (the demo) -> ``cli`` (the ``gemma4-sae`` command).
``io``, ``paths`` and ``versions`` are leaves every room may use.

Importing the package (or any statistics module) loads neither torch, transformers nor sae_lens: public names are
resolved on first use. Register the Gemma 4 behavior releases with SAELens with one line::

    import gemma4_saelens_ext; gemma4_saelens_ext.register_releases()
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public names live in its submodules (PEP 562): ``name`` is
    imported from ``package + "." + exports[name]`` the first time it is read, so importing the package is free."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(globals()))

    return __getattr__, __dir__


_EXPORTS = {
    "register_releases": "releases.registry",
    "load_model": "models.load",
    "PRECISIONS": "models.precision",
    "get_precision": "models.precision",
    "from_pretrained_kwargs": "models.precision",
}
__all__ = ["__version__", "lazy_exports", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
