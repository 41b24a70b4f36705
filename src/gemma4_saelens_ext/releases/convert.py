"""Upstream TopK-SAE checkpoints (a torch state dict + ``cfg.json``) -> SAELens ``TopKSAE``.

The published Gemma 4 behavior SAEs ship a plain state dict of a minimal TopK SAE next to a ``cfg.json``.
Neither the key names nor the matrix orientation are documented, so the converter accepts the common layouts
and refuses everything else with an error that lists what it found:

* SAELens/Anthropic names: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``;
* ``nn.Linear`` names: ``encoder.weight``, ``encoder.bias``, ``decoder.weight``, ``decoder.bias``
  (``enc.*``/``dec.*`` too; a separate pre-encoder bias may be called ``b_dec``, ``b_pre`` or ``pre_bias``).

Each matrix may be stored either way round; its orientation is read off ``cfg.json``'s ``d_in``/``d_sae``.
When ``d_in == d_sae`` the shape cannot tell, and the naming family's convention is used (``W_enc`` is
``[d_in, d_sae]``, ``encoder.weight`` is ``[d_sae, d_in]``).

The TopK forward both sides compute (the definition the tests check against)::

    x_c   = x - b_dec            if apply_b_dec_to_input else x
    pre   = x_c @ W_enc + b_enc                               # [.., d_sae]
    z     = relu(pre) kept at the k largest entries of pre, 0 elsewhere
    x_hat = z @ W_dec + b_dec                                 # [.., d_in]

Whether ``b_dec`` is subtracted from the input is read from ``cfg.json`` (``apply_b_dec_to_input`` or an
alias such as ``subtract_b_dec``/``pre_encoder_bias``). If ``cfg.json`` does not say, the default follows the
naming family (SAELens names: subtract, as SAELens does; ``nn.Linear`` names: do not, as a plain Linear stack
does not) and a warning names the choice; override it per SAE with ``SAESpec(apply_b_dec_to_input=...)``.

Files are read with ``torch.load(weights_only=True)`` (or safetensors): a checkpoint that needs Python code
to be unpickled is refused, never executed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "MissingConfigError",
    "UpstreamConfig",
    "ConvertedSAE",
    "read_upstream_config",
    "load_state_dict_file",
    "convert_state_dict",
    "convert_upstream_checkpoint",
    "load_upstream_sae",
    "saelens_to_upstream",
    "UPSTREAM_LAYOUTS",
]


class CheckpointError(ValueError):
    """A checkpoint or its ``cfg.json`` cannot be converted (corrupt, unknown layout, wrong shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint holds pickled Python objects/code; it is refused instead of being unpickled."""


class MissingConfigError(CheckpointError, FileNotFoundError):
    """The ``cfg.json`` that must accompany an upstream checkpoint is absent."""


# ----------------------------------------------------------------------------------------------------------
# cfg.json
# ----------------------------------------------------------------------------------------------------------
_D_IN_KEYS = ("d_in", "d_model", "input_dim", "d_input", "n_inputs", "activation_dim")
_D_SAE_KEYS = ("d_sae", "n_features", "num_features", "n_latents", "num_latents", "dict_size", "d_hidden", "hidden_dim")
_K_KEYS = ("k", "top_k", "topk", "k_sparse")
_B_DEC_KEYS = (
    "apply_b_dec_to_input",
    "subtract_b_dec",
    "subtract_decoder_bias",
    "b_dec_subtract",
    "pre_encoder_bias",
    "use_pre_encoder_bias",
    "center_input",
)
_NESTED_CFG_KEYS = ("config", "cfg", "sae", "sae_config", "architecture_config")


def _flatten_cfg(raw: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys win over the same key in a nested ``config``/``cfg``/``sae`` block."""
    flat: dict[str, Any] = {}
    for key in _NESTED_CFG_KEYS:
        if isinstance(raw.get(key), dict):
            flat.update(raw[key])
    flat.update({k: v for k, v in raw.items() if not isinstance(v, dict)})
    return flat


def _first(cfg: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | tuple[None, None]:
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return key, cfg[key]
    return None, None


@dataclass(frozen=True)
class UpstreamConfig:
    """What the converter needs from an upstream ``cfg.json`` (other keys are kept in ``raw``)."""

    d_in: int
    d_sae: int
    k: int
    #: ``None`` when ``cfg.json`` does not say; the layout's convention decides then.
    apply_b_dec_to_input: bool | None = None
    dtype: str = "float32"
    layer: int | None = None
    hook_name: str | None = None
    model_name: str | None = None
    precision: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "cfg.json") -> UpstreamConfig:
        cfg = _flatten_cfg(raw)
        _, d_in = _first(cfg, _D_IN_KEYS)
        _, d_sae = _first(cfg, _D_SAE_KEYS)
        if d_sae is None and d_in is not None and cfg.get("expansion_factor") is not None:
            d_sae = int(d_in) * int(cfg["expansion_factor"])
        _, k = _first(cfg, _K_KEYS)
        if k is None and isinstance(cfg.get("activation_fn_kwargs"), dict):
            k = cfg["activation_fn_kwargs"].get("k")
        missing = [name for name, val in (("d_in", d_in), ("d_sae", d_sae), ("k", k)) if val is None]
        if missing:
            raise CheckpointError(
                f"{source} lacks {', '.join(missing)} (accepted names: d_in={list(_D_IN_KEYS)}, "
                f"d_sae={list(_D_SAE_KEYS)} or expansion_factor, k={list(_K_KEYS)}). Keys found: {sorted(cfg)}"
            )
        arch = str(cfg.get("architecture", cfg.get("activation", cfg.get("activation_fn", "topk")))).lower()
        if "topk" not in arch.replace("_", "").replace("-", ""):
            raise CheckpointError(f"{source} describes architecture {arch!r}; only TopK SAEs are converted.")
        b_key, b_val = _first(cfg, _B_DEC_KEYS)
        d_in, d_sae, k = int(d_in), int(d_sae), int(k)
        if not (0 < k <= d_sae) or d_in <= 0:
            raise CheckpointError(f"{source}: invalid sizes d_in={d_in}, d_sae={d_sae}, k={k}")
        layer = cfg.get("layer", cfg.get("hook_layer"))
        return cls(
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            apply_b_dec_to_input=None if b_key is None else bool(b_val),
            dtype=str(cfg.get("dtype", "float32")).replace("torch.", ""),
            layer=None if layer is None else int(layer),
            hook_name=cfg.get("hook_name", cfg.get("hook_point")),
            model_name=cfg.get("model_name", cfg.get("base_model", cfg.get("model"))),
            precision=cfg.get("precision", cfg.get("quantization")),
            raw=dict(raw),
        )


def read_upstream_config(path: str | Path) -> UpstreamConfig:
    """Read and validate an upstream ``cfg.json``; a missing file raises :class:`MissingConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingConfigError(
            f"cfg.json not found at {path}. An upstream SAE checkpoint needs its cfg.json (with d_in, d_sae and k) "
            "in the same folder; download it together with the weights."
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return UpstreamConfig.from_dict(raw, source=str(path))


# ----------------------------------------------------------------------------------------------------------
# state-dict files
# ----------------------------------------------------------------------------------------------------------
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "sae_state_dict", "sae", "model", "weights")
_STRIP_PREFIXES = ("module.", "_orig_mod.", "sae.", "model.")
#: training-time buffers some trainers save next to the weights; they do not affect the forward pass.
_IGNORED_TENSORS = frozenset(
    {
        "num_batches_not_active",
        "num_tokens_since_fired",
        "feature_act_counts",
        "dead_mask",
        "stats_last_nonzero",
        "steps_since_active",
        "feature_counts",
    }
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.pt``/``.pth``/``.bin`` (``weights_only=True``) or ``.safetensors``.

    Nested ``{"state_dict": {...}}``-style wrappers are unwrapped; non-tensor entries are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAE weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    with path.open("rb") as fh:
        head = fh.read(4)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError/EOFError/... for bad files
        msg = str(e)
        globals_found = re.findall(r"GLOBAL ([\w.]+)", msg)
        if globals_found or (head[:1] == b"\x80" and "Weights only load failed" in msg and head[:2] != b"\x80\x02"):
            what = f" (it references {', '.join(sorted(set(globals_found)))})" if globals_found else ""
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it contains pickled Python objects{what}, and loading it would run code. "
                "Only plain state dicts of tensors are accepted (torch.load(..., weights_only=True)). If you trust "
                "the file, re-save its weights with torch.save(module.state_dict(), path) or as safetensors."
            ) from e
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint (corrupt or truncated file?): "
            f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"
        ) from e
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor) or not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
    for _ in range(3):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            break
        inner = [obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if len(inner) != 1:
            break
        obj = inner[0]
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; keys found: {sorted(map(str, obj))}")
    dropped = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if dropped:
        logger.debug("ignoring non-tensor entries of %s: %s", path, dropped)
    return tensors


# ----------------------------------------------------------------------------------------------------------
# layout detection
# ----------------------------------------------------------------------------------------------------------
_ALIASES: dict[str, tuple[str, ...]] = {
    "W_enc": ("W_enc", "encoder.weight", "enc.weight"),
    "W_dec": ("W_dec", "decoder.weight", "dec.weight"),
    "b_enc": ("b_enc", "encoder.bias", "enc.bias"),
    "b_dec": ("b_dec", "decoder.bias", "dec.bias", "b_pre", "pre_bias"),
}
#: per SAELens parameter: the orientation its stored shape has in SAELens ("in_out") vs nn.Linear ("out_in").
_SAELENS_SHAPE = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in")}


@dataclass(frozen=True)
class ConvertedSAE:
    """A converted checkpoint: SAELens ``cfg_dict`` + ``state_dict``, and how the source was laid out."""

    cfg_dict: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    #: e.g. ``{"W_enc": "encoder.weight (transposed)", "b_dec": "decoder.bias", ...}``
    layout: dict[str, str]


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    known = {a for names in _ALIASES.values() for a in names}
    for prefix in _STRIP_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd) and not (set(sd) & known):
            stripped = {k[len(prefix) :]: v for k, v in sd.items()}
            if set(stripped) & known:
                return stripped
    return sd


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    cfg: UpstreamConfig,
    *,
    apply_b_dec_to_input: bool | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], dict[str, str], bool]:
    """Map an upstream state dict onto SAELens's ``W_enc [d_in,d_sae]``, ``W_dec [d_sae,d_in]``, ``b_enc``, ``b_dec``.

    Returns ``(state_dict, layout, apply_b_dec_to_input)``; raises :class:`CheckpointError` listing the keys
    found when the layout is not recognised or shapes disagree with ``cfg``.
    """
    sd = _strip_prefix(dict(state_dict))
    found = sorted(f"{k}{tuple(v.shape)}" for k, v in sd.items())
    dims = {"d_in": cfg.d_in, "d_sae": cfg.d_sae}
    picked: dict[str, str] = {}
    for target, aliases in _ALIASES.items():
        present = [a for a in aliases if a in sd]
        if len(present) > 1:
            raise CheckpointError(
                f"{source}: ambiguous {target}: several candidate keys {present}. Keys found: {found}"
            )
        if present:
            picked[target] = present[0]
    if "W_enc" not in picked or "W_dec" not in picked:
        raise CheckpointError(
            f"{source}: unrecognised state-dict layout. Expected W_enc/W_dec/b_enc/b_dec or "
            f"encoder.weight/decoder.weight (+ .bias); keys found: {found}"
        )
    unknown = sorted(set(sd) - set(picked.values()) - _IGNORED_TENSORS)
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected tensors {unknown} (not part of a TopK SAE; converting without them could change "
            f"the forward pass). Keys found: {found}"
        )

    out: dict[str, torch.Tensor] = {}
    layout: dict[str, str] = {}
    for target in ("W_enc", "W_dec"):
        key = picked[target]
        w = sd[key]
        rows, cols = (dims[d] for d in _SAELENS_SHAPE[target])
        if not w.is_floating_point():
            raise CheckpointError(f"{source}: {key} has non-float dtype {w.dtype}")
        shape = tuple(w.shape)
        linear_named = key.endswith(".weight")
        if shape == (rows, cols) and (rows != cols or not linear_named):
            out[target], layout[target] = w, key
        elif shape == (cols, rows):
            out[target], layout[target] = w.T, f"{key} (transposed)"
        else:
            raise CheckpointError(
                f"{source}: {key} has shape {shape}, but cfg.json says d_in={cfg.d_in}, d_sae={cfg.d_sae}: expected "
                f"{(rows, cols)} or {(cols, rows)}. Keys found: {found}"
            )
    if cfg.d_in == cfg.d_sae:
        logger.warning("%s: d_in == d_sae, orientation taken from the key names (%s)", source, layout)
    for target, size in (("b_enc", cfg.d_sae), ("b_dec", cfg.d_in)):
        key = picked.get(target)
        if key is None:
            out[target] = torch.zeros(size)
            layout[target] = "(absent: zeros)"
            continue
        b = sd[key].reshape(-1) if sd[key].dim() == 2 and 1 in sd[key].shape else sd[key]
        if tuple(b.shape) != (size,):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(sd[key].shape)}, expected ({size},) from cfg.json "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}). Keys found: {found}"
            )
        out[target], layout[target] = b, key

    for name, t in out.items():
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: {layout[name]} contains NaN or inf values (corrupt checkpoint?)")
    out = {k: v.detach().to(device=device, dtype=dtype).contiguous().clone() for k, v in out.items()}

    if apply_b_dec_to_input is None:
        apply_b_dec_to_input = cfg.apply_b_dec_to_input
    if apply_b_dec_to_input is None:
        apply_b_dec_to_input = not picked["W_enc"].endswith(".weight")
        logger.warning(
            "%s: cfg.json does not say whether b_dec is subtracted from the input; using %s (the convention of "
            "%s-style keys). Pass apply_b_dec_to_input=... to override.",
            source,
            apply_b_dec_to_input,
            "SAELens" if apply_b_dec_to_input else "nn.Linear",
        )
    return out, layout, bool(apply_b_dec_to_input)


def _saelens_cfg_dict(
    cfg: UpstreamConfig, apply_b_dec_to_input: bool, dtype: str, device: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    from sae_lens import __version__ as sae_lens_version

    meta = {"sae_lens_version": sae_lens_version, "sae_lens_training_version": None}
    for key, val in (("model_name", cfg.model_name), ("hook_name", cfg.hook_name), ("layer", cfg.layer)):
        if val is not None:
            meta[key] = val
    if cfg.precision is not None:
        meta["precision"] = cfg.precision
    meta.update({k: v for k, v in metadata.items() if v is not None})
    return {
        "architecture": "topk",
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "k": cfg.k,
        "dtype": dtype,
        "device": device,
        "apply_b_dec_to_input": apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": meta,
    }


def convert_upstream_checkpoint(
    weights_path: str | Path,
    cfg_path: str | Path | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    apply_b_dec_to_input: bool | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> ConvertedSAE:
    """Read ``weights_path`` + ``cfg.json`` (default: next to the weights) and return SAELens cfg/state dicts."""
    weights_path = Path(weights_path)
    cfg_path = Path(cfg_path) if cfg_path is not None else weights_path.with_name("cfg.json")
    cfg = read_upstream_config(cfg_path)
    raw_sd = load_state_dict_file(weights_path)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    sd, layout, apply = convert_state_dict(
        raw_sd,
        cfg,
        apply_b_dec_to_input=apply_b_dec_to_input,
        dtype=torch_dtype,
        device=device,
        source=str(weights_path),
    )
    meta = dict(metadata or {})
    meta.setdefault("source_layout", layout)
    cfg_dict = _saelens_cfg_dict(cfg, apply, str(dtype).replace("torch.", ""), device, meta)
    logger.info("converted %s (%s) to a SAELens TopK SAE d_in=%d d_sae=%d k=%d", weights_path, layout, cfg.d_in, cfg.d_sae, cfg.k)
    return ConvertedSAE(cfg_dict=cfg_dict, state_dict=sd, layout=layout)


def load_upstream_sae(
    weights_path: str | Path,
    cfg_path: str | Path | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    apply_b_dec_to_input: bool | None = None,
    device: str = "cpu",
    dtype: str = "float32",
):
    """Load an upstream checkpoint file directly as a SAELens ``TopKSAE`` (no release registration needed)."""
    from sae_lens import SAE

    conv = convert_upstream_checkpoint(
        weights_path, cfg_path, metadata=metadata, apply_b_dec_to_input=apply_b_dec_to_input, device=device, dtype=dtype
    )
    sae = SAE.from_dict(conv.cfg_dict)
    sae.load_state_dict(conv.state_dict)
    return sae.to(device)


# ----------------------------------------------------------------------------------------------------------
# SAELens -> upstream (used by export)
# ----------------------------------------------------------------------------------------------------------
#: ``"linear"``: nn.Linear keys/orientation (encoder.weight [d_sae,d_in], decoder.weight [d_in,d_sae]);
#: ``"saelens"``: W_enc [d_in,d_sae], W_dec [d_sae,d_in], b_enc, b_dec.
UPSTREAM_LAYOUTS = ("linear", "saelens")


@torch.no_grad()
def saelens_to_upstream(sae: Any, layout: str = "linear") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Turn an inference SAELens ``TopKSAE`` into an upstream ``(state_dict, cfg.json dict)``.

    ``rescale_acts_by_decoder_norm`` is folded into the weights (the upstream forward has no such option),
    which leaves the forward pass unchanged. Normalised-input SAEs and non-TopK architectures are refused.
    """
    if layout not in UPSTREAM_LAYOUTS:
        raise ValueError(f"unknown upstream layout {layout!r}; choose one of {UPSTREAM_LAYOUTS}")
    arch = sae.cfg.architecture()
    if arch != "topk":
        raise ValueError(f"the upstream layout only holds TopK SAEs; this SAE is {arch!r} (export it in SAELens format)")
    if sae.cfg.normalize_activations != "none":
        raise ValueError(
            f"normalize_activations={sae.cfg.normalize_activations!r} cannot be expressed in the upstream layout"
        )
    W_enc = sae.W_enc.detach().float().cpu().clone()
    W_dec = sae.W_dec.detach().float().cpu().clone()
    b_enc = sae.b_enc.detach().float().cpu().clone()
    b_dec = sae.b_dec.detach().float().cpu().clone()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=-1).clamp(min=1e-8)
        W_enc *= norms[None, :]
        b_enc *= norms
        W_dec /= norms[:, None]
    if layout == "linear":
        sd = {
            "encoder.weight": W_enc.T.contiguous(),
            "encoder.bias": b_enc,
            "decoder.weight": W_dec.T.contiguous(),
            "decoder.bias": b_dec,
        }
    else:
        sd = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    meta = sae.cfg.metadata
    cfg = {
        "architecture": "topk",
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "k": int(sae.cfg.k),
        "apply_b_dec_to_input": bool(sae.cfg.apply_b_dec_to_input),
        "dtype": "float32",
        "layout": layout,
    }
    for key in ("model_name", "hook_name", "layer", "precision"):
        if meta.get(key) is not None:
            cfg[key] = meta.get(key)
    return sd, cfg
