"""Eval families: each is ``run(ctx) -> section of the report`` and is registered by name in :data:`FAMILIES`.

The suite only orchestrates (config, data, model, SAE, then these in order); every family reads the shared
:class:`~gemma4_saelens_ext.evals.context.SuiteContext` and uses the prompt group as its unit of inference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.context import SuiteContext, make_split
from gemma4_saelens_ext.evals.dvalues import dvalue_analysis, replication_analysis

logger = logging.getLogger(__name__)

__all__ = ["FAMILIES", "family"]

FAMILIES: dict[str, Callable[[SuiteContext], dict[str, Any]]] = {}


def family(name: str) -> Callable[[Callable[[SuiteContext], dict[str, Any]]], Callable[[SuiteContext], dict[str, Any]]]:
    def deco(fn: Callable[[SuiteContext], dict[str, Any]]) -> Callable[[SuiteContext], dict[str, Any]]:
        FAMILIES[name] = fn
        return fn

    return deco


def _stats_kw(ctx: SuiteContext) -> dict[str, Any]:
    st = ctx.cfg.stats
    return dict(n_permutations=st.n_permutations, n_bootstrap=st.n_bootstrap, seed=ctx.cfg.seed, alpha=st.alpha)


@family("reconstruction")
def reconstruction(ctx: SuiteContext) -> dict[str, Any]:
    """One row per SAE (EV, MSE, L0, alive, SAEBench's core metrics, LM loss and KL); the section's top level is
    the primary SAE's row (as with one SAE). Token-encoded SAEs are measured on every token of a sample of eval
    texts (BOS excluded), pooled-encoded SAEs on the eval split's pooled vectors (what they encode)."""
    from gemma4_saelens_ext.evals.reconstruction import (
        core_metrics, lm_loss_with_saes, reconstruction_metrics, weight_cosines,
    )
    from gemma4_saelens_ext.evals.saeio import encode_decode

    rc, ev = ctx.cfg.reconstruction, ctx.eval
    idx = ev.sample_index(rc.max_texts, ctx.cfg.seed)
    x_tok = ev.token_matrix(idx) if rc.token_level else None
    rows = []
    for s in ctx.saes:
        tok = rc.token_level and s.unit == "tokens"
        x = x_tok if tok else ev.acts
        f, xh = encode_decode(s.sae, x)
        rec = {**s.row(), **reconstruction_metrics(x, xh, f), "core": core_metrics(x, xh, f),
               "unit": "tokens (BOS excluded)" if tok else f"{ctx.cfg.pooling}-pooled texts", "split": ev.name,
               "n_texts": len(idx)}  # the texts of the token sample and of the LM loss
        rec["core"].update(weight_cosines(s.sae))
        rows.append(rec)
    if rc.lm_loss:
        lm = lm_loss_with_saes(ctx.lm, {s.name: s.sae for s in ctx.saes}, [ev.rows[i]["text"] for i in idx],
                               ctx.layer, max_length=ctx.cfg.model.max_length)
        for rec in rows:
            rec["lm_loss"] = lm[rec["name"]]
    prim = next(r for r in rows if r["primary"])
    return {**{k: v for k, v in prim.items() if k not in ("name", "primary")}, "saes": rows}


@family("dvalues")
def dvalues(ctx: SuiteContext) -> dict[str, Any]:
    """Per split: d_max and the count test against the group-flip null. Primary: the top latents chosen on train,
    measured on eval. Beside it, the row-level null on eval as a labelled diagnostic (not a test)."""
    st = ctx.cfg.stats
    kw = dict(threshold=st.threshold, top_n=st.top_n, min_class_size=st.min_class_size, **_stats_kw(ctx))
    out: dict[str, Any] = {"splits": {}}
    res = {}
    for sp in (ctx.train, ctx.eval):
        res[sp.name] = dvalue_analysis(sp.feats, sp.y, groups=sp.groups, layout=sp.layout(), split=sp.name, **kw)
        out["splits"][sp.name] = res[sp.name].to_dict()
        ctx.warnings.extend(res[sp.name].warnings)
        ctx.pvalues[f"d_max ({sp.name}, selected and measured on the same rows)"] = res[sp.name].p_d_max
        ctx.pvalues[f"count |d|>{st.threshold:g} ({sp.name})"] = res[sp.name].p_n_above
    ctx.d_train = res[ctx.train.name].d
    rep = replication_analysis(ctx.eval.feats, ctx.eval.y, ctx.d_train, groups=ctx.eval.groups,
                               layout=ctx.eval.layout(), train_groups=ctx.train.groups, top_n=st.top_n,
                               split=ctx.eval.name, selected_on=ctx.train.name, **_stats_kw(ctx))
    ctx.warnings.extend(rep.warnings)
    out["primary"] = rep.to_dict()
    if st.row_level_diagnostic:
        diag = dvalue_analysis(ctx.eval.feats, ctx.eval.y, groups=None, split=ctx.eval.name, **kw)
        out["row_level_diagnostic"] = {
            "note": "rows treated as independent (label permutations over completions); on clustered pools this "
                    "certifies prompt identity as an effect. A diagnostic, not a test.",
            "p_d_max": diag.p_d_max, "p_n_above": diag.p_n_above, "null_d_max_q95": diag.null_d_max_q95}
    out["_d"] = {k: v.d for k, v in res.items()}
    out["_null_d_max"] = {k: v.null_d_max for k, v in res.items()}
    out["by_sae"] = [_dvalue_row(ctx, s, res, rep, kw) for s in ctx.saes]
    return out


def _dvalue_row(ctx: SuiteContext, s: Any, res: dict[str, Any], rep: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """One SAE's row of the d-value summary: per split d_max and the count test, and the replication test (its top
    latents on train, measured on eval). The primary SAE's numbers are the section's own; the others' p-values join
    the Holm family."""
    st, row = ctx.cfg.stats, {**s.row(), "splits": {}}
    if not s.primary:
        res = {sp.name: dvalue_analysis(sp.latents[s.name], sp.y, groups=sp.groups, layout=sp.layout(), split=sp.name,
                                        **kw) for sp in (ctx.train, ctx.eval)}
        rep = replication_analysis(ctx.eval.latents[s.name], ctx.eval.y, res[ctx.train.name].d, groups=ctx.eval.groups,
                                   layout=ctx.eval.layout(), train_groups=ctx.train.groups, top_n=st.top_n,
                                   split=ctx.eval.name, selected_on=ctx.train.name, **_stats_kw(ctx))
        for k, r in res.items():
            ctx.pvalues[f"d_max ({k}, selected and measured on the same rows) [{s.name}]"] = r.p_d_max
            ctx.pvalues[f"count |d|>{st.threshold:g} ({k}) [{s.name}]"] = r.p_n_above
        ctx.pvalues[f"replicated d_max [{s.name}]"] = rep.p
    for k, r in res.items():
        row["splits"][k] = {"d_max": r.d_max, "p_d_max": r.p_d_max, "n_above": r.n_above, "p_n_above": r.p_n_above,
                            "n_groups": r.n_groups}
    row["replicated"] = {"d_max": rep.replicated_d_max, "p": rep.p, "verdict": rep.verdict}
    return row


@family("control")
def control(ctx: SuiteContext) -> dict[str, Any]:
    """Positive control: a contrast known to be real (the same questions under two templates), analysed with the
    same grouped machinery on raw activations and through the SAE. When even it is not detected, the run lacks
    the power to find anything, and the report says so."""
    pos, neg = ctx.cfg.control.contrast
    rows = [r for r in ctx.iv_rows if str(r.get("variant")) in (pos, neg)]
    source = "the dataset's input-variation split"
    n_q = len({r.get("group") for r in rows})
    if n_q < ctx.cfg.control.min_groups and ctx.cfg.control.scripted_fallback:
        from gemma4_saelens_ext.evals.data import scripted_rows

        rows = [r for r in scripted_rows(["sandbagging_qa"], seed=ctx.cfg.seed)["input_variation"]
                if str(r.get("variant")) in (pos, neg)]
        source = (f"scripted completions of the built-in sandbagging_qa questions (the dataset's input-variation split "
                  f"has {n_q} question groups, fewer than control.min_groups={ctx.cfg.control.min_groups})")
    yy = np.array([int(str(r.get("variant")) == pos) for r in rows])
    if min(int(yy.sum()), int((1 - yy).sum())) < 2:
        msg = (f"positive control {pos}-vs-{neg}: too few rows ({int(yy.sum())}/{int((1 - yy).sum())}); the "
               "report cannot tell 'no effect' from 'no power'")
        ctx.warnings.append(msg)
        return {"contrast": [pos, neg], "skipped": msg}
    sp = ctx.fill(make_split(f"input {pos}-vs-{neg}", rows, yy, warnings=ctx.warnings))  # one pass, every SAE
    st = ctx.cfg.stats
    kw = dict(threshold=st.threshold, top_n=st.top_n, min_class_size=2, **_stats_kw(ctx))
    raw = dvalue_analysis(sp.acts, sp.y, groups=sp.groups, layout=sp.layout(), split=f"{sp.name} (raw activations)",
                          **kw)
    by = {s.name: dvalue_analysis(sp.latents[s.name], sp.y, groups=sp.groups, layout=sp.layout(),
                                  split=f"{sp.name} ({s.name} latents)", **kw) for s in ctx.saes}
    sae = by[ctx.primary.name]
    detected = raw.p_d_max <= st.alpha
    verdict = (f"positive control detected on raw activations (p = {raw.p_d_max:.3g}, {raw.n_groups} groups); through "
               f"the SAE p = {sae.p_d_max:.3g}" if detected else
               f"positive control NOT detected (raw p = {raw.p_d_max:.3g}, {raw.n_groups} groups): this run lacks the "
               "power to find anything, so a non-significant behavior result here means 'no power', not 'no effect'")
    return {"contrast": [pos, neg], "source": source, "raw": raw.to_dict(), "sae": sae.to_dict(), "detected": bool(detected),
            "sae_detected": bool(sae.p_d_max <= st.alpha), "verdict": verdict,
            "by_sae": [{**s.row(), "d_max": by[s.name].d_max, "p_d_max": by[s.name].p_d_max,
                        "n_groups": by[s.name].n_groups, "detected": bool(by[s.name].p_d_max <= st.alpha)}
                       for s in ctx.saes]}


@family("probes")
def probes(ctx: SuiteContext) -> dict[str, Any]:
    from gemma4_saelens_ext.evals import probes as P
    from gemma4_saelens_ext.evals.context import CONTROL_SAE

    cfg, st, ev = ctx.cfg, ctx.cfg.stats, ctx.eval
    kw = dict(groups=ev.groups, layout=ev.layout(), n_splits=cfg.probes.n_splits, n_permutations=st.probe_permutations,
              n_bootstrap=st.n_bootstrap, seed=cfg.seed, min_class_size=st.min_class_size, alpha=st.alpha)
    reps: dict[str, Any] = {}
    if cfg.probes.raw:
        reps["raw"] = ev.acts
    for s in sorted(ctx.saes, key=lambda s: not s.primary):  # every SAE's latents, from the eval split's one pass
        reps[s.name] = ev.latents[s.name]
    if cfg.probes.control_sae:
        reps[CONTROL_SAE] = ev.latents[CONTROL_SAE]
    res = [P.cross_validated_probe(v, ev.y, name=k, **kw) for k, v in reps.items()]
    lex = P.first_chars([r["completion"] for r in ev.rows], cfg.probes.lexical_chars)
    res.append(P.cross_validated_probe(lex, ev.y, name=f"lexical (first {cfg.probes.lexical_chars} chars, BoW)",
                                       estimator=P.lexical_probe_estimator(cfg.seed), **kw))
    sae_r, lex_r = res[1 if cfg.probes.raw else 0], res[-1]
    note = ("the SAE probe does not beat the lexical baseline: the SAE adds nothing beyond the completion's words here"
            if sae_r.balanced_accuracy <= max(lex_r.balanced_accuracy, lex_r.balanced_accuracy_ci[0]) else
            "the SAE probe beats the lexical baseline's point estimate (compare their CIs)")
    for r in res:
        ctx.warnings.extend(r.warnings)
        ctx.pvalues[f"probe balanced accuracy: {r.name}"] = r.p_balanced_accuracy
    rows = {s.name: s.row() for s in ctx.saes}
    if cfg.probes.control_sae:
        rows[CONTROL_SAE] = {**rows[ctx.primary.name], "name": CONTROL_SAE, "primary": False}
    return {"split": ev.name, "results": [{**r.to_dict(), "sae": rows.get(r.name)} for r in res],
            "lexical_comparison": note}


@family("detection")
def detection(ctx: SuiteContext) -> dict[str, Any]:
    from gemma4_saelens_ext.evals.detection_family import detection_from_context

    return detection_from_context(ctx)


@family("steering")
def steering(ctx: SuiteContext) -> dict[str, Any]:
    from gemma4_saelens_ext.evals import steering as SG
    from gemma4_saelens_ext.evals.saeio import decoder_rows

    cfg, sc = ctx.cfg, ctx.cfg.steering
    order = np.asarray(S.d_summary(ctx.d_train, top_n=sc.top_n)["top_latents"])  # by |d|, separating first
    u = SG.decoded_direction(decoder_rows(ctx.sae, list(order)), np.nan_to_num(ctx.d_train[order], posinf=1e3,
                             neginf=-1e3), weighting=sc.weighting)
    md = SG.mean_difference_direction(ctx.train.acts, ctx.train.y)
    scale = SG.steering_scale(ctx.eval.acts, u, sc.scale)
    directions = {"SAE": u}
    if sc.mean_difference:
        directions["mean difference (raw)"] = md / (np.linalg.norm(md) or 1.0)
    for i, v in enumerate(SG.random_directions(len(u), sc.n_random_directions, cfg.seed + 17)):
        directions[f"random {i}"] = v
    judged = ctx.eval.subset(SG.judged_rows(ctx.eval.rows))  # the judge labels role-play and quiz prompts only
    if not judged.rows:
        return {"skipped": f"no eval prompt of a judged kind ({', '.join(SG.JUDGED_KINDS)}) to steer"}
    prompts = judged.subset(np.unique([r["prompt_id"] for r in judged.rows], return_index=True)[1])
    prompts = prompts.sample_groups(sc.n_prompts, cfg.seed)
    sweeps = SG.run_steering(ctx.lm, ctx.layer, directions, prompts.rows, ctx.judge(sc.judge), scale=scale,
                             alphas=sc.alphas, max_new_tokens=sc.max_new_tokens, temperature=sc.temperature,
                             seed=cfg.seed, batch_size=cfg.model.batch_size)
    out = SG.steering_analysis(sc.alphas, {k: v["labels"] for k, v in sweeps.items()}, target="SAE",
                               groups=prompts.groups, n_bootstrap=cfg.stats.n_bootstrap, seed=cfg.seed,
                               alpha_level=cfg.stats.alpha)
    ctx.warnings.extend(out["warnings"])
    ctx.pvalues["steering slope (SAE direction)"] = out["slope"]["p"]
    ctx.pvalues["steering rank among random directions (SAE direction)"] = out["random_rank_p"]
    out.update({
        "examples": sweeps["SAE"]["examples"], "top_latents": [int(i) for i in order], "weighting": sc.weighting,
        "scale": float(scale),
        "scale_definition": f"{SG.SCALE_DEFINITIONS[sc.scale]} (layer {ctx.layer}, {cfg.pooling} pooling, eval split)",
        "cosine_decoded_vs_mean_diff": SG.cosine(u, md), "judge": sc.judge, "max_new_tokens": sc.max_new_tokens,
        "temperature": sc.temperature, "n_groups": prompts.n_groups,
    })
    return out


@family("stability")
def stability(ctx: SuiteContext) -> dict[str, Any]:
    from gemma4_saelens_ext.evals import stability as ST
    from gemma4_saelens_ext.evals import steering as SG
    from gemma4_saelens_ext.evals.context import labelled_split

    sc = ctx.cfg.stability
    mode = sc.mode
    if mode == "auto":
        mode = "regenerate" if ctx.can_generate() else "bootstrap"
    tr = ctx.train
    if mode == "regenerate" and len(SG.judged_rows(tr.rows)) < len(tr.rows):
        ctx.warnings.append("stability: the train split holds rows the behavior judges cannot relabel (kinds other "
                            f"than {', '.join(SG.JUDGED_KINDS)}); resampled whole groups (bootstrap) instead")
        mode = "bootstrap"
    if mode == "bootstrap":
        resamples = ST.group_bootstrap_resamples(tr.feats, tr.y, tr.groups, sc.seeds, clusters=tr.clusters)
    else:
        judge = ctx.judge(ctx.cfg.steering.judge)
        per_prompt = sc.samples_per_prompt or max(2, round(len(ctx.train.rows) / max(1, len({r["prompt_id"] for r in ctx.train.rows}))))
        resamples = []
        for s in sc.seeds:
            rows = ST.regenerate_rows(ctx.lm, ctx.train.rows, s, judge, samples_per_prompt=per_prompt,
                                      max_new_tokens=sc.max_new_tokens, temperature=ctx.cfg.steering.temperature,
                                      batch_size=ctx.cfg.model.batch_size)
            try:
                sp = labelled_split(f"regenerated seed {s}", rows)
            except ValueError as e:
                ctx.warnings.append(f"stability seed {s}: {e}")
                resamples.append(ST.Resample(s, "regenerated (pool too small)", np.zeros((0, 1)), np.zeros(0), 0))
                continue
            resamples.append(ST.Resample(s, f"regenerated ({per_prompt} samples per prompt, new text)",
                                         ctx.latents(sp.rows, sp.name), sp.y, sp.n_groups, sp.groups))
    return ST.stability_report(tr.feats, tr.y, tr.groups, resamples, top_n=sc.top_n, threshold=sc.threshold,
                               n_null=ctx.cfg.stats.n_permutations, seed=ctx.cfg.seed, alpha=ctx.cfg.stats.alpha,
                               clusters=tr.clusters)


@family("top_latents")
def top_latents(ctx: SuiteContext) -> dict[str, Any]:
    from gemma4_saelens_ext.evals.top_latents import top_examples

    d = ctx.d_train
    order = np.asarray(S.d_summary(d, top_n=ctx.cfg.top_latents.n_latents)["top_latents"])
    return {"split": ctx.train.name, "latents": top_examples(
        ctx.train.feats, [r["completion"] for r in ctx.train.rows], ctx.train.y, list(order), d[order],
        n_examples=ctx.cfg.top_latents.n_examples)}


@family("portability")
def portability(ctx: SuiteContext) -> dict[str, Any]:
    import gc

    from gemma4_saelens_ext.evals.portability import PortabilityRule, run_portability

    cfg, pc = ctx.cfg, ctx.cfg.portability
    tp = pc.training_precision or cfg.model.precision
    idx = ctx.eval.sample_index(pc.max_texts, cfg.seed)
    rows = [ctx.eval.rows[i] for i in idx]
    cached = {tp: ctx.eval.token_matrix(idx)} if cfg.model.precision == tp else {}  # from the eval split's pass
    ctx.lm = None  # the other precisions load their own copy; free this one first
    gc.collect()
    return run_portability(
        ctx.sae, [r["text"] for r in rows], model_source=cfg.model.source, layer=ctx.layer,
        precisions=pc.precisions, training_precision=tp, pooling="none",
        rule=PortabilityRule(pc.max_ev_drop, pc.max_alive_shift), batch_size=cfg.model.batch_size, cached=cached,
        drop_bos=True)


def run_families(ctx: SuiteContext, names: list[str], timings: dict[str, float]) -> dict[str, Any]:
    """Run the enabled families in registry order (portability last: it frees the model)."""
    from tqdm.auto import tqdm

    out: dict[str, Any] = {}
    todo = [n for n in FAMILIES if n in names]
    bar = tqdm(todo, desc="eval families", unit="family")
    for name in bar:
        bar.set_postfix_str(name)
        t = time.time()
        logger.info("eval family %s", name)
        out[name] = FAMILIES[name](ctx)
        timings[name] = time.time() - t
    return out

