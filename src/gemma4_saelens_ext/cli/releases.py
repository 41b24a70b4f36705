"""``gemma4-sae export`` and ``gemma4-sae releases`` subcommands.

Their flags and ``--help`` come from :class:`ExportConfig` and :class:`ReleasesConfig`.

    gemma4-sae export runs/my_sae --out exports/my_release --release me/my-behavior-sae \\
        --formats saelens upstream --precision nf4 --layer 25 --metrics report.json
    gemma4-sae export --from-release Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit \\
        --sae-id blocks.25.hook_resid_post --out exports/gf1 --release gf1-copy
    gemma4-sae releases [--json] [--register-local DIR]
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional, Union

from simple_parsing.helpers import choice

from gemma4_saelens_ext.cli.command import Command
from gemma4_saelens_ext.errors import MissingFileError, UserError
from gemma4_saelens_ext.io import check_out
from gemma4_saelens_ext.options import layer_field, switch, positional, precision_field, split_csv
from gemma4_saelens_ext.releases.spec import UPSTREAM_LAYOUTS

logger = logging.getLogger(__name__)

__all__ = ["COMMANDS", "ExportConfig", "ReleasesConfig", "run_export", "run_releases"]


@dataclass
class ExportConfig:
    """``gemma4-sae export``: save an SAE (a SAELens folder such as the training runner's output, or a registered
    release) as a release folder (SAELens format, optional upstream .pt, model card), optionally pushed to the Hub."""

    out: str
    """output folder"""
    release: str
    """release name written to release.json and the model card"""
    source: Optional[str] = positional("SAE_DIR", default=None, nargs="?")
    """SAELens SAE folder (cfg.json + sae_weights.safetensors)"""
    from_release: Optional[str] = None
    """load the SAE with SAE.from_pretrained(FROM_RELEASE, --sae-id) instead of SAE_DIR"""
    sae_id: Optional[str] = None
    """sae id inside --from-release; also the exported sae id (default: the hook name)"""
    formats: list[str] = field(default_factory=lambda: ["saelens"])
    """formats to write: saelens and/or upstream (the release author's .pt layout)"""
    upstream_layout: str = choice(*UPSTREAM_LAYOUTS, default="linear")
    """key layout of the upstream .pt"""
    upstream_filename: Optional[str] = None
    """name of the upstream .pt (default: <release>.pt)"""
    model: Optional[str] = None
    """base model (default: from the SAE metadata, else google/gemma-4-E2B)"""
    layer: Union[int, str, None] = layer_field()
    """decoder layer (default: from the SAE's hook name)"""
    precision: Optional[str] = precision_field(None)
    """precision the activations were taken at"""
    metrics: Optional[str] = None
    """JSON file of metrics (e.g. an eval report) for the model card"""
    license: Optional[str] = None
    """license for the model card front matter"""
    notes: Optional[str] = None
    """markdown file appended to the model card"""
    model_card: bool = switch(True)
    """write README.md (the model card)"""
    push_to_hub: bool = switch(False)
    """upload the folder (needs network and a token)"""
    repo_id: Optional[str] = None
    """Hub repo for --push-to-hub and the card's loading snippet"""
    public: bool = switch(False)
    """create the Hub repo public (default private)"""
    device: str = "cpu"
    """device to load the SAE on"""

    def __post_init__(self) -> None:
        check_out(self.out)
        self.formats = split_csv(self.formats)
        bad = sorted(set(self.formats) - {"saelens", "upstream"})
        if bad:
            raise UserError(f"export: unknown format(s) {bad}.", "choose saelens and/or upstream.")


@dataclass
class ReleasesConfig:
    """``gemma4-sae releases``: the releases this plugin registers with SAELens (SAE.from_pretrained names)."""

    json: bool = switch(False)
    """machine-readable output"""
    register_local: list[str] = field(default_factory=list)
    """exported folders to register first"""


def run_export(args: ExportConfig) -> int:
    """Inputs and ``--out`` are checked before the SAE loads; ``--out`` is locked while it is written. Errors go to
    ``gemma4-sae``'s one error path (exit status 2 for a user error)."""
    from pathlib import Path

    from gemma4_saelens_ext.io import output_lock
    from gemma4_saelens_ext.releases.export import export_sae
    from gemma4_saelens_ext.releases.folders import check_sae_folder, load_release, load_sae_folder
    from gemma4_saelens_ext.releases.registry import register_releases

    if bool(args.source) == bool(args.from_release):
        raise UserError("export: give either a SAE folder or --from-release (not both).")
    if args.from_release and not args.sae_id:
        raise UserError("export: --from-release needs --sae-id.", "add --sae-id (e.g. blocks.25.hook_resid_post).")
    check_out(args.out)  # before the SAE loads (a release may download)
    for flag, f in (("--notes", args.notes), ("--metrics", args.metrics)):
        if f and not Path(f).is_file():
            raise MissingFileError(f"export {flag} {f}: no such file.", f"give an existing file for {flag}.")
    if args.source:
        check_sae_folder(args.source)
    register_releases()
    with output_lock(args.out):
        if args.from_release:
            sae = load_release(args.from_release, args.sae_id, device=args.device)
        else:
            sae = load_sae_folder(args.source, device=args.device)
        result = export_sae(
            sae,
            args.out,
            release=args.release,
            sae_id=args.sae_id,
            formats=tuple(args.formats or ("saelens",)),
            upstream_layout=args.upstream_layout,
            upstream_filename=args.upstream_filename,
            model_name=args.model,
            layer=args.layer,
            precision=args.precision,
            metrics=args.metrics,
            model_card=args.model_card,
            license=args.license,
            notes=Path(args.notes).read_text() if args.notes else "",
            push_to_hub=args.push_to_hub,
            repo_id=args.repo_id,
            private=not args.public,
        )
    print(f"exported {result.release} / {result.sae_id} -> {result.out_dir}")
    if result.hub_url:
        print(f"pushed: {result.hub_url}")
    return 0


def run_releases(args: ReleasesConfig) -> int:
    from gemma4_saelens_ext.releases.registry import list_releases, register_local_release

    try:
        for folder in args.register_local:
            register_local_release(folder)
    except (OSError, ValueError) as e:
        print(f"releases: {e}", file=sys.stderr)
        return 1
    rows = []
    for rel in list_releases():
        for s in rel.saes:
            rows.append(
                {
                    "release": rel.release,
                    "sae_id": s.sae_id,
                    "location": rel.location,
                    "path": s.path,
                    "format": s.format,
                    "model": s.model_name or rel.model,
                    "layer": s.layer,
                    "precision": s.precision,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['release']}  sae_id={row['sae_id']}")
        print(f"    {row['model']} layer {row['layer']} precision {row['precision']}  [{row['format']}] {row['location']}/{row['path']}")
    return 0


COMMANDS = (
    Command("export", "save an SAE as a release folder (SAELens format, optional upstream .pt, model card)",
            ExportConfig, run_export),
    Command("releases", "list the Gemma 4 behavior-SAE releases registered with SAELens", ReleasesConfig,
            run_releases),
)  # fmt: skip
