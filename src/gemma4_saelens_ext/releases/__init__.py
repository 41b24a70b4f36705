"""Gemma 4 behavior-SAE releases for SAELens: registry, upstream-checkpoint converter, export.

``register_releases()`` (idempotent) adds the published releases and the ``gemma4_behavior`` loader to SAELens's
own lookup tables, after which ``SAE.from_pretrained(release, sae_id)`` works::

    import gemma4_saelens_ext  # calls register_releases()
    from sae_lens import SAE
    sae = SAE.from_pretrained("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit",
                              "blocks.25.hook_resid_post")
"""

from gemma4_saelens_ext.releases.convert import (
    CheckpointError,
    ConvertedSAE,
    MissingConfigError,
    UnsafeCheckpointError,
    UpstreamConfig,
    convert_state_dict,
    convert_upstream_checkpoint,
    load_state_dict_file,
    load_upstream_sae,
    read_upstream_config,
    saelens_to_upstream,
)
from gemma4_saelens_ext.releases.export import ExportResult, build_model_card, export_sae
from gemma4_saelens_ext.releases.registry import (
    BUILTIN_RELEASES,
    GEMMA4_E2B,
    LOADER_NAME,
    ReleaseFilesNotFoundError,
    ReleaseSpec,
    SAESpec,
    get_release,
    hook_names_for_layer,
    list_releases,
    register_local_release,
    register_release,
    register_releases,
    unregister_release,
    upstream_release,
)

__all__ = [
    "BUILTIN_RELEASES",
    "GEMMA4_E2B",
    "LOADER_NAME",
    "CheckpointError",
    "ConvertedSAE",
    "ExportResult",
    "MissingConfigError",
    "ReleaseFilesNotFoundError",
    "ReleaseSpec",
    "SAESpec",
    "UnsafeCheckpointError",
    "UpstreamConfig",
    "build_model_card",
    "convert_state_dict",
    "convert_upstream_checkpoint",
    "export_sae",
    "get_release",
    "hook_names_for_layer",
    "list_releases",
    "load_state_dict_file",
    "load_upstream_sae",
    "read_upstream_config",
    "register_local_release",
    "register_release",
    "register_releases",
    "saelens_to_upstream",
    "unregister_release",
    "upstream_release",
]
