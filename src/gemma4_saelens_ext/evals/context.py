"""What every eval family reads: the labelled splits with their groups, the model, the suite's SAEs, and the
activations of each row set, taken in one extraction pass (:mod:`.extraction`).

A :class:`Split` is built once per split name: rows with an honest/deceptive label, ``y`` (1 = honest), the group
id of each row (:func:`gemma4_saelens_ext.evals.groups.resolve_groups`), a coarser cluster when one is named or
detected (:func:`make_split`), and after :meth:`SuiteContext.fill`:

* ``acts``: the raw residual pooled over each completion, ``[rows, d_model]``;
* ``latents[name]``: every SAE's latents per completion, ``[rows, d_sae]`` (each SAE encoded per its unit), the
  random control SAE's too on the eval split; ``feats`` is the primary SAE's;
* ``tokens``: every-token activations of the few rows reconstruction, portability and the encode-convention check
  read (see :meth:`SuiteContext.token_rows`);
* ``column(key)``: any row field (``kind``, ``label``, ``group``, ``cluster``) as an array.

A family that needs another row set (the positive control's rows, regenerated completions, the detection card's
``control`` rows) calls :meth:`SuiteContext.row_set` (cached by name) or :meth:`SuiteContext.fill`: one pass per
row set, every SAE's latents from it. Row limits take a seeded sample of whole groups (never the first rows of a
file sorted by prompt id).
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
from gemma4_saelens_ext.evals.saes import RESERVED_NAMES

logger = logging.getLogger(__name__)

__all__ = ["Split", "SuiteContext", "make_split", "labelled_split", "CONTROL_SAE"]

#: the random same-shape SAE the probes compare against (its latents sit in the eval split's ``latents``)
CONTROL_SAE = RESERVED_NAMES[1]


@dataclass
class Split:
    name: str
    rows: list[dict]
    y: np.ndarray
    groups: np.ndarray
    #: where the group ids came from: group / prompt_id / prompt / row
    group_source: str
    acts: np.ndarray | None = None
    #: SAE name -> latents per row
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    #: the primary SAE's name (``feats`` reads its latents)
    primary: str | None = None
    #: row index -> every-token activations (BOS excluded), for the rows the extraction kept
    tokens: dict[int, np.ndarray] = field(default_factory=dict)
    #: a coarser unit of inference (e.g. the family) per row, the column it came from and why; None: the groups
    clusters: np.ndarray | None = None
    cluster_source: str | None = None
    cluster_reason: str | None = None

    @property
    def feats(self) -> np.ndarray | None:
        """The primary SAE's latents."""
        return self.latents.get(self.primary) if self.primary is not None else None

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

    def column(self, key: str) -> np.ndarray:
        """A row field as an object array (None where a row lacks it): ``kind``, ``label``, ``group``, ``cluster``."""
        return np.array([r.get(key) for r in self.rows], dtype=object)

    def token_matrix(self, idx: Any) -> np.ndarray:
        """Every-token activations of rows ``idx`` (kept by the extraction pass), concatenated in that order."""
        from gemma4_saelens_ext.evals.extraction import RowActivations

        return RowActivations(self.acts, tokens=self.tokens).token_matrix(idx)

    def subset(self, idx: np.ndarray) -> "Split":
        """Rows ``idx`` (pooled activations and latents follow; token activations do not)."""
        return Split(self.name, [self.rows[i] for i in idx], self.y[idx], self.groups[idx], self.group_source,
                     None if self.acts is None else self.acts[idx], {k: v[idx] for k, v in self.latents.items()},
                     self.primary, clusters=None if self.clusters is None else self.clusters[idx],
                     cluster_source=self.cluster_source, cluster_reason=self.cluster_reason)

    def sample_index(self, max_rows: int | None, seed: int) -> np.ndarray:
        """Sorted indices of a seeded sample of whole groups with at most ``max_rows`` rows (all when None)."""
        return G.sample_groups(self.groups, max_rows, seed)

    def sample_groups(self, max_rows: int | None, seed: int) -> "Split":
        """A seeded sample of whole groups with at most ``max_rows`` rows (all rows when None)."""
        return self.subset(self.sample_index(max_rows, seed))


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
    #: the suite's SAEs (:class:`gemma4_saelens_ext.evals.saes.SuiteSAE`), the primary among them
    saes: list[Any]
    train: Split
    eval: Split
    iv_rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: p-values for the Holm family: name -> raw p (the primary test is kept apart)
    pvalues: dict[str, float] = field(default_factory=dict)
    #: train-split d of every latent of the primary SAE (selection happens on train)
    d_train: np.ndarray | None = None
    #: scenario files the dataset was built from (the judge looks prompts up there)
    scenario_files: list[str] | None = None
    #: row sets extracted by :meth:`row_set`, by name
    row_sets: dict[str, Split] = field(default_factory=dict)
    #: per extracted row set: rows, SAEs, bytes held (the report's ``extraction`` section)
    extractions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def primary(self) -> Any:
        """The primary SAE (its latents drive the primary test, steering, stability, top latents, portability)."""
        return next(s for s in self.saes if s.primary)

    @property
    def sae(self) -> Any:
        return self.primary.sae

    @property
    def encode(self) -> tuple[str, str]:
        """The primary SAE's encoding unit and why."""
        return self.primary.unit, self.primary.unit_reason

    def judge(self, name: str) -> Any:
        from gemma4_saelens_ext.evals.steering import make_judge

        return make_judge(name, self.scenario_files)

    def can_generate(self) -> bool:
        """A whole model is loaded (not truncated after the hooked layer)."""
        return self.lm is not None and getattr(self.lm, "truncated_after", None) is None

    def encoders(self, which: str = "all") -> list[Any]:
        """``all`` SAEs, the ``primary`` only, ``none``, or all plus the random control SAE (``with_control``)."""
        from gemma4_saelens_ext.evals.extraction import Encoder

        if which not in ("all", "primary", "none", "with_control"):
            raise ValueError(f"which must be all, primary, none or with_control, got {which!r}")
        saes = [self.primary] if which == "primary" else [] if which == "none" else self.saes
        enc = [Encoder(s.name, s.sae, s.unit) for s in saes]
        if which == "with_control":
            from gemma4_saelens_ext.evals.saeio import random_sae_like

            enc.append(Encoder(CONTROL_SAE, random_sae_like(self.sae, seed=self.cfg.seed), self.primary.unit))
        return enc

    def extract(self, rows: list[dict], *, which: str = "all", keep_tokens: Any = (), what: str = "rows") -> Any:
        """One pass over ``rows``: :class:`~gemma4_saelens_ext.evals.extraction.RowActivations`."""
        from gemma4_saelens_ext.evals.extraction import extract

        m = self.cfg.model
        ra = extract(self.lm, [r["text"] for r in rows], self.layer,
                     completion_start=[int(r["completion_start"]) for r in rows], pooling=self.cfg.pooling,
                     encoders=self.encoders(which), keep_tokens=keep_tokens, batch_size=m.batch_size,
                     max_length=m.max_length)
        self.extractions[what] = {"rows": len(rows), "saes": list(ra.latents), **ra.nbytes()}
        return ra

    def token_rows(self, split: Split) -> list[int]:
        """Rows of ``split`` whose every-token activations are kept: on eval, reconstruction's and portability's
        samples; on train, the encode-convention check's 32-row sample."""
        cfg, idx = self.cfg, set()
        if split is self.train:
            idx |= set(split.sample_index(32, cfg.seed).tolist())
        if split is self.eval and cfg.reconstruction.enabled and cfg.reconstruction.token_level:
            idx |= set(split.sample_index(cfg.reconstruction.max_texts, cfg.seed).tolist())
        pc = cfg.portability
        if split is self.eval and pc.enabled and (pc.training_precision or cfg.model.precision) == cfg.model.precision:
            idx |= set(split.sample_index(pc.max_texts, cfg.seed).tolist())  # the training precision's inputs
        return sorted(idx)

    def fill(self, split: Split, *, which: str = "all", keep_tokens: Any = ()) -> Split:
        """Extract ``split`` once: pooled activations, the SAEs' latents (``which``), kept tokens."""
        ra = self.extract(split.rows, which=which, keep_tokens=keep_tokens, what=split.name)
        split.acts, split.latents, split.tokens, split.primary = ra.pooled, ra.latents, ra.tokens, self.primary.name
        return split

    def row_set(self, name: str, rows: list[dict]) -> Split:
        """Another set of rows, extracted once (cached by ``name``) with every SAE: ``y`` is 1 honest, 0 deceptive,
        -1 any other label (e.g. ``control``)."""
        if name not in self.row_sets:
            lab = [r.get("label") for r in rows]
            y = np.array([1 if v == "honest" else 0 if v == "deceptive" else -1 for v in lab])
            self.row_sets[name] = self.fill(make_split(name, rows, y, warnings=self.warnings, detect_cluster=False))
        return self.row_sets[name]

    # the single-purpose helpers (each one pass over its rows)
    def pooled(self, rows: list[dict]) -> np.ndarray:
        """Raw residual of the hooked layer, pooled over each completion."""
        return self.extract(rows, which="none").pooled

    def latents(self, rows: list[dict], what: str = "rows") -> np.ndarray:
        """The primary SAE's latents per completion (computed the way it was trained)."""
        return self.extract(rows, which="primary", what=what).latents[self.primary.name]

    def tokens(self, rows: list[dict]) -> np.ndarray:
        """All tokens of the texts except BOS, concatenated."""
        return self.extract(rows, which="none", keep_tokens=range(len(rows))).token_matrix(range(len(rows)))
