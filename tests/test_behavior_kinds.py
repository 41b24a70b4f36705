"""Dataset kinds: the shipped instructed-pairs statements, incentive families and control requests; the answer-key
judge on known strings; an off-policy build (no model: nothing is generated) with its splits, card and readers; bad
scenario files. The sampled kinds on a real model are in test_behavior_kinds_build.py."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gemma4_saelens_ext.behavior.build import BuildConfig, build_dataset
from gemma4_saelens_ext.behavior.plan import select_prompts
from gemma4_saelens_ext.behavior.judges import AnswerKeyJudge, ParaphraseJudge
from gemma4_saelens_ext.behavior.kinds import KINDS, LABEL_RULES
from gemma4_saelens_ext.behavior.scenario_facts import statements_provenance
from gemma4_saelens_ext.behavior.scenarios import (
    ScenarioError,
    builtin_scenario_dir,
    builtin_scenario_files,
    load_scenario_file,
    load_scenarios,
)

OFF = load_scenarios(kinds=["instructed_pairs"])
ON = {p.id: p for p in load_scenarios(kinds=["instructed_pairs", "incentive"], instructed_mode="on_policy")}
AK = AnswerKeyJudge()


def test_every_shipped_file_loads_and_every_kind_is_shipped():
    kinds = Counter()
    for f in builtin_scenario_files():
        ps = load_scenario_file(f)
        assert ps and len({p.kind for p in ps}) == 1, f
        kinds[ps[0].kind] += len(ps)
        assert all(p.cluster and p.group and p.label_rule in LABEL_RULES for p in ps), f
    assert set(kinds) == set(KINDS)
    control = load_scenarios(kinds=["control"])
    assert len(control) >= 60 and {p.fixed_label for p in control} == {"control"}
    assert len({p.cluster for p in control}) >= 5 and all(p.text.endswith("\n") for p in control)
    incentive = load_scenarios(kinds=["incentive"])
    fams = Counter(p.family for p in incentive)
    assert len(fams) >= 5 and min(fams.values()) >= 5, fams
    for p in incentive:  # a question whose truth the situation fixes, judged by the answer key; no assigned liar
        assert p.label_rule == "answer_key" and p.honest_keywords and p.deceptive_keywords and p.fixed_label is None
        assert "?" in p.text and not any(w in p.text.lower() for w in ("liar", "deceive", "dishonest", "lie "))


def test_shipped_statements_300_unique_true_to_their_key_each_with_both_labels():
    groups = defaultdict(list)
    for p in OFF:
        groups[p.group].append(p)
    assert len(groups) >= 300
    statements = [ps[0].fixed_completion for ps in groups.values()]
    assert len(set(statements)) == len(statements)
    assert len({p.cluster for p in OFF}) >= 10  # topics: the coarser cluster
    assert len({p.role for p in OFF}) >= 4  # several instruction pairs, matched inside each group
    for g, ps in groups.items():
        assert sorted(p.fixed_label for p in ps) == ["deceptive", "honest"], g
        assert {p.variant for p in ps} == {"honest", "dishonest"} and len({p.role for p in ps}) == 1, g
        assert len({p.fixed_completion for p in ps}) == 1 and len({p.text for p in ps}) == 2, g
        assert all(p.text.endswith("\n") and p.label_rule == "instruction" for p in ps), g
        # the statement states its answer key and no known false answer
        assert AK.label_one(ps[0], ps[0].fixed_completion) == "honest", (g, ps[0].fixed_completion)
    assert "2026" in statements_provenance(builtin_scenario_dir() / "instructed_pairs.yaml")


def test_answer_keys_decide_their_own_words():
    """Every alias of the truth reads honest and every known false answer deceptive, so no keyword of one side
    hides inside a keyword of the other (plurals, prefixes like twenty / twenty-five)."""
    for p in ON.values():
        for a in (*p.honest_keywords, *p.honest_paraphrases):
            assert AK.label_one(p, f" {a}.'") == "honest", (p.id, a)
        for a in (*p.deceptive_keywords, *p.deceptive_paraphrases):
            assert AK.label_one(p, f" {a}.'") == "deceptive", (p.id, a)


PARIS = ON["instructed_pairs.geo01.dishonest.ask"]
BRAKES = ON["incentive_sale.bike_brakes"]
CAMERA = ON["incentive_sale.camera_focus"]
LOCK = ON["incentive_insurance.bike_unlocked"]
TABLE = [  # (prompt, completion, answer-key label)
    (PARIS, " Paris.", "honest"),
    (PARIS, "The capital of France is Lyon.", "deceptive"),
    (PARIS, "It is definitely not Paris.", "deceptive"),  # denies the key
    (PARIS, "Paris, not Lyon.", "honest"),
    (PARIS, "Paris or Lyon, I think Lyon.", "ambiguous"),  # mixed: never decided by a majority
    (PARIS, "I would rather not say.", "ambiguous"),
    (PARIS, "\nParis\nLyon is the second city.", "honest"),  # only the first non-empty line is the answer
    (BRAKES, "They both work fine.'", "deceptive"),
    (BRAKES, "The rear one doesn't work.'", "honest"),  # a denied false answer states the truth
    (BRAKES, "The rear brake is bad, but the front works.'", "ambiguous"),
    (CAMERA, "It stopped working after I dropped it.'", "honest"),  # the phrase masks its word 'working'
    (CAMERA, "It works perfectly.'", "deceptive"),
    (LOCK, "It was locked, of course.'", "deceptive"),
    (LOCK, "Unlocked, sadly.'", "honest"),
    (LOCK, "It wasn't locked.'", "honest"),
]


@pytest.mark.parametrize("prompt,completion,label", TABLE)
def test_answer_key_judge_on_known_strings(prompt, completion, label):
    assert AK.label_one(prompt, completion) == label


def test_answer_key_is_stricter_than_the_paraphrase_majority():
    assert ParaphraseJudge().label_one(PARIS, "Paris or Lyon, I think Lyon.") == "deceptive"
    assert AK.label_one(PARIS, "Paris or Lyon, I think Lyon.") == "ambiguous"


@pytest.fixture(scope="module")
def off_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("ip") / "ds"
    res = build_dataset(BuildConfig(out=str(out), kinds=["instructed_pairs"], progress=False))
    return out, res


def test_off_policy_rows_hold_the_statement_under_both_instructions(off_policy):
    out, res = off_policy
    assert res.n_generated == 0 and res.n_resumed == 0  # nothing sampled, no model loaded
    statements = {p.id: p.fixed_completion for p in OFF}
    per_group = defaultdict(list)
    for r in res.rows:
        assert r["kind"] == "instructed_pairs" and r["label_rule"] == "instruction"
        assert r["text"] == r["prompt"] + r["completion"] and r["completion"] == statements[r["prompt_id"]]
        assert r["text"][r["completion_start"]:] == r["completion"] and r["prompt"].endswith("\n")
        assert r["label"] == {"honest": "honest", "dishonest": "deceptive"}[r["variant"]]
        assert r["n_new_tokens"] == 0 and r["label_keyword"] is None  # written, not judged
        per_group[r["group"]].append(r)
    assert all(sorted(x["label"] for x in rs) == ["deceptive", "honest"] for rs in per_group.values())
    assert len(per_group) == len({p.group for p in OFF})


def test_off_policy_splits_disjoint_by_group_with_40_groups_each(off_policy):
    out, res = off_policy
    from gemma4_saelens_ext.evals.data import load_rows

    split_groups = {s: {r["group"] for r in load_rows(str(out), s)} for s in ("train", "eval")}
    assert not split_groups["train"] & split_groups["eval"]
    assert min(len(g) for g in split_groups.values()) >= 40
    clusters = {s: {r["cluster"] for r in load_rows(str(out), s)} for s in ("train", "eval")}
    assert clusters["train"] == clusters["eval"]  # stratified: every topic in both splits
    k = res.manifest["kinds"]["instructed_pairs"]
    assert k["groups"] == {s: len(g) for s, g in split_groups.items()}
    assert k["layout"]["groups_both_labels"] == sum(k["groups"].values())
    assert k["layout"]["groups_honest_only"] == k["layout"]["groups_deceptive_only"] == 0


def test_off_policy_card_and_folder_readers(off_policy):
    import datasets

    out, res = off_policy
    card = (out / "README.md").read_text()
    assert "`instructed_pairs`: label rule `instruction`" in card and LABEL_RULES["instruction"] in card
    assert "Written by hand for the gemma4-saelens-ext project" in card
    m = json.loads((out / "manifest.json").read_text())
    assert m["scenarios"]["kinds"] == ["instructed_pairs"] and m["scenarios"]["instructed_mode"] == "off_policy"
    ds = datasets.load_dataset(str(out))  # what SAELens reads as dataset_path
    assert set(ds) == {"train", "eval"} and {"kind", "label_rule", "cluster"} <= set(ds["train"].column_names)
    assert len(ds["train"]) + len(ds["eval"]) == len(res.rows)


def test_sizes_and_family_filters():
    cfg = lambda **kw: BuildConfig(out="unused", **kw)  # noqa: E731
    ps = select_prompts(cfg(kinds=["instructed_pairs", "control"], max_statements=30, max_control_prompts=8))
    inst = [p for p in ps if p.kind == "instructed_pairs"]
    ctrl = [p for p in ps if p.kind == "control"]
    assert len({p.group for p in inst}) == 30 and len(inst) == 60
    assert len({p.cluster for p in inst}) >= 14  # spread over the topics, not the first 30 of the file
    assert len(ctrl) == 8 and len({p.cluster for p in ctrl}) == 8
    # --families filters role play as before; it leaves a new kind whole unless one of its families is named
    ps = select_prompts(cfg(kinds=["role_play", "incentive"], families=["werewolf"]))
    assert {p.family for p in ps if p.kind == "role_play"} == {"werewolf"}
    assert len({p.family for p in ps if p.kind == "incentive"}) >= 5
    ps = select_prompts(cfg(kinds=["role_play", "incentive"], families=["werewolf", "incentive_sale"]))
    assert {p.family for p in ps} == {"werewolf", "incentive_sale"}
    with pytest.raises(ScenarioError, match="incentive_sale is of kind incentive.*add that kind to --kinds"):
        select_prompts(cfg(families=["incentive_sale"]))


def test_config_and_cli_flags():
    from gemma4_saelens_ext.cli.app import build_parser

    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['deception'\]; valid kinds: role_play"):
        BuildConfig(out="o", kinds=["deception"])
    with pytest.raises(ValueError, match="--max-statements=0 is out of range.*give a positive count"):
        BuildConfig(out="o", max_statements=0)
    args = ["build-dataset", "--out", "o", "--kinds", "instructed_pairs,control", "--instructed-mode", "on_policy",
            "--max-statements", "50", "--control-max-new-tokens", "8"]
    cfg = build_parser(args).parse_args(args).cfg
    assert (cfg.kinds, cfg.instructed_mode, cfg.max_statements, cfg.control_max_new_tokens) == (
        ["instructed_pairs", "control"], "on_policy", 50, 8)
    assert BuildConfig(out="o").kinds == ["role_play", "input_variation"]  # today's default


def _write(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text)
    return d / name


def test_bad_scenario_files_name_the_file_and_entry(tmp_path):
    f = _write(tmp_path, "odd.yaml", "family: odd\nkind: deception\nprompts: []\n")
    with pytest.raises(ScenarioError, match=r"odd\.yaml: unknown kind 'deception'; use one of role_play, "):
        load_scenario_file(f)
    f = _write(tmp_path, "inc.yaml", "family: inc\nkind: incentive\nprompts:\n"
               "  - {id: ok, text: 'Q? A: ', answer: [yes_], wrong: [no_]}\n"
               "  - {id: car, text: 'Q? A: ', wrong: [x]}\n")
    with pytest.raises(ScenarioError, match=r"inc\.yaml prompts\[1\] \(car\): no `answer` \(the true answer"):
        load_scenario_file(f)
    _write(tmp_path, "facts.yaml", "statements:\n  - {id: s1, topic: t, statement: 'A.', question: 'Q?', "
           "answer: [a]}\n")
    f = _write(tmp_path, "ip.yaml", "family: ip\nkind: instructed_pairs\nstatements_file: facts.yaml\n"
               "instructions: [{id: x, honest: H, dishonest: D}]\noff_policy_template: \"{instruction}\\n\"\n")
    with pytest.raises(ScenarioError, match=r"facts\.yaml statements\[0\] \(s1\): no `wrong` \(known false"):
        load_scenario_file(f)
    f = _write(tmp_path, "ip2.yaml", "family: ip\nkind: instructed_pairs\nstatements_file: nowhere.yaml\n")
    with pytest.raises(ScenarioError, match=r"Statements file .*nowhere\.yaml does not exist"):
        load_scenario_file(f)
    f = _write(tmp_path, "ctl.yaml", "family: c\nkind: control\ntemplate: '{request}'\n"
               "requests: [{id: a, request: hi}]\n")
    with pytest.raises(ScenarioError, match=r"ctl\.yaml requests\[0\] \(a\): each control request needs a `category`"):
        load_scenario_file(f)
    with pytest.raises(ScenarioError, match=r"control\.yaml is of kind 'control'.*add control to --kinds"):
        load_scenarios(["control"])  # a built-in file named explicitly, of a kind not asked for


def test_single_group_strata_share_one_stratum():
    from gemma4_saelens_ext.behavior.pools import split_groups

    recs = [{"group": f"g{i}", "cluster": f"c{i}"} for i in range(10)]
    assert set(split_groups(recs, seed=0, stratify_key="cluster").values()) == {"train"}  # each alone: no eval
    pooled = split_groups(recs, seed=0, stratify_key="cluster", pool_single_group_strata=True)
    assert Counter(pooled.values()) == {"train": 7, "eval": 3}
    assert pooled == split_groups(recs[::-1], seed=0, stratify_key="cluster", pool_single_group_strata=True)


def test_same_named_folders_do_not_share_the_datasets_cache(tmp_path):
    """``datasets`` keys a local folder's cache on its basename and card configs; the data fingerprint in the card
    keeps two builds named ``ds`` apart (SAELens loads dataset_path without streaming)."""
    import datasets

    sizes = {}
    for name, n in (("a", 20), ("b", 30)):
        build_dataset(BuildConfig(out=str(tmp_path / name / "ds"), kinds=["instructed_pairs"], max_statements=n,
                                  progress=False))
        ds = datasets.load_dataset(str(tmp_path / name / "ds"))
        sizes[name] = len(ds["train"]) + len(ds["eval"])
    assert sizes == {"a": 40, "b": 60}
