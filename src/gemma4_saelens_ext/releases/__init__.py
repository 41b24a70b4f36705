"""Releases: Gemma 4 behavior SAEs for SAELens's ``SAE.from_pretrained``, their checkpoints, and export.

``register_releases()`` (idempotent) adds the published releases and the ``gemma4_behavior`` loader to SAELens's
own lookup tables, after which ``SAE.from_pretrained(release, sae_id)`` works::

    from gemma4_saelens_ext.releases import register_releases
    register_releases()
    from sae_lens import SAE
    sae = SAE.from_pretrained("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit",
                              "blocks.25.hook_resid_post")

The encode convention (is ``b_dec`` subtracted before encoding?) is recorded in ``sae.cfg.metadata`` and can be
checked on real activations with ``check_encode_convention(sae, activations)``; see docs/releases.md.

Rooms: :mod:`.spec` (release specs; the leaf), :mod:`.checkpoint` (safe reading), :mod:`.convert` (upstream
layout -> SAELens), :mod:`.convention` / :mod:`.convention_check`, :mod:`.loader` (the SAELens loader),
:mod:`.registry` (SAELens's tables), :mod:`.folders` (load a folder or a release, errors naming the file),
:mod:`.export`, :mod:`.card`, :mod:`.manifest`, :mod:`.to_upstream`; :mod:`.sae_ops` (batched encode/decode in
eval mode and explained variance, for the convention check and the evals).
May import: ``models`` and the package's leaves; sae_lens, torch, huggingface_hub.
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "ReleaseSpec": "spec", "SAESpec": "spec", "BUILTIN_RELEASES": "spec", "upstream_release": "spec",
    "register_releases": "registry", "register_release": "registry", "register_local_release": "registry",
    "unregister_release": "registry", "list_releases": "registry", "get_release": "registry",
    "set_encode_convention": "registry", "ReleaseFilesNotFoundError": "loader",
    "check_encode_convention": "convention_check", "load_upstream_sae": "convert", "export_sae": "export",
    "load_sae_folder": "folders", "load_release": "folders", "check_sae_folder": "folders",
    "load_sae": "folders", "LoadedSAE": "folders",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
