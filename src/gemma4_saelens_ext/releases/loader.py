"""The SAELens loader (``conversion_func: gemma4_behavior``) behind every release this plugin registers.

SAELens calls ``loader(repo_id=..., folder_name=..., device=..., force_download=..., cfg_overrides=...)``; the files
come from a local release folder, the Hugging Face cache (``HF_HUB_CACHE``/``HF_HOME``, read at call time), or the
Hub when online. Upstream checkpoints go through :func:`.convert.convert_upstream_checkpoint`; SAELens-format
folders through SAELens's own reader. Either way the SAE's metadata names its encode convention
(:mod:`.convention`). Per call, the convention can be forced with::

    SAE.from_pretrained(release, sae_id, converter=functools.partial(gemma4_behavior_loader, apply_b_dec_to_input=True))
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gemma4_saelens_ext.releases.convert import MissingConfigError, convert_upstream_checkpoint
from gemma4_saelens_ext.releases.spec import GEMMA4_E2B, REGISTERED, SAESpec, default_hf_hook_name

__all__ = ["ReleaseFilesNotFoundError", "gemma4_behavior_loader", "gemma4_behavior_config_getter"]


class ReleaseFilesNotFoundError(FileNotFoundError):
    """The files of a release are neither in the local folder/HF cache nor downloadable."""


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir() -> str:
    """HF hub cache, re-reading ``HF_HUB_CACHE``/``HF_HOME`` at call time (huggingface_hub reads them at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def _fetch_command(repo_id: str, files: tuple[str, ...]) -> str:
    return f"huggingface-cli download {repo_id} {' '.join(files)}"


def _resolve_file(repo_id: str, filename: str, files: tuple[str, ...], force_download: bool) -> Path:
    """Local path of ``filename``: from a local release folder, the HF cache, or (online) the Hub."""
    if os.path.isabs(repo_id):
        path = Path(repo_id) / filename
        if not path.is_file():
            raise ReleaseFilesNotFoundError(
                f"{filename} not found in local release folder {repo_id} (expected {path}); needed files: {list(files)}"
            )
        return path
    from huggingface_hub import hf_hub_download

    cache_dir = _hub_cache_dir()
    offline = _offline()  # read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import
    how = (
        f"Fetch it on a machine with network access:\n    {_fetch_command(repo_id, files)}\n"
        f"(or `hf download {repo_id} {' '.join(files)}`; set HF_HUB_CACHE to the cache used here), or download the "
        "files into a folder and register it as a local release: register_release(ReleaseSpec(..., local_dir=FOLDER))."
    )
    try:  # the cache first; the network only when online (and on a network error, the cached copy)
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache_dir,
                                    force_download=force_download and not offline, local_files_only=offline))
    except Exception as e:  # not cached offline, network errors, missing repo/file
        where = (f"is not in the local Hugging Face cache ({cache_dir}) and offline mode is on (HF_HUB_OFFLINE=1)"
                 if offline else f"could not be downloaded ({type(e).__name__}: {e})")
        raise ReleaseFilesNotFoundError(f"{filename} of Hub repo {repo_id} {where}. {how}") from e


def _find_spec(repo_id: str, folder_name: str) -> tuple[Any, Any]:
    for rel in REGISTERED.values():
        if rel.location == repo_id:
            for s in rel.saes:
                if s.path == folder_name:
                    return rel, s
    return None, None


def _metadata(rel: Any, spec: Any, repo_id: str, path: str) -> dict[str, Any]:
    if spec is None:
        return {"repo_id": repo_id, "source_path": path}
    model_name = spec.model_name or (rel.model if rel else GEMMA4_E2B)
    meta: dict[str, Any] = {
        "model_name": model_name,
        "hook_name": spec.hook_name,
        "hf_hook_name": spec.hf_hook_name or default_hf_hook_name(model_name, spec.layer),
        "hook_head_index": None,
        "prepend_bos": True,
        "layer": spec.layer,
        "precision": spec.precision,
        "release": rel.release if rel else None,
        "repo_id": repo_id,
        "source_path": path,
        "source_format": spec.format,
    }
    meta.update(spec.extra_metadata)
    return meta


def _load_upstream(repo_id, spec, meta, override, device, dtype, force_download):
    files = spec.files
    weights = _resolve_file(repo_id, files[0], files, force_download)
    try:
        cfg_file, missing = _resolve_file(repo_id, files[1], files, force_download), None
    except ReleaseFilesNotFoundError as e:  # fine when the checkpoint embeds its config
        cfg_file, missing = weights.with_name(Path(files[1]).name), e
    try:
        conv = convert_upstream_checkpoint(
            weights, cfg_file, metadata=meta, apply_b_dec_to_input=override, device=device, dtype=dtype
        )
    except MissingConfigError:
        if missing is not None:
            raise missing from None
        raise
    return conv.cfg_dict, conv.state_dict, None


def _load_saelens_format(repo_id, spec, meta, override, device, dtype, force_download):
    from safetensors import safe_open
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting, read_sae_components_from_disk

    from gemma4_saelens_ext.releases.convention import EncodeConvention
    from sae_lens.constants import SPARSITY_FILENAME as SAELENS_SPARSITY

    files = spec.files
    cfg_file = _resolve_file(repo_id, files[0], files, force_download)
    weights = _resolve_file(repo_id, files[1], files, force_download)
    cfg_dict = handle_config_defaulting(json.loads(cfg_file.read_text()))
    cfg_dict["device"] = device
    cfg_dict["dtype"] = dtype
    cfg_dict, state_dict = read_sae_components_from_disk(cfg_dict, weights, device=device)
    if override is not None:
        convention = EncodeConvention(bool(override), "override")
    else:
        convention = EncodeConvention(bool(cfg_dict.get("apply_b_dec_to_input", True)), "cfg.json")
    cfg_dict["apply_b_dec_to_input"] = convention.apply_b_dec_to_input
    merged = dict(cfg_dict.get("metadata") or {})
    for key, val in meta.items():
        if merged.get(key) is None:
            merged[key] = val
    cfg_dict["metadata"] = {**merged, **convention.metadata()}
    log_sparsity = None
    sparsity = weights.with_name(SAELENS_SPARSITY)
    if sparsity.is_file():
        with safe_open(str(sparsity), framework="pt", device=device) as f:  # type: ignore[no-untyped-call]
            log_sparsity = f.get_tensor("sparsity")
    return cfg_dict, state_dict, log_sparsity


def gemma4_behavior_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    *,
    apply_b_dec_to_input: bool | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """SAELens loader (``conversion_func: gemma4_behavior``) for upstream and SAELens-format SAEs.

    The encode convention is forced by, first to last: ``apply_b_dec_to_input`` (bind it with
    ``functools.partial`` and pass the result as ``SAE.from_pretrained(..., converter=...)``), an
    ``apply_b_dec_to_input`` entry of ``cfg_overrides``, the release's ``SAESpec.apply_b_dec_to_input``.
    """
    rel, spec = _find_spec(repo_id, folder_name)
    if spec is None:
        spec = SAESpec(sae_id=folder_name, path=folder_name, layer=-1)
        meta = _metadata(None, None, repo_id, folder_name)
    else:
        meta = _metadata(rel, spec, repo_id, folder_name)
    overrides = dict(cfg_overrides or {})
    override = apply_b_dec_to_input
    if override is None:
        override = overrides.pop("apply_b_dec_to_input", None)
    if override is None:
        override = spec.apply_b_dec_to_input
    overrides.pop("apply_b_dec_to_input", None)
    dtype = str(overrides.get("dtype", "float32")).replace("torch.", "")
    load = _load_upstream if spec.format == "upstream" else _load_saelens_format
    cfg_dict, state_dict, log_sparsity = load(repo_id, spec, meta, override, device, dtype, force_download)
    for key, val in overrides.items():
        if key == "metadata" and isinstance(val, dict):
            cfg_dict["metadata"] = {**cfg_dict.get("metadata", {}), **val}
        elif key != "neuronpedia_id" or val is not None:
            cfg_dict[key] = val
    return cfg_dict, state_dict, log_sparsity


def gemma4_behavior_config_getter(
    repo_id: str,
    folder_name: str,
    device: str | None = None,
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Config-only counterpart for ``NAMED_PRETRAINED_SAE_CONFIG_GETTERS`` (reads the weights to infer layout)."""
    cfg, _, _ = gemma4_behavior_loader(repo_id, folder_name, device or "cpu", force_download, cfg_overrides)
    return cfg
