"""Gemma 4 behavior-SAE releases, registered through SAELens's own lookup.

SAELens resolves ``SAE.from_pretrained(release, sae_id)`` through two tables:

* ``get_pretrained_saes_directory()`` (a cached ``dict[str, PretrainedSAELookup]`` built from
  ``pretrained_saes.yaml``): release -> repo id, model, ``conversion_func`` and ``sae_id -> path``;
* ``NAMED_PRETRAINED_SAE_LOADERS`` / ``NAMED_PRETRAINED_SAE_CONFIG_GETTERS``: ``conversion_func`` -> loader.

:func:`register_releases` adds one loader (``"gemma4_behavior"``) to both loader tables and one
``PretrainedSAELookup`` per release to the cached directory, in place. Nothing else is touched: existing
entries keep their objects, names already used by SAELens are refused, and calling it again is a no-op. The
listing tools that read the directory (``get_pretrained_saes_directory()``, ``sae_lens.evals``) show the new
releases. If something calls ``get_pretrained_saes_directory.cache_clear()``, call ``register_releases()``
again: it re-adds every release registered in this process.

Metadata attached to every loaded SAE (``sae.cfg.metadata``): ``model_name`` (``google/gemma-4-E2B``),
``hook_name`` in TransformerLens form (``blocks.25.hook_resid_post``: the output of decoder layer 25, which
``LoadedModel.resolve_layer`` and the activation source accept), ``hf_hook_name`` (the HF module path of that
output when Gemma 4 E2B is loaded with ``AutoModelForCausalLM``, i.e. ``Gemma4ForConditionalGeneration``:
``model.language_model.layers.25``), ``layer``, ``precision`` (``nf4``: the preset in
:mod:`gemma4_saelens_ext.models.precision`), ``release``, ``repo_id``, and the encode convention (``encode_convention``,
``encode_convention_source``; see :mod:`.convention`). The loader itself lives in :mod:`.loader`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

from gemma4_saelens_ext.releases.loader import (
    ReleaseFilesNotFoundError,
    gemma4_behavior_config_getter,
    gemma4_behavior_loader,
)
from gemma4_saelens_ext.releases.spec import (
    BUILTIN_RELEASES,
    GEMMA4_E2B,
    LOADER_NAME,
    REGISTERED,
    ReleaseSpec,
    SAESpec,
    default_hf_hook_name,
    hook_names_for_layer,
    upstream_release,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LOADER_NAME",
    "GEMMA4_E2B",
    "SAESpec",
    "ReleaseSpec",
    "ReleaseFilesNotFoundError",
    "BUILTIN_RELEASES",
    "register_releases",
    "register_release",
    "register_local_release",
    "upstream_release",
    "unregister_release",
    "set_encode_convention",
    "list_releases",
    "get_release",
    "gemma4_behavior_loader",
    "gemma4_behavior_config_getter",
    "hook_names_for_layer",
    "default_hf_hook_name",
]

# ----------------------------------------------------------------------------------------------------------
# SAELens integration
# ----------------------------------------------------------------------------------------------------------
def _tables() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from sae_lens.loading import pretrained_sae_loaders as L
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory(), L.NAMED_PRETRAINED_SAE_LOADERS, L.NAMED_PRETRAINED_SAE_CONFIG_GETTERS


def _install_loader() -> None:
    _, loaders, getters = _tables()
    for table, fn in ((loaders, gemma4_behavior_loader), (getters, gemma4_behavior_config_getter)):
        current = table.get(LOADER_NAME)
        if current is fn:
            continue
        if current is not None and not str(getattr(current, "__module__", "")).startswith(__package__ or ""):
            raise RuntimeError(
                f"SAELens already has a loader named {LOADER_NAME!r} ({current!r}) that is not this plugin's"
            )
        table[LOADER_NAME] = fn  # absent, or a stale copy from a reloaded module


def _lookup_for(spec: ReleaseSpec):
    from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

    return PretrainedSAELookup(
        release=spec.release,
        repo_id=spec.location,
        model=spec.model,
        conversion_func=LOADER_NAME,
        saes_map={s.sae_id: s.path for s in spec.saes},
        # same defaults as SAELens's yaml parser (its listing tools index these maps by every sae id)
        expected_var_explained={s.sae_id: 1.0 if s.variance_explained is None else s.variance_explained for s in spec.saes},
        expected_l0={s.sae_id: 0.0 if s.l0 is None else s.l0 for s in spec.saes},
        neuronpedia_id={s.sae_id: None for s in spec.saes},
        norm_scaling_factor={},
        config_overrides=None,
    )


def register_release(spec: ReleaseSpec, *, replace_existing: bool = False) -> ReleaseSpec:
    """Register ``spec`` with SAELens so ``SAE.from_pretrained(spec.release, sae_id)`` loads it.

    Idempotent for an identical spec. A different spec under a name this plugin registered is refused unless
    ``replace_existing=True``; a name SAELens itself ships is always refused.

    Example (a companion release, or your own Hub repo in the upstream layout)::

        from gemma4_saelens_ext.releases import register_release, upstream_release
        register_release(upstream_release("you/gemma4_e2b_other_behaviorSAE_topk_k16_L25_bnb4bit"))

    Example (a local folder)::

        register_release(ReleaseSpec("my-sae", local_dir="runs/export",
                                     saes=(SAESpec("blocks.25.hook_resid_post", "my_sae.pt", layer=25),)))
    """
    _install_loader()
    directory, _, _ = _tables()
    existing = directory.get(spec.release)
    if existing is not None:
        ours = existing.conversion_func == LOADER_NAME and spec.release in REGISTERED
        if not ours:
            raise ValueError(f"release name {spec.release!r} is already used by SAELens; pick another name")
        if REGISTERED[spec.release] == spec and existing.repo_id == spec.location:
            return spec
        if not replace_existing:
            raise ValueError(
                f"release {spec.release!r} is already registered with a different spec; "
                "pass replace_existing=True to replace it"
            )
    directory[spec.release] = _lookup_for(spec)
    REGISTERED[spec.release] = spec
    logger.debug("registered SAE release %s -> %s", spec.release, spec.location)
    return spec


def unregister_release(release: str) -> None:
    """Remove a release this plugin registered (SAELens's own releases cannot be removed here)."""
    if release not in REGISTERED:
        raise KeyError(f"{release!r} was not registered by gemma4_saelens_ext")
    directory, _, _ = _tables()
    entry = directory.get(release)
    if entry is not None and entry.conversion_func == LOADER_NAME:
        del directory[release]
    del REGISTERED[release]


def set_encode_convention(release: str, apply_b_dec_to_input: bool | None, *, sae_id: str | None = None) -> ReleaseSpec:
    """Force (``True``: subtract ``b_dec`` before encoding; ``False``: do not) or reset (``None``) the encode
    convention of a registered release's SAEs (one ``sae_id``, or all) for later ``SAE.from_pretrained`` calls.

    Example: ``set_encode_convention("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit", True)``.
    """
    spec = get_release(release)
    if sae_id is not None:
        spec.sae(sae_id)  # KeyError naming the valid ids
    saes = tuple(
        dataclasses.replace(s, apply_b_dec_to_input=apply_b_dec_to_input) if sae_id in (None, s.sae_id) else s
        for s in spec.saes
    )
    return register_release(dataclasses.replace(spec, saes=saes), replace_existing=True)


def register_releases() -> list[str]:
    """Register the loader and all built-in (and previously registered) releases. Idempotent.

    Returns the names of the releases this plugin has registered.
    """
    _install_loader()
    for spec in BUILTIN_RELEASES:
        if spec.release not in REGISTERED:
            register_release(spec)
    directory, _, _ = _tables()
    for name, spec in list(REGISTERED.items()):
        if name not in directory:  # the directory cache was cleared: re-add
            directory[name] = _lookup_for(spec)
    return list(REGISTERED)


def list_releases() -> list[ReleaseSpec]:
    """Releases registered by this plugin (built-ins first, then users' in registration order)."""
    register_releases()
    return list(REGISTERED.values())


def get_release(release: str) -> ReleaseSpec:
    register_releases()
    if release not in REGISTERED:
        raise KeyError(f"unknown gemma4_saelens_ext release {release!r}; known: {sorted(REGISTERED)}")
    return REGISTERED[release]


def register_local_release(
    folder: str | Path,
    *,
    release: str | None = None,
    prefer: Literal["saelens", "upstream"] = "saelens",
    replace_existing: bool = True,
) -> ReleaseSpec:
    """Register a folder written by :func:`gemma4_saelens_ext.releases.export_sae` (it reads ``release.json``).

    ``prefer`` picks which copy each SAE id loads from when the folder holds both formats.
    """
    from gemma4_saelens_ext.releases.manifest import release_spec_from_folder

    spec = release_spec_from_folder(folder, release=release, prefer=prefer)
    return register_release(spec, replace_existing=replace_existing)
