"""The report's one-row-per-SAE tables (markdown): the SAEs with their width, L0 and encoding unit, reconstruction,
the d-value summary, the positive control per SAE, and the SAEBench files; and :func:`fmt`, the report's number
format. :mod:`.report` places them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["fmt", "sae_table", "reconstruction_table", "dvalue_table", "control_lines", "saebench_lines"]


def fmt(v: Any, nd: int = 3) -> str:
    if v in ("inf", "-inf"):
        return str(v)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{nd}f}"


_f = fmt


def _l0(r: dict[str, Any]) -> dict[str, Any]:
    return {x["name"]: x for x in (r.get("reconstruction") or {}).get("saes", [])}


def sae_table(r: dict[str, Any]) -> list[str]:
    """Every SAE: source, architecture, width, L0 (from reconstruction), encoding unit, hook."""
    saes, rec = r.get("saes") or [], _l0(r)
    if not saes:
        return []
    L = ["SAEs (one row each in every table; the primary drives the primary test, steering, stability, top latents "
         "and portability)", "", "SAE | primary | source | architecture | d_sae | L0 | encoding unit | hook",
         "---|---|---|---|---|---|---|---"]
    for s in saes:
        src = ", ".join(f"{k}={v}" for k, v in (s.get("source") or {}).items())
        L.append(f"{s['name']} | {'yes' if s.get('primary') else ''} | {src} | {s.get('architecture')} | "
                 f"{s.get('d_sae')} | {_f(rec.get(s['name'], {}).get('l0'), 2)} | {s.get('encode')} | {s.get('hook')}")
    return L + [""]


def reconstruction_table(r: dict[str, Any]) -> list[str]:
    rows = (r.get("reconstruction") or {}).get("saes") or []
    if len(rows) < 2:
        return []
    L = ["Reconstruction per SAE", "", "SAE | d_sae | encoding unit | measured on | EV | MSE | L0 | alive | "
         "CE loss score | KL score", "---|---|---|---|---|---|---|---|---|---"]
    for x in rows:
        lm = x.get("lm_loss") or {}
        L.append(f"{x['name']} | {x['d_sae']} | {x['encode']} | {x['n_samples']} {x['unit']} | "
                 f"{_f(x['explained_variance'], 4)} | {_f(x['mse'], 5)} | {_f(x['l0'], 2)} | {x['alive']} | "
                 f"{_f(lm.get('ce_loss_score'))} | {_f(lm.get('kl_div_score'))}")
    return L + [""]


def dvalue_table(r: dict[str, Any]) -> list[str]:
    rows = (r.get("dvalues") or {}).get("by_sae") or []
    if len(rows) < 2:
        return []
    splits = list(rows[0]["splits"])
    head = " | ".join(f"d_max {k} (p)" for k in splits)
    L = ["d-value summary per SAE (group-flip nulls; replicated = top latents chosen on train, measured on eval; "
         "only the primary SAE's replication is the primary test, the others are Holm-adjusted)", "",
         f"SAE | d_sae | encoding unit | {head} | replicated d_max (p)",
         "---|---|---|" + "---|" * len(splits) + "---"]
    for x in rows:
        cells = " | ".join(f"{_f(x['splits'][k]['d_max'])} ({_f(x['splits'][k]['p_d_max'], 4)})" for k in splits)
        rep = x["replicated"]
        L.append(f"{x['name']}{' (primary)' if x['primary'] else ''} | {x['d_sae']} | {x['encode']} | {cells} | "
                 f"{_f(rep['d_max'])} ({_f(rep['p'], 4)})")
    return L + [""]


def control_lines(c: dict[str, Any]) -> list[str]:
    rows = c.get("by_sae") or []
    if len(rows) < 2:
        return []
    return [f"  • through {x['name']} ({x['d_sae']} latents, {x['encode']}): d_max {_f(x['d_max'])}, p = "
            f"{_f(x['p_d_max'], 4)}{', detected' if x['detected'] else ''}" for x in rows]


def saebench_lines(r: dict[str, Any]) -> list[str]:
    sb = r.get("saebench") or {}
    files = [(k, kind, p) for k, v in sb.items() for kind, p in v.items() if p]
    if not files:
        return []
    return ["SAEBench-format results (docs/evals.md lists the mapping)", ""] + [
        f"  • {k}: {kind} -> {p}" for k, kind, p in files] + [""]
