"""Find a checkpoint and read its ``config.json`` without loading (or downloading) any weights.

A source is an embedded name (:mod:`gemma4_saelens_ext.models.embedded`), a local model folder, or a Hub id ``org/name``.
:func:`checkpoint_shape` gives the layer count and hidden size from the config alone, so configuration mistakes (a
layer out of range, an SAE width that is not the model's) are reported before a model loads
(:func:`gemma4_saelens_ext.models.check_checkpoint`). Gemma 4 and multimodal Gemma 3 configs nest the language
model's settings under ``text_config``; text-only configs keep them at the top level.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.models.embedded import (
    EMBEDDED_MODELS,
    built_embedded_path,
    embedded_model_path,
    embedded_shape,
    is_embedded,
)
from gemma4_saelens_ext.paths import looks_like_hub_id

logger = logging.getLogger(__name__)

__all__ = ["CheckpointShape", "checkpoint_shape", "resolve_source", "read_config", "text_config", "is_multimodal",
           "check_causal_lm"]


def _kind(source: str | Path) -> tuple[str, str | Path]:
    """``("embedded", name)``, ``("folder", path)`` or ``("hub", repo_id)``; ValueError for anything else."""
    s = str(source)
    if is_embedded(s):
        return "embedded", s
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ValueError(f"{p} has no config.json: point at a Hugging Face model folder.")
        return "folder", p
    if p.exists() or not looks_like_hub_id(s):
        raise ValueError(
            f"Model source {s!r} is neither an embedded model, a model folder, nor a Hub id 'org/name'. "
            f"Embedded models: {', '.join(EMBEDDED_MODELS)}."
        )
    return "hub", s


def resolve_source(source: str | Path) -> Path:
    """Embedded name -> cache folder (built on first use); existing folder -> itself; else a Hub id (HF cache /
    download with ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE=1``)."""
    kind, where = _kind(source)
    if kind == "embedded":
        return embedded_model_path(str(where))
    if kind == "folder":
        return Path(where)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                str(where), allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]
            )
        )
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"Model {where!r} is not in the Hugging Face cache and the Hub is unreachable (or HF_HUB_OFFLINE=1). "
            f"Fetch it once with network: `hf download {where}` (or huggingface-cli download {where}), or pass a "
            "local folder."
        ) from e


def read_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (``text_config`` in multimodal Gemma 3/4 configs)."""
    return cfg.get("text_config", cfg)


def is_multimodal(cfg: dict[str, Any]) -> bool:
    return "text_config" in cfg


def check_causal_lm(cfg: dict[str, Any], path: Path) -> None:
    arch = cfg.get("architectures") or []
    if arch and not any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in arch):
        raise ValueError(
            f"{path} holds a {arch[0]}, not a causal language model. Pass a Gemma-family *ForCausalLM or "
            "*ForConditionalGeneration checkpoint."
        )


@dataclass(frozen=True)
class CheckpointShape:
    """What a checkpoint's config says about its residual stream."""

    n_layers: int
    d_model: int
    #: where the numbers come from (a config.json path, or the known shape of an embedded model)
    origin: str


def _shape_of(cfg: dict[str, Any], origin: str) -> CheckpointShape | None:
    tc = text_config(cfg)
    if "num_hidden_layers" not in tc or "hidden_size" not in tc:
        logger.debug("%s names no num_hidden_layers/hidden_size; the layer and width are checked after loading", origin)
        return None
    return CheckpointShape(int(tc["num_hidden_layers"]), int(tc["hidden_size"]), origin)


def checkpoint_shape(source: str | Path) -> CheckpointShape | None:
    """Layer count and hidden size of ``source`` from its config alone: no weights are loaded, built or downloaded.

    An embedded model not yet built gives its known shape; a Hub id reads ``config.json`` from the HF cache (or
    downloads that one file when the Hub is reachable). None when the config cannot be had that way (e.g. a Hub id
    not cached under ``HF_HUB_OFFLINE=1``): the checks then happen after the model loads. A source that names
    nothing loadable raises the same ValueError as :func:`resolve_source`.
    """
    kind, where = _kind(source)
    if kind == "embedded":
        built = built_embedded_path(str(where))
        if built is not None:
            cfg_path = built / "config.json"
            return _shape_of(read_config(built), str(cfg_path))
        n_layers, d_model = embedded_shape(str(where))
        logger.info("%s is not built yet; checking against its known shape (%d layers, hidden %d)",
                    where, n_layers, d_model)
        return CheckpointShape(n_layers, d_model, f"known shape of embedded {where}")
    if kind == "folder":
        cfg = read_config(Path(where))
        check_causal_lm(cfg, Path(where))
        return _shape_of(cfg, str(Path(where) / "config.json"))
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(str(where), "config.json"))
    except Exception as e:  # noqa: BLE001 - offline and not cached, no network, gated repo: checked after loading
        logger.debug("No config.json for %s without loading (%s: %s); the layer and width are checked after loading",
                     where, type(e).__name__, e)
        return None
    cfg = read_config(path.parent)
    check_causal_lm(cfg, path.parent)
    return _shape_of(cfg, f"{where} config.json")
