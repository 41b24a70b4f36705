"""Scenario library: coverage of the shipped files, role-swap property, and error messages for broken files."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from gemma4_saelens_ext.behavior.scenarios import (
    INPUT_VARIANTS,
    ScenarioError,
    load_scenario_file,
    load_scenarios,
    scenario_fingerprint,
)


def test_builtin_library_size_and_families():
    prompts = load_scenarios()
    fams = {p.family for p in prompts}
    role_fams = {p.family for p in prompts if p.kind == "role_play"}
    assert len(role_fams) >= 8, fams
    assert {"werewolf", "secret_hitler", "slug_snail", "day_night"} <= fams
    assert len({p.text for p in prompts}) >= 60
    assert len({p.id for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.honest_keywords and p.deceptive_keywords, p.id


def test_role_swap_every_answer_word_is_honest_somewhere_and_deceptive_elsewhere():
    prompts = [p for p in load_scenarios() if p.kind == "role_play"]
    honest_in, deceptive_in = defaultdict(set), defaultdict(set)
    for p in prompts:
        for k in p.honest_keywords:
            honest_in[k.lower()].add(p.id)
        for k in p.deceptive_keywords:
            deceptive_in[k.lower()].add(p.id)
    for kw in honest_in:
        assert deceptive_in[kw], f"{kw} is never deceptive: its label would be predictable from the word"
    # each group holds one prompt per role with mirrored keywords
    groups = defaultdict(list)
    for p in prompts:
        groups[p.group].append(p)
    for g, ps in groups.items():
        assert len(ps) >= 2, g
        a, b = ps[0], ps[1]
        assert set(a.honest_keywords) <= set(b.deceptive_keywords), g
        assert set(b.honest_keywords) <= set(a.deceptive_keywords), g


def test_fascist_posing_as_liberal_and_liberal_both_say_liberal():
    ps = {p.id: p for p in load_scenarios(families=["secret_hitler"])}
    fascist = ps["secret_hitler.posing.party.fascist"]
    liberal = ps["secret_hitler.posing.party.liberal"]
    assert "liberal" in fascist.deceptive_keywords and "liberal" in liberal.honest_keywords
    assert "Liberal" in fascist.text  # the fascist is among liberals


def test_input_variation_has_three_variants_of_the_same_questions():
    ps = [p for p in load_scenarios() if p.kind == "input_variation"]
    assert ps
    per_q = defaultdict(set)
    for p in ps:
        per_q[p.group].add(p.variant)
    assert all(v == set(INPUT_VARIANTS) for v in per_q.values())
    # the question text is shared, the template differs
    by = defaultdict(dict)
    for p in ps:
        by[p.group][p.variant] = p.text
    for g, t in by.items():
        assert len(set(t.values())) == 3, g


def test_select_families_and_builtin_names():
    ps = load_scenarios(["werewolf", "mafia"])
    assert {p.family for p in ps} == {"werewolf", "mafia"}
    assert not [p for p in load_scenarios(include_input_variation=False) if p.kind == "input_variation"]
    with pytest.raises(ScenarioError, match="Unknown scenario families"):
        load_scenarios(families=["nope"])


def test_fingerprint_changes_with_text():
    a = load_scenarios(["werewolf"])
    assert scenario_fingerprint(a) == scenario_fingerprint(list(reversed(a)))
    assert scenario_fingerprint(a) != scenario_fingerprint(a[:-1])


def test_empty_file_error_names_file_and_fix(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    with pytest.raises(ScenarioError, match=r"empty\.yaml is empty.*family"):
        load_scenario_file(f)
    f.write_text("family: x\nroles:\n  a: {keywords: [a]}\n  b: {keywords: [b]}\n")
    with pytest.raises(ScenarioError, match="defines no prompts"):
        load_scenario_file(f)


def test_role_without_keywords_is_an_error(tmp_path):
    f = tmp_path / "nokw.yaml"
    f.write_text(
        "family: game\nroles:\n  a: {name: A}\n  b: {name: B, keywords: [bee]}\n"
        "setups: [{id: s, text: 'You are {role}. '}]\nquestions: [{id: q, text: 'Who are you? '}]\n"
    )
    with pytest.raises(ScenarioError, match=r"role 'a' .* has no keywords"):
        load_scenario_file(f)


def test_explicit_prompt_without_keywords_is_an_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("family: game\nprompts:\n  - id: one\n    text: 'Hello'\n    honest_keywords: [yes]\n")
    with pytest.raises(ScenarioError, match=r"boolean.*Quote"):
        load_scenario_file(f)
    f.write_text("family: game\nprompts:\n  - id: one\n    text: 'Hello'\n    honest_keywords: ['yes', 12]\n")
    with pytest.raises(ScenarioError, match=r"'game.one'.*no deceptive_keywords"):
        load_scenario_file(f)
    f.write_text(
        "family: game\nprompts:\n  - id: one\n    text: 'Hello'\n    honest_keywords: [hello]\n"
        "    deceptive_keywords: [Hello]\n"
    )
    with pytest.raises(ScenarioError, match="both honest and deceptive"):
        load_scenario_file(f)


def test_bad_placeholder_and_duplicate_ids(tmp_path):
    f = tmp_path / "ph.yaml"
    f.write_text(
        "family: g\nroles:\n  a: {keywords: [a]}\n  b: {keywords: [b]}\n"
        "setups: [{id: s, text: 'You are {rol}. '}]\nquestions: [{id: q, text: 'Who? '}]\n"
    )
    with pytest.raises(ScenarioError, match="placeholder"):
        load_scenario_file(f)
    g = tmp_path / "ok.yaml"
    g.write_text(
        "family: g\nroles:\n  a: {keywords: [a]}\n  b: {keywords: [b]}\n"
        "setups: [{id: s, text: 'You are {role}. '}]\nquestions: [{id: q, text: 'Who? '}]\n"
    )
    assert len(load_scenario_file(g)) == 2
    d = tmp_path / "dup"
    d.mkdir()
    (d / "one.yaml").write_text(g.read_text())
    (d / "two.yaml").write_text(g.read_text())
    with pytest.raises(ScenarioError, match="appears in both"):
        load_scenarios([d])


def test_user_file_extends_library(tmp_path):
    f = tmp_path / "pirates.yaml"
    f.write_text(
        "family: pirates\nroles:\n  pirate: {name: Pirate, keywords: [pirate]}\n  sailor: {name: Sailor, keywords: [sailor]}\n"
        "setups: [{id: s, text: 'You are a {role} on a ship full of {other}s.\\n'}]\n"
        "questions: [{id: q, text: \"The captain asks: 'Who are you?'\\nYou answer: '\"}]\n"
    )
    ps = load_scenarios([f, "werewolf"])
    assert Counter(p.family for p in ps) == {"pirates": 2, "werewolf": 8}
    assert re.search(r"You are a Pirate on a ship full of Sailors", ps[0].text)
