"""Release specs: what a Gemma 4 behavior-SAE release holds (:class:`ReleaseSpec`, :class:`SAESpec`), the published
releases (:data:`BUILTIN_RELEASES`) and the process-wide table of registered ones (:data:`REGISTERED`).

The leaf of ``releases/``: the loader, the registry and the export manifest all read these; nothing here imports
them back (importing this loads no SAELens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gemma4_saelens_ext.models.layers import hook_name, module_path
from gemma4_saelens_ext.models.precision import PRECISIONS

__all__ = [
    "LOADER_NAME", "GEMMA4_E2B", "UPSTREAM_LAYOUTS", "SAESpec", "ReleaseSpec", "BUILTIN_RELEASES", "REGISTERED",
    "upstream_release", "hook_names_for_layer", "default_hf_hook_name",
]

#: ``"linear"``: nn.Linear keys/orientation (encoder.weight [d_sae,d_in], decoder.weight [d_in,d_sae]);
#: ``"saelens"``: W_enc [d_in,d_sae], W_dec [d_sae,d_in], b_enc, b_dec.
UPSTREAM_LAYOUTS = ("linear", "saelens")

#: SAELens's file names in a saved SAE folder (``sae_lens.constants.SAE_CFG_FILENAME`` / ``SAE_WEIGHTS_FILENAME``,
#: spelled out so reading a spec loads no SAELens; tests/test_packaging.py checks they agree)
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"

LOADER_NAME = "gemma4_behavior"
GEMMA4_E2B = "google/gemma-4-E2B"


def default_hf_hook_name(model_name: str | None, layer: int) -> str | None:
    """HF module path of layer ``layer``'s output for Hub Gemma 4 checkpoints (``google/gemma-4-*``), else None.

    Other models' module paths depend on how they are loaded; record them explicitly when known.
    """
    if model_name and model_name.lower().startswith("google/gemma-4-"):
        return hook_names_for_layer(layer)[1]
    return None


def hook_names_for_layer(layer: int, *, multimodal: bool = True) -> tuple[str, str]:
    """``(hook_name, hf_hook_name)`` for decoder layer ``layer``'s output.

    ``multimodal=True``: HF path inside ``Gemma4ForConditionalGeneration`` (what ``AutoModelForCausalLM`` returns
    for Gemma 4 checkpoints); ``False``: inside a text-only ``Gemma4ForCausalLM``.
    """
    prefix = "model.language_model.layers" if multimodal else "model.layers"
    return hook_name(layer), module_path(prefix, layer)


@dataclass(frozen=True)
class SAESpec:
    """One SAE inside a release.

    ``path`` is relative to the repo/folder root: an upstream weights file (``*.pt``, ``*.pth``, ``*.bin``,
    ``*.safetensors`` other than SAELens's) whose ``cfg.json`` sits next to it, or a folder in SAELens format
    (``cfg.json`` + ``sae_weights.safetensors``). ``format`` is inferred from ``path`` when left ``None``.
    """

    sae_id: str
    path: str
    layer: int
    precision: str = "nf4"
    model_name: str | None = None  # default: the release's model
    hook_name: str | None = None  # default: blocks.{layer}.hook_resid_post
    hf_hook_name: str | None = None  # default for google/gemma-4-* models: model.language_model.layers.{layer}
    format: Literal["upstream", "saelens"] | None = None
    cfg_path: str | None = None  # upstream only; default: cfg.json next to the weights
    #: force the encode convention (True: subtract b_dec before encoding); None: decided as in releases.convention
    apply_b_dec_to_input: bool | None = None
    variance_explained: float | None = None  # as reported by the release (SAELens directory field)
    l0: float | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"SAESpec {self.sae_id!r}: unknown precision {self.precision!r}; valid: {PRECISIONS}")
        if self.format is None:
            object.__setattr__(self, "format", _infer_format(self.path))
        if self.format not in ("upstream", "saelens"):
            raise ValueError(f"SAESpec {self.sae_id!r}: format must be 'upstream' or 'saelens', got {self.format!r}")
        if self.hook_name is None:
            object.__setattr__(self, "hook_name", hook_names_for_layer(self.layer)[0])

    @property
    def files(self) -> tuple[str, ...]:
        """Files (relative to the repo root) this SAE needs."""
        if self.format == "saelens":
            base = self.path.strip("/")
            join = (lambda f: f"{base}/{f}") if base and base != "." else (lambda f: f)
            return (join(SAELENS_CFG), join(SAELENS_WEIGHTS))
        return (self.path, self.cfg_path or _sibling(self.path, "cfg.json"))


@dataclass(frozen=True)
class ReleaseSpec:
    """A release: a Hub repo (``repo_id``) or a local folder (``local_dir``) holding one or more SAEs."""

    release: str
    saes: tuple[SAESpec, ...]
    repo_id: str | None = None
    local_dir: str | None = None
    model: str = GEMMA4_E2B
    description: str = ""

    def __post_init__(self) -> None:
        if (self.repo_id is None) == (self.local_dir is None):
            raise ValueError(f"release {self.release!r}: give exactly one of repo_id or local_dir")
        if self.local_dir is not None:
            object.__setattr__(self, "local_dir", str(Path(self.local_dir).expanduser().resolve()))
        object.__setattr__(self, "saes", tuple(self.saes))
        ids = [s.sae_id for s in self.saes]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"release {self.release!r}: sae ids must be non-empty and unique, got {ids}")

    @property
    def location(self) -> str:
        """What SAELens stores as ``repo_id``: the Hub repo, or the absolute local folder."""
        return self.repo_id if self.repo_id is not None else str(self.local_dir)

    def sae(self, sae_id: str) -> SAESpec:
        for s in self.saes:
            if s.sae_id == sae_id:
                return s
        raise KeyError(f"SAE id {sae_id!r} not in release {self.release!r}; ids: {[s.sae_id for s in self.saes]}")


def _infer_format(path: str) -> Literal["upstream", "saelens"]:
    p = path.rstrip("/")
    if p.endswith((".pt", ".pth", ".bin")) or (p.endswith(".safetensors") and not p.endswith(SAELENS_WEIGHTS)):
        return "upstream"
    return "saelens"


def _sibling(path: str, name: str) -> str:
    parent = str(Path(path).parent)
    return name if parent in ("", ".") else f"{parent}/{name}"


def upstream_release(
    repo_id: str,
    *,
    filename: str | None = None,
    layer: int = 25,
    precision: str = "nf4",
    release: str | None = None,
    sae_id: str | None = None,
    model: str = GEMMA4_E2B,
    description: str = "",
    **sae_kwargs: Any,
) -> ReleaseSpec:
    """Spec for a repo in the upstream layout (``<repo name>.pt`` + ``cfg.json`` at the root), e.g. a companion.

    Defaults follow the published release: file named after the repo, layer 25, nf4, release name = repo id,
    sae id = ``blocks.{layer}.hook_resid_post``.
    """
    filename = filename or f"{repo_id.split('/')[-1]}.pt"
    spec = SAESpec(
        sae_id=sae_id or hook_names_for_layer(layer)[0], path=filename, layer=layer, precision=precision, **sae_kwargs
    )
    return ReleaseSpec(release=release or repo_id, saes=(spec,), repo_id=repo_id, model=model, description=description)


#: Published releases. Release name = HF repo id (so the name on the Hub page works as is).
#: variance_explained / l0 are the values the upstream model card reports.
BUILTIN_RELEASES: tuple[ReleaseSpec, ...] = (
    upstream_release(
        "Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit",
        filename="gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit.pt",
        layer=25,
        precision="nf4",
        variance_explained=0.995,
        l0=16.0,
        description=(
            "TopK (k=16) SAE, d_in 1536 x d_sae 6144, on Gemma 4 E2B layer-25 residuals taken under bitsandbytes "
            "nf4 (double quant, fp16 compute); trained on role-consistency vs role-drift role-play completions "
            "(not a deception detector; see its model card)."
        ),
    ),
)

#: release name -> spec, for every release this process registered (re-added after a directory cache_clear)
REGISTERED: dict[str, ReleaseSpec] = {}
