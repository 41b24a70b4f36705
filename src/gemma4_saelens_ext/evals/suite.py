"""Eval suites: a YAML file -> typed config -> every enabled family (:mod:`.families`) -> report folder.

``python -m gemma4_saelens_ext.evals run evals/demo.yaml`` (or ``gemma4-sae evals run ...``, or
:func:`run_suite`). Everything cheap is validated first (YAML keys, SAE/model width, SAE layer vs activation
layer, split sizes, CV class counts), so a mistake fails in seconds, not after the model loads or generates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.evals.spec import SuiteConfig
from gemma4_saelens_ext.evals.suite_file import load_suite

logger = logging.getLogger(__name__)

__all__ = ["run_suite", "SuiteResult"]


@dataclasses.dataclass
class SuiteResult:
    """What :func:`run_suite` returns: the report folder and the report it wrote.

    For older callers it also stands in for the folder: ``result / "report.json"``, ``str(result)``,
    ``os.fspath(result)`` and the ``Path`` methods (``result.glob("*.png")``) act on ``output_dir``."""

    #: the folder holding ``report.json``, ``report.md``, the plots and ``saebench/``
    output_dir: Path
    #: the contents of ``report.json`` (per SAE and family; ``report["tests"]`` holds the primary test)
    report: dict[str, Any]

    def __truediv__(self, other: str | Path) -> Path:
        return self.output_dir / other

    def __fspath__(self) -> str:
        return str(self.output_dir)

    def __str__(self) -> str:
        return str(self.output_dir)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("output_dir", "report"):
            raise AttributeError(name)
        return getattr(self.output_dir, name)


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


def run_suite(cfg: SuiteConfig | str | Path | dict[str, Any], *, output_dir: str | None = None) -> SuiteResult:
    """Run every enabled family and write ``report.json``, ``report.md`` and plots into ``output_dir`` (default: the
    suite's); returns a :class:`SuiteResult`. ``cfg``: a shipped suite name, a YAML path, a dict or a
    :class:`SuiteConfig`. The output folder is checked first and locked for the run."""
    from gemma4_saelens_ext.evals.saes import check_before_loading
    from gemma4_saelens_ext.io import check_out, output_lock

    if not isinstance(cfg, SuiteConfig):
        cfg = load_suite(cfg)
    out = check_out(output_dir or cfg.output_dir, what="output_dir (--out)")  # before any work
    check_before_loading(cfg)  # layer and SAE widths against the model's config.json, before anything loads
    with output_lock(out, what="output_dir (--out)"):  # a second run into the same folder is refused
        return _run(cfg, out)


def _run(cfg: SuiteConfig, out: Path) -> SuiteResult:
    from gemma4_saelens_ext.errors import check_finite
    from gemma4_saelens_ext.evals import probes as P
    from gemma4_saelens_ext.evals import report as REP
    from gemma4_saelens_ext.evals.context import SuiteContext, labelled_split
    from gemma4_saelens_ext.evals.data import load_rows, scripted_rows
    from gemma4_saelens_ext.evals.groups import check_split_overlap
    from gemma4_saelens_ext.evals.families import FAMILIES, run_families
    from gemma4_saelens_ext.evals.saebench import write_saebench_files
    from gemma4_saelens_ext.evals.saeio import check_sae_matches, sae_layer
    from gemma4_saelens_ext.evals.saes import describe_saes, load_suite_saes
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

    # ---- SAEs (the train entry trained first), then the model (shape/layer checks before long work)
    saes = load_suite_saes(cfg, get(ds.train_split), out)
    prim = next(s for s in saes if s.primary)
    layer_spec = cfg.model.layer if cfg.model.layer is not None else sae_layer(prim.sae)
    if layer_spec is None:
        raise ValueError("model.layer is not set and the primary SAE does not name a hook; set model.layer.")
    need_full = ((cfg.reconstruction.enabled and cfg.reconstruction.lm_loss) or cfg.steering.enabled
                 or (cfg.stability.enabled and cfg.stability.mode == "regenerate"))
    lm = load_model(cfg.model.source, cfg.model.precision, truncate_after_layer=None if need_full else layer_spec)
    layer = lm.resolve_layer(layer_spec)
    for s in saes:
        check_sae_matches(s.sae, d_model=lm.d_model, layer=layer, lm=lm, what=f"SAE {s.name!r}")

    ctx = SuiteContext(cfg=cfg, lm=lm, layer=layer, saes=saes, train=train, eval=evs, iv_rows=iv_rows,
                       warnings=warnings, scenario_files=_scenario_files(cfg.dataset.path))
    # one extraction pass per split: pooled activations, every SAE's latents (the control SAE's on eval) and the
    # token activations reconstruction, portability and the convention check read
    t = time.time()
    ctx.fill(train, keep_tokens=ctx.token_rows(train))
    ctx.fill(evs, which="with_control" if cfg.probes.enabled and cfg.probes.control_sae else "all",
             keep_tokens=ctx.token_rows(evs))
    for sp in (train, evs):  # an overflow (fp16) gives NaN/inf: refused with a count, never skipped into a verdict
        check_finite(sp.acts, f"activations of split {sp.name!r} ({cfg.model.source} at {cfg.model.precision}, "
                     f"layer {layer})")
    report["timings_s"]["activations"] = time.time() - t
    report["saes"] = describe_saes(saes, layer)
    report["sae"] = next(d for d in report["saes"] if d["primary"])
    from gemma4_saelens_ext.releases import check_encode_convention

    # on what each SAE is applied to: token activations (BOS excluded) or the pooled residual
    conv_x = {"tokens": train.token_matrix(ctx.token_rows(train)), "pooled": train.acts}
    for s, d in zip(saes, report["saes"]):
        chk = check_encode_convention(s.sae, conv_x[s.unit])
        d["encode_convention"] = chk.to_dict()
        if chk.loaded_loses:
            warnings.append(f"SAE {s.name!r}: {chk.summary()}")

    # d-values always run: the latents chosen on train feed steering, stability and the top-latent table
    enabled = [n for n in FAMILIES if n == "dvalues" or getattr(cfg, n).enabled]
    fams = run_families(ctx, enabled, report["timings_s"])
    dv = fams.get("dvalues", {})
    report["null_d_max"] = {k: v.tolist() for k, v in dv.pop("_null_d_max", {}).items() if v is not None}
    report["d_values"] = {k: v.tolist() for k, v in dv.pop("_d", {}).items() if v is not None}
    report.update(fams)
    report["tests"] = _tests(fams, ctx.pvalues, cfg.stats.alpha)
    report["extraction"] = ctx.extractions
    report["saebench"] = write_saebench_files(out, report, saes)  # per SAE: SAEBench core and sparse probing
    report["timings_s"]["total"] = time.time() - t0
    REP.write_report(report, out)
    logger.info("report written to %s (%.0f s)", out, report["timings_s"]["total"])
    return SuiteResult(out, json.loads((out / "report.json").read_text()))
