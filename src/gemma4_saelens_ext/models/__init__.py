"""Models: load a Gemma-family checkpoint at a named precision, and everything a load needs.

* :mod:`.load` — :func:`load_model` -> :class:`LoadedModel`; the early layer / width check (:func:`check_checkpoint`)
* :mod:`.layers` — layer numbers and hook names (``blocks.L.hook_resid_post`` <-> ``model.layers.L``); a leaf
* :mod:`.precision` — the named presets (nf4 = the seed card's exact setting); a leaf, no torch at import
* :mod:`.checkpoint_config` — find and read a checkpoint's ``config.json`` without its weights
* :mod:`.derived`, :mod:`.embedded` — text-only / truncated derived checkpoints; the embedded models
* :mod:`.placement`, :mod:`.requantize`, :mod:`.quantized_cache` — lookups off the accelerator, quantization
  matching for truncated loads, cached quantized layers for CPU loads

May import: the package's leaves (``io``, ``paths``, ``versions``), torch, transformers, bitsandbytes. Nothing
else in the package.
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "LoadedModel": "load", "load_model": "load", "check_checkpoint": "load", "prepare_checkpoint": "load",
    "parse_layer": "layers", "hook_name": "layers", "find_decoder_layers": "layers",
    "PRECISIONS": "precision", "Precision": "precision", "get_precision": "precision",
    "from_pretrained_kwargs": "precision",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
