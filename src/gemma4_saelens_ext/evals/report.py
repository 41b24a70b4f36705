"""Report writer: ``report.json`` (every number, sample sizes, settings, versions), ``report.md`` (tables in the
seed card's style, each behavior number beside its null, CI, n and a verdict) and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["to_jsonable", "write_report", "render_markdown", "make_plots"]


def to_jsonable(obj: Any) -> Any:
    """numpy -> python, tuples -> lists, NaN/inf -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _f(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{nd}f}"


def _ci(c: Any, nd: int = 3) -> str:
    return f"[{_f(c[0], nd)}, {_f(c[1], nd)}]" if c else "n/a"


def render_markdown(r: dict[str, Any], plots: dict[str, str]) -> str:
    L: list[str] = [f"# Eval report: {r['suite']}", ""]
    sae = r.get("sae", {})
    L += [f"SAE: {sae.get('architecture')} d_in={sae.get('d_in')} d_sae={sae.get('d_sae')}, hook {sae.get('hook')} "
          f"(layer {sae.get('layer')}); {sae.get('kind')}.",
          f"Model: {r['settings']['model']['source']} at {r['settings']['model']['precision']}; pooling: "
          f"{r['settings']['pooling']}; dataset: {r['dataset'].get('kind')}.", ""]
    sizes = r.get("sample_sizes", {})
    if sizes:
        L += ["Sample sizes", "", "split | honest | deceptive", "---|---|---"]
        L += [f"{k} | {v['honest']} | {v['deceptive']}" for k, v in sizes.items() if isinstance(v, dict)]
        L += [""]
    if r.get("warnings"):
        L += ["Warnings", ""] + [f"  • {w}" for w in dict.fromkeys(r["warnings"])] + [""]
    rec = r.get("reconstruction")
    if rec:
        L += ["SAE quality", "", f"  • explained variance: {_f(rec['explained_variance'], 4)}",
              f"  • L0 (mean active latents per {rec['unit'].split(' ')[0].rstrip('s')}): {_f(rec['l0'], 2)}",
              f"  • alive latents: {rec['alive']} / {rec['d_sae']}", f"  • MSE (per element): {_f(rec['mse'], 5)}",
              f"  • evaluated on: {rec['n_samples']} {rec['unit']}"]
        lm = rec.get("lm_loss")
        if lm:
            L += [f"  • LM loss clean / SAE spliced / zero-ablated: {_f(lm['ce_clean'])} / {_f(lm['ce_spliced'])} / "
                  f"{_f(lm['ce_zero_ablation'])} (CE loss score {_f(lm['ce_loss_score'])}, {lm['n_tokens']} tokens)"]
        L += [""]
    dv = r.get("dvalues")
    if dv:
        L += ["d measurements (Cohen's d honest vs deceptive, pooled SD; null = label permutations)", "",
              "split | n (H/D) | d_max | 95% CI (top latent) | chance d_max (mean / 95th pct) | p | count abs(d)>1 | p | verdict",
              "---|---|---|---|---|---|---|---|---"]
        for k, v in dv.items():
            L.append(f"{k} | {v['n_pos']}/{v['n_neg']} | {_f(v['d_max'])} | {_ci(v['d_max_ci'])} | "
                     f"{_f(v['null_d_max_mean'])} / {_f(v['null_d_max_q95'])} | {_f(v['p_d_max'], 4)} | {v['n_above']} | "
                     f"{_f(v['p_n_above'], 4)} | {v['verdict'].split(' (')[0]}")
        L += ["", *[f"  • {k}: {v['verdict']}" for k, v in dv.items()], ""]
        if "d_hist" in plots:
            L += [f"![d histogram]({plots['d_hist']})", ""]
    stab = r.get("stability")
    if stab:
        L += ["Stability (re-sampled pool)", ""]
        for row in stab["rows"]:
            L.append(f"  • seed={row['seed']}: d_max = {_f(row['d_max'])}, abs delta = {_f(row['abs_delta'])}, top-"
                     f"{row['top_n']} latent overlap = {row['top_overlap']}/{row['top_n']}, verdict = {row['verdict']} "
                     f"({row['resample']}, n={row['n_pos']}/{row['n_neg']})")
        L += [f"  • reference d_max = {_f(stab['reference_d_max'])}; re-sampled mean ± std = "
              f"{_f(stab['mean_d_max'])} ± {_f(stab['std_d_max'])} (n={len(stab['rows'])})", f"  • {stab['verdict']}", ""]
    sg = r.get("steering")
    if sg:
        L += ["Steering with the SAE-decoded direction", "",
              f"  • direction: top-{len(sg['top_latents'])} latents by abs(d) {sg['top_latents']}, weighting "
              f"{sg['weighting']}; scale = {_f(sg['scale'])} ({sg['scale_definition']})",
              f"  • cos(decoded direction, raw mean difference) = {_f(sg['cosine_decoded_vs_mean_diff'])}",
              f"  • judge: {sg['judge']}; {sg['n_prompts']} prompts, {sg['max_new_tokens']} new tokens, temperature {sg['temperature']}",
              "", "alpha | honest_rate | decisive | ambiguous_rate", "---|---|---|---"]
        for a, row in zip(sg["alphas"], sg["per_alpha"]):
            L.append(f"{a:+.1f} | {_f(row['honest_rate'])} | {row['n_decisive']} | {_f(row['ambiguous_rate'])}")
        L += ["", f"  • slope {_f(sg['slope']['slope'])} (95% CI {_ci(sg['slope_ci'])}, exact permutation p = "
              f"{_f(sg['slope']['p'], 4)}); Spearman rho = {_f(sg['spearman']['rho'])} (p = {_f(sg['spearman']['p'], 4)})",
              f"  • {sg['verdict']}", ""]
        if "steering" in plots:
            L += [f"![steering]({plots['steering']})", ""]
    tl = r.get("top_latents")
    if tl:
        L += [f"Top latents by abs(d) with examples (split {tl['split']})", ""]
        for e in tl["latents"]:
            L.append(f"  • latent {e['latent']}, d={_f(e.get('d'))}")
            for cls in ("honest", "deceptive"):
                for ex in e[f"top_{cls}"][:1]:
                    L.append(f"    • top {cls} ({_f(ex['activation'])}): {json.dumps(ex['text'])}")
        L += [""]
    pr = r.get("probes")
    if pr:
        L += [f"Probe comparison ({pr['results'][0]['n_splits']}-fold CV logistic, split {pr['split']}, "
              f"n={pr['results'][0]['n_pos']}/class honest, {pr['results'][0]['n_neg']} deceptive)", "",
              "representation | balanced accuracy | 95% CI | p | AUROC | 95% CI | p", "---|---|---|---|---|---|---"]
        for p in pr["results"]:
            L.append(f"{p['name']} | {_f(p['balanced_accuracy'])} ± {_f(p['balanced_accuracy_std'])} | "
                     f"{_ci(p['balanced_accuracy_ci'])} | {_f(p['p_balanced_accuracy'], 3)} | {_f(p['auroc'])} | "
                     f"{_ci(p['auroc_ci'])} | {_f(p['p_auroc'], 3)}")
        L += ["", *[f"  • {p['verdict']}" for p in pr["results"]], f"  • Lexical baseline: {pr['lexical_comparison']}.", ""]
        if "probes" in plots:
            L += [f"![probes]({plots['probes']})", ""]
    pt = r.get("portability")
    if pt:
        L += [f"Portability (same {pt['n_texts']} texts, token level, through this SAE; training precision "
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
    L += ["Versions: " + ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items()), ""]
    return "\n".join(L)


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
            ax.hist(d[d > 0], bins=40, alpha=0.6, label="abs(d), all latents", density=True)
            if k in nulls:
                ax.hist(nulls[k], bins=30, alpha=0.6, label="null d_max (shuffled labels)", density=True)
            ax.axvline(d.max(), color="k", ls="--", label=f"observed d_max {d.max():.2f}")
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
    if sg:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(sg["alphas"], [p["honest_rate"] if p["honest_rate"] is not None else np.nan for p in sg["per_alpha"]], "o-")
        ax.set_xlabel("alpha (x mean residual norm)")
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
    (out / "report.json").write_text(json.dumps(rj, indent=1))
    (out / "report.md").write_text(render_markdown(rj, plots))
    return {"json": out / "report.json", "md": out / "report.md", **{k: out / v for k, v in plots.items()}}
