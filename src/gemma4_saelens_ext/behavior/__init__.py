"""Behavior datasets: scenario kinds (role play, instructed pairs, incentive, control), seeded sampling, judges,
pools and the dataset builder.

Typical use: ``build_dataset(BuildConfig(out="runs/ds", model="gemma-3-270m", precision="nf4"))`` or
``gemma4-sae build-dataset --out runs/ds``; the folder then works as SAELens ``dataset_path``.

May import: ``models``, ``activations`` and the package's leaves. Not ``training``, ``releases`` or ``evals``.
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "BuildConfig": "config", "build_dataset": "build", "BuildError": "build", "BuildResult": "build",
    "KINDS": "kinds", "DEFAULT_KINDS": "kinds", "LABEL_RULES": "kinds", "AnswerKeyJudge": "judges",
    "KeywordJudge": "judges", "ParaphraseJudge": "judges", "consortium": "judges", "make_judges": "judges",
    "pairwise_agreement": "judges", "LLMJudge": "llm_judge", "LLMJudgeConfig": "llm_judge",
    "PoolError": "pools", "balance_same_prompt": "pools", "split_groups": "pools", "input_variation_split": "pools",
    "generate_completions": "sampling", "make_requests": "sampling", "sample_seed": "sampling",
    "Prompt": "scenarios", "ScenarioError": "scenarios", "load_scenarios": "scenarios",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
