"""Gemma 4 behavior-SAE releases for SAELens: registry, upstream-checkpoint converter, export.

``register_releases()`` (idempotent) adds the published releases and the ``gemma4_behavior`` loader to SAELens's
own lookup tables, after which ``SAE.from_pretrained(release, sae_id)`` works::

    import gemma4_saelens_ext  # calls register_releases()
    from sae_lens import SAE
    sae = SAE.from_pretrained("Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit",
                              "blocks.25.hook_resid_post")

The encode convention (is ``b_dec`` subtracted before encoding?) is recorded in ``sae.cfg.metadata`` and can be
checked on real activations with ``check_encode_convention(sae, activations)``; see docs/releases.md.
"""

from gemma4_saelens_ext.releases.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    UnsafeCheckpointError,
    load_state_dict_file,
    read_checkpoint,
)
from gemma4_saelens_ext.releases.convention import (
    AUTHOR_RELEASE_PATTERNS,
    NO_B_DEC_SUBTRACTION,
    SUBTRACT_B_DEC,
    EncodeConvention,
    loaded_from_release,
)
from gemma4_saelens_ext.releases.convention_check import EncodeConventionCheck, check_encode_convention
from gemma4_saelens_ext.releases.convert import (
    ConvertedSAE,
    MissingConfigError,
    UpstreamConfig,
    convert_state_dict,
    convert_upstream_checkpoint,
    load_upstream_sae,
    read_upstream_config,
)
from gemma4_saelens_ext.releases.card import build_model_card
from gemma4_saelens_ext.releases.export import ExportResult, export_sae
from gemma4_saelens_ext.releases.registry import (
    BUILTIN_RELEASES,
    GEMMA4_E2B,
    LOADER_NAME,
    ReleaseFilesNotFoundError,
    ReleaseSpec,
    SAESpec,
    gemma4_behavior_loader,
    get_release,
    hook_names_for_layer,
    list_releases,
    register_local_release,
    register_release,
    register_releases,
    set_encode_convention,
    unregister_release,
    upstream_release,
)
from gemma4_saelens_ext.releases.to_upstream import saelens_to_upstream

__all__ = [
    "AUTHOR_RELEASE_PATTERNS",
    "BUILTIN_RELEASES",
    "NO_B_DEC_SUBTRACTION",
    "SUBTRACT_B_DEC",
    "EncodeConvention",
    "EncodeConventionCheck",
    "LoadedCheckpoint",
    "check_encode_convention",
    "gemma4_behavior_loader",
    "loaded_from_release",
    "read_checkpoint",
    "set_encode_convention",
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
