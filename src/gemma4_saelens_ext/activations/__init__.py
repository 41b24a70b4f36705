"""Activations: the residual stream of a loaded model, for SAELens training and for analysis.

* :mod:`.source` — :class:`Gemma4ActivationSource` (a SAELens ``HookedProxyLM`` that stops after the hooked layer),
  :func:`activations` (per-token or pooled, batched), :func:`steering_hook`
* :mod:`.cache` — the dataset run once into SAELens's cached-activations format
* :mod:`.batching` — length-sorted batches (one batcher for every forward pass); a leaf
* :mod:`.distributed`, :mod:`.dist`, :mod:`.config` — data-parallel extraction under ``torchrun``

May import: ``models`` and the package's leaves; torch, transformers, sae_lens.
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "Gemma4ActivationSource": "source", "activations": "source", "steering_hook": "source",
    "extract_activations": "source", "Activations": "source",
    "length_sorted_batches": "batching", "run_extract": "distributed", "load_activations": "distributed",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
