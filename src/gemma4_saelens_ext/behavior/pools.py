"""Pools and splits: same-prompt behavior balance, a train/eval split by prompt group, the input-variation split,
and the per-kind summary (rows, groups, clusters, label layout) that the manifest and the dataset card report.

Why group balance: if one prompt contributes only honest samples and another only deceptive ones, a feature that
reads the prompt separates the classes without knowing anything about behavior. Keeping, for every prompt of a
group, the same number of honest and deceptive completions makes neither the prompt nor (across role-swapped
twins) the answer word carry label information. Splitting by prompt group (a
question and its role-swapped twins) keeps eval prompts unseen in training.

All selections are deterministic functions of (seed, record keys), independent of the input order.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from gemma4_saelens_ext.behavior.judges import DECEPTIVE, HONEST

__all__ = [
    "PoolError",
    "PoolReport",
    "balance_same_prompt",
    "split_groups",
    "input_variation_split",
    "stable_order",
    "take_whole_groups",
    "count_table",
    "kind_summary",
    "NATURAL_KINDS",
]

#: kinds kept in their natural label layout (no balancing): every decisive (or control) row of a group goes to the
#: group's split
NATURAL_KINDS = ("instructed_pairs", "incentive", "control")

log = logging.getLogger(__name__)

Record = Mapping[str, Any]


class PoolError(ValueError):
    """A pool cannot be built; the message names the scenarios/prompts concerned and what to change."""


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}|{key}".encode("utf-8")).hexdigest()


def stable_order(keys: Iterable[str], seed: int) -> list[str]:
    """A seeded shuffle that does not depend on input order: sort by hash(seed, key)."""
    return sorted(set(keys), key=lambda k: (_rank(seed, k), k))


def take_whole_groups(sizes: Mapping[str, int], max_total: int, seed: int) -> list[str]:
    """The one seeded sample of whole groups: groups (``sizes``: id -> rows or prompts) in :func:`stable_order`,
    each taken whole while the total stays <= ``max_total`` (a group that does not fit is passed over, a smaller
    one after it may still fit); at least one group. Depends on the group ids and the seed, not on their order."""
    chosen: list[str] = []
    total = 0
    for g in stable_order(sizes, seed):
        if chosen and total + sizes[g] > max_total:
            continue
        chosen.append(g)
        total += sizes[g]
    return chosen


@dataclass
class PoolReport:
    """Counts behind a pool, for logs and the manifest."""

    kept: dict[str, int] = field(default_factory=dict)  # per prompt: samples of each class kept
    available: dict[str, dict[str, int]] = field(default_factory=dict)  # per prompt: label -> count before balance
    empty_class_prompts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kept_per_class": self.kept, "available": self.available, "empty_class_prompts": self.empty_class_prompts}


def balance_same_prompt(
    records: Sequence[Record],
    *,
    seed: int,
    label_key: str = "label",
    prompt_key: str = "prompt_id",
    group_key: str = "group",
    id_key: str = "key",
    scenario_key: str = "scenario",
    min_per_class: int = 1,
) -> tuple[list[Record], PoolReport]:
    """Balance per group: every prompt of a group (a question with its role-swapped twins; a prompt without a
    group is its own group) keeps the same number ``n`` of honest and of deceptive rows, ``n`` = the smallest
    class count over the group's prompts. Then each answer word is as often honest as deceptive inside the group
    (honest in one twin, deceptive in the other), so neither the prompt nor the word alone carries the label. The
    surplus is dropped by a seeded ranking of the row keys.

    A group with a prompt that lacks a class contributes nothing (logged by name). If the whole pool has fewer than
    ``min_per_class`` samples per class, PoolError names every prompt and its counts.
    """
    by_prompt: dict[str, dict[str, list[Record]]] = defaultdict(lambda: {HONEST: [], DECEPTIVE: []})
    all_labels: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    scen: dict[str, str] = {}
    group_of: dict[str, str] = {}
    for r in records:
        pid = str(r[prompt_key])
        scen[pid] = str(r.get(scenario_key, ""))
        group_of[pid] = str(r.get(group_key) or pid)
        all_labels[pid][str(r[label_key])] += 1
        if r[label_key] in (HONEST, DECEPTIVE):
            by_prompt[pid][r[label_key]].append(r)
    members: dict[str, list[str]] = defaultdict(list)
    for pid in sorted(all_labels):
        members[group_of[pid]].append(pid)
    report = PoolReport(available={p: dict(c) for p, c in sorted(all_labels.items())})
    kept: list[Record] = []
    for gid in sorted(members):
        n = min(min(len(by_prompt[p][HONEST]), len(by_prompt[p][DECEPTIVE])) for p in members[gid])
        for pid in members[gid]:
            report.kept[pid] = n
            if n == 0:
                report.empty_class_prompts.append(pid)
                continue
            for lab in (HONEST, DECEPTIVE):
                ranked = sorted(by_prompt[pid][lab], key=lambda r: (_rank(seed, str(r[id_key])), str(r[id_key])))
                kept.extend(ranked[:n])
    if report.empty_class_prompts:
        log.info(
            "%d prompt(s) add nothing to the group-balanced pool (a prompt of their group lacks a class): %s",
            len(report.empty_class_prompts),
            ", ".join(f"{scen[p]}/{p} {dict(all_labels[p])}" for p in report.empty_class_prompts[:20]),
        )
    total = sum(report.kept.values())
    if total < min_per_class:
        detail = "; ".join(f"{scen[p]}/{p}: {dict(all_labels[p])}" for p in sorted(all_labels)) or "no samples"
        raise PoolError(
            f"The group-balanced pool has {total} sample(s) per class (need >= {min_per_class}): no group has "
            f"an honest and a deceptive completion under each of its prompts. Per scenario/prompt label counts: "
            f"{detail}. Fix: raise --samples-per-prompt, keep temperature at 1.0, add prompts, or use a judge with "
            "more recall (--primary-judge paraphrase / consortium_majority)."
        )
    return kept, report


def split_groups(
    records: Sequence[Record],
    *,
    seed: int,
    eval_fraction: float = 0.3,
    group_key: str = "group",
    stratify_key: str = "scenario",
    pool_single_group_strata: bool = False,
) -> dict[str, str]:
    """Assign each prompt group to 'train' or 'eval' (whole groups, so no prompt is in both).

    Stratified by ``stratify_key`` (the family; or the cluster): in each stratum round(eval_fraction * groups) groups
    go to eval, at least one when the stratum has two or more groups and eval_fraction > 0, so every stratum shows
    up in both splits. With ``pool_single_group_strata``, the strata holding a single group form one stratum
    together (a small selection spread over many topics would otherwise put every group in train).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    fam_groups: dict[str, set[str]] = defaultdict(set)
    for r in records:
        fam_groups[str(r.get(stratify_key, ""))].add(str(r[group_key]))
    if pool_single_group_strata:
        single = [f for f, gs in fam_groups.items() if len(gs) == 1]
        if len(single) >= 2:
            merged = set().union(*(fam_groups.pop(f) for f in single))
            fam_groups["\x00single-group strata"] = merged
    assign: dict[str, str] = {}
    for fam in sorted(fam_groups):
        groups = stable_order(fam_groups[fam], seed)
        n_eval = round(eval_fraction * len(groups))
        if eval_fraction > 0 and len(groups) >= 2:
            n_eval = min(max(n_eval, 1), len(groups) - 1)
        for i, g in enumerate(groups):
            assign[g] = "eval" if i < n_eval else "train"
    return assign


def input_variation_split(
    records: Sequence[Record],
    *,
    seed: int,
    variants: Sequence[str] = ("neutral", "V0", "V3"),
    variant_key: str = "variant",
    group_key: str = "group",
    id_key: str = "key",
    balance: bool = True,
) -> tuple[list[Record], dict[str, dict[str, int]]]:
    """Rows of the diagnostic split (neutral vs V0 vs V3 of the same questions).

    With ``balance``, each question keeps the same number of samples under every variant (seeded choice of which),
    so variant differences are not question-mix differences. Returns (rows, counts[question][variant]).
    """
    by_q: dict[str, dict[str, list[Record]]] = defaultdict(lambda: {v: [] for v in variants})
    for r in records:
        if r.get(variant_key) in variants:
            by_q[str(r[group_key])][str(r[variant_key])].append(r)
    rows: list[Record] = []
    counts: dict[str, dict[str, int]] = {}
    for q in sorted(by_q):
        per = by_q[q]
        n = min(len(per[v]) for v in variants) if balance else None
        counts[q] = {}
        for v in variants:
            ranked = sorted(per[v], key=lambda r: (_rank(seed, str(r[id_key])), str(r[id_key])))
            take = ranked if n is None else ranked[:n]
            counts[q][v] = len(take)
            rows.extend(take)
    return rows, counts


def count_table(records: Iterable[Record], keys: Sequence[str] = ("split", "scenario", "label")) -> dict[str, int]:
    """Counts keyed by 'split/scenario/label' (stored in the manifest, printed by the CLI)."""
    out: dict[str, int] = defaultdict(int)
    for r in records:
        out["/".join(str(r.get(k, "")) for k in keys)] += 1
    return dict(sorted(out.items()))



def kind_summary(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per kind: its label rule(s), rows per split and label, groups and clusters per split, and the label layout of
    its groups in train/eval (how many hold both labels, only honest, only deceptive): what the statistics must fit
    (docs/datasets.md)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({str(r["kind"]) for r in records}):
        rows = [r for r in records if r["kind"] == kind]
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        groups: dict[str, set[str]] = defaultdict(set)
        clusters: dict[str, set[str]] = defaultdict(set)
        labels_of: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            counts[r["split"]][r["label"]] += 1
            groups[r["split"]].add(str(r["group"]))
            clusters[r["split"]].add(str(r.get("cluster", "")))
            if r["split"] in ("train", "eval") and r["label"] in (HONEST, DECEPTIVE):
                labels_of[str(r["group"])].add(r["label"])
        out[kind] = {
            "label_rule": ",".join(sorted({str(r.get("label_rule", "")) for r in rows})),
            "rows": {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
            "groups": {s: len(g) for s, g in sorted(groups.items())},
            "clusters": {s: len(c) for s, c in sorted(clusters.items())},
            "layout": {
                "groups_both_labels": sum(1 for v in labels_of.values() if len(v) == 2),
                "groups_honest_only": sum(1 for v in labels_of.values() if v == {HONEST}),
                "groups_deceptive_only": sum(1 for v in labels_of.values() if v == {DECEPTIVE}),
            },
        }
    return out
