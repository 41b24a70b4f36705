"""Eval suites: a YAML file -> typed config -> every enabled family -> report folder.

``python -m gemma4_saelens_ext.evals run evals/demo.yaml`` (or ``gemma4-sae eval run ...``, or
:func:`run_suite`). Everything cheap is validated first (YAML keys, SAE/model width, SAE layer vs activation
layer, split sizes, CV class counts), so a mistake fails in seconds, not after the model loads or generates.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gemma4_saelens_ext.evals import stats as S

logger = logging.getLogger(__name__)

__all__ = [
    "SuiteConfig", "ModelSpec", "DatasetSpec", "StatsSpec", "ReconstructionSpec", "DValuesSpec", "ProbesSpec",
    "SteeringSpec", "StabilitySpec", "TopLatentsSpec", "PortabilitySpec", "load_suite", "run_suite",
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
    max_rows_per_split: int | None = None


@dataclass
class StatsSpec:
    n_permutations: int = 1000
    n_bootstrap: int = 1000
    probe_permutations: int = 100
    min_class_size: int = 10
    threshold: float = 1.0
    top_n: int = 10
    alpha: float = 0.05


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
    #: input-variation contrasts: (positive variant, negative variant)
    contrasts: list[list[str]] = field(default_factory=lambda: [["V0", "neutral"], ["V3", "neutral"]])


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
    #: "residual_norm": alpha = 1 adds a vector as long as the mean residual; "projection_std": alpha = 1 adds one
    #: standard deviation of the residuals' projection on the direction (gentler where a few outlier dimensions
    #: dominate the residual norm, as in Gemma)
    scale: str = "residual_norm"


@dataclass
class StabilitySpec:
    enabled: bool = True
    seeds: list[int] = field(default_factory=lambda: [101, 107, 113])
    threshold: float = 0.3
    fraction: float = 0.8
    top_n: int = 5


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
    seed: int = 0
    other_saes: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: StatsSpec = field(default_factory=StatsSpec)
    reconstruction: ReconstructionSpec = field(default_factory=ReconstructionSpec)
    dvalues: DValuesSpec = field(default_factory=DValuesSpec)
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
    "ReconstructionSpec": ReconstructionSpec, "DValuesSpec": DValuesSpec, "ProbesSpec": ProbesSpec,
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
    if cfg.stats.n_permutations < 1000:
        logger.warning("stats.n_permutations=%d < 1000: p-values are coarse.", cfg.stats.n_permutations)
    return cfg


# ----------------------------------------------------------------------------------------------------- running


def _pooled(lm: Any, rows: list[dict], layer: int, cfg: SuiteConfig) -> np.ndarray:
    from gemma4_saelens_ext.source import activations

    a = activations(lm, [r["text"] for r in rows], layer, pooling=cfg.pooling,
                    completion_start=[int(r["completion_start"]) for r in rows], batch_size=cfg.model.batch_size,
                    max_length=cfg.model.max_length)
    return a.numpy().astype(np.float32)


def _token_level(lm: Any, rows: list[dict], layer: int, cfg: SuiteConfig) -> np.ndarray:
    """All tokens of the texts except BOS (position 0), concatenated."""
    from gemma4_saelens_ext.source import activations

    a = activations(lm, [r["text"] for r in rows], layer, pooling="none", batch_size=cfg.model.batch_size,
                    max_length=cfg.model.max_length)
    return np.concatenate([t[1:].numpy() for t in a]).astype(np.float32)


def _fit_demo_sae(x: np.ndarray, d_sae: int = 512, k: int = 16, steps: int = 300, lr: float = 1e-3, seed: int = 0,
                  hook_name: str | None = None) -> Any:
    """Demo only: a TopK SAE (SAELens class) fit on the given activations with a plain Adam/MSE loop, so the demo
    runs without a training run. Real SAEs come from ``gemma4-sae train`` or a release."""
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


def _labelled(rows: list[dict]) -> tuple[list[dict], np.ndarray]:
    keep, y = S.encode_labels([r.get("label") for r in rows])
    return [r for r, k in zip(rows, keep) if k], y


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("gemma4-saelens-ext", "sae-lens", "torch", "transformers", "bitsandbytes", "scikit-learn", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_suite(cfg: SuiteConfig | str | Path | dict[str, Any], *, output_dir: str | None = None) -> Path:
    """Run every enabled family and write ``report.json``, ``report.md`` and plots; returns the report folder."""
    from gemma4_saelens_ext.evals import probes as P
    from gemma4_saelens_ext.evals import report as REP
    from gemma4_saelens_ext.evals.data import load_rows, scripted_rows
    from gemma4_saelens_ext.evals.portability import PortabilityRule, run_portability
    from gemma4_saelens_ext.evals.reconstruction import lm_loss_with_sae, reconstruction_metrics
    from gemma4_saelens_ext.evals.saeio import check_sae_matches, decoder_rows, encode_decode, load_sae, random_sae_like, sae_layer
    from gemma4_saelens_ext.evals.stability import stability_report
    from gemma4_saelens_ext.evals.steering import (
        cosine,
        decoded_direction,
        make_judge,
        mean_difference_direction,
        SCALE_DEFINITIONS,
        run_steering,
        steering_scale,
    )
    from gemma4_saelens_ext.evals.top_latents import top_examples
    from gemma4_saelens_ext.models import load_model

    if not isinstance(cfg, SuiteConfig):
        cfg = load_suite(cfg)
    t0 = time.time()
    out = Path(output_dir or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    st = cfg.stats
    report: dict[str, Any] = {"suite": cfg.name, "settings": dataclasses.asdict(cfg), "versions": _versions(),
                              "warnings": [], "timings_s": {}}

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
    splits: dict[str, tuple[list[dict], np.ndarray]] = {}
    for name in (cfg.dataset.train_split, cfg.dataset.eval_split):
        rows = get(name)
        if cfg.dataset.max_rows_per_split:
            rows = rows[: cfg.dataset.max_rows_per_split]
        rows, y = _labelled(rows)
        S.check_binary_labels(y, what=f"split {name!r}")
        splits[name] = (rows, y)
    tr_rows, y_tr = splits[cfg.dataset.train_split]
    ev_rows, y_ev = splits[cfg.dataset.eval_split]
    if cfg.probes.enabled:
        P.check_cv_labels(y_ev, cfg.probes.n_splits, what=f"probes on split {cfg.dataset.eval_split!r}")
    iv_rows: list[dict] = []
    if cfg.dvalues.enabled and cfg.dataset.input_variation_split:
        try:
            iv_rows = get(cfg.dataset.input_variation_split)
        except ValueError as e:
            report["warnings"].append(f"input-variation diagnostic skipped: {e}")
    report["dataset"]["sizes"] = {n: {"honest": int(y.sum()), "deceptive": int((1 - y).sum())} for n, (_, y) in splits.items()}
    report["dataset"]["sizes"]["input_variation"] = len(iv_rows)

    # ---- model + SAE (shape/layer checks before long work)
    sae = None
    if "fit" not in cfg.sae:
        sae = load_sae(cfg.sae)
    layer_spec = cfg.model.layer if cfg.model.layer is not None else (sae_layer(sae) if sae is not None else None)
    if layer_spec is None:
        raise ValueError("model.layer is not set and the SAE does not name a hook; set model.layer.")
    need_full = cfg.reconstruction.enabled and cfg.reconstruction.lm_loss
    # LM loss and steering need the whole model; otherwise stop after the hooked layer
    trunc = None if (need_full or cfg.steering.enabled) else layer_spec
    lm = load_model(cfg.model.source, cfg.model.precision, truncate_after_layer=trunc)
    layer = lm.resolve_layer(layer_spec)
    if sae is not None:
        check_sae_matches(sae, d_model=lm.d_model, layer=layer, lm=lm)
    others = {k: load_sae(v) for k, v in cfg.other_saes.items()}
    for k, o in others.items():
        check_sae_matches(o, d_model=lm.d_model, what=f"other SAE {k!r}")

    t = time.time()
    acts = {n: _pooled(lm, rows, layer, cfg) for n, (rows, _) in splits.items()}
    report["timings_s"]["activations"] = time.time() - t
    if sae is None:
        fit = dict(cfg.sae["fit"])
        tok = _token_level(lm, tr_rows, layer, cfg) if fit.pop("token_level", False) else acts[cfg.dataset.train_split]
        sae = _fit_demo_sae(tok, seed=cfg.seed, hook_name=lm.hook_name(layer), **fit)
        report["sae"] = {"kind": "fit in-suite (demo)", **cfg.sae["fit"]}
    else:
        report["sae"] = {"kind": "loaded", **{k: str(v) for k, v in cfg.sae.items()}}
    report["sae"].update(d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae), architecture=type(sae).__name__,
                         hook=sae_layer(sae), layer=layer)
    feats = {n: encode_decode(sae, a)[0] for n, a in acts.items()}
    report["sample_sizes"] = report["dataset"]["sizes"]

    # ---- reconstruction
    if cfg.reconstruction.enabled:
        t = time.time()
        rows = ev_rows[: cfg.reconstruction.max_texts]
        x = _token_level(lm, rows, layer, cfg) if cfg.reconstruction.token_level else acts[cfg.dataset.eval_split]
        f, xh = encode_decode(sae, x)
        rec = reconstruction_metrics(x, xh, f)
        rec["unit"] = "tokens (BOS excluded)" if cfg.reconstruction.token_level else f"{cfg.pooling}-pooled texts"
        if cfg.reconstruction.lm_loss:
            rec["lm_loss"] = lm_loss_with_sae(lm, sae, [r["text"] for r in rows], layer, max_length=cfg.model.max_length)
        report["reconstruction"] = rec
        report["timings_s"]["reconstruction"] = time.time() - t

    # ---- d-values
    dres: dict[str, S.DValueResult] = {}
    if cfg.dvalues.enabled:
        t = time.time()
        for n, (_, y) in splits.items():
            dres[n] = S.dvalue_analysis(feats[n], y, split=n, threshold=st.threshold, top_n=st.top_n,
                                        n_permutations=st.n_permutations, n_bootstrap=st.n_bootstrap,
                                        min_class_size=st.min_class_size, seed=cfg.seed, alpha=st.alpha)
        if iv_rows:
            iv_acts = _pooled(lm, iv_rows, layer, cfg)
            iv_feats = encode_decode(sae, iv_acts)[0]
            variants = np.array([str(r.get("variant")) for r in iv_rows])
            for pos, neg in cfg.dvalues.contrasts:
                m = (variants == pos) | (variants == neg)
                yy = (variants[m] == pos).astype(int)
                name = f"input {neg}-vs-{pos}"
                if yy.sum() < 2 or (1 - yy).sum() < 2:
                    report["warnings"].append(f"{name}: too few rows ({int(yy.sum())}/{int((1 - yy).sum())}); skipped")
                    continue
                dres[name] = S.dvalue_analysis(iv_feats[m], yy, split=name, threshold=st.threshold, top_n=st.top_n,
                                               n_permutations=st.n_permutations, n_bootstrap=st.n_bootstrap,
                                               min_class_size=st.min_class_size, seed=cfg.seed, alpha=st.alpha)
        report["dvalues"] = {k: v.to_dict() for k, v in dres.items()}
        for v in dres.values():
            report["warnings"] += v.warnings
        report["timings_s"]["dvalues"] = time.time() - t
    d_train = dres[cfg.dataset.train_split].d if cfg.dataset.train_split in dres else S.cohens_d(feats[cfg.dataset.train_split], y_tr)

    # ---- probes (eval split)
    if cfg.probes.enabled:
        t = time.time()
        kw = dict(n_splits=cfg.probes.n_splits, n_permutations=st.probe_permutations, n_bootstrap=st.n_bootstrap,
                  seed=cfg.seed, min_class_size=st.min_class_size, alpha=st.alpha)
        xe = acts[cfg.dataset.eval_split]
        reps: dict[str, Any] = {}
        if cfg.probes.raw:
            reps["raw"] = xe
        reps[f"{cfg.name} SAE"] = feats[cfg.dataset.eval_split]
        for k, o in others.items():
            reps[k] = encode_decode(o, xe)[0]
        if cfg.probes.control_sae:
            reps["control SAE (random, same shape)"] = encode_decode(random_sae_like(sae, seed=cfg.seed), xe)[0]
        res = [P.cross_validated_probe(v, y_ev, name=k, **kw) for k, v in reps.items()]
        lex_texts = P.first_chars([r["completion"] for r in ev_rows], cfg.probes.lexical_chars)
        res.append(P.cross_validated_probe(lex_texts, y_ev, name=f"lexical (first {cfg.probes.lexical_chars} chars, BoW)",
                                           estimator=P.lexical_probe_estimator(cfg.seed), **kw))
        sae_r, lex_r = res[1 if cfg.probes.raw else 0], res[-1]
        lo = lex_r.balanced_accuracy_ci[0]
        note = ("the SAE probe does not beat the lexical baseline: the SAE adds nothing beyond the completion's words here"
                if sae_r.balanced_accuracy <= max(lex_r.balanced_accuracy, lo) else
                "the SAE probe beats the lexical baseline's point estimate (compare their CIs)")
        report["probes"] = {"split": cfg.dataset.eval_split, "results": [r.to_dict() for r in res], "lexical_comparison": note}
        for r in res:
            report["warnings"] += r.warnings
        report["timings_s"]["probes"] = time.time() - t

    # ---- steering
    if cfg.steering.enabled:
        t = time.time()
        order = np.argsort(-np.abs(d_train))[: cfg.steering.top_n]
        u = decoded_direction(decoder_rows(sae, list(order)), d_train[order], weighting=cfg.steering.weighting)
        md = mean_difference_direction(acts[cfg.dataset.train_split], y_tr)
        scale = steering_scale(acts[cfg.dataset.eval_split], u, cfg.steering.scale)
        seen, prompts = set(), []
        for r in ev_rows:
            if r["prompt_id"] not in seen:
                seen.add(r["prompt_id"])
                prompts.append(r)
        prompts = prompts[: cfg.steering.n_prompts]
        sres = run_steering(lm, layer, u, prompts, make_judge(cfg.steering.judge), scale=scale,
                            alphas=cfg.steering.alphas, max_new_tokens=cfg.steering.max_new_tokens,
                            temperature=cfg.steering.temperature, seed=cfg.seed, batch_size=cfg.model.batch_size,
                            n_bootstrap=st.n_bootstrap)
        sres.update({"top_latents": [int(i) for i in order], "weighting": cfg.steering.weighting,
                     "cosine_decoded_vs_mean_diff": cosine(u, md), "scale_definition":
                     f"{SCALE_DEFINITIONS[cfg.steering.scale]} (layer {layer}, {cfg.pooling} pooling, eval split)"})
        report["steering"] = sres
        report["timings_s"]["steering"] = time.time() - t

    # ---- stability
    if cfg.stability.enabled:
        seed_index = {}
        seeds_col = np.array([r.get("sample_seed") for r in tr_rows])
        for s in cfg.stability.seeds:
            idx = np.flatnonzero(seeds_col == s)
            if len(idx) and 0 < y_tr[idx].sum() < len(idx) - 1:
                seed_index[s] = idx
        report["stability"] = stability_report(feats[cfg.dataset.train_split], y_tr, seeds=cfg.stability.seeds,
                                               threshold=cfg.stability.threshold, top_n=cfg.stability.top_n,
                                               fraction=cfg.stability.fraction, seed_index=seed_index)

    # ---- top latents
    if cfg.top_latents.enabled:
        order = np.argsort(-np.abs(d_train))[: cfg.top_latents.n_latents]
        report["top_latents"] = {"split": cfg.dataset.train_split, "latents": top_examples(
            feats[cfg.dataset.train_split], [r["completion"] for r in tr_rows], y_tr, list(order), d_train[order],
            n_examples=cfg.top_latents.n_examples)}

    # ---- portability
    if cfg.portability.enabled:
        t = time.time()
        tp = cfg.portability.training_precision or cfg.model.precision
        rows = ev_rows[: cfg.portability.max_texts]
        cached = {}
        if cfg.model.precision == tp and cfg.reconstruction.token_level:
            cached[tp] = _token_level(lm, rows, layer, cfg)
        del lm
        import gc

        gc.collect()
        report["portability"] = run_portability(
            sae, [r["text"] for r in rows], model_source=cfg.model.source, layer=layer,
            precisions=cfg.portability.precisions, training_precision=tp, pooling="none", rule=PortabilityRule(
                cfg.portability.max_ev_drop, cfg.portability.max_alive_shift), batch_size=cfg.model.batch_size,
            cached=cached, drop_bos=True)
        report["timings_s"]["portability"] = time.time() - t

    report["timings_s"]["total"] = time.time() - t0
    report["null_d_max"] = {k: v.null_d_max.tolist() for k, v in dres.items() if v.null_d_max is not None}
    report["d_values"] = {k: v.d.tolist() for k, v in dres.items() if v.d is not None}
    REP.write_report(report, out)
    logger.info("report written to %s (%.0f s)", out, report["timings_s"]["total"])
    return out
