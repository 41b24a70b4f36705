"""Save a trained SAE as a release folder (SAELens format, optionally the upstream ``.pt`` layout, model card).

Folder layout written by :func:`export_sae`::

    <out_dir>/
      README.md                      Hub model card (YAML front matter + description)
      release.json                   manifest read by register_local_release()
      <sae_id>/cfg.json              SAELens format: loadable by stock SAELens from the Hub with
      <sae_id>/sae_weights.safetensors   SAE.from_pretrained("<hub repo>", "<sae_id>"), no plugin needed
      <name>.pt + cfg.json           upstream layout (formats=("saelens", "upstream")), like the published repo

``push_to_hub=True`` uploads the folder with ``huggingface_hub`` (needs a token and network).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gemma4_saelens_ext.io import atomic_path, atomic_write, atomic_write_json, to_jsonable
from gemma4_saelens_ext.models.layers import parse_layer
from gemma4_saelens_ext.models.precision import PRECISIONS, get_precision
from gemma4_saelens_ext.releases.card import build_model_card
from gemma4_saelens_ext.releases.manifest import MANIFEST_FILENAME, previous_entries, write_manifest
from gemma4_saelens_ext.releases.spec import (
    GEMMA4_E2B, SAELENS_CFG, SAELENS_WEIGHTS, UPSTREAM_LAYOUTS, default_hf_hook_name, hook_names_for_layer,
)
from gemma4_saelens_ext.releases.to_upstream import saelens_to_upstream

logger = logging.getLogger(__name__)

__all__ = ["ExportResult", "export_sae", "build_model_card", "infer_precision", "load_metrics"]

FORMATS = ("saelens", "upstream")


@dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export_sae`."""

    out_dir: Path
    release: str
    sae_id: str
    saelens_dir: Path | None
    upstream_weights: Path | None
    model_card: Path | None
    manifest: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    hub_url: str | None = None


def infer_precision(metadata: Mapping[str, Any]) -> str | None:
    """Precision preset name from SAE metadata (``precision`` key, or the runner's model_from_pretrained_kwargs)."""
    if metadata.get("precision") in PRECISIONS:
        return str(metadata["precision"])
    kwargs = metadata.get("model_from_pretrained_kwargs") or {}
    q = kwargs.get("quantization_config")
    if q is not None:
        q = q.to_dict() if hasattr(q, "to_dict") else dict(q)
        if q.get("load_in_4bit") and q.get("bnb_4bit_quant_type", "nf4") == "nf4":
            compute = str(q.get("bnb_4bit_compute_dtype", "float16"))
            return "nf4-bf16" if "bfloat16" in compute else "nf4-fp32compute" if "float32" in compute else "nf4"
        if q.get("load_in_8bit"):
            return "int8"
    dtype = str(kwargs.get("dtype", kwargs.get("torch_dtype", "")))
    for name, key in (("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32")):
        if key in dtype:
            return name
    return None


def load_metrics(metrics: Mapping[str, Any] | str | Path | None) -> dict[str, float]:
    """Numeric metrics from a dict or a JSON file (top level, or under ``metrics``); other values dropped."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        metrics = json.loads(Path(metrics).read_text())
    if isinstance(metrics.get("metrics"), Mapping):
        metrics = metrics["metrics"]
    out: dict[str, float] = {}
    for key, val in metrics.items():
        if isinstance(val, bool):
            continue
        if isinstance(val, (int, float)) and math.isfinite(float(val)):
            out[str(key)] = float(val) if isinstance(val, float) else int(val)
    return out


@contextlib.contextmanager
def _json_metadata(sae: Any, extra: Mapping[str, Any]) -> Iterator[None]:
    """Give ``sae.cfg.metadata`` JSON-safe values (+ ``extra``) while SAELens writes its ``cfg.json``; then restore."""
    from sae_lens.saes.sae import SAEMetadata

    old = sae.cfg.metadata
    sae.cfg.metadata = SAEMetadata(**to_jsonable({**old.to_dict(), **extra}))
    try:
        yield
    finally:
        sae.cfg.metadata = old


def _inference_sae(sae: Any) -> Any:
    """An inference ``SAE`` for ``sae``: a ``TrainingSAE`` goes through SAELens's ``save_inference_model``."""
    import tempfile

    from sae_lens import SAE
    from sae_lens.saes.sae import TrainingSAE

    if not isinstance(sae, TrainingSAE):
        return sae
    with tempfile.TemporaryDirectory() as tmp, _json_metadata(sae, {}):
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp, device=str(sae.device))


def _save_saelens(sae: Any, folder: Path, metadata: Mapping[str, Any]) -> None:
    """SAELens's own ``save_model`` (``cfg.json`` + ``sae_weights.safetensors``), ``metadata`` merged into the cfg's."""
    with _json_metadata(sae, metadata):
        sae.save_model(folder)


def export_sae(
    sae: Any,
    out_dir: str | Path,
    *,
    release: str,
    sae_id: str | None = None,
    formats: Sequence[str] = ("saelens",),
    upstream_layout: str = "linear",
    upstream_filename: str | None = None,
    model_name: str | None = None,
    layer: int | str | None = None,
    hook_name: str | None = None,
    hf_hook_name: str | None = None,
    precision: str | None = None,
    metrics: Mapping[str, Any] | str | Path | None = None,
    model_card: bool = True,
    license: str | None = None,
    notes: str = "",
    push_to_hub: bool = False,
    repo_id: str | None = None,
    private: bool = True,
) -> ExportResult:
    """Write ``sae`` (an inference ``SAE`` or a ``TrainingSAE`` from the runner) as a release folder.

    Metadata missing from the arguments is taken from ``sae.cfg.metadata`` (model name, hook name, layer,
    precision inferred from ``model_from_pretrained_kwargs``). ``push_to_hub`` uploads the folder to
    ``repo_id`` (never used in tests).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if upstream_layout not in UPSTREAM_LAYOUTS:
        raise ValueError(f"upstream_layout must be one of {UPSTREAM_LAYOUTS}")
    if push_to_hub and not repo_id:
        raise ValueError("push_to_hub=True needs repo_id")
    from gemma4_saelens_ext.io import check_out

    out_dir = check_out(out_dir, what="out_dir")  # an existing file there is refused before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    inf = _inference_sae(sae)
    src_meta = inf.cfg.metadata
    hook = hook_name or src_meta.get("hook_name")
    for candidate in (layer, src_meta.get("layer"), hook):  # given, recorded, or read from the hook name
        if candidate is not None:
            layer = parse_layer(candidate)
            break
    if layer is None:
        raise ValueError("cannot tell the layer: pass layer=... (or a hook_name like blocks.25.hook_resid_post)")
    canon_hook = hook_names_for_layer(int(layer))[0]
    precision = precision or infer_precision(src_meta)
    if precision is None:
        raise ValueError(f"cannot tell the training precision: pass precision=... (one of {PRECISIONS})")
    get_precision(precision)
    model_name = model_name or src_meta.get("model_name") or GEMMA4_E2B
    metadata: dict[str, Any] = {
        "model_name": model_name,
        "hook_name": hook_name or canon_hook,
        "hf_hook_name": hf_hook_name or src_meta.get("hf_hook_name") or default_hf_hook_name(model_name, int(layer)),
        "layer": int(layer),
        "precision": precision,
        "release": release,
    }
    if src_meta.get("hook_name") and src_meta.get("hook_name") != metadata["hook_name"]:
        metadata["training_hook_name"] = src_meta.get("hook_name")
    sae_id = sae_id or metadata["hook_name"]
    metric_values = load_metrics(metrics)

    files: list[str] = []
    saelens_dir = upstream_path = None
    paths: dict[str, str] = {}
    if "saelens" in formats:
        saelens_dir = out_dir / sae_id
        _save_saelens(inf, saelens_dir, metadata)
        paths["saelens"] = sae_id
        files += [f"{sae_id}/{SAELENS_CFG}", f"{sae_id}/{SAELENS_WEIGHTS}"]
    if "upstream" in formats:
        previous_entries(out_dir, release, sae_id, {"upstream"})  # refuse before writing anything
        sd, up_cfg = saelens_to_upstream(inf, upstream_layout)
        up_cfg.update(
            {k: metadata[k] for k in ("model_name", "hook_name", "hf_hook_name", "layer", "precision") if metadata[k] is not None}
        )
        if metric_values:
            up_cfg["metrics"] = metric_values
        name = upstream_filename or f"{release.split('/')[-1]}.pt"
        upstream_path = out_dir / name
        with atomic_path(upstream_path) as tmp:
            torch.save(sd, tmp)  # plain tensors only: loads with torch.load(weights_only=True)
        atomic_write_json(out_dir / SAELENS_CFG, to_jsonable(up_cfg))
        paths["upstream"] = name
        files += [name, "cfg.json"]

    cfg_dict = inf.cfg.to_dict()
    manifest_path = write_manifest(
        out_dir, release=release, repo_id=repo_id, sae_id=sae_id, paths=paths, metadata=metadata, cfg=cfg_dict,
        metrics=metric_values,
    )
    files.append(MANIFEST_FILENAME)

    card_path = None
    if model_card:
        card_path = out_dir / "README.md"
        card = build_model_card(
            release=release, sae_id=sae_id, cfg=cfg_dict, metadata=metadata, metrics=metric_values, files=files,
            repo_id=repo_id, license=license, notes=notes,
        )
        atomic_write(card_path, str(card))
    hub_url = None
    if push_to_hub:  # pragma: no cover - needs network and a token
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="model")
        hub_url = str(getattr(info, "commit_url", info))
        logger.info("pushed %s to %s", out_dir, hub_url)
    logger.info("exported %s/%s to %s (%s)", release, sae_id, out_dir, ", ".join(formats))
    return ExportResult(
        out_dir=out_dir,
        release=release,
        sae_id=sae_id,
        saelens_dir=saelens_dir,
        upstream_weights=upstream_path,
        model_card=card_path,
        manifest=manifest_path,
        metadata=metadata,
        hub_url=hub_url,
    )
