"""Scenario library: YAML files, one *family* each, whose ``kind:`` says how its prompts are built and labelled.

Scenarios live in data files (``gemma4_saelens_ext/data/scenarios/*.yaml``) so users can add their own without code.
The kinds (:mod:`.kinds` states each label rule) and the module that reads each:

* ``role_play`` and ``input_variation`` (:mod:`.scenario_roles`): assigned roles with role-swapped twins; the
  neutral / V0 / V3 quiz templates. Labels: role-consistency vs role-drift (the seed card's definition).
* ``instructed_pairs`` (:mod:`.scenario_facts`): shipped true statements (``data/statements/``), each said under an
  honest and a dishonest instruction; off-policy (the statement is written) or on-policy (the model answers).
* ``incentive`` and ``control`` (:mod:`.scenario_incentive`): situations where lying pays, judged against an answer
  key; neutral requests labelled ``control``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from gemma4_saelens_ext.behavior.kinds import DEFAULT_KINDS, KINDS, check_instructed_mode
from gemma4_saelens_ext.behavior.scenario_base import Prompt, ScenarioError, builtin_data_dir, check_keywords
from gemma4_saelens_ext.behavior.scenario_facts import instructed_pairs
from gemma4_saelens_ext.behavior.scenario_incentive import control, incentive
from gemma4_saelens_ext.behavior.scenario_roles import INPUT_VARIANTS, input_variation, role_play

__all__ = [
    "Prompt",
    "ScenarioError",
    "builtin_scenario_dir",
    "builtin_scenario_files",
    "load_scenario_file",
    "load_scenarios",
    "INPUT_VARIANTS",
    "scenario_fingerprint",
    "prompts_table",
]

log = logging.getLogger(__name__)

#: kinds whose families ``families=`` always filters (the behaviour before the other kinds existed)
_FAMILY_FILTERED = DEFAULT_KINDS


def builtin_scenario_dir() -> Path:
    return builtin_data_dir("scenarios")


def builtin_scenario_files() -> list[Path]:
    return sorted(builtin_scenario_dir().glob("*.yaml"))


def _read(path: Path) -> tuple[dict, str, str]:
    """(document, family, kind) of one file, checked."""
    if not path.is_file():
        raise ScenarioError(f"Scenario file {path} does not exist; pass an existing .yaml/.json file or folder.")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise ScenarioError(f"Scenario file {path} is not valid YAML/JSON: {e}") from e
    if not doc:
        raise ScenarioError(
            f"Scenario file {path} is empty. Add a family: `family: NAME`, `roles:`, `setups:`, `questions:` "
            "(or `prompts:`), or remove the file. See the built-in files under "
            f"{builtin_scenario_dir()} for examples."
        )
    if not isinstance(doc, dict) or "family" not in doc:
        raise ScenarioError(f"{path}: the top level must be a mapping with a `family:` name.")
    kind = str(doc.get("kind", "role_play"))
    if kind not in KINDS:
        raise ScenarioError(f"{path}: unknown kind {kind!r}; use one of {', '.join(KINDS)}.")
    return doc, str(doc["family"]), kind


def _parse(path: Path, doc: dict, family: str, kind: str, instructed_mode: str) -> list[Prompt]:
    where = str(path)
    if kind == "role_play":
        prompts = role_play(doc, family, where)
    elif kind == "input_variation":
        prompts = input_variation(doc, family, where)
    elif kind == "instructed_pairs":
        prompts = instructed_pairs(doc, family, where, path, instructed_mode)
    elif kind == "incentive":
        prompts = incentive(doc, family, where)
    else:
        prompts = control(doc, family, where)
    if not prompts:
        raise ScenarioError(
            f"Scenario file {path} (family {family!r}) defines no prompts. Add `setups` + `questions` with `roles`, "
            "or an explicit `prompts:` list."
        )
    return [check_keywords(Prompt(**{**p.__dict__, "source_file": where}), where) for p in prompts]


def load_scenario_file(path: str | Path, *, instructed_mode: str = "off_policy") -> list[Prompt]:
    """Parse and validate one scenario file of any kind; raises ScenarioError naming the problem and the fix."""
    path = Path(path)
    doc, family, kind = _read(path)
    return _parse(path, doc, family, kind, check_instructed_mode(instructed_mode))


def _expand_paths(sources: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(path, named explicitly) for files and the files of folders."""
    paths: list[tuple[Path, bool]] = []
    for s in sources:
        s = Path(s)
        if s.is_dir():
            found = sorted([*s.glob("*.yaml"), *s.glob("*.yml"), *s.glob("*.json")])
            if not found:
                raise ScenarioError(f"Scenario folder {s} holds no .yaml/.yml/.json files.")
            paths.extend((f, False) for f in found)
        else:
            paths.append((s, True))
    return paths


def _filter_families(prompts: list[Prompt], families: Sequence[str], dropped: dict[str, str]) -> list[Prompt]:
    """Keep the named families: among role_play / input_variation always (as before kinds existed); within any
    other kind only when one of its families is named (so ``--families werewolf`` keeps the instructed pairs)."""
    by_kind: dict[str, set[str]] = {}
    for p in prompts:
        by_kind.setdefault(p.kind, set()).add(p.family)
    known = set().union(*by_kind.values()) if by_kind else set()
    unknown = [f for f in families if f not in known]
    if unknown:
        hint = "; ".join(f"{f} is of kind {dropped[f]}, which is not among the kinds asked for" for f in unknown
                         if f in dropped)
        raise ScenarioError(f"Unknown scenario families {unknown}; available: {sorted(known)}"
                            + (f" ({hint}; add that kind to --kinds)" if hint else "") + ".")
    named = set(families)
    keep = []
    for p in prompts:
        filtered = p.kind in _FAMILY_FILTERED or bool(by_kind[p.kind] & named)
        if not filtered or p.family in named:
            keep.append(p)
    return keep


def load_scenarios(
    sources: Sequence[str | Path] | None = None,
    *,
    families: Sequence[str] | None = None,
    include_input_variation: bool = True,
    kinds: Sequence[str] | None = DEFAULT_KINDS,
    instructed_mode: str = "off_policy",
) -> list[Prompt]:
    """Load prompts from files/folders (default: the built-in library) of the given ``kinds`` (None: every kind).

    ``sources`` entries may also be the names of built-in files (``werewolf``, ``instructed_pairs``) so CLI users
    can pick a subset. A file named explicitly whose kind is not in ``kinds`` is an error (files found in a folder
    are skipped). ``families`` keeps only the named families (see :func:`_filter_families` for the other kinds).
    Prompt ids must be unique across files, because checkpoints and splits are keyed by them.
    """
    check_instructed_mode(instructed_mode)
    want = set(KINDS if kinds is None else kinds)
    if not include_input_variation:
        want.discard("input_variation")
    builtin = {p.stem: p for p in builtin_scenario_files()}
    if not sources:
        paths = [(p, False) for p in builtin.values()]
    else:
        resolved = [builtin[str(s)] if str(s) in builtin and not Path(s).exists() else s for s in sources]
        paths = _expand_paths(resolved)
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for path, named in paths:
        doc, family, kind = _read(path)
        if kind not in want:
            if named and not (kind == "input_variation" and not include_input_variation):
                raise ScenarioError(
                    f"Scenario file {path} is of kind {kind!r}, which is not among the kinds asked for "
                    f"({sorted(want)}); add {kind} to --kinds, or leave the file out."
                )
            dropped[family] = kind
            continue
        for p in _parse(path, doc, family, kind, instructed_mode):
            if p.id in seen:
                raise ScenarioError(
                    f"Prompt id {p.id!r} appears in both {seen[p.id]} and {path}; "
                    "give one of the families a different `family:` name or prompt id."
                )
            seen[p.id] = str(path)
            prompts.append(p)
    if families:
        prompts = _filter_families(prompts, families, dropped)
    log.info("loaded %d prompts from %d scenario files", len(prompts), len(paths))
    return prompts


def scenario_fingerprint(prompts: Sequence[Prompt]) -> str:
    """Hash of prompt ids, texts, keywords and written completions: the same fingerprint labels the same way."""
    h = hashlib.sha256()
    for p in sorted(prompts, key=lambda p: p.id):
        parts: tuple[Any, ...] = (p.id, p.text, p.honest_keywords, p.deceptive_keywords)
        if p.fixed_completion is not None or p.fixed_label is not None:
            parts += (p.fixed_completion, p.fixed_label)
        h.update(repr(parts).encode("utf-8"))
    return h.hexdigest()[:16]


def prompts_table(prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
    """Flat rows (for manifests and docs)."""
    return [
        dict(id=p.id, family=p.family, kind=p.kind, variant=p.variant, role=p.role, group=p.group, cluster=p.cluster,
             label_rule=p.label_rule)
        for p in prompts
    ]
