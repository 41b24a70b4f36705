"""gemma4-saelens-ext: behavior SAEs on (quantized) Gemma 4 with SAELens.

The package is a set of rooms that follow the pipeline, each importing only the rooms before it:

``models`` (load a checkpoint at a precision) -> ``activations`` (the residual stream for SAELens and for analysis)
-> ``behavior`` (labelled datasets) -> ``training`` (SAELens's runner) -> ``releases`` (load / export SAEs) ->
``evals`` (statistics and eval families) -> ``pipeline`` (the demo) -> ``cli`` (the ``gemma4-sae`` command).
``io``, ``paths`` and ``versions`` are leaves every room may use.

The public API is the names below (:data:`ENTRY_POINTS` and their result types; docs/api.md)::

    from gemma4_saelens_ext import load_model, extract_activations, build_dataset, train, load_sae, run_suite
    from gemma4_saelens_ext import dvalue_analysis, cross_validated_probe

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


#: The public API: one import path each (``from gemma4_saelens_ext import train``), each returning a documented
#: dataclass (docs/api.md). The pipeline in order: load a model at a precision, read its activations, build a
#: labelled dataset, train an SAE, load an SAE (a release or a folder), run an eval suite, and the two statistics.
ENTRY_POINTS = (
    "load_model", "extract_activations", "build_dataset", "train", "load_sae", "run_suite", "dvalue_analysis",
    "cross_validated_probe",
)
_EXPORTS = {
    "load_model": "models.load", "LoadedModel": "models.load",
    "extract_activations": "activations.source", "Activations": "activations.source",
    "build_dataset": "behavior.build", "BuildConfig": "behavior.config", "BuildResult": "behavior.config",
    "train": "training.runner", "TrainResult": "training.runner",
    "load_sae": "releases.folders", "LoadedSAE": "releases.folders",
    "register_releases": "releases.registry",  # the one line that makes SAE.from_pretrained know our releases
    "run_suite": "evals.suite", "SuiteResult": "evals.suite",
    "dvalue_analysis": "evals.dvalues", "DValueResult": "evals.dvalues",
    "cross_validated_probe": "evals.probes", "ProbeResult": "evals.probes",
}
__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
