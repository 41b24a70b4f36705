"""Eval suites: a YAML file -> typed config -> every enabled family (:mod:`.families`) -> report folder.

``python -m gemma4_saelens_ext.evals run evals/demo.yaml`` (or ``gemma4-sae evals run ...``, or
:func:`run_suite`). Everything cheap is validated first (YAML keys, SAE/model width, SAE layer vs activation
layer, split sizes, CV class counts), so a mistake fails in seconds, not after the model loads or generates.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml


logger = logging.getLogger(__name__)

__all__ = [
    "SuiteConfig", "ModelSpec", "DatasetSpec", "StatsSpec", "ReconstructionSpec", "DValuesSpec", "ProbesSpec",
    "SteeringSpec", "StabilitySpec", "TopLatentsSpec", "PortabilitySpec", "ControlSpec", "load_suite", "run_suite",
]


@dataclass
class ModelSpec:
    source: str = "gemma-3-270m"
    precision: str = "nf4"
    #: layer index or hook name; default: the SAE's hook
    layer: int | str | None = None
    batch_size: int = 8
    max_length: int = 256


@dataclass
class DatasetSpec:
    #: dataset folder from ``gemma4-sae build-dataset``, a parquet/JSONL file, or a Hub id
    path: str | None = None
    train_split: str = "train"
    eval_split: str = "eval"
    input_variation_split: str | None = "input_variation"
    #: demo only: scripted completions from these scenario families (no sampling)
    scripted_families: list[str] | None = None
    #: row limit per split, met by a seeded sample of whole prompt groups
    max_rows_per_split: int | None = None


@dataclass
class StatsSpec:
    #: group flips for the d-value nulls (enumerated exactly when 2^groups <= this)
    n_permutations: int = 1000
    #: group-bootstrap resamples for CIs
    n_bootstrap: int = 1000
    #: group flips for the probe null (each one refits the grouped CV)
    probe_permutations: int = 100
    min_class_size: int = 10
    threshold: float = 1.0
    #: latents chosen on train for the primary (replication) test
    top_n: int = 10
    alpha: float = 0.05
    #: also report the row-level null on the eval split, labelled as a diagnostic (it assumes independent rows)
    row_level_diagnostic: bool = True


@dataclass
class ReconstructionSpec:
    enabled: bool = True
    #: token-level (all completion tokens, BOS excluded) or the pooled vectors
    token_level: bool = True
    lm_loss: bool = True
    max_texts: int = 64


@dataclass
class DValuesSpec:
    enabled: bool = True


@dataclass
class ControlSpec:
    """The positive control: a contrast known to be real, analysed with the same grouped machinery."""

    enabled: bool = True
    #: input-variation contrast (variant, reference variant): the same questions under two templates
    contrast: list[str] = field(default_factory=lambda: ["V3", "neutral"])
    #: fewest question groups for the control to be able to reach p < 0.05 (2/2^G <= 0.05 needs G >= 6)
    min_groups: int = 6
    #: with fewer groups in the dataset, use scripted completions of the built-in sandbagging questions (labelled)
    scripted_fallback: bool = True


@dataclass
class ProbesSpec:
    enabled: bool = True
    n_splits: int = 5
    lexical_chars: int = 30
    raw: bool = True
    control_sae: bool = True


@dataclass
class SteeringSpec:
    enabled: bool = True
    alphas: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    top_n: int = 5
    weighting: str = "d"
    max_new_tokens: int = 12
    temperature: float = 1.0
    n_prompts: int = 32
    judge: str = "keyword"
    #: control directions: this many random unit directions at the same scale
    n_random_directions: int = 8
    #: also sweep the raw mean-difference direction
    mean_difference: bool = True
    #: "residual_norm": alpha = 1 adds a vector as long as the mean residual; "projection_std": alpha = 1 adds one
    #: standard deviation of the residuals' projection on the direction (gentler where a few outlier dimensions
    #: dominate the residual norm, as in Gemma)
    scale: str = "residual_norm"


@dataclass
class StabilitySpec:
    enabled: bool = True
    seeds: list[int] = field(default_factory=lambda: [101, 107, 113])
    threshold: float = 0.3
    top_n: int = 5
    #: regenerate (new completions for the train prompts), bootstrap (whole groups resampled) or auto
    #: (regenerate when the whole model is loaded)
    mode: str = "auto"
    #: completions per prompt when regenerating (default: the train split's rows per prompt)
    samples_per_prompt: int | None = None
    max_new_tokens: int = 16


@dataclass
class TopLatentsSpec:
    enabled: bool = True
    n_latents: int = 5
    n_examples: int = 2


@dataclass
class PortabilitySpec:
    enabled: bool = True
    precisions: list[str] = field(default_factory=lambda: ["nf4", "int8", "fp16", "bf16", "fp32"])
    #: default: the model precision
    training_precision: str | None = None
    max_ev_drop: float = 0.20
    max_alive_shift: float = 0.50
    max_texts: int = 64


@dataclass
class SuiteConfig:
    name: str
    #: {"path": dir} | {"release": r, "sae_id": id} | {"fit": {"d_sae": ..., "k": ..., "steps": ...}} (demo)
    sae: dict[str, Any]
    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    output_dir: str = "runs/evals"
    pooling: str = "mean"
    #: what the SAE is applied to: tokens (latents pooled over the completion), pooled (the pooled residual) or
    #: auto (from the SAE's metadata; see evals.saeio.encode_unit)
    encode: str = "auto"
    seed: int = 0
    other_saes: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: StatsSpec = field(default_factory=StatsSpec)
    reconstruction: ReconstructionSpec = field(default_factory=ReconstructionSpec)
    dvalues: DValuesSpec = field(default_factory=DValuesSpec)
    control: ControlSpec = field(default_factory=ControlSpec)
    probes: ProbesSpec = field(default_factory=ProbesSpec)
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    stability: StabilitySpec = field(default_factory=StabilitySpec)
    top_latents: TopLatentsSpec = field(default_factory=TopLatentsSpec)
    portability: PortabilitySpec = field(default_factory=PortabilitySpec)
    source_file: str | None = None


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {sorted(names)}")
    kw = {}
    for k, v in data.items():
        sub = _SUBSPECS.get(names[k].type if isinstance(names[k].type, str) else "")
        kw[k] = _build(sub, v, f"{where}.{k}") if sub is not None else v
    return cls(**kw)


_SUBSPECS: dict[str, type] = {
    "ModelSpec": ModelSpec, "DatasetSpec": DatasetSpec, "StatsSpec": StatsSpec,
    "ReconstructionSpec": ReconstructionSpec, "DValuesSpec": DValuesSpec, "ControlSpec": ControlSpec,
    "ProbesSpec": ProbesSpec,
    "SteeringSpec": SteeringSpec, "StabilitySpec": StabilitySpec, "TopLatentsSpec": TopLatentsSpec,
    "PortabilitySpec": PortabilitySpec,
}


def load_suite(path_or_dict: str | Path | dict[str, Any], **overrides: Any) -> SuiteConfig:
    """Parse and validate a suite (no model or data loads). ``overrides`` replace top-level keys."""
    from gemma4_saelens_ext.evals.steering import check_scale_kind
    from gemma4_saelens_ext.precision import get_precision

    if isinstance(path_or_dict, dict):
        data, src = dict(path_or_dict), None
    else:
        from gemma4_saelens_ext.paths import resolve_project_file

        src = str(resolve_project_file(path_or_dict, "evals"))
        data = yaml.safe_load(Path(src).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    for req in ("name", "sae"):
        if req not in data:
            raise ValueError(f"suite {src or '<dict>'}: missing required key {req!r}")
    cfg: SuiteConfig = _build(SuiteConfig, data, "suite")
    cfg.source_file = src
    if not isinstance(cfg.sae, dict) or not ({"path", "release", "fit"} & set(cfg.sae)):
        raise ValueError("suite.sae needs `path`, `release` (+ `sae_id`) or `fit` (demo).")
    if cfg.pooling not in ("last", "mean", "max"):
        raise ValueError(f"suite.pooling must be last, mean or max, got {cfg.pooling!r}")
    get_precision(cfg.model.precision)
    check_scale_kind(cfg.steering.scale)
    for p in cfg.portability.precisions:
        get_precision(p)
    if cfg.dataset.path is None and not cfg.dataset.scripted_families:
        raise ValueError("suite.dataset needs `path` (a built dataset) or `scripted_families` (demo).")
    if cfg.probes.n_splits < 2:
        raise ValueError("probes.n_splits must be >= 2")
    if cfg.steering.weighting not in ("d", "sign", "uniform"):
        raise ValueError(f"steering.weighting must be d, sign or uniform, got {cfg.steering.weighting!r}")
    if cfg.stability.mode not in ("auto", "regenerate", "bootstrap"):
        raise ValueError(f"stability.mode must be auto, regenerate or bootstrap, got {cfg.stability.mode!r}")
    if cfg.encode not in ("auto", "tokens", "pooled"):
        raise ValueError(f"suite.encode must be auto, tokens or pooled, got {cfg.encode!r}")
    if cfg.steering.enabled and cfg.steering.n_random_directions < 1:
        raise ValueError("steering.n_random_directions must be >= 1 (the random-direction control)")
    if cfg.stats.n_permutations < 1000:
        logger.warning("stats.n_permutations=%d < 1000: p-values are coarse.", cfg.stats.n_permutations)
    return cfg


# ----------------------------------------------------------------------------------------------------- running


def _fit_demo_sae(x: np.ndarray, d_sae: int = 512, k: int = 16, steps: int = 300, lr: float = 1e-3, seed: int = 0,
                  hook_name: str | None = None) -> Any:
    """Demo only: a TopK SAE (SAELens class) fit on the given activations with a plain Adam/MSE loop, so the demo
    suite runs without a training run. Real SAEs come from ``gemma4-sae train`` or a release."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    xt = torch.as_tensor(x)
    sae = TopKSAE(TopKSAEConfig(d_in=x.shape[1], d_sae=d_sae, k=k))
    sae.cfg.metadata.hook_name = hook_name
    with torch.no_grad():
        w = torch.randn(d_sae, x.shape[1])
        w = w / w.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_dec.copy_(xt.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = xt[torch.randint(0, len(xt), (min(256, len(xt)),), generator=g)]
        loss = ((sae.decode(sae.encode(b)) - b) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sae.eval()
    return sae


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
    """Run every enabled family and write ``report.json``, ``report.md`` and plots; returns the report folder."""
    from gemma4_saelens_ext.evals import probes as P
    from gemma4_saelens_ext.evals import report as REP
    from gemma4_saelens_ext.evals.context import SuiteContext, labelled_split
    from gemma4_saelens_ext.evals.data import load_rows, scripted_rows
    from gemma4_saelens_ext.evals.families import FAMILIES, run_families
    from gemma4_saelens_ext.evals.saeio import check_before_loading, check_sae_matches, encode_unit, load_sae, sae_layer
    from gemma4_saelens_ext.models import load_model
    from gemma4_saelens_ext.versions import package_versions

    if not isinstance(cfg, SuiteConfig):
        cfg = load_suite(cfg)
    check_before_loading(cfg)  # layer and SAE widths against the model's config.json, before anything loads
    t0 = time.time()
    out = Path(output_dir or cfg.output_dir)
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
    train = labelled_split(ds.train_split, get(ds.train_split), max_rows=ds.max_rows_per_split, seed=cfg.seed,
                           warnings=warnings)
    evs = labelled_split(ds.eval_split, get(ds.eval_split), max_rows=ds.max_rows_per_split, seed=cfg.seed,
                         warnings=warnings)
    if cfg.probes.enabled:
        P.check_cv_labels(evs.y, cfg.probes.n_splits, what=f"probes on split {ds.eval_split!r}")
        if evs.n_groups < cfg.probes.n_splits:
            raise ValueError(f"probes on split {ds.eval_split!r}: {evs.n_groups} prompt groups but "
                             f"{cfg.probes.n_splits}-fold grouped CV needs >= {cfg.probes.n_splits}; use "
                             f"probes.n_splits={max(2, evs.n_groups)} or add prompts.")
    iv_rows: list[dict] = []
    if cfg.control.enabled and ds.input_variation_split:
        try:
            iv_rows = get(ds.input_variation_split)
        except ValueError as e:
            warnings.append(f"positive control skipped: {e}")
    report["dataset"]["sizes"] = {s.name: s.sizes() for s in (train, evs)}
    report["dataset"]["sizes"]["input_variation"] = {"rows": len(iv_rows)}
    report["dataset"]["groups_from"] = {s.name: s.group_source for s in (train, evs)}

    # ---- model + SAE (shape/layer checks before long work)
    sae = None if "fit" in cfg.sae else load_sae(cfg.sae)
    layer_spec = cfg.model.layer if cfg.model.layer is not None else (sae_layer(sae) if sae is not None else None)
    if layer_spec is None:
        raise ValueError("model.layer is not set and the SAE does not name a hook; set model.layer.")
    need_full = ((cfg.reconstruction.enabled and cfg.reconstruction.lm_loss) or cfg.steering.enabled
                 or (cfg.stability.enabled and cfg.stability.mode == "regenerate"))
    lm = load_model(cfg.model.source, cfg.model.precision, truncate_after_layer=None if need_full else layer_spec)
    layer = lm.resolve_layer(layer_spec)
    if sae is not None:
        check_sae_matches(sae, d_model=lm.d_model, layer=layer, lm=lm)
    others = {k: load_sae(v) for k, v in cfg.other_saes.items()}
    for k, o in others.items():
        check_sae_matches(o, d_model=lm.d_model, what=f"other SAE {k!r}")

    ctx = SuiteContext(cfg=cfg, lm=lm, layer=layer, sae=sae, encode=("tokens", ""), train=train, eval=evs,
                       others=others, iv_rows=iv_rows, warnings=warnings,
                       scenario_files=_scenario_files(cfg.dataset.path))
    t = time.time()
    train.acts, evs.acts = ctx.pooled(train.rows), ctx.pooled(evs.rows)
    if sae is None:
        fit = dict(cfg.sae["fit"])
        tok = ctx.tokens(train.rows) if fit.pop("token_level", False) else train.acts
        sae = ctx.sae = _fit_demo_sae(tok, seed=cfg.seed, hook_name=lm.hook_name(layer), **fit)
        report["sae"] = {"kind": "fit in-suite (demo)", **cfg.sae["fit"]}
    else:
        report["sae"] = {"kind": "loaded", **{k: str(v) for k, v in cfg.sae.items()}}
    ctx.encode = encode_unit(sae, cfg.sae, cfg.encode)
    train.feats, evs.feats = ctx.latents(train.rows, acts=train.acts), ctx.latents(evs.rows, acts=evs.acts)
    report["timings_s"]["activations"] = time.time() - t
    report["sae"].update(d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae), architecture=type(sae).__name__,
                         hook=sae_layer(sae), layer=layer, encode=ctx.encode[0], encode_reason=ctx.encode[1])
    from gemma4_saelens_ext.releases import check_encode_convention, loaded_from_release

    if "fit" not in cfg.sae or loaded_from_release(sae):
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
