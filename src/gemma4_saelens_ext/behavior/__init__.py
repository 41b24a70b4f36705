"""Behavior datasets: scenario kinds (role play, instructed pairs, incentive, control), seeded sampling, judges,
pools and the dataset builder.

Typical use: ``build_dataset(BuildConfig(out="runs/ds", model="gemma-3-270m", precision="nf4"))`` or
``gemma4-sae build-dataset --out runs/ds``; the folder then works as SAELens ``dataset_path``.
"""

from gemma4_saelens_ext.behavior.build import BuildConfig, BuildError, BuildResult, build_dataset
from gemma4_saelens_ext.behavior.judges import (
    AnswerKeyJudge,
    KeywordJudge,
    ParaphraseJudge,
    consortium,
    make_judges,
    pairwise_agreement,
)
from gemma4_saelens_ext.behavior.kinds import DEFAULT_KINDS, KINDS, LABEL_RULES
from gemma4_saelens_ext.behavior.llm_judge import LLMJudge, LLMJudgeConfig
from gemma4_saelens_ext.behavior.pools import PoolError, balance_same_prompt, input_variation_split, split_groups
from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests, sample_seed
from gemma4_saelens_ext.behavior.scenarios import Prompt, ScenarioError, load_scenarios

__all__ = [
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "build_dataset",
    "KINDS",
    "DEFAULT_KINDS",
    "LABEL_RULES",
    "AnswerKeyJudge",
    "KeywordJudge",
    "ParaphraseJudge",
    "LLMJudge",
    "LLMJudgeConfig",
    "consortium",
    "make_judges",
    "pairwise_agreement",
    "PoolError",
    "balance_same_prompt",
    "split_groups",
    "input_variation_split",
    "generate_completions",
    "make_requests",
    "sample_seed",
    "Prompt",
    "ScenarioError",
    "load_scenarios",
]
