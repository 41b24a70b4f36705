"""What every scenario kind builds on: the :class:`Prompt` record, :class:`ScenarioError` and the field readers
(lists of keywords, templates, answer keys) that give every kind the same error messages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

__all__ = ["Prompt", "ScenarioError", "builtin_data_dir", "as_list", "fmt", "check_keywords", "answer_key"]


class ScenarioError(ValueError):
    """A scenario file is unusable; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of a dataset, with what decides its label."""

    id: str
    family: str
    text: str
    #: words that make a completion honest / deceptive (role keywords, or the answer key and known false answers)
    honest_keywords: tuple[str, ...]
    deceptive_keywords: tuple[str, ...]
    #: extra phrases only the paraphrase and answer-key judges use (they read beyond the first 30 characters)
    honest_paraphrases: tuple[str, ...] = ()
    deceptive_paraphrases: tuple[str, ...] = ()
    #: one of :data:`gemma4_saelens_ext.behavior.kinds.KINDS`
    kind: str = "role_play"
    #: "behavior" for role play, one of INPUT_VARIANTS for input variation, "honest"/"dishonest" (the instruction)
    #: for instructed pairs, "incentive" / "control" for those kinds
    variant: str = "behavior"
    #: prompts sharing a group are variants of one item (role swaps, input variants, one statement under both
    #: instructions); splits keep groups whole
    group: str = ""
    role: str = ""
    #: plain-words meaning of honest / deceptive for this prompt (shown to LLM judges)
    honest_meaning: str = ""
    deceptive_meaning: str = ""
    source_file: str = ""
    #: a coarser unit than the group (family, statement topic, control category): the cluster of the statistics
    cluster: str = ""
    #: id of the label rule (:data:`gemma4_saelens_ext.behavior.kinds.LABEL_RULES`)
    label_rule: str = "role_consistency"
    #: the completion itself when it is written, not generated (off-policy instructed pairs: the statement)
    fixed_completion: Optional[str] = None
    #: the label when it is fixed by construction (the instruction, or ``control``); None = judged
    fixed_label: Optional[str] = None

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    @property
    def generated(self) -> bool:
        """True when the model writes the completion (everything but off-policy statements)."""
        return self.fixed_completion is None


def builtin_data_dir(*parts: str) -> Path:
    return Path(str(files("gemma4_saelens_ext").joinpath("data", *parts)))


def as_list(value: Any, where: str, what: str) -> list[str]:
    """A list of non-empty strings (a single string or number becomes a one-item list)."""
    if value is None:
        return []
    if isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)):
        raise ScenarioError(
            f"{where}: `{what}` holds a boolean ({value!r}): YAML reads yes/no/on/off/true/false unquoted as booleans. "
            "Quote such keywords, e.g. ['yes']."
        )
    if isinstance(value, (str, int, float)):
        value = [value]
    if isinstance(value, (list, tuple)):
        value = [str(v) if isinstance(v, (int, float)) else v for v in value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{where}: `{what}` must be a list of strings, got {value!r}.")
    return [v.strip() for v in value if v.strip()]


def fmt(template: str, where: str, **kw: str) -> str:
    try:
        return template.format(**kw)
    except (KeyError, IndexError) as e:
        raise ScenarioError(
            f"{where}: template {template!r} uses placeholder {e} which is not defined; "
            f"available placeholders: {sorted(kw)} (write literal braces as '{{{{' and '}}}}')."
        ) from e


def check_keywords(p: Prompt, where: str) -> Prompt:
    """A judged prompt needs keywords on both sides, and no keyword on both."""
    if p.fixed_label is not None:
        return p
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


def answer_key(entry: dict, where: str) -> dict[str, tuple[str, ...]]:
    """An entry's answer key: ``answer`` (the truth: the key and its aliases), ``wrong`` (known false answers),
    optional ``answer_phrases`` / ``wrong_phrases`` (longer phrasings, read by the paraphrase and answer-key judges).
    Returned as Prompt keyword fields. A missing side is a ScenarioError naming the entry."""
    truth = as_list(entry.get("answer"), where, "answer")
    wrong = as_list(entry.get("wrong"), where, "wrong")
    for name, got in (("answer", truth), ("wrong", wrong)):
        if not got:
            what = "the true answer (and aliases)" if name == "answer" else "known false answers"
            raise ScenarioError(
                f"{where}: no `{name}` ({what}), so the answer key cannot judge it. Add e.g. "
                f"`{name}: [...]` to this entry."
            )
    return {
        "honest_keywords": tuple(truth),
        "deceptive_keywords": tuple(wrong),
        "honest_paraphrases": tuple(as_list(entry.get("answer_phrases"), where, "answer_phrases")),
        "deceptive_paraphrases": tuple(as_list(entry.get("wrong_phrases"), where, "wrong_phrases")),
    }
