"""Upstream TopK-SAE checkpoints (a torch state dict + ``cfg.json``) -> SAELens ``TopKSAE``.

The published Gemma 4 behavior SAEs ship a plain state dict of a minimal TopK SAE next to a ``cfg.json``.
The converter reads the layouts real files use and refuses everything else with an error that lists the keys
it found:

* SAELens names (also those of the author's trainer, SolshineCode/nanochat-SAE): ``W_enc``, ``W_dec``, ``b_enc``,
  ``b_dec``;
* ``nn.Linear`` names: ``encoder.weight``, ``encoder.bias``, ``decoder.weight``, ``decoder.bias``;
* the config: ``d_in``, ``d_sae``, ``k``, ``apply_b_dec_to_input`` and ``architecture`` (SAELens's ``cfg.json``,
  and the upstream one ``export_sae`` writes) or ``activation`` (the trainer checkpoint's embedded ``config``).

Each matrix may be stored either way round; its orientation is read off ``cfg.json``'s ``d_in``/``d_sae``.
When ``d_in == d_sae`` the shape cannot tell, and the naming family's convention is used (``W_enc`` is
``[d_in, d_sae]``, ``encoder.weight`` is ``[d_sae, d_in]``).

The TopK forward both sides compute (the definition the tests check against)::

    x_c   = x - b_dec            if apply_b_dec_to_input else x
    pre   = x_c @ W_enc + b_enc                               # [.., d_sae]
    z     = relu(pre) kept at the k largest entries of pre, 0 elsewhere
    x_hat = z @ W_dec + b_dec                                 # [.., d_in]

The weights may sit anywhere in the file (a trainer checkpoint nests them under ``sae_state_dict`` beside the
optimizer state and a ``config`` dict): :mod:`.checkpoint` finds them. ``d_in``, ``d_sae``, ``k`` and the
``b_dec`` flag come from ``cfg.json``, and from the checkpoint's embedded ``config`` for whatever ``cfg.json``
lacks (or when there is no ``cfg.json`` at all). Whether ``b_dec`` is subtracted from the input is decided by
:func:`.convention.decide_encode_convention` (override > cfg.json > checkpoint config > the author's convention
for ``Solshine/gemma4_*behaviorSAE*`` > key names) and recorded in ``sae.cfg.metadata``.

Files are read with ``torch.load(weights_only=True)`` (or safetensors): a checkpoint that needs Python code
to be unpickled is refused, never executed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gemma4_saelens_ext.releases.checkpoint import (
    WEIGHT_ALIASES,
    CheckpointError,
    UnsafeCheckpointError,
    load_state_dict_file,
    read_checkpoint,
    strip_prefix,
)
from gemma4_saelens_ext.releases.convention import EncodeConvention, decide_encode_convention

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
]


class MissingConfigError(CheckpointError, FileNotFoundError):
    """The ``cfg.json`` that must accompany an upstream checkpoint is absent."""


# ----------------------------------------------------------------------------------------------------------
# cfg.json
# ----------------------------------------------------------------------------------------------------------
# The config layouts real files use, and nothing else (a guessed alias could misread a file silently):
# * SAELens's cfg.json and the upstream cfg.json export_sae writes: architecture "topk", d_in, d_sae, k,
#   apply_b_dec_to_input, and model_name / hook_name / layer / precision;
# * the release author's trainer checkpoint (SolshineCode/nanochat-SAE SAETrainer): an embedded ``config`` with
#   d_in, d_sae, k and activation "topk".
_B_DEC_KEY = "apply_b_dec_to_input"
_ARCH_KEYS = ("architecture", "activation")


def b_dec_flag(cfg: dict[str, Any]) -> bool | None:
    """The config's ``apply_b_dec_to_input``, or None when it does not say."""
    val = cfg.get(_B_DEC_KEY)
    return None if val is None else bool(val)


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
    def from_dict(cls, cfg: dict[str, Any], *, source: str = "cfg.json") -> UpstreamConfig:
        missing = [name for name in ("d_in", "d_sae", "k") if cfg.get(name) is None]
        if missing:
            raise CheckpointError(
                f"{source} lacks {', '.join(missing)}: an SAE config needs d_in, d_sae and k (as in SAELens's "
                f"cfg.json and the release's checkpoint config). Keys found: {sorted(cfg)}"
            )
        arch_key = next((key for key in _ARCH_KEYS if cfg.get(key) is not None), None)
        arch = str(cfg[arch_key]).lower() if arch_key else "topk"
        if arch != "topk":
            raise CheckpointError(
                f"{source} describes {arch_key}={arch!r}; only TopK SAEs are converted. Keys found: {sorted(cfg)}"
            )
        d_in, d_sae, k = int(cfg["d_in"]), int(cfg["d_sae"]), int(cfg["k"])
        if not (0 < k <= d_sae) or d_in <= 0:
            raise CheckpointError(f"{source}: invalid sizes d_in={d_in}, d_sae={d_sae}, k={k}")
        return cls(
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            apply_b_dec_to_input=b_dec_flag(cfg),
            dtype=str(cfg.get("dtype", "float32")).replace("torch.", ""),
            layer=None if cfg.get("layer") is None else int(cfg["layer"]),
            hook_name=cfg.get("hook_name"),
            model_name=cfg.get("model_name"),
            precision=cfg.get("precision"),
            raw=dict(cfg),
        )


def _read_cfg_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingConfigError(
            f"cfg.json not found at {path}. An upstream SAE checkpoint needs its cfg.json (with d_in, d_sae and k) "
            "in the same folder, unless the checkpoint embeds a config with them; download it with the weights."
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def read_upstream_config(path: str | Path) -> UpstreamConfig:
    """Read and validate an upstream ``cfg.json``; a missing file raises :class:`MissingConfigError`."""
    return UpstreamConfig.from_dict(_read_cfg_json(Path(path)), source=str(path))


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


# ----------------------------------------------------------------------------------------------------------
# layout detection
# ----------------------------------------------------------------------------------------------------------
#: per SAELens parameter: the orientation its stored shape has in SAELens ("in_out") vs nn.Linear ("out_in").
_SAELENS_SHAPE = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in")}


@dataclass(frozen=True)
class ConvertedSAE:
    """A converted checkpoint: SAELens ``cfg_dict`` + ``state_dict``, and how the source was laid out."""

    cfg_dict: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    #: e.g. ``{"W_enc": "encoder.weight (transposed)", "b_dec": "decoder.bias", ...}``
    layout: dict[str, str]
    convention: EncodeConvention | None = None


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    cfg: UpstreamConfig,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map an upstream state dict onto SAELens's ``W_enc [d_in,d_sae]``, ``W_dec [d_sae,d_in]``, ``b_enc``, ``b_dec``.

    Returns ``(state_dict, layout)``; raises :class:`CheckpointError` listing the keys
    found when the layout is not recognised or shapes disagree with ``cfg``.
    """
    sd = strip_prefix(dict(state_dict))
    found = sorted(f"{k}{tuple(v.shape)}" for k, v in sd.items())
    dims = {"d_in": cfg.d_in, "d_sae": cfg.d_sae}
    picked: dict[str, str] = {}
    for target, aliases in WEIGHT_ALIASES.items():
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

    return out, layout


def _saelens_cfg_dict(
    cfg: UpstreamConfig, convention: EncodeConvention, dtype: str, device: str, metadata: dict[str, Any]
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
        "apply_b_dec_to_input": convention.apply_b_dec_to_input,
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
    """Read ``weights_path`` + ``cfg.json`` (default: next to the weights) and return SAELens cfg/state dicts.

    ``cfg.json`` may be absent when the checkpoint embeds a ``config`` with ``d_in``, ``d_sae`` and ``k``.
    ``metadata`` (``repo_id``, ``release``, ...) is copied into the SAE's metadata; its ``repo_id``/``release`` and
    the file name select the author's encode convention (see :mod:`.convention`); ``apply_b_dec_to_input`` overrides.
    """
    weights_path = Path(weights_path)
    cfg_path = Path(cfg_path) if cfg_path is not None else weights_path.with_name("cfg.json")
    ckpt = read_checkpoint(weights_path)
    if cfg_path.is_file() or not ckpt.config:
        cfg_raw = _read_cfg_json(cfg_path)
        source = f"{cfg_path} + config embedded in {weights_path}" if ckpt.config else str(cfg_path)
    else:
        cfg_raw, source = {}, f"config embedded in {weights_path} (no cfg.json)"
        logger.info("%s: no cfg.json at %s; using the config embedded in the checkpoint", weights_path, cfg_path)
    cfg = UpstreamConfig.from_dict({**ckpt.config, **cfg_raw}, source=source)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    where = f"{weights_path}[{ckpt.where}]" if ckpt.where else str(weights_path)
    sd, layout = convert_state_dict(ckpt.tensors, cfg, dtype=torch_dtype, device=device, source=where)
    meta = dict(metadata or {})
    convention = decide_encode_convention(
        override=apply_b_dec_to_input,
        cfg_json_flag=b_dec_flag(cfg_raw),
        embedded_flag=b_dec_flag(ckpt.config),
        repo=meta.get("repo_id") or weights_path.stem,
        release=meta.get("release"),
        saelens_key_names=not layout["W_enc"].split(" ")[0].endswith(".weight"),
        source=str(weights_path),
    )
    meta.setdefault("source_layout", layout)
    if ckpt.where:
        meta.setdefault("source_weights_key", ckpt.where)
    meta.update(convention.metadata())
    cfg_dict = _saelens_cfg_dict(cfg, convention, str(dtype).replace("torch.", ""), device, meta)
    logger.info(
        "converted %s (%s) to a SAELens TopK SAE d_in=%d d_sae=%d k=%d, %s (%s)",
        where, layout, cfg.d_in, cfg.d_sae, cfg.k, convention.name, convention.source,
    )
    return ConvertedSAE(cfg_dict=cfg_dict, state_dict=sd, layout=layout, convention=convention)


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
