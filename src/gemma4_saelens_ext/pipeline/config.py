"""``gemma4-sae demo``'s options (:class:`DemoConfig`); its flags, YAML keys and ``--help`` come from the fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from simple_parsing.helpers import field as sfield

from gemma4_saelens_ext.errors import check_range
from gemma4_saelens_ext.io import check_out
from gemma4_saelens_ext.options import layer_field, switch, precision_field, split_csv

__all__ = ["DemoConfig", "DemoError", "DEMO_TRAIN_CONFIG", "DEMO_SUITE", "DEMO_KINDS"]

DEMO_TRAIN_CONFIG = "demo_gemma3_270m_nf4"
DEMO_SUITE = "demo"
#: the demo's dataset kinds (input_variation is added when the eval uses it)
DEMO_KINDS = ("role_play", "instructed_pairs", "control")


class DemoError(RuntimeError):
    """A demo stage failed (the message names it) or the machine cannot run the demo."""


@dataclass
class DemoConfig:
    """``gemma4-sae demo``: behavior dataset -> SAE (SAELens runner) -> eval report -> model card, in one folder.
    A finished stage is reused only while the settings it depends on are unchanged."""

    out: str = "runs/demo"
    """output folder (dataset/, sae/, report/, release/, stages.json)"""
    model: str = "gemma-3-270m"
    """embedded name, local folder or Hub id (e.g. google/gemma-4-E2B)"""
    precision: str = precision_field("nf4")
    """load precision of the model, for sampling, training and evals"""
    layer: Union[int, str, None] = layer_field()
    """SAE layer: an int or blocks.L.hook_resid_post (default: the training config's)"""
    config: str = DEMO_TRAIN_CONFIG
    """training config: a shipped name or a YAML path"""
    suite: str = DEMO_SUITE
    """eval suite: a shipped name or a YAML path"""
    samples_per_prompt: int = 16
    """completions per prompt: Gemma 3 270M leaves its role in about 1 sample in 10, and a prompt enters the
    balanced pool only with both classes"""
    max_prompts_per_family: Optional[int] = sfield(default=4, alias=["--max-prompts"])
    """prompts per scenario family, taken as whole prompt groups (4 = two groups of role-swapped twins, so every
    family has a group in each split); give the flag without a value for all"""
    max_new_tokens: int = 24
    """tokens generated per completion"""
    kinds: list[str] = field(default_factory=lambda: list(DEMO_KINDS))
    """dataset kinds to build (docs/datasets.md): the default gives the detection card labels that support the claim
    (instructed pairs, off-policy: no sampling), the role-play behavior, and control requests for the 1%-FPR
    threshold; input_variation is added when the eval's positive control can use it"""
    max_statements: Optional[int] = None
    """instructed-pairs statements to use (default: all 381, about 115 eval groups; --quick: 60)"""
    max_control_prompts: Optional[int] = None
    """control requests to answer (default: all 64; --quick: 8)"""
    families: list[str] = field(default_factory=list)
    """scenario families to use (default: all built-in)"""
    training_tokens: Optional[int] = None
    """SAE training budget (default: the training config's)"""
    seed: int = 0
    """seed for sampling, splits, training and the eval resamples"""
    quick: bool = switch(False)
    """tiny budgets everywhere (smoke test, CI): few tokens, few resamples, fp32-only portability"""
    fresh: bool = switch(False)
    """redo every stage"""
    min_free_gb: float = 2.0
    """refuse to start with less free disk than this at --out"""
    progress: bool = switch(True)
    """show progress bars"""
    train_overrides: dict[str, Any] = sfield(default_factory=dict, cmd=False)
    """extra training overrides (dotted keys such as runner.lr); Python and YAML only"""

    def __post_init__(self) -> None:
        from gemma4_saelens_ext.behavior.config import check_prompt_limit

        from gemma4_saelens_ext.behavior.kinds import check_kinds

        self.families = split_csv(self.families)
        self.kinds = check_kinds(split_csv(self.kinds) or list(DEMO_KINDS), "--kinds")
        check_prompt_limit(self.max_prompts_per_family)
        for name in ("samples_per_prompt", "max_new_tokens", "training_tokens", "max_statements",
                     "max_control_prompts"):
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low=1, integer=True)
        check_range("--min-free-gb", self.min_free_gb, low=0)
        check_out(self.out)
