"""Load an SAE from a SAELens folder or a release name, with errors that name the file, the key or the close names.

SAELens's own loaders fail deep inside torch or the Hub client on a damaged folder (a ``cfg.json`` that is not
JSON, a truncated ``sae_weights.safetensors``, a ``d_sae`` that disagrees with the weights) or a misspelled release
("check your connection"). :func:`load_sae_folder` checks the folder's files first, and :func:`load_release`
checks the name against the releases SAELens knows (ours registered), listing close matches. :func:`load_sae`
(the package's public entry point) takes either and returns a :class:`LoadedSAE`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.errors import MissingFileError, UserError, close_matches

__all__ = ["check_sae_folder", "load_sae_folder", "load_release", "load_sae", "LoadedSAE"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: weight name -> (dimension names) as SAELens stores them
_SHAPES = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_enc": ("d_sae",), "b_dec": ("d_in",)}


def check_sae_folder(path: str | Path) -> dict[str, Any]:
    """The folder's ``cfg.json`` after checking the folder holds a readable config and weights that agree with it;
    each error names the file (and the key) and the fix."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"SAE folder {p} does not exist.", "give a folder saved by SAELens (cfg.json + "
                               f"{WEIGHTS_FILE}), e.g. the output of `gemma4-sae train`.")
    if not p.is_dir():
        raise UserError(f"SAE folder {p} is a file, not a folder.", "give the folder that holds cfg.json.")
    cfg_path, w_path = p / CFG_FILE, p / WEIGHTS_FILE
    for f in (cfg_path, w_path):
        if not f.is_file():
            raise MissingFileError(f"SAE folder {p} has no {f.name}.", "give a complete folder saved by SAELens "
                                   "(sae.save_model / gemma4-sae train / gemma4-sae export).")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e}).",
                        "restore the file (re-save or re-export the SAE).") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object of settings.",
                        "restore the file.")
    from safetensors import safe_open

    try:
        with safe_open(str(w_path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged header or data
        raise UserError(f"{w_path} cannot be read ({type(e).__name__}: {e}); the file is damaged or truncated "
                        f"({w_path.stat().st_size} bytes).", "restore or re-save the SAE's weights.") from None
    for name, dims in _SHAPES.items():
        if name not in shapes:
            continue
        want = tuple(cfg.get(d) for d in dims)
        if shapes[name] != want:
            said = ", ".join(f"{d}={v}" for d, v in zip(dims, want))
            raise UserError(f"{w_path}: {name} has shape {list(shapes[name])}, but {cfg_path} says {said}.",
                            f"make {cfg_path.name}'s d_in/d_sae match the weights, or restore the folder.")
    return cfg


def load_sae_folder(path: str | Path, device: str = "cpu") -> Any:
    """``SAE.load_from_disk(path)`` after :func:`check_sae_folder`; a later SAELens failure names the folder."""
    from sae_lens import SAE

    check_sae_folder(path)
    try:
        return SAE.load_from_disk(str(path), device=device)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"SAE folder {path} could not be loaded by SAELens ({type(e).__name__}: {e}).",
                        "check cfg.json's architecture and fields, or re-save the SAE.") from None


def load_release(release: str, sae_id: str | None, device: str = "cpu") -> Any:
    """``SAE.from_pretrained(release, sae_id)`` with our releases registered; a release or sae id SAELens does not
    know is refused with the close matches (a name that is no release is tried as a Hub repo id, and if that fails
    the error says both). Offline, safetensors headers come from the HF cache (:func:`_headers_from_hf_cache`), and
    files that are neither cached nor reachable give an error that says what to fetch."""
    try:  # close names of a misspelling; our releases registered (SAELens's own loaders for SAELens's releases)
        with _headers_from_hf_cache():
            return _from_pretrained(release, sae_id, device)
    except OSError as e:  # requests' ConnectionError is an OSError too
        from huggingface_hub.errors import LocalEntryNotFoundError

        if not (isinstance(e, LocalEntryNotFoundError) or "huggingface.co" in str(e)):
            raise  # e.g. the plugin's ReleaseFilesNotFoundError, which already says what to fetch
        raise MissingFileError(
            f"SAE {release}/{sae_id}: its files are not in the Hugging Face cache and the Hub is not reachable "
            f"({type(e).__name__}: {str(e)[:200]}).",
            "fetch them once where the Hub is reachable (SAE.from_pretrained(release, sae_id) or `hf download "
            "<repo> <files>`), with HF_HOME / HF_HUB_CACHE pointing at the cache used here.") from e


@contextlib.contextmanager
def _headers_from_hf_cache() -> Iterator[None]:
    """SAELens's ``gemma_3`` loader (Gemma Scope 2) reads a safetensors file's tensor shapes with an HTTP range
    request (``get_safetensors_tensor_shapes``), even with ``HF_HUB_OFFLINE=1`` and the file in the HF cache, so
    those releases cannot load offline. While loading, the shapes come from the cached file's header when the file is
    in the cache (the loader reads that same file next); otherwise SAELens's request runs as before."""
    from huggingface_hub import constants, try_to_load_from_cache
    from safetensors import safe_open
    from sae_lens.loading import pretrained_sae_loaders as L

    original = L.get_safetensors_tensor_shapes

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE)
        if not isinstance(path, str):
            return original(repo_id, filename)
        with safe_open(path, framework="pt") as f:  # type: ignore[no-untyped-call]
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    L.get_safetensors_tensor_shapes = shapes
    try:
        yield
    finally:
        L.get_safetensors_tensor_shapes = original


def _from_pretrained(release: str, sae_id: str | None, device: str) -> Any:
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from gemma4_saelens_ext.releases.registry import register_releases

    register_releases()
    known = get_pretrained_saes_directory()
    if release in known:
        ids = list(known[release].saes_map)
        if sae_id not in ids:
            near = close_matches(str(sae_id), ids)
            raise UserError(f"release {release!r} has no sae_id {sae_id!r}"
                            + (f" (did you mean {', '.join(near)}?)" if near else "") + ".",
                            f"use one of its sae ids: {', '.join((near + [i for i in ids if i not in near])[:20])}.")
        return SAE.from_pretrained(release, sae_id, device=device)
    near = close_matches(release, known, n=5)
    if near:
        raise UserError(f"{release!r} is not a known SAE release (did you mean {', '.join(near)}?).",
                        "fix the name; `gemma4-sae releases` lists this plugin's releases.")
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except (OSError, ValueError) as e:
        raise UserError(f"{release!r} is not a registered SAE release, and loading it as a Hugging Face repo id "
                        f"failed ({type(e).__name__}: {str(e)[:300]}).",
                        "check the name (`gemma4-sae releases` lists this plugin's releases); for a Hub repo, check "
                        "the id and the network (with HF_HUB_OFFLINE=1 only files already cached can load).") from None


@dataclass
class LoadedSAE:
    """What :func:`load_sae` returns: a SAELens SAE and what it was read from."""

    #: the SAELens ``SAE`` (``sae.encode(acts)``, ``sae.decode(latents)``; ``sae.cfg.metadata`` holds the hook name,
    #: the model and, for our releases, the encode convention)
    sae: Any
    #: the release name or the folder it was loaded from
    source: str
    #: the release's sae id (``None`` for a folder)
    sae_id: str | None
    #: TransformerLens-style hook the SAE reads (``blocks.L.hook_resid_post``), when its metadata says
    hook_name: str | None
    d_in: int
    d_sae: int


def load_sae(release_or_folder: str | Path, sae_id: str | None = None, *, device: str = "cpu") -> LoadedSAE:
    """An SAE from a SAELens folder (``train``'s output, ``gemma4-sae export``) when ``release_or_folder`` is an
    existing folder, else from a release (ours registered first, any SAELens release, or a Hub repo id) with
    ``sae_id``: :func:`load_sae_folder` or :func:`load_release`, whose errors name the file or the close names."""
    folder = Path(release_or_folder)
    if folder.is_dir():
        sae, sae_id = load_sae_folder(folder, device=device), None
    else:
        sae = load_release(str(release_or_folder), sae_id, device=device)
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    return LoadedSAE(sae, str(release_or_folder), sae_id, hook, int(sae.cfg.d_in), int(sae.cfg.d_sae))
