"""``gemma4-sae export`` and ``gemma4-sae releases`` subcommands.

``add_parser(subparsers)`` adds both; each sets ``func=callable(args) -> int``.

    gemma4-sae export runs/my_sae --out exports/my_release --release me/my-behavior-sae \\
        --format saelens --format upstream --precision nf4 --layer 25 --metrics report.json
    gemma4-sae export --from-release Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit \\
        --sae-id blocks.25.hook_resid_post --out exports/gf1 --release gf1-copy
    gemma4-sae releases [--json] [--register-local DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run_export", "run_releases"]


def add_parser(subparsers: Any) -> None:
    """Register ``export`` and ``releases`` on an ``argparse`` subparsers object."""
    from gemma4_saelens_ext.precision import PRECISIONS
    from gemma4_saelens_ext.releases.to_upstream import UPSTREAM_LAYOUTS

    p = subparsers.add_parser(
        "export",
        help="save an SAE as a release folder (SAELens format, optional upstream .pt, model card)",
        description="Export an SAE (a SAELens folder such as the training runner's output, or a registered "
        "release) as a release folder, optionally pushing it to the Hugging Face Hub.",
    )
    p.add_argument("source", nargs="?", help="SAELens SAE folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--from-release", help="load the SAE with SAE.from_pretrained(RELEASE, --sae-id) instead")
    p.add_argument("--sae-id", help="sae id inside --from-release; also the exported sae id (default: hook name)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--release", required=True, help="release name written to release.json and the model card")
    p.add_argument(
        "--format", dest="formats", action="append", choices=("saelens", "upstream"), help="repeatable; default saelens"
    )
    p.add_argument("--upstream-layout", choices=UPSTREAM_LAYOUTS, default="linear")
    p.add_argument("--upstream-filename", help="name of the upstream .pt (default: <release name>.pt)")
    p.add_argument("--model-name", help="base model (default: from the SAE metadata, else google/gemma-4-E2B)")
    p.add_argument("--layer", type=int, help="decoder layer (default: from the SAE's hook name)")
    p.add_argument("--precision", choices=PRECISIONS, help="precision the activations were taken at")
    p.add_argument("--metrics", help="JSON file of metrics (e.g. an eval report) for the model card")
    p.add_argument("--license", help="license for the model card front matter")
    p.add_argument("--notes", help="markdown file appended to the model card")
    p.add_argument("--no-model-card", action="store_true")
    p.add_argument("--push-to-hub", action="store_true", help="upload the folder (needs network and a token)")
    p.add_argument("--repo-id", help="Hub repo for --push-to-hub and the card's loading snippet")
    p.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_export)

    r = subparsers.add_parser(
        "releases",
        help="list the Gemma 4 behavior-SAE releases registered with SAELens",
        description="List releases this plugin registers with SAELens (SAE.from_pretrained names and sae ids).",
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--register-local", metavar="DIR", action="append", default=[], help="register an exported folder first")
    r.set_defaults(func=run_releases)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gemma4_saelens_ext.releases.export import export_sae
    from gemma4_saelens_ext.releases.registry import register_releases

    if bool(args.source) == bool(args.from_release):
        print("export: give either a SAE folder or --from-release (not both)", file=sys.stderr)
        return 2
    register_releases()
    from sae_lens import SAE

    try:
        if args.from_release:
            if not args.sae_id:
                print("export: --from-release needs --sae-id", file=sys.stderr)
                return 2
            sae = SAE.from_pretrained(args.from_release, args.sae_id, device=args.device)
        else:
            sae = SAE.load_from_disk(args.source, device=args.device)
        result = export_sae(
            sae,
            args.out,
            release=args.release,
            sae_id=args.sae_id,
            formats=tuple(args.formats or ("saelens",)),
            upstream_layout=args.upstream_layout,
            upstream_filename=args.upstream_filename,
            model_name=args.model_name,
            layer=args.layer,
            precision=args.precision,
            metrics=args.metrics,
            model_card=not args.no_model_card,
            license=args.license,
            notes=Path(args.notes).read_text() if args.notes else "",
            push_to_hub=args.push_to_hub,
            repo_id=args.repo_id,
            private=not args.public,
        )
    except (OSError, ValueError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"exported {result.release} / {result.sae_id} -> {result.out_dir}")
    if result.hub_url:
        print(f"pushed: {result.hub_url}")
    return 0


def run_releases(args: argparse.Namespace) -> int:
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
