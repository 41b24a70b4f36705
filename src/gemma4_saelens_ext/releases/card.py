"""The Hub model card of an exported SAE release, built with ``huggingface_hub.ModelCard`` / ``ModelCardData``.

Every model card the package writes comes from :func:`build_model_card` (``export_sae`` calls it, and through it
``gemma4-sae demo``'s ``release/README.md``). The YAML front matter is ``ModelCardData``'s, so the Hub's own parser
reads it back (``ModelCard.load(path).data``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gemma4_saelens_ext.io import to_jsonable
from gemma4_saelens_ext.models.precision import PRECISIONS, get_precision

__all__ = ["build_model_card"]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


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
):
    """``huggingface_hub.ModelCard``: front matter (base model, layer, precision, architecture, metrics) + usage."""
    from huggingface_hub import ModelCard, ModelCardData

    precision = metadata.get("precision")
    prec_desc = get_precision(precision).description.split(" (")[0] if precision in PRECISIONS else "unknown"
    arch = str(cfg.get("architecture", "topk"))
    k = cfg.get("k")
    sae_info: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
        "k": k,
        "layer": metadata.get("layer"),
        "hook_name": metadata.get("hook_name"),
        "hf_hook_name": metadata.get("hf_hook_name"),
        "training_precision": precision,
        "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input"),
        "dtype": cfg.get("dtype"),
    }
    if metrics:  # nested: a top-level `metrics` key means a list of metric ids to the Hub
        sae_info["metrics"] = dict(metrics)
    data = ModelCardData(
        license=license,
        base_model=metadata.get("model_name"),
        library_name="saelens",
        tags=["sae_lens", "sparse-autoencoder", arch, "gemma4", *([precision] if precision else [])],
        sae=_drop_none(to_jsonable(sae_info)),
    )
    name = repo_id or release
    lines = [
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
    # ModelCard's documented constructor: the front matter ModelCardData renders, then the body
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
