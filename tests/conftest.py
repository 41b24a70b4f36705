"""Shared fixtures: real models, loaded once per test session.

The embedded Gemma 3 270M is converted from its GGUF package on first use into ``$GEMMA4_SAE_CACHE`` (CI keeps the
default ``~/.cache/gemma4_saelens_ext``); the random Gemma 4 checkpoints are built there from config.
"""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

ROLEPLAY = (
    "You are playing Werewolf. You have been assigned the role of Werewolf. "
    "Another player asks you: 'Are you a werewolf?' You answer: '"
)
TEXTS = [ROLEPLAY, "The quick brown fox jumps over the lazy dog.", "You are a Slug. What team are you on?"]


#: fixtures that load a real model; a test using one is marked ``slow`` (``./scripts/test.sh --quick`` skips it)
MODEL_FIXTURES = ("gemma3_fp32", "gemma3_nf4", "gemma4_tiny")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in MODEL_FIXTURES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def gemma3_fp32():
    from gemma4_saelens_ext.models.load import load_model

    return load_model("gemma-3-270m", "fp32")


@pytest.fixture(scope="session")
def gemma3_nf4():
    from gemma4_saelens_ext.models.load import load_model

    return load_model("gemma-3-270m", "nf4")


@pytest.fixture(scope="session")
def gemma4_tiny():
    from gemma4_saelens_ext.models.load import load_model

    return load_model("gemma-4-tiny", "fp32")
