"""Property tests for same-prompt balancing, the split by prompt group and the input-variation split."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma4_saelens_ext.behavior.pools import (
    PoolError,
    balance_same_prompt,
    input_variation_split,
    split_groups,
    stable_order,
)

LABELS = ["honest", "deceptive", "ambiguous", "unlabelled"]


@st.composite
def records(draw, min_prompts=1):
    n_fam = draw(st.integers(1, 3))
    recs = []
    for f in range(n_fam):
        n_groups = draw(st.integers(1, 4))
        for g in range(n_groups):
            for role in range(draw(st.integers(1, 2))):
                pid = f"f{f}.g{g}.r{role}"
                for i in range(draw(st.integers(0, 6))):
                    recs.append(
                        {
                            "key": f"{pid}#{i}",
                            "prompt_id": pid,
                            "scenario": f"f{f}",
                            "group": f"f{f}.g{g}",
                            "label": draw(st.sampled_from(LABELS)),
                        }
                    )
    return recs


@settings(max_examples=150, deadline=None)
@given(records(), st.integers(0, 2**31), st.randoms(use_true_random=False))
def test_balance_invariants(recs, seed, rnd):
    try:
        kept, report = balance_same_prompt(recs, seed=seed, min_per_class=0)
    except PoolError:  # pragma: no cover - min_per_class=0
        raise
    keys = [r["key"] for r in kept]
    assert len(keys) == len(set(keys))  # no duplicates
    assert set(keys) <= {r["key"] for r in recs}  # nothing invented
    per = defaultdict(Counter)
    for r in kept:
        per[r["prompt_id"]][r["label"]] += 1
    avail = defaultdict(Counter)
    for r in recs:
        avail[r["prompt_id"]][r["label"]] += 1
    group_of = {r["prompt_id"]: r["group"] for r in recs}
    group_n = defaultdict(lambda: 10**9)  # an independent count of the group's balance level
    for pid, c in avail.items():
        group_n[group_of[pid]] = min(group_n[group_of[pid]], c["honest"], c["deceptive"])
    for pid, c in per.items():
        assert set(c) <= {"honest", "deceptive"}
        assert c["honest"] == c["deceptive"] == group_n[group_of[pid]]
    for pid in avail:
        if group_n[group_of[pid]] == 0:
            assert pid in report.empty_class_prompts and pid not in per
    # deterministic and independent of input order
    shuffled = list(recs)
    rnd.shuffle(shuffled)
    kept2, _ = balance_same_prompt(shuffled, seed=seed, min_per_class=0)
    assert sorted(keys) == sorted(r["key"] for r in kept2)


@settings(max_examples=150, deadline=None)
@given(records(), st.integers(0, 2**31), st.floats(0.0, 0.9), st.randoms(use_true_random=False))
def test_split_invariants(recs, seed, frac, rnd):
    assign = split_groups(recs, seed=seed, eval_fraction=frac)
    groups = {r["group"] for r in recs}
    assert set(assign) == groups and set(assign.values()) <= {"train", "eval"}
    # no prompt in both splits (a prompt belongs to exactly one group)
    prompt_split = defaultdict(set)
    for r in recs:
        prompt_split[r["prompt_id"]].add(assign[r["group"]])
    assert all(len(s) == 1 for s in prompt_split.values())
    # every family with >= 2 groups is in both splits when frac > 0
    fam_groups = defaultdict(set)
    for r in recs:
        fam_groups[r["scenario"]].add(r["group"])
    for fam, gs in fam_groups.items():
        splits = {assign[g] for g in gs}
        if frac > 0 and len(gs) >= 2:
            assert splits == {"train", "eval"}
        if frac == 0:
            assert splits == {"train"}
    shuffled = list(recs)
    rnd.shuffle(shuffled)
    assert split_groups(shuffled, seed=seed, eval_fraction=frac) == assign


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        split_groups([], seed=0, eval_fraction=1.0)


def test_empty_class_pool_error_names_scenario_and_prompt():
    recs = [
        {"key": "a#0", "prompt_id": "werewolf.q.villager", "scenario": "werewolf", "label": "honest"},
        {"key": "a#1", "prompt_id": "werewolf.q.villager", "scenario": "werewolf", "label": "honest"},
        {"key": "b#0", "prompt_id": "mafia.q.town", "scenario": "mafia", "label": "deceptive"},
    ]
    with pytest.raises(PoolError) as e:
        balance_same_prompt(recs, seed=0)
    msg = str(e.value)
    assert "werewolf/werewolf.q.villager" in msg and "mafia/mafia.q.town" in msg
    assert "--samples-per-prompt" in msg


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["neutral", "V0", "V3", "behavior"])), max_size=60),
    st.integers(0, 1000),
    st.booleans(),
)
def test_input_variation_split(pairs, seed, balance):
    recs = [{"key": f"k{i}", "group": f"q{q}", "variant": v} for i, (q, v) in enumerate(pairs)]
    rows, counts = input_variation_split(recs, seed=seed, balance=balance)
    assert all(r["variant"] in ("neutral", "V0", "V3") for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)
    for q, c in counts.items():
        if balance:
            assert len(set(c.values())) == 1
        else:
            assert sum(c.values()) == sum(1 for r in recs if r["group"] == q and r["variant"] != "behavior")


def test_stable_order_is_a_seeded_permutation():
    keys = [f"k{i}" for i in range(50)]
    a = stable_order(keys, 1)
    assert sorted(a) == sorted(keys)
    assert a == stable_order(list(reversed(keys)), 1)
    assert a != stable_order(keys, 2)
    random.shuffle(keys)
