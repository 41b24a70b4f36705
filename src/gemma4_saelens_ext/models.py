"""Load a Gemma-family causal LM at a named precision, and find its decoder layers.

Sources: an embedded name (see :mod:`gemma4_saelens_ext.embedded`), a local folder, or a Hub id (downloaded with
``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE=1`` and the HF cache).

Two derived checkpoints are built on demand (cached, atomic):

* **text-only**: a ``Gemma4ForConditionalGeneration`` checkpoint rewritten as ``Gemma4ForCausalLM`` (vision/audio
  towers dropped), so residual-stream work never loads the encoders.
* **truncated**: only layers ``0..L`` are kept (plus, for Gemma 4, the matching slice of the packed per-layer
  embedding table, which is large and never quantized by bitsandbytes). The unembedding is tied to the input
  embedding in Gemma, so nothing is kept for it, and the forward pass is stopped at layer L anyway.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gemma4_saelens_ext.embedded import build_cached, cache_dir, embedded_model_path, is_embedded
from gemma4_saelens_ext.placement import default_lookups_on_cpu, lookup_device_map, meta_model, run_lookups_on_cpu
from gemma4_saelens_ext.precision import from_pretrained_kwargs, get_precision
from gemma4_saelens_ext.quantized_cache import quantized_path, save_quantized

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_model", "prepare_checkpoint", "resolve_source", "find_decoder_layers", "parse_layer"]

#: Candidate attribute paths of the decoder-layer list, most specific first.
_LAYER_PATHS = ("model.language_model.layers", "model.layers", "language_model.layers", "layers")
_TL_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")
_MULTIMODAL_DROP_PREFIXES = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.")


def _get_attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(path, layers)`` for Gemma 3/4 causal LMs and the multimodal ``model.language_model`` layout."""
    for path in _LAYER_PATHS:
        try:
            layers = _get_attr_path(model, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise ValueError(
        f"Could not find decoder layers in {type(model).__name__} (looked for {', '.join(_LAYER_PATHS)}). "
        "Pass a Gemma-family causal LM checkpoint."
    )


def parse_layer(hook: int | str, n_layers: int, layers_path: str = "model.layers") -> int:
    """Accept ``12``, ``"blocks.12.hook_resid_post"`` or the HF module path ``"model.layers.12"``."""
    if isinstance(hook, bool):
        raise TypeError("layer must be an int or a hook name")
    if isinstance(hook, int):
        layer = hook
    else:
        s = str(hook).strip()
        m = _TL_RESID.match(s)
        if m:
            layer = int(m.group(1))
        elif s.isdigit():
            layer = int(s)
        else:
            m = re.match(rf"^{re.escape(layers_path)}\.(\d+)$", s)
            if not m:
                raise ValueError(
                    f"Hook name {hook!r} matches no residual-stream module. Use 'blocks.L.hook_resid_post' "
                    f"or '{layers_path}.L' with 0 <= L < {n_layers}."
                )
            layer = int(m.group(1))
    if not 0 <= layer < n_layers:
        raise ValueError(f"Layer {layer} is out of range: this model has {n_layers} layers (0..{n_layers - 1}).")
    return layer


@dataclass
class LoadedModel:
    """A loaded causal LM plus what the activation code needs to know about it."""

    model: nn.Module
    tokenizer: Any
    source: str
    precision: str
    layers_path: str
    layers: nn.ModuleList = field(repr=False)
    #: layer count of the original checkpoint (a truncated load keeps fewer modules)
    n_layers: int
    d_model: int
    truncated_after: int | None = None

    @property
    def device(self) -> torch.device:
        """Device of the decoder layers (inputs go there; the lookup tables may stay on the CPU)."""
        return next(self.layers.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the residual stream (the embedding's dtype)."""
        return self.model.get_input_embeddings().weight.dtype

    def resolve_layer(self, hook: int | str) -> int:
        layer = parse_layer(hook, self.n_layers, self.layers_path)
        if self.truncated_after is not None and layer > self.truncated_after:
            raise ValueError(
                f"Layer {layer} was dropped: this model was loaded truncated after layer {self.truncated_after}. "
                f"Load it with truncate_after_layer >= {layer} (or None)."
            )
        return layer

    def hook_name(self, layer: int | str) -> str:
        """HF module path of the layer's output (its residual stream after the block)."""
        return f"{self.layers_path}.{self.resolve_layer(layer)}"


# ------------------------------------------------------------------------------------------------ source resolution
def resolve_source(source: str | Path) -> Path:
    """Embedded name -> cache folder; existing folder -> itself; else a Hub id (HF cache / download)."""
    s = str(source)
    if is_embedded(s):
        return embedded_model_path(s)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ValueError(f"{p} has no config.json: point at a Hugging Face model folder.")
        return p
    if p.exists() or s.startswith((".", "/")) or s.count("/") != 1:
        raise ValueError(
            f"Model source {s!r} is neither an embedded model, a model folder, nor a Hub id 'org/name'. "
            f"Embedded models: gemma-3-270m, gemma-4-tiny, gemma-4-e2b-mini, gemma-4-tiny-multimodal."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                s, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]
            )
        )
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"Model {s!r} is not in the Hugging Face cache and the Hub is unreachable (or HF_HUB_OFFLINE=1). "
            f"Fetch it once with network: `hf download {s}` (or huggingface-cli download {s}), or pass a local folder."
        ) from e


def _read_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("text_config", cfg)


def _is_multimodal(cfg: dict[str, Any]) -> bool:
    return "text_config" in cfg


def _check_causal_lm(cfg: dict[str, Any], path: Path) -> None:
    arch = cfg.get("architectures") or []
    if arch and not any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in arch):
        raise ValueError(
            f"{path} holds a {arch[0]}, not a causal language model. Pass a Gemma-family *ForCausalLM or "
            "*ForConditionalGeneration checkpoint."
        )


# -------------------------------------------------------------------------------------------- derived checkpoints
def _kept_layer_count(text_cfg: dict[str, Any], layer: int) -> int:
    """Layers to keep so that layer ``layer`` is computed exactly as in the full model.

    Gemma 4's config forces its last layer to full attention; if layer L is a sliding layer, keep layers up to the
    next full-attention layer so L keeps its own attention type (the extra layers are never run: we stop at L).
    """
    n = layer + 1
    types = text_cfg.get("layer_types")
    if text_cfg.get("model_type", "").startswith("gemma4") and types:
        while n < len(types) and types[n - 1] != "full_attention":
            n += 1
    return n


def _derived_config(cfg: dict[str, Any], keep_layers: int | None, text_only: bool) -> dict[str, Any]:
    """config.json of the derived checkpoint: layers cut to ``keep_layers``; text-only -> a ``Gemma4ForCausalLM``."""
    multimodal = _is_multimodal(cfg)
    text_cfg = dict(_text_config(cfg))
    n_full = text_cfg["num_hidden_layers"]
    if keep_layers is not None:
        text_cfg["num_hidden_layers"] = keep_layers
        if text_cfg.get("layer_types"):
            text_cfg["layer_types"] = text_cfg["layer_types"][:keep_layers]
        if isinstance(text_cfg.get("per_layer_config"), dict):
            text_cfg["per_layer_config"] = {
                k: v for k, v in text_cfg["per_layer_config"].items() if int(k) < keep_layers
            }
        if text_cfg.get("num_kv_shared_layers"):
            first_shared = n_full - text_cfg["num_kv_shared_layers"]
            text_cfg["num_kv_shared_layers"] = max(0, keep_layers - first_shared)
    if text_only and multimodal:
        new_cfg = dict(text_cfg, architectures=["Gemma4ForCausalLM"])
    elif multimodal:
        new_cfg = dict(cfg, text_config=text_cfg)
    else:
        new_cfg = text_cfg
    new_cfg["_derived_from"] = {"kept_layers": keep_layers, "original_layers": n_full}
    return new_cfg


def _rewrite_key(
    cfg: dict[str, Any], key: str, keep_layers: int | None, text_only: bool
) -> tuple[str, int | None, int | None] | None:
    """``(new_key, rows, cols)`` of checkpoint tensor ``key`` in the derived checkpoint, where ``rows``/``cols`` cut
    the tensor to its first rows/columns (None: all); None when the tensor is dropped."""
    multimodal = _is_multimodal(cfg)
    ple = _text_config(cfg).get("hidden_size_per_layer_input") or 0
    pfx = "model.language_model." if multimodal else "model."
    if text_only and multimodal:
        if key.startswith(_MULTIMODAL_DROP_PREFIXES):
            return None
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        pfx = "model."
    inner = key[len(pfx) :] if key.startswith(pfx) else None
    rows = cols = None
    if keep_layers is not None:
        m = re.match(r"layers\.(\d+)\.", inner or "")
        if m and int(m.group(1)) >= keep_layers:
            return None
        if key == "lm_head.weight" and cfg.get("tie_word_embeddings", True):
            return None
        if ple and inner == "embed_tokens_per_layer.weight":
            cols = keep_layers * ple
        elif ple and inner == "per_layer_model_projection.weight":
            rows = keep_layers * ple
    return key, rows, cols


def _derive_checkpoint(src: Path, out: Path, keep_layers: int | None, text_only: bool) -> None:
    """Write the derived checkpoint tensor by tensor, reading only the kept rows/columns (safetensors slices), so
    deriving from a multi-GB checkpoint needs little RAM."""
    from safetensors import safe_open

    from gemma4_saelens_ext.embedded import SAFETENSORS_DTYPES, write_safetensors_streaming

    cfg = _read_config(src)
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{src} has no *.safetensors weights; only safetensors checkpoints are supported.")
    index: dict[str, str] = {}
    for f in files:
        with safe_open(f, framework="pt") as fh:
            plan: dict[str, tuple[str, int | None, int | None]] = {}
            shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
            for key in fh.keys():
                new = _rewrite_key(cfg, key, keep_layers, text_only)
                if new is None:
                    continue
                sl = fh.get_slice(key)
                shape = list(sl.get_shape())
                if new[1] is not None:
                    shape[0] = new[1]
                if new[2] is not None:
                    shape[1] = new[2]
                plan[new[0]] = (key, new[1], new[2])
                shapes[new[0]] = (tuple(shape), SAFETENSORS_DTYPES[sl.get_dtype()])

            def fill(name: str, view: torch.Tensor, row0: int) -> None:
                key, _rows, cols = plan[name]
                sl = fh.get_slice(key)
                if view.dim() == 0:
                    view.copy_(fh.get_tensor(key))
                elif cols is None:
                    view.copy_(sl[row0 : row0 + view.shape[0]])
                else:
                    view.copy_(sl[row0 : row0 + view.shape[0], :cols])

            if shapes:
                write_safetensors_streaming(out / f.name, shapes, fill)
                index.update({k: f.name for k in shapes})
    if len(files) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    new_cfg = _derived_config(cfg, keep_layers, text_only)
    new_cfg["_derived_from"]["source"] = str(src)
    (out / "config.json").write_text(json.dumps(new_cfg, indent=2))
    for f in src.iterdir():
        if f.is_file() and (f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "generation_config.json", "chat_template.jinja")):
            (out / f.name).write_bytes(f.read_bytes())


def _derived_path(src: Path, keep_layers: int | None, text_only: bool) -> Path:
    import hashlib

    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    tag = f"{src.name}-{key}-{'text' if text_only else 'full'}-L{keep_layers if keep_layers is not None else 'all'}"
    return cache_dir() / "derived" / tag


def _plan(cfg: dict[str, Any], truncate_after_layer: int | str | None, text_only: bool) -> tuple[int | None, int | None]:
    """(hooked layer, layers to keep; None = all) for a load."""
    if truncate_after_layer is None:
        return None, None
    text_cfg = _text_config(cfg)
    n_layers = int(text_cfg["num_hidden_layers"])
    layers_path = "model.language_model.layers" if _is_multimodal(cfg) and not text_only else "model.layers"
    layer = parse_layer(truncate_after_layer, n_layers, layers_path)
    keep = _kept_layer_count(text_cfg, layer)
    return layer, (keep if keep < n_layers else None)


def _checkpoint_to_load(path: Path, cfg: dict[str, Any], keep: int | None, text_only: bool) -> Path:
    if keep is None and not (_is_multimodal(cfg) and text_only):
        return path
    return build_cached(_derived_path(path, keep, text_only), lambda out: _derive_checkpoint(path, out, keep, text_only))


def prepare_checkpoint(source: str | Path, truncate_after_layer: int | str | None = None, text_only: bool = True) -> Path:
    """Build (once, cached) the derived checkpoint :func:`load_model` would load, without loading it: e.g. ahead of
    a timed or memory-measured run. Returns the folder."""
    path = resolve_source(source)
    cfg = _read_config(path)
    _check_causal_lm(cfg, path)
    return _checkpoint_to_load(path, cfg, _plan(cfg, truncate_after_layer, text_only)[1], text_only)


# ---------------------------------------------------------------------------------------------------------- loading
def load_model(
    source: str | Path = "gemma-3-270m",
    precision: str = "nf4",
    *,
    truncate_after_layer: int | str | None = None,
    text_only: bool = True,
    device: str | torch.device = "cpu",
    lookups_on_cpu: bool | None = None,
) -> LoadedModel:
    """Load a Gemma-family causal LM at a named precision.

    ``truncate_after_layer=L`` keeps only what layer L's residual stream needs (see module docstring).
    ``text_only`` loads a multimodal Gemma 4 checkpoint as ``Gemma4ForCausalLM``.
    ``lookups_on_cpu`` keeps the embedding tables (and the tied unembedding) on the CPU, memory-mapped, and moves
    only looked-up rows to ``device`` (:mod:`gemma4_saelens_ext.placement`); default: on when a layer is hooked
    (``truncate_after_layer``) and ``device`` is an accelerator.
    Errors (unknown precision, bad layer, non-causal-LM checkpoint, missing files) are raised before any weights load.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    prec = get_precision(precision)
    kwargs = from_pretrained_kwargs(prec)
    path = resolve_source(source)
    cfg = _read_config(path)
    _check_causal_lm(cfg, path)
    text_cfg = _text_config(cfg)
    n_layers = int(text_cfg["num_hidden_layers"])
    d_model = int(text_cfg["hidden_size"])
    multimodal = _is_multimodal(cfg)

    layer, keep = _plan(cfg, truncate_after_layer, text_only)
    load_path = _checkpoint_to_load(path, cfg, keep, text_only)

    load_multimodal = multimodal and not text_only
    auto = AutoModelForImageTextToText if load_multimodal else AutoModelForCausalLM
    if lookups_on_cpu is None:
        lookups_on_cpu = default_lookups_on_cpu(device, layer)
    device_map: dict[str, str] | None = None
    if lookups_on_cpu:
        from transformers import AutoConfig

        device_map = lookup_device_map(meta_model(AutoConfig.from_pretrained(str(load_path)), load_multimodal), device)
        if "quantization_config" in kwargs and torch.device(device).type != "cpu":
            # bitsandbytes refuses a device_map with "cpu" entries unless told they stay unquantized (the tables are
            # never quantized anyway)
            kwargs["quantization_config"].llm_int8_enable_fp32_cpu_offload = True
    elif prec.quantized:
        device_map = {"": str(device)}
    # truncated nf4 on the CPU: the quantized layers are cached after the first load (see quantized_cache)
    on_cpu = torch.device(device).type == "cpu"
    qcache = quantized_path(load_path, prec.name) if keep is not None and prec.quant == "nf4" and on_cpu else None
    dm = {"device_map": device_map} if device_map else {}
    if qcache is not None and (qcache / ".complete").exists():
        logger.info("Loading %s at %s from its quantized cache %s", source, prec.name, qcache)
        model = auto.from_pretrained(str(qcache), dtype=kwargs["dtype"], **dm)
    else:
        logger.info("Loading %s at %s from %s", source, prec.name, load_path)
        model = auto.from_pretrained(str(load_path), **kwargs, **dm)
        if device_map is None:
            model.to(device)
        if keep is not None and prec.quant == "nf4":
            from gemma4_saelens_ext.requantize import match_full_quantization

            match_full_quantization(model, path)  # the full load's double-quant statistics: bit-identical activations
        if qcache is not None:
            build_cached(qcache, lambda out: save_quantized(model, out, load_path))
    if lookups_on_cpu:
        run_lookups_on_cpu(model, device_map)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(load_path))
    layers_path, layers = find_decoder_layers(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=str(source),
        precision=prec.name,
        layers_path=layers_path,
        layers=layers,
        n_layers=n_layers,
        d_model=d_model,
        truncated_after=layer if keep is not None else None,
    )
