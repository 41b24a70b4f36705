"""What every judge shares: the labels and the :class:`Judge` interface (a leaf: the keyword, paraphrase and LLM
judges all build on it, and it imports none of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from gemma4_saelens_ext.behavior.scenarios import Prompt

__all__ = ["HONEST", "DECEPTIVE", "AMBIGUOUS", "UNLABELLED", "LABELS", "DECISIVE", "JudgeItem", "Judge"]

HONEST, DECEPTIVE, AMBIGUOUS, UNLABELLED = "honest", "deceptive", "ambiguous", "unlabelled"
LABELS = (HONEST, DECEPTIVE, AMBIGUOUS, UNLABELLED)
DECISIVE = (HONEST, DECEPTIVE)


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees: a stable key (for caching), the prompt (role, keywords, meanings) and the completion."""

    key: str
    prompt: Prompt
    completion: str


class Judge:
    """Base class: ``label(items)`` returns one label from LABELS per item, in order."""

    name: str = "judge"

    def label(self, items: Sequence[JudgeItem]) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the manifest records about this judge (never secrets)."""
        return {"name": self.name, "type": type(self).__name__}
