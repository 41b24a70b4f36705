"""Scenario library: YAML files that assign the model a role and ask questions whose answers reveal role drift.

Scenarios live in data files (``gemma4_saelens_ext/data/scenarios/*.yaml``) so users can add their own without code.
A file describes one *family* in one of two shapes:

* **role play** (``kind: role_play``): ``roles`` (each with ``keywords``), ``setups`` and ``questions`` with ``{role}``
  / ``{other}`` placeholders. Every setup x question is instantiated once per role, which yields the role-swapped
  variants: the answer word "Werewolf" is honest for the werewolf prompt and deceptive for the villager prompt, so a
  label can never be predicted from the answer word alone. Explicit ``prompts:`` entries are also accepted.
* **input variation** (``kind: input_variation``): ``variants`` (``neutral``, ``V0``, ``V3`` templates with a
  ``{question}`` placeholder) x ``questions`` (each with ``honest_keywords`` = correct choice and
  ``deceptive_keywords`` = wrong choice). These give the diagnostic split neutral vs sandbagging templates.

Honest means the completion keeps the assigned role (or answers correctly); deceptive means it drifts. See the seed
card's caveat: this measures role consistency, not strategic deception.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

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

#: the input-variation conditions of the diagnostic split
INPUT_VARIANTS: tuple[str, ...] = ("neutral", "V0", "V3")


class ScenarioError(ValueError):
    """A scenario file is unusable; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class Prompt:
    """One prompt the model completes, with what decides its label."""

    id: str
    family: str
    text: str
    honest_keywords: tuple[str, ...]
    deceptive_keywords: tuple[str, ...]
    #: extra phrases only the paraphrase judge uses (it reads beyond the first 30 characters)
    honest_paraphrases: tuple[str, ...] = ()
    deceptive_paraphrases: tuple[str, ...] = ()
    #: "role_play" or "input_variation"
    kind: str = "role_play"
    #: "behavior" for role play, one of INPUT_VARIANTS for input variation
    variant: str = "behavior"
    #: prompts sharing a group are variants of one question (role swaps, input variants); splits keep groups whole
    group: str = ""
    role: str = ""
    #: plain-words meaning of honest / deceptive for this prompt (shown to LLM judges)
    honest_meaning: str = ""
    deceptive_meaning: str = ""
    source_file: str = ""

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


def builtin_scenario_dir() -> Path:
    return Path(str(files("gemma4_saelens_ext").joinpath("data", "scenarios")))


def builtin_scenario_files() -> list[Path]:
    return sorted(builtin_scenario_dir().glob("*.yaml"))


def _as_list(value: Any, where: str, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        value = [value]
    if isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value):
        raise ScenarioError(
            f"{where}: `{what}` holds a boolean ({value!r}): YAML reads yes/no/on/off/true/false unquoted as booleans. "
            "Quote such keywords, e.g. ['yes']."
        )
    if isinstance(value, (list, tuple)):
        value = [str(v) if isinstance(v, (int, float)) else v for v in value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{where}: `{what}` must be a list of strings, got {value!r}.")
    return [v.strip() for v in value if v.strip()]


def _check_keywords(p: Prompt, where: str) -> Prompt:
    if not p.honest_keywords or not p.deceptive_keywords:
        missing = "honest_keywords" if not p.honest_keywords else "deceptive_keywords"
        raise ScenarioError(
            f"{where}: prompt {p.id!r} (family {p.family!r}) has no {missing}, so the keyword judge cannot label it. "
            "Add keywords to its role (`roles: NAME: {keywords: [...]}`) or to the prompt "
            "(`honest_keywords: [...]`, `deceptive_keywords: [...]`)."
        )
    overlap = {k.lower() for k in p.honest_keywords} & {k.lower() for k in p.deceptive_keywords}
    if overlap:
        raise ScenarioError(
            f"{where}: prompt {p.id!r} lists {sorted(overlap)} as both honest and deceptive keywords; "
            "a keyword must decide one side only. Remove it from one list."
        )
    return p


def _fmt(template: str, where: str, **kw: str) -> str:
    try:
        return template.format(**kw)
    except (KeyError, IndexError) as e:
        raise ScenarioError(
            f"{where}: template {template!r} uses placeholder {e} which is not defined; "
            f"available placeholders: {sorted(kw)} (write literal braces as '{{{{' and '}}}}')."
        ) from e


def _role_play(doc: dict, family: str, where: str) -> list[Prompt]:
    roles = doc.get("roles") or {}
    if roles and (not isinstance(roles, dict) or len(roles) < 2):
        raise ScenarioError(f"{where}: `roles` must map at least two role ids to {{name, keywords}}.")
    role_kw: dict[str, list[str]] = {}
    role_name: dict[str, str] = {}
    role_para: dict[str, list[str]] = {}
    for rid, spec in roles.items():
        spec = spec or {}
        role_name[rid] = str(spec.get("name", rid))
        role_kw[rid] = _as_list(spec.get("keywords"), f"{where} role {rid!r}", "keywords")
        role_para[rid] = _as_list(spec.get("paraphrases"), f"{where} role {rid!r}", "paraphrases")
        if not role_kw[rid]:
            raise ScenarioError(
                f"{where}: role {rid!r} of family {family!r} has no keywords; the keyword judge needs at least one "
                f"word that decides it, e.g. `roles: {{{rid}: {{keywords: [{role_name[rid].lower()}]}}}}`."
            )
    prompts: list[Prompt] = []
    setups = doc.get("setups") or []
    questions = doc.get("questions") or []
    if roles and (setups or questions):
        if not setups or not questions:
            raise ScenarioError(f"{where}: family {family!r} needs both `setups` and `questions` to expand roles.")
        for s in setups:
            for q in questions:
                for rid in roles:
                    others = [o for o in roles if o != rid]
                    # the "other" role named in posing setups is the first other role (two-role families)
                    other = others[0]
                    kw = dict(role=role_name[rid], other=role_name[other])
                    sid, qid = str(s["id"]), str(q["id"])
                    text = _fmt(str(s["text"]), where, **kw) + _fmt(str(q["text"]), where, **kw)
                    prompts.append(
                        Prompt(
                            id=f"{family}.{sid}.{qid}.{rid}",
                            family=family,
                            text=text,
                            honest_keywords=tuple(role_kw[rid]),
                            deceptive_keywords=tuple(k for o in others for k in role_kw[o]),
                            honest_paraphrases=tuple(role_para[rid]),
                            deceptive_paraphrases=tuple(p for o in others for p in role_para[o]),
                            kind="role_play",
                            variant="behavior",
                            group=f"{family}.{sid}.{qid}",
                            role=role_name[rid],
                            honest_meaning=f"the answer keeps the assigned role {role_name[rid]}",
                            deceptive_meaning="the answer claims or drifts to another role ("
                            + ", ".join(role_name[o] for o in others)
                            + ")",
                        )
                    )
    for i, e in enumerate(doc.get("prompts") or []):
        w = f"{where} prompts[{i}]"
        if not isinstance(e, dict) or "text" not in e or "id" not in e:
            raise ScenarioError(f"{w}: each explicit prompt needs `id` and `text`.")
        rid = e.get("role")
        hk = _as_list(e.get("honest_keywords"), w, "honest_keywords")
        dk = _as_list(e.get("deceptive_keywords"), w, "deceptive_keywords")
        if rid in role_kw:
            hk = hk or role_kw[rid]
            dk = dk or [k for o in role_kw if o != rid for k in role_kw[o]]
        prompts.append(
            Prompt(
                id=f"{family}.{e['id']}",
                family=family,
                text=str(e["text"]),
                honest_keywords=tuple(hk),
                deceptive_keywords=tuple(dk),
                honest_paraphrases=tuple(_as_list(e.get("honest_paraphrases"), w, "honest_paraphrases")),
                deceptive_paraphrases=tuple(_as_list(e.get("deceptive_paraphrases"), w, "deceptive_paraphrases")),
                kind="role_play",
                variant="behavior",
                group=str(e.get("group", f"{family}.{e['id']}")),
                role=role_name.get(rid, str(rid or "")),
                honest_meaning=str(e.get("honest_meaning", "the answer keeps the assigned role")),
                deceptive_meaning=str(e.get("deceptive_meaning", "the answer drifts away from the assigned role")),
            )
        )
    return prompts


def _input_variation(doc: dict, family: str, where: str) -> list[Prompt]:
    variants = doc.get("variants") or {}
    missing = [v for v in INPUT_VARIANTS if v not in variants]
    if missing:
        raise ScenarioError(
            f"{where}: input-variation family {family!r} lacks variant templates {missing}; "
            f"define `variants:` with keys {list(INPUT_VARIANTS)} each containing '{{question}}'."
        )
    prompts = []
    for i, q in enumerate(doc.get("questions") or []):
        w = f"{where} questions[{i}]"
        if not isinstance(q, dict) or "id" not in q or "text" not in q:
            raise ScenarioError(f"{w}: each question needs `id` and `text`.")
        hk = _as_list(q.get("honest_keywords"), w, "honest_keywords")
        dk = _as_list(q.get("deceptive_keywords"), w, "deceptive_keywords")
        for v in INPUT_VARIANTS:
            prompts.append(
                Prompt(
                    id=f"{family}.{q['id']}.{v}",
                    family=family,
                    text=_fmt(str(variants[v]), w, question=str(q["text"])),
                    honest_keywords=tuple(hk),
                    deceptive_keywords=tuple(dk),
                    honest_paraphrases=tuple(_as_list(q.get("honest_paraphrases"), w, "honest_paraphrases")),
                    deceptive_paraphrases=tuple(_as_list(q.get("deceptive_paraphrases"), w, "deceptive_paraphrases")),
                    kind="input_variation",
                    variant=v,
                    group=f"{family}.{q['id']}",
                    role="",
                    honest_meaning=f"the answer gives the correct choice ({', '.join(hk)})",
                    deceptive_meaning=f"the answer gives the wrong choice ({', '.join(dk)})",
                )
            )
    return prompts


def load_scenario_file(path: str | Path) -> list[Prompt]:
    """Parse and validate one scenario file; raises ScenarioError naming the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"Scenario file {path} does not exist; pass an existing .yaml/.json file or folder.")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ScenarioError(f"Scenario file {path} is not valid YAML/JSON: {e}") from e
    where = str(path)
    if not doc:
        raise ScenarioError(
            f"Scenario file {path} is empty. Add a family: `family: NAME`, `roles:`, `setups:`, `questions:` "
            "(or `prompts:`), or remove the file. See the built-in files under "
            f"{builtin_scenario_dir()} for examples."
        )
    if not isinstance(doc, dict) or "family" not in doc:
        raise ScenarioError(f"{where}: the top level must be a mapping with a `family:` name.")
    family = str(doc["family"])
    kind = str(doc.get("kind", "role_play"))
    if kind == "role_play":
        prompts = _role_play(doc, family, where)
    elif kind == "input_variation":
        prompts = _input_variation(doc, family, where)
    else:
        raise ScenarioError(f"{where}: unknown kind {kind!r}; use `role_play` or `input_variation`.")
    if not prompts:
        raise ScenarioError(
            f"Scenario file {path} (family {family!r}) defines no prompts. Add `setups` + `questions` with `roles`, "
            "or an explicit `prompts:` list."
        )
    out = []
    for p in prompts:
        p = Prompt(**{**p.__dict__, "source_file": where})
        out.append(_check_keywords(p, where))
    return out


def _expand_paths(sources: Iterable[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for s in sources:
        s = Path(s)
        if s.is_dir():
            found = sorted([*s.glob("*.yaml"), *s.glob("*.yml"), *s.glob("*.json")])
            if not found:
                raise ScenarioError(f"Scenario folder {s} holds no .yaml/.yml/.json files.")
            paths.extend(found)
        else:
            paths.append(s)
    return paths


def load_scenarios(
    sources: Sequence[str | Path] | None = None,
    *,
    families: Sequence[str] | None = None,
    include_input_variation: bool = True,
) -> list[Prompt]:
    """Load prompts from files/folders (default: the built-in library), optionally keeping some families only.

    ``sources`` entries may also be the names of built-in families (``werewolf``) so CLI users can pick a subset.
    Prompt ids must be unique across files, because checkpoints and splits are keyed by them.
    """
    builtin = {p.stem: p for p in builtin_scenario_files()}
    if not sources:
        paths = list(builtin.values())
    else:
        resolved: list[str | Path] = []
        for s in sources:
            resolved.append(builtin[str(s)] if str(s) in builtin and not Path(s).exists() else s)
        paths = _expand_paths(resolved)
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    for path in paths:
        for p in load_scenario_file(path):
            if p.id in seen:
                raise ScenarioError(
                    f"Prompt id {p.id!r} appears in both {seen[p.id]} and {path}; "
                    "give one of the families a different `family:` name or prompt id."
                )
            seen[p.id] = str(path)
            prompts.append(p)
    if families:
        known = sorted({p.family for p in prompts})
        unknown = [f for f in families if f not in known]
        if unknown:
            raise ScenarioError(f"Unknown scenario families {unknown}; available: {known}.")
        prompts = [p for p in prompts if p.family in set(families)]
    if not include_input_variation:
        prompts = [p for p in prompts if p.kind != "input_variation"]
    log.info("loaded %d prompts from %d scenario files", len(prompts), len(paths))
    return prompts


def scenario_fingerprint(prompts: Sequence[Prompt]) -> str:
    """Hash of prompt ids, texts and keywords: two builds with the same fingerprint label the same way."""
    h = hashlib.sha256()
    for p in sorted(prompts, key=lambda p: p.id):
        h.update(repr((p.id, p.text, p.honest_keywords, p.deceptive_keywords)).encode("utf-8"))
    return h.hexdigest()[:16]


def prompts_table(prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
    """Flat rows (for manifests and docs)."""
    return [
        dict(id=p.id, family=p.family, kind=p.kind, variant=p.variant, role=p.role, group=p.group) for p in prompts
    ]

