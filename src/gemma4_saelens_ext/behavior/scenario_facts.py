"""The ``instructed_pairs`` kind: true statements said under an honest and under a dishonest instruction.

A scenario file of this kind names a statements file (``statements_file:``, relative to the scenario file) or holds
``statements:`` inline, and lists ``instructions`` (pairs of an honest and a dishonest instruction with matching
wording) and two templates. Each statement gets one instruction pair (chosen by a hash of its id, so the choice does
not depend on the order of the file) and becomes a *group* of two prompts, one per instruction:

* ``off_policy`` (the default): ``off_policy_template`` (placeholders ``{instruction}``, ``{topic}``, ``{question}``)
  is the prompt and the statement is the assistant's text, written, not generated (``Prompt.fixed_completion``).
  The label is the instruction (rule ``instruction``), so every group holds both labels by construction. End the
  template with a newline: the statement's first token then starts exactly at ``completion_start`` (after a space,
  a SentencePiece token would begin one character before it).
* ``on_policy``: ``on_policy_template`` asks the statement's ``question`` and the model answers; the answer is judged
  against the answer key (``answer`` = the truth and its aliases, ``wrong`` = known false answers; rule
  ``answer_key``).

The statements' ``topic`` is the coarser cluster (``{family}.{topic}``) beside the group (``{family}.{id}``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from gemma4_saelens_ext.behavior.kinds import check_instructed_mode
from gemma4_saelens_ext.behavior.scenario_base import Prompt, ScenarioError, answer_key, fmt

__all__ = ["instructed_pairs", "load_statements", "statements_provenance", "STATEMENT_FIELDS"]

#: the fields every statement needs
STATEMENT_FIELDS = ("id", "topic", "statement", "question", "answer", "wrong")
_SIDES = (("honest", "honest"), ("dishonest", "deceptive"))  # (instruction key, label)


def load_statements(path: str | Path) -> dict[str, Any]:
    """A statements file: ``{provenance, topics, statements}``; raises ScenarioError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"Statements file {path} does not exist; fix `statements_file:` (a path relative to the "
                            "scenario file) or list `statements:` inline.")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise ScenarioError(f"Statements file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("statements"), list):
        raise ScenarioError(f"{path}: the top level must be a mapping with a `statements:` list.")
    return doc


def statements_provenance(scenario_file: str | Path) -> str:
    """The ``provenance:`` line of a scenario file's statements (its own, or that of the file it names)."""
    path = Path(scenario_file)
    doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    if doc.get("provenance") or not doc.get("statements_file"):
        return str(doc.get("provenance", ""))
    return str(load_statements((path.parent / str(doc["statements_file"])).resolve()).get("provenance", ""))


def _statements(doc: dict, where: str, path: Path) -> tuple[list[dict], dict[str, str], str]:
    """(statements, topic display names, provenance) from the scenario file or the file it names."""
    topics = dict(doc.get("topics") or {})
    provenance = str(doc.get("provenance", ""))
    items = doc.get("statements")
    if doc.get("statements_file"):
        f = (path.parent / str(doc["statements_file"])).resolve()
        sdoc = load_statements(f)
        items, where = sdoc["statements"], str(f)
        topics = {**dict(sdoc.get("topics") or {}), **topics}
        provenance = provenance or str(sdoc.get("provenance", ""))
    if not isinstance(items, list) or not items:
        raise ScenarioError(f"{where}: an instructed_pairs family needs statements: `statements_file: PATH` or an "
                            "inline `statements:` list of {id, topic, statement, question, answer, wrong}.")
    return items, topics, where


def instructed_pairs(doc: dict, family: str, where: str, path: Path, mode: str = "off_policy") -> list[Prompt]:
    check_instructed_mode(mode)
    items, topics, swhere = _statements(doc, where, path)
    pairs = doc.get("instructions") or []
    if not isinstance(pairs, list) or not pairs:
        raise ScenarioError(f"{where}: `instructions:` must list pairs {{id, honest, dishonest}} (at least one).")
    for i, pr in enumerate(pairs):
        if not isinstance(pr, dict) or not all(str(pr.get(k, "")).strip() for k in ("id", "honest", "dishonest")):
            raise ScenarioError(f"{where} instructions[{i}]: each pair needs `id`, `honest` and `dishonest` texts.")
    key = "off_policy_template" if mode == "off_policy" else "on_policy_template"
    template = doc.get(key)
    if not template:
        raise ScenarioError(f"{where}: mode {mode} needs `{key}:` (placeholders {{instruction}}, {{topic}}, "
                            "{question}).")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for i, s in enumerate(items):
        w = f"{swhere} statements[{i}]"
        if not isinstance(s, dict):
            raise ScenarioError(f"{w}: each statement must be a mapping with {list(STATEMENT_FIELDS)}.")
        w = f"{swhere} statements[{i}] ({s.get('id', '?')})"
        missing = [f for f in ("id", "topic", "statement", "question") if not str(s.get(f) or "").strip()]
        if missing:
            raise ScenarioError(f"{w}: missing {missing}; every statement needs {list(STATEMENT_FIELDS)}.")
        sid, topic = str(s["id"]), str(s["topic"])
        if sid in seen:
            raise ScenarioError(f"{w}: statement id {sid!r} appears twice; ids must be unique.")
        seen.add(sid)
        keys = answer_key(s, w)
        pair = pairs[int(hashlib.sha256(sid.encode("utf-8")).hexdigest(), 16) % len(pairs)]
        statement, question = str(s["statement"]).strip(), str(s["question"]).strip()
        for side, label in _SIDES:
            text = fmt(str(template), f"{where} {key}", instruction=str(pair[side]).strip(),
                       topic=str(topics.get(topic, topic)), question=question)
            common = dict(family=family, text=text, kind="instructed_pairs", variant=side, group=f"{family}.{sid}",
                          cluster=f"{family}.{topic}", role=str(pair["id"]), **keys)
            if mode == "off_policy":
                prompts.append(Prompt(
                    id=f"{family}.{sid}.{side}", label_rule="instruction", fixed_completion=statement,
                    fixed_label=label, honest_meaning="said under the honest instruction",
                    deceptive_meaning="said under the dishonest instruction", **common))
            else:
                prompts.append(Prompt(
                    id=f"{family}.{sid}.{side}.ask", label_rule="answer_key",
                    honest_meaning=f"the answer states the true answer ({', '.join(keys['honest_keywords'])})",
                    deceptive_meaning=f"the answer states a false answer ({', '.join(keys['deceptive_keywords'])}) "
                    "or denies the true one", **common))
    return prompts
