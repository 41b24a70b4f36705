"""The detection family: readers trained on each dataset kind's TRAIN groups, the detection card of each kind on
its EVAL groups (:mod:`.detection`), the transfer matrix (train on one kind, test on every other), and the sparse
probing results in SAEBench's JSON shape.

Rows carry ``kind`` (role_play, instructed_pairs, incentive, control; rows without one are role_play, the kind
every dataset had before kinds existed), ``label`` (honest / deceptive / control), ``group`` and optionally a
coarser ``cluster``. Control rows set the threshold; they are never trained on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import detection as DT
from gemma4_saelens_ext.evals.readers import ReaderInputs, fit_readers

logger = logging.getLogger(__name__)

__all__ = ["DetectionData", "run_detection", "sparse_probing_results", "render_detection", "CONTROL"]

CONTROL = "control"
_FIGURES = ("auroc_honest_deceptive", "auroc_deceptive_control", "recall_at_threshold", "honest_fpr_at_threshold")
#: the keys of SAEBench's sparse-probing metrics, by our reader family
_SAEBENCH = {"dense": "llm_test_accuracy", "dense_topk": "llm_top_{k}_test_accuracy", "sae_all": "sae_test_accuracy",
             "sae_topk": "sae_top_{k}_test_accuracy"}


@dataclass
class DetectionData:
    """One split's rows for the detection family: per row its kind, label, group and cluster, and what the
    readers read (:class:`~gemma4_saelens_ext.evals.readers.ReaderInputs`)."""

    kinds: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    clusters: np.ndarray | None
    inputs: ReaderInputs
    #: kind -> its label rule in words (from the rows' ``label_rule``), shown beside the card
    label_rules: dict[str, str]

    @classmethod
    def from_rows(cls, rows: Sequence[dict], inputs: ReaderInputs) -> "DetectionData":
        if len(rows) != len(inputs):
            raise ValueError(f"{len(rows)} rows but {len(inputs)} input rows")
        from gemma4_saelens_ext.evals.groups import resolve_groups

        kinds = np.asarray([str(r.get("kind") or "role_play") for r in rows])
        labels = np.asarray([CONTROL if CONTROL in (k, r.get("label")) else str(r.get("label"))
                             for r, k in zip(rows, kinds)])
        groups = resolve_groups(rows)[0]
        has_cluster = bool(rows) and all(r.get("cluster") not in (None, "") for r in rows)
        clusters = np.asarray([str(r["cluster"]) for r in rows]) if has_cluster else None
        rules = {}
        for r, k in zip(rows, kinds):
            if k not in rules or (not rules[k] and r.get("label_rule")):
                rules[k] = str(r.get("label_rule") or "")
        rules = {k: _rule_text(k, v) for k, v in rules.items()}
        return cls(kinds, labels, groups, clusters, inputs, rules)

    def select(self, mask: np.ndarray) -> tuple[np.ndarray, ReaderInputs]:
        idx = np.flatnonzero(mask)
        return idx, self.inputs.subset(idx)


def _rule_text(kind: str, rule: str) -> str:
    """The label rule in words: the rows' ``label_rule`` id (else the kind's rule) with its text from
    ``behavior.kinds`` (the dataset kinds' rules, stated once there) when that module exists."""
    try:
        from gemma4_saelens_ext.behavior import kinds as K  # type: ignore[attr-defined]
    except ImportError:
        return rule
    if not rule and kind in K.KINDS:
        rule = K.rule_of(kind)
    return f"{rule}: {K.LABEL_RULES[rule]}" if rule in K.LABEL_RULES else rule


def _hd(d: DetectionData, kind: str) -> np.ndarray:
    return (d.kinds == kind) & np.isin(d.labels, ["honest", "deceptive"])


def _trainable(d: DetectionData, min_per_class: int) -> list[str]:
    out = []
    for k in dict.fromkeys(d.kinds.tolist()):
        m = d.kinds == k
        if k != CONTROL and min((d.labels[m] == "honest").sum(), (d.labels[m] == "deceptive").sum()) >= min_per_class:
            out.append(k)
    return out


def run_detection(train: DetectionData, eval: DetectionData, *, readers: Sequence[str], k_values: Sequence[int],
                  fpr: float = 0.01, n_permutations: int = 1000, n_bootstrap: int = 1000, C: float = 1.0,
                  seed: int = 0, alpha: float = 0.05, transfer: bool = True, lexical_chars: int = 30,
                  min_per_class: int = 2) -> dict[str, Any]:
    """Train the readers on each kind's train rows, then the card per kind and the transfer matrix (JSON-able)."""
    from gemma4_saelens_ext.evals.probes import balanced_accuracy

    kw = dict(n_permutations=n_permutations, n_bootstrap=n_bootstrap)
    out: dict[str, Any] = {"orientation": DT.ORIENTATION, "fpr": fpr, "readers": list(readers),
                           "k_values": list(k_values), "kinds": {}, "transfer": [], "notes": []}
    trained = _trainable(train, min_per_class)
    eval_kinds = _trainable(eval, 1)
    ctrl = eval.labels == CONTROL
    for k in dict.fromkeys(train.kinds.tolist()):
        if k not in trained and k != CONTROL:
            out["notes"].append(f"kind {k}: fewer than {min_per_class} honest or deceptive train rows; no readers "
                                "trained on it")
    if not ctrl.any():
        out["notes"].append("no control rows in the eval split: recall at the control threshold and the "
                            "deceptive-vs-control AUROC are not measured (build the control kind)")
    t0 = time.time()
    for a in trained:
        tr_idx, tr_in = train.select(_hd(train, a))
        DT.check_disjoint_groups(train.groups[tr_idx], eval.groups, what=f"readers trained on {a}")
        fitted = fit_readers(tr_in, train.labels[tr_idx] == "deceptive", readers=readers, k_values=k_values, C=C,
                             seed=seed, lexical_chars=lexical_chars)
        for b in (eval_kinds if transfer else [k for k in eval_kinds if k == a]):
            card = a == b
            ev_idx, ev_in = eval.select(_hd(eval, b) | (ctrl if card else False))
            lab, g = eval.labels[ev_idx], eval.groups[ev_idx]
            c = None if eval.clusters is None else eval.clusters[ev_idx]
            hd = lab != CONTROL
            yd = (lab[hd] == "deceptive").astype(np.int64)
            for j, r in enumerate(fitted):
                s = r.scores(ev_in)
                if card:
                    f = DT.detection_figures(s, lab, g, c, fpr=fpr, seed=seed + 101 * j, **kw)
                    pred = r.predict(ev_in)[hd]
                    acc = float((pred == yd).mean())
                    bacc = balanced_accuracy(yd, pred)
                    sec = out["kinds"].setdefault(b, {"label_rule": eval.label_rules.get(b, ""), "rows": []})
                    sec["rows"].append({"reader": r.name, "family": r.reader, "sae": r.sae, "k": r.k,
                                        "latents": r.latents, "accuracy": acc, "balanced_accuracy": bacc,
                                        "n_groups": len(set(g[hd].tolist())),
                                        "n_control_groups": len(set(g[~hd].tolist())), **f.to_dict()})
                    fig = f.auroc_honest_deceptive
                else:
                    fig = DT.auroc_figure(s, yd, g, c, seed=seed + 7 + 101 * j, **kw)
                out["transfer"].append({"reader": r.name, "train_kind": a, "eval_kind": b,
                                        "auroc": None if fig is None else fig.to_dict(),
                                        "verdict": DT.transfer_verdict(fig, alpha)})
    out["seconds"] = round(time.time() - t0, 2)
    _holm(out)
    return out


def _holm(out: dict[str, Any]) -> None:
    """Holm-adjust the p-values of each table as one family (a kind's card: every reader and figure; the transfer
    matrix: its off-diagonal cells); each figure gets ``p_holm``."""
    from gemma4_saelens_ext.evals.groups import holm

    tables: list[list[dict]] = [[row[k] for row in sec["rows"] for k in _FIGURES if row.get(k)]
                                for sec in out["kinds"].values()]
    tables.append([c["auroc"] for c in out["transfer"] if c["auroc"] and c["train_kind"] != c["eval_kind"]])
    for figs in tables:
        adj = holm({str(i): f["p"] for i, f in enumerate(figs)})
        for i, f in enumerate(figs):
            f["p_holm"] = adj[str(i)]
    out["holm_family"] = "each table (a kind's card; the transfer matrix's off-diagonal cells)"


def sparse_probing_results(section: dict[str, Any], sae: str, *, seed: int = 0) -> dict[str, Any]:
    """The card's readers as SAEBench ``sparse_probing`` results for SAE ``sae``: ``{"llm": {...}, "sae": {...},
    "details": [...], "config": {...}, "unstructured": {...}}``, the metrics and per-dataset details of SAEBench's
    ``SparseProbingEvalOutput`` (``eval_result_metrics.llm`` / ``.sae``, ``eval_result_details``,
    ``eval_config``), for the suite's SAEBench writer to wrap with the SAE's identity. ``llm_test_accuracy`` is the
    dense probe, ``llm_top_{k}_test_accuracy`` the k-channel residual probes (reader ``dense_topk``),
    ``sae_test_accuracy`` the all-latent probe and ``sae_top_{k}_test_accuracy`` the k-sparse probes, each trained on
    a kind's train groups and measured on its eval groups (``dataset_name = gemma4_saelens_ext/<kind>``); metrics
    average the kinds, as SAEBench averages its datasets. Accuracy is SAEBench's (share of eval rows right at the
    probe's 0.5) on our eval rows, which are not re-balanced; AUROC and balanced accuracy are in ``unstructured``."""
    details, unstructured = [], {}
    for kind, sec in section.get("kinds", {}).items():
        d: dict[str, Any] = {"dataset_name": f"gemma4_saelens_ext/{kind}"}
        for row in sec["rows"]:
            key = _SAEBENCH.get(row["family"])
            if key is None or (row["family"].startswith("sae") and row["sae"] != sae):
                continue
            d[key.format(k=row["k"])] = row["accuracy"]
            auc = row.get("auroc_honest_deceptive") or {}
            unstructured.setdefault(kind, {})[row["reader"]] = {"balanced_accuracy": row["balanced_accuracy"],
                                                                "auroc": auc.get("value"), "auroc_ci": auc.get("ci")}
        details.append(d)
    keys = sorted({k for d in details for k in d if k != "dataset_name"})
    mean = {k: float(np.mean([d[k] for d in details if k in d])) for k in keys}
    unstructured["probe"] = ("L2 logistic regression (detection.C), standardised features; k-sparse latents chosen "
                             "by |class mean difference| on train (as SAEBench); scikit-learn liblinear")
    return {"llm": {k: v for k, v in mean.items() if k.startswith("llm_")},
            "sae": {k: v for k, v in mean.items() if k.startswith("sae_")}, "details": details,
            "config": {"random_seed": seed, "dataset_names": [d["dataset_name"] for d in details],
                       "k_values": list(section.get("k_values", []))},
            "unstructured": unstructured}


# ------------------------------------------------------------------------------------------------ report


def _cell(f: dict[str, Any] | None, nd: int = 3) -> str:
    if not f or f.get("value") is None:
        return "n/a"

    def num(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{nd}f}"

    ci = f.get("ci") or (None, None)
    holm = f" (Holm {f['p_holm']:.2g})" if f.get("p_holm") is not None else ""
    p = "n/a" if f.get("p") is None else f"{f['p']:.2g}"
    return f"{num(f['value'])} [{num(ci[0])}, {num(ci[1])}] p={p}{holm}"


def render_detection(sec: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the detection card (one table per kind) and the transfer matrix; empty without them."""
    if not sec:
        return []
    if not (sec.get("kinds") or sec.get("transfer")):
        return ["## Detection card", ""] + [f"  • {n}" for n in sec.get("notes", [])] + [""]
    L = ["## Detection card", "",
         f"Readers trained on each kind's train groups, measured on its eval groups; {sec['orientation']}. Each "
         "figure: value [95% group-bootstrap CI] p (grouped permutation, valid for the label layout; Holm-adjusted "
         f"within {sec.get('holm_family', 'each table')}). Threshold: {sec['fpr']:.0%} false positives on the control "
         "rows (rows above it are flagged).", ""]
    for kind, k in sec["kinds"].items():
        r0 = k["rows"][0]
        L += [f"### {kind}", "", f"Label rule: {k.get('label_rule') or 'not stated in the rows (label_rule column)'}",
              f"Rows: {r0['n_honest']} honest / {r0['n_deceptive']} deceptive in {r0['n_groups']} groups; "
              + (f"{r0['n_control']} control rows in {r0['n_control_groups']} groups; threshold level "
               f"{_pct(r0['fpr_level'])} (each reader's control FPR reached is shown beside its recall)."
               if r0["n_control"] else "no control rows."), ""]
        for key, what in (("auroc_honest_deceptive", "honest vs deceptive"), ("auroc_deceptive_control",
                                                                               "deceptive vs control")):
            f = r0.get(key)
            if f:
                L.append(f"  • null for {what}: {f['layout']}; {f['null']} ({f['n_units']} {f['unit']}s, smallest "
                         f"reachable p {f['min_p']:.2g})")
        L += ["", "reader | AUROC honest vs deceptive | AUROC deceptive vs control | recall at threshold | "
              "honest FPR at threshold", "---|---|---|---|---"]
        for r in k["rows"]:
            L.append(f"{r['reader']} | {_cell(r['auroc_honest_deceptive'])} | {_cell(r['auroc_deceptive_control'])}"
                     f" | {_cell(r['recall_at_threshold'])}, control FPR {_pct(r['control_fpr'])} | "
                     f"{_cell(r['honest_fpr_at_threshold'])}")
        L += [""] + [f"  • {n}" for n in dict.fromkeys(n for r in k["rows"] for n in r.get("notes", []))] + [""]
    cells = sec.get("transfer") or []
    if cells:
        evk = list(dict.fromkeys(c["eval_kind"] for c in cells))
        L += ["### Transfer matrix", "", "AUROC honest vs deceptive of a reader trained on the row's kind (train "
              "groups) and tested on the column's kind (eval groups); the diagonal is the card.", "",
              "reader | trained on | " + " | ".join(evk), "---|---|" + "|".join("---" for _ in evk)]
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for c in cells:
            rows.setdefault((c["reader"], c["train_kind"]), {})[c["eval_kind"]] = c
        for (reader, a), byk in rows.items():
            L.append(f"{reader} | {a} | " + " | ".join(_cell((byk.get(b) or {}).get("auroc")) for b in evk))
        L += [""] + [f"  • {c['reader']}, {c['train_kind']} -> {c['eval_kind']}: {c['verdict']}" for c in cells
                     if c["train_kind"] != c["eval_kind"]] + [""]
    L += [f"  • {n}" for n in sec.get("notes", [])]
    return L + [""]


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.1%}"
