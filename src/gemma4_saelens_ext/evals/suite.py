"""Eval suites: a YAML file -> typed config -> every enabled family (:mod:`.families`) -> report folder.

``python -m gemma4_saelens_ext.evals run evals/demo.yaml`` (or ``gemma4-sae evals run ...``, or
:func:`run_suite`). Everything cheap is validated first (YAML keys, SAE/model width, SAE layer vs activation
layer, split sizes, CV class counts), so a mistake fails in seconds, not after the model loads or generates.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.evals.spec import (  # noqa: F401  (re-exported: the suite's public schema)
    ControlSpec, DatasetSpec, DValuesSpec, ModelSpec, PortabilitySpec, ProbesSpec, ReconstructionSpec, StabilitySpec,
    StatsSpec, SteeringSpec, SuiteConfig, TopLatentsSpec, load_suite,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SuiteConfig", "ModelSpec", "DatasetSpec", "StatsSpec", "ReconstructionSpec", "DValuesSpec", "ProbesSpec",
    "SteeringSpec", "StabilitySpec", "TopLatentsSpec", "PortabilitySpec", "ControlSpec", "load_suite", "run_suite",
]


def _scenario_files(path: str | None) -> list[str] | None:
    """The scenario files a built dataset was made from (its manifest), so judges know its prompts."""
    if not path or not (Path(path) / "manifest.json").exists():
        return None
    import json

    files = json.loads((Path(path) / "manifest.json").read_text()).get("scenarios", {}).get("files") or []
    return [f for f in files if Path(f).exists()] or None


def _tests(fams: dict[str, Any], pvalues: dict[str, float], alpha: float) -> dict[str, Any]:
    """The primary test (replication on eval) and every other p-value, raw and Holm-adjusted."""
    from gemma4_saelens_ext.evals.groups import holm

    adj = holm(pvalues)
    prim = (fams.get("dvalues") or {}).get("primary")
    return {
        "alpha": alpha,
        "primary": None if prim is None else {"name": "replicated d_max (latents chosen on train, measured on eval)",
                                              "p": prim["p"], "verdict": prim["verdict"]},
        "others": [{"name": k, "p": v, "p_holm": adj[k], "significant_after_holm": bool(adj[k] <= alpha)}
                   for k, v in pvalues.items()],
        "note": "one primary test per report; every other p-value is Holm-adjusted (family-wise error control)",
    }


def run_suite(cfg: SuiteConfig | str | Path | dict[str, Any], *, output_dir: str | None = None) -> Path:
    """Run every enabled family and write ``report.json``, ``report.md`` and plots; returns the report folder. The
    output folder is checked first and locked for the run."""
    from gemma4_saelens_ext.evals.saeio import check_before_loading
    from gemma4_saelens_ext.io import check_out, output_lock

    if not isinstance(cfg, SuiteConfig):
        cfg = load_suite(cfg)
    out = check_out(output_dir or cfg.output_dir, what="output_dir (--out)")  # before any work
    check_before_loading(cfg)  # layer and SAE widths against the model's config.json, before anything loads
    with output_lock(out, what="output_dir (--out)"):  # a second run into the same folder is refused
        return _run(cfg, out)


def _run(cfg: SuiteConfig, out: Path) -> Path:
    from gemma4_saelens_ext.errors import check_finite
    from gemma4_saelens_ext.evals import probes as P
    from gemma4_saelens_ext.evals import report as REP
    from gemma4_saelens_ext.evals.context import SuiteContext, labelled_split
    from gemma4_saelens_ext.evals.data import load_rows, scripted_rows
    from gemma4_saelens_ext.evals.groups import check_split_overlap
    from gemma4_saelens_ext.evals.families import FAMILIES, run_families
    from gemma4_saelens_ext.evals.saeio import check_sae_matches, encode_unit, load_sae, sae_layer, train_suite_sae
    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.versions import package_versions

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    report: dict[str, Any] = {"suite": cfg.name, "settings": dataclasses.asdict(cfg), "versions": package_versions(),
                              "warnings": warnings, "timings_s": {}}

    # ---- data first (cheap errors before any model load)
    if cfg.dataset.scripted_families:
        allrows = scripted_rows(cfg.dataset.scripted_families, seed=cfg.seed)

        def get(split: str) -> list[dict]:
            if not allrows.get(split):
                raise ValueError(f"scripted dataset: split {split!r} is empty")
            return allrows[split]

        report["dataset"] = {"kind": "scripted (not model samples; demo)", "families": cfg.dataset.scripted_families}
    else:
        get = lambda s: load_rows(cfg.dataset.path, s)  # noqa: E731
        report["dataset"] = {"kind": "built", "path": cfg.dataset.path}
    ds = cfg.dataset
    ckw = dict(max_rows=ds.max_rows_per_split, seed=cfg.seed, warnings=warnings, cluster=cfg.stats.cluster,
               detect_cluster=cfg.stats.detect_cluster)
    train = labelled_split(ds.train_split, get(ds.train_split), **ckw)
    evs = labelled_split(ds.eval_split, get(ds.eval_split), **ckw)
    # latents are chosen on train and measured on eval: a prompt group in both would measure its own selection
    check_split_overlap(train.groups, evs.groups, what="dataset", names=(ds.train_split, ds.eval_split))
    if cfg.probes.enabled:
        P.check_cv_labels(evs.y, cfg.probes.n_splits, what=f"probes on split {ds.eval_split!r}")
        lay = evs.layout()
        if lay.n_groups < cfg.probes.n_splits:
            raise ValueError(f"probes on split {ds.eval_split!r}: {lay.n_groups} {lay.unit}s but "
                             f"{cfg.probes.n_splits}-fold grouped CV needs >= {cfg.probes.n_splits}; use "
                             f"probes.n_splits={max(2, lay.n_groups)} or add prompts.")
    iv_rows: list[dict] = []
    if cfg.control.enabled and ds.input_variation_split:
        try:
            iv_rows = get(ds.input_variation_split)
        except ValueError as e:
            warnings.append(f"positive control skipped: {e}")
    report["dataset"]["sizes"] = {s.name: s.sizes() for s in (train, evs)}
    report["dataset"]["sizes"]["input_variation"] = {"rows": len(iv_rows)}
    report["dataset"]["groups_from"] = {s.name: s.group_source for s in (train, evs)}
    report["dataset"]["layout"] = {s.name: s.layout().to_dict() for s in (train, evs)}

    # ---- SAE (trained first when the suite says so), then the model (shape/layer checks before long work)
    if "train" in cfg.sae:
        sae, report["sae"] = train_suite_sae(cfg, get(ds.train_split), out)
    else:
        sae = load_sae(cfg.sae)
        report["sae"] = {"kind": "loaded", **{k: str(v) for k, v in cfg.sae.items()}}
    layer_spec = cfg.model.layer if cfg.model.layer is not None else sae_layer(sae)
    if layer_spec is None:
        raise ValueError("model.layer is not set and the SAE does not name a hook; set model.layer.")
    need_full = ((cfg.reconstruction.enabled and cfg.reconstruction.lm_loss) or cfg.steering.enabled
                 or (cfg.stability.enabled and cfg.stability.mode == "regenerate"))
    lm = load_model(cfg.model.source, cfg.model.precision, truncate_after_layer=None if need_full else layer_spec)
    layer = lm.resolve_layer(layer_spec)
    check_sae_matches(sae, d_model=lm.d_model, layer=layer, lm=lm)
    others = {k: load_sae(v) for k, v in cfg.other_saes.items()}
    for k, o in others.items():
        check_sae_matches(o, d_model=lm.d_model, what=f"other SAE {k!r}")

    ctx = SuiteContext(cfg=cfg, lm=lm, layer=layer, sae=sae, encode=("tokens", ""), train=train, eval=evs,
                       others=others, iv_rows=iv_rows, warnings=warnings,
                       scenario_files=_scenario_files(cfg.dataset.path))
    t = time.time()
    train.acts, evs.acts = ctx.pooled(train.rows), ctx.pooled(evs.rows)
    for sp in (train, evs):  # an overflow (fp16) gives NaN/inf: refused with a count, never skipped into a verdict
        check_finite(sp.acts, f"activations of split {sp.name!r} ({cfg.model.source} at {cfg.model.precision}, "
                     f"layer {layer})")
    ctx.encode = encode_unit(sae, cfg.sae, cfg.encode)
    train.feats, evs.feats = ctx.latents(train.rows, acts=train.acts), ctx.latents(evs.rows, acts=evs.acts)
    report["timings_s"]["activations"] = time.time() - t
    report["sae"].update(d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae), architecture=type(sae).__name__,
                         hook=sae_layer(sae), layer=layer, encode=ctx.encode[0], encode_reason=ctx.encode[1])
    from gemma4_saelens_ext.releases import check_encode_convention

    # on what the SAE is applied to: token activations (BOS excluded) or the pooled residual
    probe_x = ctx.tokens(train.sample_groups(32, cfg.seed).rows) if ctx.encode[0] == "tokens" else train.acts
    chk = check_encode_convention(sae, probe_x)
    report["sae"]["encode_convention"] = chk.to_dict()
    if chk.loaded_loses:
        warnings.append(chk.summary())

    # d-values always run: the latents chosen on train feed steering, stability and the top-latent table
    enabled = [n for n in FAMILIES if n == "dvalues" or getattr(cfg, n).enabled]
    fams = run_families(ctx, enabled, report["timings_s"])
    dv = fams.get("dvalues", {})
    report["null_d_max"] = {k: v.tolist() for k, v in dv.pop("_null_d_max", {}).items() if v is not None}
    report["d_values"] = {k: v.tolist() for k, v in dv.pop("_d", {}).items() if v is not None}
    report.update(fams)
    report["tests"] = _tests(fams, ctx.pvalues, cfg.stats.alpha)
    report["timings_s"]["total"] = time.time() - t0
    REP.write_report(report, out)
    logger.info("report written to %s (%.0f s)", out, report["timings_s"]["total"])
    return out
