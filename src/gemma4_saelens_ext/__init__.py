"""gemma4-saelens-ext: behavior SAEs on (quantized) Gemma 4 with SAELens."""

from gemma4_saelens_ext.precision import PRECISIONS, from_pretrained_kwargs, get_precision

__version__ = "0.1.0"
__all__ = ["PRECISIONS", "from_pretrained_kwargs", "get_precision", "__version__"]

# The one piece of global state: make the Gemma 4 behavior-SAE releases visible to SAELens's own
# `SAE.from_pretrained` / `get_pretrained_saes_directory()` (idempotent; other releases untouched).
from gemma4_saelens_ext.releases import register_releases as _register_releases  # noqa: E402

_register_releases()
