"""What every eval family reads: the labelled splits with their groups, the model, the SAE, and activations
pooled the way the SAE was trained (see :func:`encode_unit`).

A :class:`Split` is built once per split name: rows with an honest/deceptive label, ``y`` (1 = honest), the group
id of each row (:func:`gemma4_saelens_ext.evals.groups.resolve_groups`), a coarser cluster when one is named or
detected (:func:`make_split`), raw pooled activations and the SAE's latents. Row limits take a seeded sample of
whole groups (never the first rows of a file sorted by prompt id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals import groups as G
from gemma4_saelens_ext.evals import stats as S
from gemma4_saelens_ext.evals.layout import LabelLayout, classify_layout
from gemma4_saelens_ext.evals.layout import detect_cluster as _detect

logger = logging.getLogger(__name__)

__all__ = ["Split", "SuiteContext", "make_split", "labelled_split"]


@dataclass
class Split:
    name: str
    rows: list[dict]
    y: np.ndarray
    groups: np.ndarray
    #: where the group ids came from: group / prompt_id / prompt / row
    group_source: str
    acts: np.ndarray | None = None
    feats: np.ndarray | None = None
    #: a coarser unit of inference (e.g. the family) per row, the column it came from and why; None: the groups
    clusters: np.ndarray | None = None
    cluster_source: str | None = None
    cluster_reason: str | None = None

    @property
    def n_groups(self) -> int:
        return len(set(self.groups.tolist()))

    def layout(self) -> LabelLayout:
        """The label layout over the unit of inference (prompt groups, or the clusters when set)."""
        return classify_layout(self.y, self.groups, clusters=self.clusters,
                               cluster_name=self.cluster_source or "cluster", cluster_reason=self.cluster_reason)

    def sizes(self) -> dict[str, int]:
        return {"honest": int(self.y.sum()), "deceptive": int((1 - self.y).sum()), "groups": self.n_groups,
                "rows": len(self.y)}

    def subset(self, idx: np.ndarray) -> "Split":
        return Split(self.name, [self.rows[i] for i in idx], self.y[idx], self.groups[idx], self.group_source,
                     None if self.acts is None else self.acts[idx], None if self.feats is None else self.feats[idx],
                     None if self.clusters is None else self.clusters[idx], self.cluster_source, self.cluster_reason)

    def sample_groups(self, max_rows: int | None, seed: int) -> "Split":
        """A seeded sample of whole groups with at most ``max_rows`` rows (all rows when None)."""
        return self.subset(G.sample_groups(self.groups, max_rows, seed))


def make_split(name: str, rows: list[dict], y: np.ndarray, *, warnings: list[str] | None = None,
               cluster: str | None = None, detect_cluster: bool = True) -> Split:
    """A split with its groups, and its clusters: the ``cluster`` column when named, else (``detect_cluster``) a
    coarser column within which the labels are constant (:func:`~gemma4_saelens_ext.evals.layout.detect_cluster`)."""
    groups, src, warn = G.resolve_groups(rows)
    if warn and warnings is not None:
        warnings.append(f"split {name!r}: {warn}")
    y = np.asarray(y).astype(np.int64)
    clusters, csrc, why = None, None, None
    if cluster:
        missing = sum(r.get(cluster) in (None, "") for r in rows)
        if missing:
            cols = sorted({k for r in rows[:50] for k in r})
            raise ValueError(f"stats.cluster = {cluster!r}: {missing} row(s) of split {name!r} have no {cluster!r}; "
                             f"columns present: {cols}. Name another column or leave stats.cluster unset.")
        clusters, csrc = np.asarray([str(r[cluster]) for r in rows]), cluster
        why = f"stats.cluster = {cluster!r} (set in the suite): inference runs at that level"
    elif detect_cluster:
        clusters, csrc, why = _detect(rows, y, groups)
        if why and warnings is not None:
            warnings.append(f"split {name!r}: {why}")
    return Split(name, rows, y, groups, src, clusters=clusters, cluster_source=csrc, cluster_reason=why)


def labelled_split(name: str, rows: list[dict], *, max_rows: int | None = None, seed: int = 0,
                   warnings: list[str] | None = None, cluster: str | None = None,
                   detect_cluster: bool = True) -> Split:
    """Rows labelled honest/deceptive (ambiguous dropped), with groups (and clusters, see :func:`make_split`);
    ``max_rows`` samples whole groups."""
    keep, y = S.encode_labels([r.get("label") for r in rows], what=f"split {name!r}")
    sp = make_split(name, [r for r, k in zip(rows, keep) if k], y, warnings=warnings, cluster=cluster,
                    detect_cluster=detect_cluster)
    S.check_binary_labels(sp.y, what=f"split {name!r}")
    return sp.sample_groups(max_rows, seed) if max_rows else sp


@dataclass
class SuiteContext:
    """Shared state of one suite run; families read it and return their report section."""

    cfg: Any
    lm: Any
    layer: int
    sae: Any
    #: "tokens" or "pooled" and why (see :func:`gemma4_saelens_ext.evals.saeio.encode_unit`)
    encode: tuple[str, str]
    train: Split
    eval: Split
    others: dict[str, Any] = field(default_factory=dict)
    iv_rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: p-values for the Holm family: name -> raw p (the primary test is kept apart)
    pvalues: dict[str, float] = field(default_factory=dict)
    #: train-split d of every latent (selection happens on train)
    d_train: np.ndarray | None = None
    #: scenario files the dataset was built from (the judge looks prompts up there)
    scenario_files: list[str] | None = None

    def judge(self, name: str) -> Any:
        from gemma4_saelens_ext.evals.steering import make_judge

        return make_judge(name, self.scenario_files)

    def can_generate(self) -> bool:
        """A whole model is loaded (not truncated after the hooked layer)."""
        return self.lm is not None and getattr(self.lm, "truncated_after", None) is None

    def pooled(self, rows: list[dict]) -> np.ndarray:
        """Raw residual of the hooked layer, pooled over each completion."""
        from gemma4_saelens_ext.activations.source import activations

        a = activations(self.lm, [r["text"] for r in rows], self.layer, pooling=self.cfg.pooling,
                        completion_start=[int(r["completion_start"]) for r in rows],
                        batch_size=self.cfg.model.batch_size, max_length=self.cfg.model.max_length)
        return a.numpy().astype(np.float32)

    def latents(self, rows: list[dict], sae: Any = None, acts: np.ndarray | None = None) -> np.ndarray:
        """SAE latents per completion, computed the way the SAE was trained: per token then pooled over the
        completion (``tokens``), or on the pooled residual (``pooled``, which reuses ``acts`` when given)."""
        from gemma4_saelens_ext.evals.saeio import encode_decode

        sae = self.sae if sae is None else sae
        if self.encode[0] == "pooled":
            return encode_decode(sae, self.pooled(rows) if acts is None else acts)[0]
        import torch

        from gemma4_saelens_ext.activations.source import activations

        def enc(t: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(encode_decode(sae, t)[0])

        a = activations(self.lm, [r["text"] for r in rows], self.layer, pooling=self.cfg.pooling,
                        completion_start=[int(r["completion_start"]) for r in rows],
                        batch_size=self.cfg.model.batch_size, max_length=self.cfg.model.max_length, token_fn=enc)
        return a.numpy().astype(np.float32)

    def tokens(self, rows: list[dict]) -> np.ndarray:
        """All tokens of the texts except BOS, concatenated (reconstruction, portability)."""
        from gemma4_saelens_ext.activations.source import activations

        a = activations(self.lm, [r["text"] for r in rows], self.layer, pooling="none",
                        batch_size=self.cfg.model.batch_size, max_length=self.cfg.model.max_length)
        return np.concatenate([t[1:].numpy() for t in a]).astype(np.float32)

    def fill(self, split: Split) -> None:
        split.acts = self.pooled(split.rows)
        split.feats = self.latents(split.rows, acts=split.acts)
