"""The suite's SAEs: a list, one row per SAE in every table, one of them the primary.

A suite names its SAEs under ``saes:``; each entry has one source and optional settings::

    saes:
      - name: behavior                          # the row label in every table (default: from the source)
        train: demo_gemma3_270m_nf4             # trained first on the suite's train split (+ overrides: {...})
      - name: gemma-scope-2                     # any SAELens release (SAELens's own loader)
        release: gemma-scope-2-270m-pt-res
        sae_id: layer_12_width_16k_l0_medium
      - {name: baseline, path: runs/other/sae}  # a folder saved by SAELens
      - {release: Solshine/gemma4_e2b_gf1_behaviorSAE_topk_k16_L25_bnb4bit, sae_id: blocks.25.hook_resid_post,
         encode: pooled}                        # the Gemma 4 behavior release (the plugin's registered loader)

The **primary** SAE (``primary: true``, else the first entry) is the one whose latents drive the primary
replication test, steering, stability, the top-latent table and portability; every SAE gets a row in the
reconstruction, d-value, positive-control and probe tables. The older ``sae:`` + ``other_saes:`` keys still work:
``sae`` becomes the primary entry, each ``other_saes`` item an entry named by its key.

This module parses and checks the entries without loading anything (:func:`normalize_saes`, :func:`check_saes`),
then loads or trains them for a run (:func:`load_suite_saes`); torch and SAELens are imported inside functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma4_saelens_ext.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_KEYS", "SOURCE_KEYS", "RESERVED_NAMES", "SUITE_OWNED_TRAINING_KEYS", "SuiteSAE", "normalize_saes",
    "check_saes", "primary_entry", "train_entry", "entry_name", "entry_source", "training_overrides", "train_suite_sae",
    "check_before_loading", "load_suite_saes", "describe_saes",
]

#: the keys of one ``saes:`` entry
ENTRY_KEYS = ("name", "primary", "encode", "path", "release", "sae_id", "train", "overrides")
#: exactly one of these says where the SAE comes from
SOURCE_KEYS = ("path", "release", "train")
#: row labels the tables use for other representations (``lexical...`` too)
RESERVED_NAMES = ("raw", "control SAE (random, same shape)")


def entry_name(entry: dict[str, Any]) -> str:
    """The entry's ``name``, else a label from its source: ``trained``, the folder's last two parts, or
    ``release/sae_id``."""
    if entry.get("name"):
        return str(entry["name"])
    if "train" in entry:
        return "trained"
    if entry.get("path"):
        return "/".join(Path(str(entry["path"])).parts[-2:])
    return f"{entry['release']}/{entry.get('sae_id')}"


def entry_source(entry: dict[str, Any]) -> dict[str, Any]:
    """The source keys of an entry (what the report prints as the SAE's origin)."""
    return {k: entry[k] for k in ("path", "release", "sae_id", "train") if entry.get(k) is not None}


def _check_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, dict) and "fit" in entry:
        raise UserError(f"{where}.fit was removed; use `sae.train: demo_gemma3_270m_nf4` (or `train:` in a `saes:` "
                         "entry; trained with "
                         "gemma4_saelens_ext.training.train; settings under `overrides`, e.g. "
                         "{runner.training_tokens: 20000, sae.d_sae: 640}).")
    if not isinstance(entry, dict):
        raise UserError(f"{where}={entry!r} should be a mapping such as {{path: DIR}}, {{release: R, sae_id: ID}} or "
                        f"{{train: CONFIG}}, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; valid keys: {list(ENTRY_KEYS)}")
    sources = [k for k in SOURCE_KEYS if entry.get(k) is not None]
    if len(sources) != 1:
        raise UserError(f"{where} needs exactly one of `path`, `release` (+ `sae_id`) or `train` (a training config "
                         f"name or path), got {sources or 'none'}.")
    if "release" in sources and not entry.get("sae_id"):
        raise UserError(f"{where}: release {entry['release']!r} needs `sae_id` (e.g. layer_12_width_16k_l0_medium).")
    if "overrides" in entry and "train" not in sources:
        raise UserError(f"{where}.overrides applies to `train` only.")
    if entry.get("encode", "auto") not in ("auto", "tokens", "pooled"):
        raise UserError(f"{where}.encode must be auto, tokens or pooled, got {entry['encode']!r}")
    return dict(entry)


def normalize_saes(data: dict[str, Any], where: str = "suite") -> list[dict[str, Any]]:
    """The ``saes`` list of a suite mapping, from ``saes:`` or from the older ``sae:`` + ``other_saes:``; checks
    every entry's keys, that names are unique, that at most one entry trains and at most one is primary. Pure."""
    saes, sae, others = data.get("saes"), data.get("sae"), data.get("other_saes") or {}
    if saes and sae is not None:
        raise UserError(f"{where}: give `saes:` (a list) or the older `sae:` (+ `other_saes:`), not both.")
    if saes and others:
        raise UserError(f"{where}: `other_saes` goes with the older `sae:`; add those SAEs to the `saes:` list.")
    if not saes and sae is None:
        raise UserError(f"{where}: missing required key 'sae' (one SAE) or 'saes' (a list of SAEs), e.g. "
                         "saes: [{train: demo_gemma3_270m_nf4}, {release: gemma-scope-2-270m-pt-res, "
                         "sae_id: layer_12_width_16k_l0_medium}]")
    if saes is not None and not saes and sae is None:
        raise UserError(f"{where}.saes is empty; name at least one SAE.")
    if saes is not None and not isinstance(saes, list):
        raise UserError(f"{where}.saes={saes!r} should be a list of SAE entries, got {type(saes).__name__}")
    if not isinstance(others, dict):
        raise UserError(f"{where}.other_saes must map a name to an SAE ({{path: ...}} or "
                         "{release: ..., sae_id: ...})")
    if saes:
        entries = [_check_entry(e, f"{where}.saes[{i}]") for i, e in enumerate(saes)]
    else:
        entries = [_check_entry(sae, f"{where}.sae")]
        entries += [{**_check_entry(v, f"{where}.other_saes.{k}"), "name": k} for k, v in others.items()]
        if any("train" in e for e in entries[1:]):
            raise UserError(f"{where}.other_saes: only the primary `sae` may be trained in-suite.")
    names = [entry_name(e) for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{where}.saes: names {dup} appear twice; give each entry a distinct `name`.")
    taken = sorted(n for n in names if n in RESERVED_NAMES or n.startswith("lexical"))
    if taken:
        raise UserError(f"{where}.saes: names {taken} label other rows of the probe table; rename those entries.")
    if sum("train" in e for e in entries) > 1:
        raise UserError(f"{where}.saes: at most one entry may say `train` (it is saved to <output>/sae).")
    if sum(bool(e.get("primary")) for e in entries) > 1:
        raise UserError(f"{where}.saes: more than one entry says `primary: true`.")
    return entries


def primary_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The entry with ``primary: true``, else the first."""
    return next((e for e in entries if e.get("primary")), entries[0])


def train_entry(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in entries if "train" in e), None)


#: training settings the suite sets itself for an in-suite SAE (from its model section, train split and output)
SUITE_OWNED_TRAINING_KEYS = {
    "model.source": "model.source", "model.precision": "model.precision", "model.layer": "model.layer",
    "runner.dataset_path": "dataset.train_split", "runner.output_path": "output_dir",
    "runner.checkpoint_path": "output_dir",
}


def training_overrides(cfg: Any, dataset_dir: str, out: str) -> dict[str, Any]:
    """The dotted overrides the suite's ``train`` entry is trained with: the suite's model, precision and layer (the
    training config's layer when the suite names none), seed, training rows and output folders, then the entry's
    ``overrides``."""
    ov: dict[str, Any] = {"model.source": cfg.model.source, "model.precision": cfg.model.precision,
                          "runner.dataset_path": dataset_dir, "runner.output_path": str(Path(out) / "sae"),
                          "runner.checkpoint_path": str(Path(out) / "sae_checkpoints"), "runner.seed": cfg.seed}
    if cfg.model.layer is not None:
        ov["model.layer"] = cfg.model.layer
    ov.update((train_entry(cfg.saes) or {}).get("overrides") or {})
    return ov


def check_saes(cfg: Any) -> None:
    """Cheap checks of ``cfg.saes`` (already normalized): the training entry's config and overrides resolve, and it
    does not set what the suite sets itself."""
    from gemma4_saelens_ext.training.config import load_training_config

    entry = train_entry(cfg.saes)
    if entry is None:
        return
    ov = entry.get("overrides") or {}
    if not isinstance(ov, dict):
        raise UserError("suite sae overrides must be a mapping of dotted keys, e.g. {runner.training_tokens: 20000}")
    owned = sorted(set(ov) & set(SUITE_OWNED_TRAINING_KEYS))
    if owned:
        raise UserError(f"suite sae overrides sets {owned}, which the suite sets itself; set "
                         f"{sorted({SUITE_OWNED_TRAINING_KEYS[k] for k in owned})} in the suite instead.")
    load_training_config(entry["train"], training_overrides(cfg, "<train split>", "<out>"))  # names, sections, sizes


@dataclass
class SuiteSAE:
    """One SAE of a suite run, loaded, with what every table shows beside its row."""

    name: str
    """Row label."""
    sae: Any
    """The SAELens SAE."""
    entry: dict[str, Any]
    """The suite entry it came from."""
    unit: str
    """What it is applied to: ``tokens`` (latents per token, pooled over the completion) or ``pooled``."""
    unit_reason: str
    """Why (:func:`gemma4_saelens_ext.evals.saeio.encode_unit`)."""
    primary: bool = False
    """Its latents drive the primary test, steering, stability, top latents and portability."""
    info: dict[str, Any] = field(default_factory=dict)
    """The report's description of it (source, kind, width, hook, training record)."""

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def row(self) -> dict[str, Any]:
        """The columns shown beside the SAE in every table."""
        return {"name": self.name, "primary": self.primary, "d_sae": self.d_sae, "encode": self.unit}


def _describe(s: SuiteSAE, layer: int) -> dict[str, Any]:
    from gemma4_saelens_ext.evals.saeio import sae_layer

    sae = s.sae
    return {**s.info, "name": s.name, "primary": s.primary, "source": entry_source(s.entry),
            "d_in": int(sae.cfg.d_in), "d_sae": int(sae.cfg.d_sae), "architecture": type(sae).__name__,
            "hook": sae_layer(sae), "layer": layer, "encode": s.unit, "encode_reason": s.unit_reason}


def train_suite_sae(cfg: Any, entry: dict[str, Any], rows: list[dict], out: Path) -> tuple[Any, dict[str, Any]]:
    """The suite's ``train`` entry: :func:`gemma4_saelens_ext.training.train` (SAELens's
    ``LanguageModelSAETrainingRunner`` through our activation source) at the suite's model, precision and layer, on
    the texts of ``rows`` (the train split, every label; never an eval prompt) written to ``out/sae_data/train.parquet``
    (SAELens reads the folder offline), saved to ``out/sae``. Returns the saved SAE and the report's description."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from gemma4_saelens_ext.evals.saeio import sae_from_entry
    from gemma4_saelens_ext.training.config import load_training_config
    from gemma4_saelens_ext.training.runner import train

    data = Path(out) / "sae_data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), data / "train.parquet")
    spec = load_training_config(entry["train"], training_overrides(cfg, str(data), str(out)))
    logger.info("training the suite's SAE with %s (%d texts, %s tokens)", spec.config_path or "a config dict",
                len(rows), spec.runner.get("training_tokens"))
    t0 = time.perf_counter()
    path = train(spec).output_path
    cache = Path(spec.runner["checkpoint_path"]) / "activation_cache"  # training.prepare_activation_cache's default
    section = {"kind": "trained in-suite (gemma4_saelens_ext.training.train, SAELens runner)",
               "train": str(entry["train"]), "config_path": spec.config_path,
               "overrides": dict(entry.get("overrides") or {}), "path": str(path), "training_texts": len(rows),
               "training": {k: spec.raw[k] for k in ("model", "sae", "runner") if k in spec.raw},
               "from_cached_activations": cache.exists(), "train_seconds": round(time.perf_counter() - t0, 1)}
    return sae_from_entry({"path": str(path)}), section


def check_before_loading(cfg: Any) -> None:
    """A suite's layer (``model.layer``, else the primary SAE's hook) and each SAE folder's ``d_in`` (its cfg.json)
    against the model's config.json, before any SAE or model loads
    (:func:`gemma4_saelens_ext.models.load.check_checkpoint`)."""
    from gemma4_saelens_ext.evals.saeio import saved_sae_config
    from gemma4_saelens_ext.models.load import check_checkpoint

    source = cfg.model.source
    fix = "this SAE was trained on another model: pick the SAE for this model (or set model.source to its model)"
    main = saved_sae_config(primary_entry(cfg.saes))
    hook = ((main[1].get("metadata") or {}).get("hook_name") or main[1].get("hook_name")) if main else None
    if cfg.model.layer is not None:
        check_checkpoint(source, layer=cfg.model.layer, layer_field="model.layer")
    elif hook:
        check_checkpoint(source, layer=hook, layer_field=f"SAE {main[0]} hook_name (model.layer is unset)",
                         layer_fix=fix)
    for entry in cfg.saes:
        saved = saved_sae_config(entry)
        if saved and saved[1].get("d_in") is not None:
            check_checkpoint(source, d_in=int(saved[1]["d_in"]), d_in_field=f"SAE {entry_name(entry)!r} "
                             f"({saved[0]}) d_in", d_in_fix=fix)


def load_suite_saes(cfg: Any, train_rows: list[dict], out: Path) -> list[SuiteSAE]:
    """Load every SAE of ``cfg.saes`` (a missing one fails before any training), then train the ``train`` entry on
    ``train_rows``; in the list's order."""
    from gemma4_saelens_ext.evals.saeio import encode_unit, sae_from_entry

    prim = primary_entry(cfg.saes)
    loaded = {id(e): (sae_from_entry(e), {"kind": "loaded" if e.get("path") else "release (SAE.from_pretrained)"})
              for e in cfg.saes if "train" not in e}
    result = []
    for entry in cfg.saes:
        sae, info = loaded[id(entry)] if id(entry) in loaded else train_suite_sae(cfg, entry, train_rows, out)
        unit, why = encode_unit(sae, entry, entry.get("encode") or cfg.encode)
        if entry.get("encode") not in (None, "auto"):
            why = "the SAE entry's `encode`"
        result.append(SuiteSAE(entry_name(entry), sae, entry, unit, why, entry is prim, info))
    return result


def describe_saes(saes: list[SuiteSAE], layer: int) -> list[dict[str, Any]]:
    """The report's ``saes`` section: one description per SAE."""
    return [_describe(s, layer) for s in saes]
