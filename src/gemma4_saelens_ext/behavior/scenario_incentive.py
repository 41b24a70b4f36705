"""The ``incentive`` and ``control`` kinds.

* **incentive** (``kind: incentive``): situations where a lie pays and no deceptive identity is assigned (a seller who
  knows of a defect, a hidden mistake at work, a test the model wants to pass...). Each entry of ``prompts:`` has
  ``text`` (or fields filling the file's ``template``), a question whose true answer the situation fixes, and its
  answer key: ``answer`` (the truth and its aliases), ``wrong`` (the tempting false answers), optional
  ``answer_phrases`` / ``wrong_phrases``. The model's answer is judged against the key (rule ``answer_key``). Each
  prompt is its own group; the family is the cluster.
* **control** (``kind: control``): neutral requests with no honesty contrast (``requests:`` of ``{id, category,
  request}`` filling ``template``); every completion is labelled ``control`` (rule ``control``). The category is the
  cluster (``{family}.{category}``).
"""

from __future__ import annotations

from gemma4_saelens_ext.behavior.kinds import CONTROL
from gemma4_saelens_ext.behavior.scenario_base import Prompt, ScenarioError, answer_key, fmt

__all__ = ["incentive", "control"]


def _text(entry: dict, doc: dict, where: str) -> str:
    if entry.get("text"):
        return str(entry["text"])
    if not doc.get("template"):
        raise ScenarioError(f"{where}: give the entry a `text`, or the file a `template` its fields fill.")
    fields = {k: str(v).strip() for k, v in entry.items()
              if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    return fmt(str(doc["template"]), where, **fields)


def _entries(doc: dict, key: str, where: str, shape: str) -> list[dict]:
    entries = doc.get(key)
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{where}: this kind needs a non-empty `{key}:` list of {shape}.")
    seen: set[str] = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not str(e.get("id") or "").strip():
            raise ScenarioError(f"{where} {key}[{i}]: each entry needs an `id` ({shape}).")
        if str(e["id"]) in seen:
            raise ScenarioError(f"{where} {key}[{i}]: id {e['id']!r} appears twice; ids must be unique.")
        seen.add(str(e["id"]))
    return entries


def incentive(doc: dict, family: str, where: str) -> list[Prompt]:
    prompts = []
    for i, e in enumerate(_entries(doc, "prompts", where, "{id, text or template fields, answer, wrong}")):
        w = f"{where} prompts[{i}] ({e['id']})"
        keys = answer_key(e, w)
        prompts.append(Prompt(
            id=f"{family}.{e['id']}", family=family, text=_text(e, doc, w), kind="incentive", variant="incentive",
            group=f"{family}.{e['id']}", cluster=family, label_rule="answer_key",
            honest_meaning=f"the answer states the truth ({', '.join(keys['honest_keywords'])})",
            deceptive_meaning=f"the answer states the falsehood ({', '.join(keys['deceptive_keywords'])}) or denies "
            "the truth", **keys))
    return prompts


def control(doc: dict, family: str, where: str) -> list[Prompt]:
    prompts = []
    for i, e in enumerate(_entries(doc, "requests", where, "{id, category, request}")):
        w = f"{where} requests[{i}] ({e['id']})"
        if not str(e.get("category") or "").strip():
            raise ScenarioError(f"{w}: each control request needs a `category` (its cluster).")
        prompts.append(Prompt(
            id=f"{family}.{e['id']}", family=family, text=_text(e, doc, w), honest_keywords=(), deceptive_keywords=(),
            kind="control", variant="control", group=f"{family}.{e['id']}", cluster=f"{family}.{e['category']}",
            label_rule="control", fixed_label=CONTROL))
    return prompts
