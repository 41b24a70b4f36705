"""The ``detection`` eval family on a suite context: the train and eval splits' rows (kind, label, group,
cluster), pooled raw activations and every SAE's latents, plus the eval split's control rows, into
:func:`gemma4_saelens_ext.evals.detection_run.run_detection`; and the SAEBench sparse-probing results per SAE.

It reads the extraction-pass context: ``ctx.saes`` (the suite's SAEs, with names), ``split.latents`` (name ->
latents, from the split's one pass) and ``ctx.row_set`` (one pass over rows outside the labelled splits).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals.detection_run import CONTROL, DetectionData, run_detection, sparse_probing_results
from gemma4_saelens_ext.evals.readers import ReaderInputs

logger = logging.getLogger(__name__)

__all__ = ["detection_from_context", "control_rows"]


def control_rows(ctx: Any, split: Any) -> list[dict]:
    """Control rows of ``split`` that it does not hold already (the labelled splits drop rows that are neither
    honest nor deceptive), read back from the dataset; a seeded sample of whole groups under the row limit."""
    if any(r.get("kind") == CONTROL for r in split.rows) or not ctx.cfg.dataset.path:
        return []
    from gemma4_saelens_ext.evals.data import load_rows
    from gemma4_saelens_ext.evals.groups import resolve_groups, sample_groups

    rows = [r for r in load_rows(ctx.cfg.dataset.path, split.name) if CONTROL in (r.get("kind"), r.get("label"))]
    if rows and ctx.cfg.dataset.max_rows_per_split:
        rows = [rows[i] for i in sample_groups(resolve_groups(rows)[0], ctx.cfg.dataset.max_rows_per_split,
                                               ctx.cfg.seed)]
    return rows


def _sae_names(ctx: Any) -> list[str]:
    return [s.name for s in ctx.saes]


def _latents(ctx: Any, split: Any) -> dict[str, np.ndarray]:
    """SAE name -> latents of the split's rows."""
    return {n: split.latents[n] for n in _sae_names(ctx)}


def _extract(ctx: Any, rows: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pooled activations and every SAE's latents of rows outside the labelled splits (one pass, cached)."""
    sp = ctx.row_set("detection: control rows (eval)", rows)
    return sp.acts, _latents(ctx, sp)


def _data(ctx: Any, split: Any, *, with_control: bool) -> DetectionData:
    rows, acts, feats = list(split.rows), split.acts, _latents(ctx, split)
    ctrl = control_rows(ctx, split) if with_control else []
    if ctrl:
        ca, cf = _extract(ctx, ctrl)
        rows, acts = rows + ctrl, np.concatenate([acts, ca])
        feats = {k: np.concatenate([v, cf[k]]) for k, v in feats.items()}
    return DetectionData.from_rows(rows, ReaderInputs(acts, feats, [str(r.get("completion", "")) for r in rows]))


def detection_from_context(ctx: Any) -> dict[str, Any]:
    """The family's report section: the card per kind, the transfer matrix, ``saebench_sparse_probing`` per SAE."""
    spec = ctx.cfg.detection
    train, ev = _data(ctx, ctx.train, with_control=False), _data(ctx, ctx.eval, with_control=True)
    sec = run_detection(train, ev, readers=spec.readers, k_values=spec.k_values, fpr=spec.fpr,
                        n_permutations=spec.n_permutations, n_bootstrap=spec.n_bootstrap, C=spec.C,
                        seed=ctx.cfg.seed, alpha=ctx.cfg.stats.alpha, transfer=spec.transfer,
                        lexical_chars=ctx.cfg.probes.lexical_chars)
    sec["saebench_sparse_probing"] = {n: sparse_probing_results(sec, n, seed=ctx.cfg.seed) for n in _sae_names(ctx)}
    for kind, k in sec["kinds"].items():
        warns = {w for row in k["rows"] for key in ("auroc_honest_deceptive", "auroc_deceptive_control")
                 for w in (row.get(key) or {}).get("warnings") or []}
        ctx.warnings.extend(f"detection card, {kind}: {w}" for w in sorted(warns))
    return sec
