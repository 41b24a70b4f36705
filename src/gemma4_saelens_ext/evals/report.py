"""Report writer: ``report.json`` (every number, sample sizes, settings, versions), ``report.md`` (tables in the
seed card's style, each behavior number beside its null, CI, n and a verdict) and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import report_saes as RS
from gemma4_saelens_ext.evals.report_saes import fmt as _f
from gemma4_saelens_ext.io import atomic_write, atomic_write_json, to_jsonable

logger = logging.getLogger(__name__)

__all__ = ["write_report", "render_markdown", "make_plots"]


def _ci(c: Any, nd: int = 3) -> str:
    return f"[{_f(c[0], nd)}, {_f(c[1], nd)}]" if c else "n/a"


def _sae_lines(r: dict[str, Any]) -> list[str]:
    sae = r.get("sae", {})
    L = [f"SAE{' (primary)' if len(r.get('saes') or []) > 1 else ''}: {sae.get('name', '')} {sae.get('architecture')} "
         f"d_in={sae.get('d_in')} d_sae={sae.get('d_sae')}, hook {sae.get('hook')} (layer {sae.get('layer')}); "
         f"{sae.get('kind')}.",
         f"Encoding: {sae.get('encode')} ({sae.get('encode_reason')}); {r['settings']['pooling']} pooling over the "
         "completion."]
    ec = sae.get("encode_convention")
    if ec:
        L.append(f"Encode convention check: {ec.get('summary')}")
    L.append(f"Model: {r['settings']['model']['source']} at {r['settings']['model']['precision']}; dataset: "
             f"{r['dataset'].get('kind')}.")
    return L + [""]


def _sizes(r: dict[str, Any]) -> list[str]:
    sizes = r.get("dataset", {}).get("sizes", {})
    groups_from = r.get("dataset", {}).get("groups_from", {})
    lay = r.get("dataset", {}).get("layout", {})
    L = ["Sample sizes and label layout (the prompt group, or a coarser cluster, is the unit of inference)", "",
         "split | honest | deceptive | groups | groups from | unit of inference | label layout",
         "---|---|---|---|---|---|---"]
    for k, v in sizes.items():
        if "honest" in v:
            lk = lay.get(k, {})
            L.append(f"{k} | {v['honest']} | {v.get('deceptive', '')} | {v.get('groups', '')} | "
                     f"{groups_from.get(k, '')} | {lk.get('n_groups', '')} {lk.get('unit', '')} | "
                     f"{lk.get('description', '')}")
    L += [f"  • {k}: unit = {v['unit']}: {v['unit_reason']}" for k, v in lay.items()
          if v.get("unit") != "prompt group"]
    return L + [""]


def _tests(r: dict[str, Any]) -> list[str]:
    t = r.get("tests")
    if not t:
        return []
    L = ["Tests", ""]
    if t.get("primary"):
        L += [f"  • PRIMARY: {t['primary']['verdict']}"]
    L += ["", "other test | raw p | Holm-adjusted p", "---|---|---"]
    L += [f"{o['name']} | {_f(o['p'], 4)} | {_f(o['p_holm'], 4)}" for o in t["others"]]
    return L + ["", f"  • {t['note']}", ""]


def _dvalues(r: dict[str, Any], plots: dict[str, str]) -> list[str]:
    dv = r.get("dvalues")
    if not dv:
        return []
    L = ["d measurements (Cohen's d honest vs deceptive, pooled SD; null = the randomization valid for each split's "
         "label layout, named below; CI and min. detectable d from the bootstrap of d_max itself)", "",
         "split | n (H/D) | units | d_max | 95% CI (of the max) | chance d_max (mean / 95th pct) | p | count abs(d)>1 "
         "| p | "
         "min. detectable d (80%)", "---|---|---|---|---|---|---|---|---|---"]
    for k, v in dv["splits"].items():
        L.append(f"{k} | {v['n_pos']}/{v['n_neg']} | {v['n_groups']} | {_f(v['d_max'])} | {_ci(v['d_max_ci'])} | "
                 f"{_f(v['null_d_max_mean'])} / {_f(v['null_d_max_q95'])} | {_f(v['p_d_max'], 4)} | {v['n_above']} | "
                 f"{_f(v['p_n_above'], 4)} | {_f(v['min_detectable_d'])}")
    L += [""] + [f"  • {k}: {v['verdict']}" for k, v in dv["splits"].items()]
    L += [f"  • {k}: null = {v['null']}; layout: {v.get('layout', {}).get('description', 'n/a')}; d "
          f"{v.get('d_weighting', 'plain')}; d_max CI: {v.get('d_max_ci_method', '')}" for k, v in dv["splits"].items()]
    for k, v in dv["splits"].items():
        if v.get("perfectly_separating"):
            L.append(f"  • {k}: perfectly separating latents (constant within each class, |d| = inf): "
                     f"{v['perfectly_separating']}")
    p = dv.get("primary")
    if p:
        L += ["", f"Primary test: the top {len(p['latents'])} latents by abs(d) on {p['selected_on']}, measured on "
              f"{p['split']} ({p['n_pos']}/{p['n_neg']} rows, {p['n_groups']} groups; {p['null']})", "",
              "latent | d (train) | d (eval) | 95% CI (eval) | FWER p", "---|---|---|---|---"]
        for j, lat in enumerate(p["latents"]):
            L.append(f"{lat} | {_f(p['train_d'][j])} | {_f(p['eval_d'][j])} | {_ci(p['eval_d_ci'][j])} | "
                     f"{_f(p['p_fwer'][j], 4)}")
        L += ["", f"  • {p['verdict']}",
              f"  • replicated d_max 95% CI {_ci(p.get('replicated_d_max_ci'))} and min. detectable d "
              f"{_f(p['min_detectable_d'])}: from {p.get('ci_method', '')}"]
    diag = dv.get("row_level_diagnostic")
    if diag:
        L += [f"  • Row-level diagnostic on eval (not a test: {diag['note']}): p(d_max) = {_f(diag['p_d_max'], 4)}, "
              f"p(count) = {_f(diag['p_n_above'], 4)}"]
    L += [""]
    if "d_hist" in plots:
        L += [f"![d histogram]({plots['d_hist']})", ""]
    return L


def _control(r: dict[str, Any]) -> list[str]:
    c = r.get("control")
    if not c:
        return []
    if c.get("skipped"):
        return ["Positive control", "", f"  • skipped: {c['skipped']}", ""]
    L = [f"Positive control ({c['contrast'][0]} vs {c['contrast'][1]} templates on the same questions; rows: "
         f"{c.get('source', '')})", ""]
    for k in ("raw", "sae"):
        v = c[k]
        L.append(f"  • {v['split']}: d_max {_f(v['d_max'])}, p = {_f(v['p_d_max'], 4)} ({v['n_groups']} groups, "
                 f"{v['n_pos']}/{v['n_neg']} rows)")
    return L + RS.control_lines(c) + [f"  • {c['verdict']}", ""]


def _stability(r: dict[str, Any]) -> list[str]:
    stab = r.get("stability")
    if not stab:
        return []
    L = [f"Stability ({stab['mode']}; noise = the reference's null, {stab.get('null', '')}, applied to the reference "
         "and each re-sample together)", "",
         "seed | d_max | replicated d (top latents) | noise 95th pct | p | top overlap (noise mean) | abs delta "
         "d_max | verdict", "---|---|---|---|---|---|---|---"]
    for row in stab["rows"]:
        L.append(f"{row['seed']} | {_f(row['d_max'])} | {_f(row.get('replicated_d'))} | {_f(row.get('noise_q95'))} | "
                 f"{_f(row.get('p'), 4)} | {row['top_overlap']}/{row['top_n']} "
                 f"({_f(row.get('noise_overlap_mean'), 1)}) "
                 f"| {_f(row['abs_delta'])} | {row['verdict']} (n={row['n_pos']}/{row['n_neg']}, {row['n_groups']} "
                 "groups)")
    return L + ["", f"  • reference d_max = {_f(stab['reference_d_max'])} (p = {_f(stab.get('reference_p'), 4)}); "
                f"re-sampled mean ± std = {_f(stab['mean_d_max'])} ± {_f(stab['std_d_max'])}",
                f"  • {stab['verdict']}", ""]


def _steering(r: dict[str, Any], plots: dict[str, str]) -> list[str]:
    sg = r.get("steering")
    if not sg:
        return []
    if sg.get("skipped"):
        return ["Steering", "", f"  • skipped: {sg['skipped']}", ""]
    L = ["Steering with the SAE-decoded direction", "",
         f"  • direction: top-{len(sg['top_latents'])} latents by abs(d) on train {sg['top_latents']}, weighting "
         f"{sg['weighting']}; scale = {_f(sg['scale'])} ({sg['scale_definition']})",
         f"  • cos(decoded direction, raw mean difference) = {_f(sg['cosine_decoded_vs_mean_diff'])}",
         f"  • judge: {sg['judge']}; {sg['n_prompts']} prompts ({sg['n_groups']} groups), {sg['max_new_tokens']} new "
         f"tokens, temperature {sg['temperature']}", "",
         "alpha | honest_rate | decisive | ambiguous_rate (incoherence)", "---|---|---|---"]
    for a, row in zip(sg["alphas"], sg["per_alpha"]):
        L.append(f"{a:+.1f} | {_f(row['honest_rate'])} | {row['n_decisive']} | {_f(row['ambiguous_rate'])}")
    L += ["", f"  • slope {_f(sg['slope']['slope'])} (95% group-bootstrap CI {_ci(sg['slope_ci'])}, exact "
          f"permutation p = {_f(sg['slope']['p'], 4)}; rank p among {sg.get('n_random_directions', 'n/a')} random "
          "directions = "
          f"{_f(sg.get('random_rank_p'), 4)}, both in the Holm family); Spearman rho = {_f(sg['spearman']['rho'])} "
          f"(p = {_f(sg['spearman']['p'], 4)})",
          f"  • {sg['verdict']}", f"  • Control: {sg['control_verdict']}",
          f"  • Prompts: {sg.get('against_verdict', 'n/a')}"]
    md = sg["controls"].get("mean difference (raw)")
    if md:
        L.append(f"  • mean-difference direction slope {_f(md['slope'])} (p = {_f(md['p'], 4)})")
    L += [""]
    if "steering" in plots:
        L += [f"![steering]({plots['steering']})", ""]
    return L


def _top_latents(r: dict[str, Any]) -> list[str]:
    tl = r.get("top_latents")
    if not tl:
        return []
    L = [f"Top latents by abs(d) with examples (split {tl['split']})", ""]
    for e in tl["latents"]:
        L.append(f"  • latent {e['latent']}, d={_f(e.get('d'))}")
        for cls in ("honest", "deceptive"):
            for ex in e[f"top_{cls}"][:1]:
                L.append(f"    • top {cls} ({_f(ex['activation'])}): {json.dumps(ex['text'])}")
    return L + [""]


def _probes(r: dict[str, Any], plots: dict[str, str]) -> list[str]:
    pr = r.get("probes")
    if not pr:
        return []
    r0 = pr["results"][0]
    L = [f"Probe comparison ({r0['n_splits']}-fold {r0['folds']}, split {pr['split']}, {r0['n_pos']} honest / "
         f"{r0['n_neg']} deceptive, {r0['n_groups']} units; null = {r0.get('null', '')})", "",
         "representation | d_sae | encoding unit | balanced accuracy | 95% CI | p | AUROC | 95% CI | p",
         "---|---|---|---|---|---|---|---|---"]
    for p in pr["results"]:
        s = p.get("sae") or {}
        L.append(f"{p['name']} | {s.get('d_sae', '')} | {s.get('encode', '')} | "
                 f"{_f(p['balanced_accuracy'])} ± {_f(p['balanced_accuracy_std'])} | "
                 f"{_ci(p['balanced_accuracy_ci'])} | {_f(p['p_balanced_accuracy'], 3)} | {_f(p['auroc'])} | "
                 f"{_ci(p['auroc_ci'])} | {_f(p['p_auroc'], 3)}")
    L += ["", *[f"  • {p['verdict']}" for p in pr["results"]], f"  • Lexical baseline: {pr['lexical_comparison']}.", ""]
    if "probes" in plots:
        L += [f"![probes]({plots['probes']})", ""]
    return L


def _reconstruction(r: dict[str, Any]) -> list[str]:
    rec = r.get("reconstruction")
    if not rec:
        return []
    L = [f"SAE quality{' (primary SAE)' if len(rec.get('saes') or []) > 1 else ''} (split {rec.get('split')})", "", f"  • explained variance: {_f(rec['explained_variance'], 4)}",
         f"  • L0 (mean active latents per {rec['unit'].split(' ')[0].rstrip('s')}): {_f(rec['l0'], 2)}",
         f"  • alive latents: {rec['alive']} / {rec['d_sae']}", f"  • MSE (per element): {_f(rec['mse'], 5)}",
         f"  • evaluated on: {rec['n_samples']} {rec['unit']}"]
    lm = rec.get("lm_loss")
    if lm:
        L += [f"  • LM loss clean / SAE spliced / zero-ablated: {_f(lm['ce_clean'])} / {_f(lm['ce_spliced'])} / "
              f"{_f(lm['ce_zero_ablation'])} (CE loss score {_f(lm['ce_loss_score'])}, {lm['n_tokens']} tokens)"]
        if "kl_div_score" in lm:
            L += [f"  • KL(clean || spliced) / KL(clean || zero-ablated): {_f(lm['kl_div_with_sae'], 4)} / "
                  f"{_f(lm['kl_div_with_ablation'], 4)} (KL score {_f(lm['kl_div_score'])})"]
    return L + [""]


def _portability(r: dict[str, Any], plots: dict[str, str]) -> list[str]:
    pt = r.get("portability")
    if not pt:
        return []
    L = [f"Portability (same {pt['n_texts']} texts, token level, through this SAE; training precision "
         f"{pt['training_precision']}; retrain if EV drop > {pt['rule']['max_ev_drop']:.0%} or alive shift > "
         f"{pt['rule']['max_alive_shift']:.0%})", "",
         "precision | EV | L0 | alive | MSE | EV drop | alive shift | verdict", "---|---|---|---|---|---|---|---"]
    for row in pt["rows"]:
        if row["verdict"] == "unavailable":
            L.append(f"{row['precision']} | n/a | n/a | n/a | n/a | n/a | n/a | unavailable ({row.get('error', '')[:80]})")
        else:
            L.append(f"{row['precision']} | {_f(row['explained_variance'], 4)} | {_f(row['l0'], 2)} | {row['alive']} | "
                     f"{_f(row['mse'], 5)} | {row['ev_drop']:+.1%} | {row['alive_shift']:+.1%} | {row['verdict']}")
    L += [""]
    if "portability" in plots:
        L += [f"![portability]({plots['portability']})", ""]
    return L


def render_markdown(r: dict[str, Any], plots: dict[str, str]) -> str:
    L: list[str] = [f"# Eval report: {r['suite']}", ""]
    L += _sae_lines(r) + RS.sae_table(r) + _sizes(r)
    if r.get("warnings"):
        L += ["Warnings", ""] + [f"  • {w}" for w in dict.fromkeys(r["warnings"])] + [""]
    from gemma4_saelens_ext.evals.detection_run import render_detection

    L += render_detection(r.get("detection")) + _tests(r) + _reconstruction(r) + RS.reconstruction_table(r)
    L += _dvalues(r, plots) + RS.dvalue_table(r) + _control(r) + _stability(r) + _steering(r, plots)
    L += _top_latents(r) + _probes(r, plots) + _portability(r, plots) + RS.saebench_lines(r)
    L += ["Versions: " + ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items()), ""]
    return "\n".join(L)


def _bins(x: np.ndarray, n: int) -> int:
    """At most ``n`` bins and no more than distinct values (a null over a handful of groups takes a few values,
    equal up to rounding)."""
    return max(1, min(n, len(np.unique(np.round(x, 6))))) if x.size else 1


def make_plots(r: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    dvals, nulls = r.get("d_values") or {}, r.get("null_d_max") or {}
    if dvals:
        fig, axes = plt.subplots(1, len(dvals), figsize=(4.5 * len(dvals), 3.2), squeeze=False)
        for ax, (k, d) in zip(axes[0], dvals.items()):
            d = np.abs(np.asarray(d, dtype=float))
            shown = d[(d > 0) & np.isfinite(d)]
            ax.hist(shown, bins=_bins(shown, 40), alpha=0.6, label="abs(d), all latents (finite)", density=True)
            if k in nulls:
                nk = np.asarray(nulls[k], dtype=float)
                nk = nk[np.isfinite(nk)]
                ax.hist(nk, bins=_bins(nk, 30), alpha=0.6, label="null d_max (group flips)", density=True)
            dmax = float(np.max(d)) if d.size else float("nan")
            ax.axvline(min(dmax, float(np.max(shown, initial=0.0)) * 1.05 or 1.0), color="k", ls="--",
                       label=f"observed d_max {dmax:.2f}")
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("abs(Cohen's d)")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "d_hist.png", dpi=110)
        plt.close(fig)
        plots["d_hist"] = "d_hist.png"
    pr = r.get("probes")
    if pr:
        res = pr["results"]
        fig, ax = plt.subplots(figsize=(6, 0.5 * len(res) + 1.5))
        y = np.arange(len(res))
        b = [p["balanced_accuracy"] for p in res]
        lo = [p["balanced_accuracy"] - (p["balanced_accuracy_ci"][0] or 0) for p in res]
        hi = [(p["balanced_accuracy_ci"][1] or 0) - p["balanced_accuracy"] for p in res]
        ax.barh(y, b, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=3)
        ax.axvline(0.5, color="k", ls=":", label="chance")
        ax.set_yticks(y, [p["name"] for p in res], fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_xlabel("balanced accuracy (95% bootstrap CI)")
        fig.tight_layout()
        fig.savefig(out / "probes.png", dpi=110)
        plt.close(fig)
        plots["probes"] = "probes.png"
    sg = r.get("steering")
    if sg and not sg.get("skipped"):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(sg["alphas"], [p["honest_rate"] if p["honest_rate"] is not None else np.nan for p in sg["per_alpha"]], "o-")
        ax.set_xlabel("alpha (x steering scale)")
        ax.set_ylabel("honest rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"rho={_f(sg['spearman']['rho'], 2)}, p={_f(sg['spearman']['p'], 3)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "steering.png", dpi=110)
        plt.close(fig)
        plots["steering"] = "steering.png"
    pt = r.get("portability")
    if pt:
        rows = [x for x in pt["rows"] if x["verdict"] != "unavailable"]
        if rows:
            fig, axes = plt.subplots(1, 2, figsize=(8, 3))
            names = [x["precision"] for x in rows]
            axes[0].bar(names, [x["explained_variance"] for x in rows])
            axes[0].set_ylabel("explained variance")
            axes[1].bar(names, [x["alive"] for x in rows])
            axes[1].set_ylabel("alive latents")
            fig.tight_layout()
            fig.savefig(out / "portability.png", dpi=110)
            plt.close(fig)
            plots["portability"] = "portability.png"
    return plots


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rj = to_jsonable(report)
    try:
        plots = make_plots(rj, out)
    except Exception as e:  # noqa: BLE001 - plots must never lose the numbers
        logger.warning("plots failed: %s", e)
        plots = {}
    rj["plots"] = plots
    atomic_write_json(out / "report.json", rj, indent=1)
    atomic_write(out / "report.md", render_markdown(rj, plots))
    return {"json": out / "report.json", "md": out / "report.md", **{k: out / v for k, v in plots.items()}}
