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

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gemma4_saelens_ext.models import parse_layer
from gemma4_saelens_ext.precision import PRECISIONS, get_precision
from gemma4_saelens_ext.releases.to_upstream import UPSTREAM_LAYOUTS, saelens_to_upstream
from gemma4_saelens_ext.releases.registry import (
    GEMMA4_E2B,
    MANIFEST_FILENAME,
    SAELENS_CFG,
    SAELENS_WEIGHTS,
    default_hf_hook_name,
    hook_names_for_layer,
)

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


def _jsonable(value: Any) -> Any:
    """Metadata -> JSON (BitsAndBytesConfig etc. become dicts, dtypes strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return str(value)


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
            return "nf4-bf16" if "bfloat16" in compute else "nf4"
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


def _inference_sae(sae: Any) -> Any:
    """An inference ``SAE`` for ``sae`` (a TrainingSAE is converted via SAELens's own inference export)."""
    import tempfile

    from sae_lens import SAE
    from sae_lens.saes.sae import TrainingSAE

    if not isinstance(sae, TrainingSAE):
        return sae
    with tempfile.TemporaryDirectory() as tmp:
        _save_saelens(sae, Path(tmp), {})
        return SAE.load_from_disk(tmp, device=str(sae.device))


def _save_saelens(sae: Any, folder: Path, metadata: dict[str, Any]) -> None:
    from safetensors.torch import save_file
    from sae_lens.saes.sae import TrainingSAE

    folder.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach() for k, v in sae.state_dict().items()}
    if isinstance(sae, TrainingSAE):
        state_dict = {k: v.clone() for k, v in state_dict.items()}
        sae.process_state_dict_for_saving_inference(state_dict)
        cfg = sae.cfg.get_inference_sae_cfg_dict()
    else:
        sae.process_state_dict_for_saving(state_dict)
        cfg = sae.cfg.to_dict()
    cfg["metadata"] = {**_jsonable(cfg.get("metadata") or {}), **_jsonable(metadata)}
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(folder / SAELENS_WEIGHTS))
    (folder / SAELENS_CFG).write_text(json.dumps(_jsonable(cfg), indent=2))


def _previous_entries(manifest_path: Path, release: str, sae_id: str, paths: Mapping[str, str]) -> list[dict[str, Any]]:
    """Entries of other SAEs already exported into the same release folder (several SAEs per release)."""
    if not manifest_path.is_file():
        return []
    old = json.loads(manifest_path.read_text())
    if old.get("release") != release:
        raise ValueError(f"{manifest_path.parent} already holds release {old.get('release')!r}, not {release!r}")
    entries = [e for e in old.get("saes", []) if e.get("sae_id") != sae_id]
    if "upstream" in paths and any("upstream" in e.get("paths", {}) for e in entries):
        raise ValueError(
            f"{manifest_path.parent} already holds an upstream-layout SAE (its cfg.json sits at the root); "
            "export this SAE's upstream copy to another folder"
        )
    return entries


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _yaml_front_matter(data: dict[str, Any]) -> str:
    from huggingface_hub import ModelCardData

    data = _drop_none(data)
    base = {k: data.pop(k) for k in ("license", "base_model", "library_name", "tags", "pipeline_tag") if k in data}
    card_data = ModelCardData(**{k: v for k, v in base.items() if v is not None}, **data)
    return f"---\n{card_data.to_yaml()}\n---\n"


def build_model_card(
    *,
    release: str,
    sae_id: str,
    cfg: Mapping[str, Any],
    metadata: Mapping[str, Any],
    metrics: Mapping[str, float],
    files: Sequence[str],
    repo_id: str | None = None,
    license: str | None = None,
    notes: str = "",
) -> str:
    """Hub model card: YAML front matter (base model, layer, precision, architecture, metrics) + usage text."""
    precision = metadata.get("precision")
    prec_desc = get_precision(precision).description.split(" (")[0] if precision in PRECISIONS else "unknown"
    arch = str(cfg.get("architecture", "topk"))
    k = cfg.get("k")
    front: dict[str, Any] = {
        "license": license,
        "base_model": metadata.get("model_name"),
        "library_name": "saelens",
        "tags": ["sae_lens", "sparse-autoencoder", arch, "gemma4", *([precision] if precision else [])],
        "sae": {
            "architecture": arch,
            "d_in": cfg.get("d_in"),
            "d_sae": cfg.get("d_sae"),
            **({"k": k} if k is not None else {}),
            "layer": metadata.get("layer"),
            "hook_name": metadata.get("hook_name"),
            "hf_hook_name": metadata.get("hf_hook_name"),
            "training_precision": precision,
            "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input"),
            "dtype": cfg.get("dtype"),
        },
    }
    if metrics:  # nested: a top-level `metrics` key means a list of metric ids to the Hub
        front["sae"]["metrics"] = dict(metrics)
    name = repo_id or release
    lines = [
        _yaml_front_matter(_jsonable(front)),
        f"# {release}",
        "",
        f"A {arch} sparse autoencoder"
        + (f" (k={k})" if k is not None else "")
        + f" with {cfg.get('d_in')} inputs and {cfg.get('d_sae')} latents, trained on the output of decoder "
        f"layer {metadata.get('layer')} of `{metadata.get('model_name')}`.",
        "",
        f"- Hook: `{metadata.get('hook_name')}`"
        + (f" (HF module `{metadata['hf_hook_name']}`)" if metadata.get("hf_hook_name") else ""),
        f"- Activations were recorded with the base model at precision `{precision}`: {prec_desc}. "
        "Results describe that checkpoint; check portability before using it on activations taken at another "
        "precision.",
        f"- Decoder bias subtracted from the input before encoding: {cfg.get('apply_b_dec_to_input')}",
        "",
    ]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {val:.6g} |" for key, val in metrics.items()] + [""]
    lines += [
        "## Loading",
        "",
        "```python",
        "from sae_lens import SAE",
        f'sae = SAE.from_pretrained("{name}", "{sae_id}")  # SAELens format, no plugin needed',
        "```",
        "",
        "With `gemma4_saelens_ext` installed, a local copy of this folder loads with",
        "`gemma4_saelens_ext.releases.register_local_release(path)` followed by",
        f'`SAE.from_pretrained("{release}", "{sae_id}")`.',
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "",
    ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


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
    layer: int | None = None,
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inf = _inference_sae(sae)
    src_meta = inf.cfg.metadata
    hook = hook_name or src_meta.get("hook_name")
    layer = layer if layer is not None else (src_meta.get("layer") if src_meta.get("layer") is not None else (parse_layer(hook) if hook else None))
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
        _previous_entries(out_dir / MANIFEST_FILENAME, release, sae_id, {"upstream": ""})
        sd, up_cfg = saelens_to_upstream(inf, upstream_layout)
        up_cfg.update(
            {k: metadata[k] for k in ("model_name", "hook_name", "hf_hook_name", "layer", "precision") if metadata[k] is not None}
        )
        if metric_values:
            up_cfg["metrics"] = metric_values
        name = upstream_filename or f"{release.split('/')[-1]}.pt"
        upstream_path = out_dir / name
        torch.save(sd, upstream_path)
        (out_dir / "cfg.json").write_text(json.dumps(_jsonable(up_cfg), indent=2))
        paths["upstream"] = name
        files += [name, "cfg.json"]

    cfg_dict = inf.cfg.to_dict()
    manifest_path = out_dir / MANIFEST_FILENAME
    previous = _previous_entries(manifest_path, release, sae_id, paths)
    manifest = {
        "release": release,
        "model": metadata["model_name"],
        "repo_id": repo_id,
        "saes": previous
        + [
            {
                "sae_id": sae_id,
                "paths": paths,
                **{k: metadata[k] for k in ("layer", "precision", "model_name", "hook_name", "hf_hook_name")},
                "architecture": cfg_dict.get("architecture"),
                "d_in": cfg_dict.get("d_in"),
                "d_sae": cfg_dict.get("d_sae"),
                "k": cfg_dict.get("k"),
                "variance_explained": metric_values.get("explained_variance"),
                "l0": metric_values.get("l0"),
                "metrics": metric_values,
            }
        ],
    }
    manifest_path.write_text(json.dumps(_jsonable(manifest), indent=2))
    files.append(MANIFEST_FILENAME)

    card_path = None
    if model_card:
        card_path = out_dir / "README.md"
        card_path.write_text(
            build_model_card(
                release=release,
                sae_id=sae_id,
                cfg=cfg_dict,
                metadata=metadata,
                metrics=metric_values,
                files=files,
                repo_id=repo_id,
                license=license,
                notes=notes,
            )
        )
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
