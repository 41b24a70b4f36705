"""A mixed-kind build on the embedded Gemma 3 270M (fp32: fast on CPU): role play, on-policy instructed pairs,
incentive and control in one folder, each labelled by its own rule; then the same folder resumed off-policy (nothing
new to sample); and the token boundary the off-policy rows rely on."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gemma4_saelens_ext.behavior.build import BuildConfig, build_dataset
from gemma4_saelens_ext.behavior.judges import AnswerKeyJudge
from gemma4_saelens_ext.behavior.kinds import LABEL_RULES
from gemma4_saelens_ext.behavior.scenarios import load_scenarios

pytestmark = pytest.mark.slow
KINDS = ["role_play", "instructed_pairs", "incentive", "control"]
# werewolf: one twin group (2 prompts) x 1; 4 statements x 2 instructions x 1; 6 families x 1 prompt x 1; 4 x 1
N_ROWS = {"role_play": 2, "instructed_pairs": 8, "incentive": 6, "control": 4}


@pytest.fixture(scope="module")
def mixed(gemma3_fp32, tmp_path_factory):
    cfg = BuildConfig(
        out=str(tmp_path_factory.mktemp("mixed") / "ds"), precision="fp32", kinds=KINDS, instructed_mode="on_policy",
        families=["werewolf"], max_prompts_per_family=1, max_statements=4, max_control_prompts=4,
        samples_per_prompt=1, instructed_samples_per_prompt=1, max_new_tokens=16, control_max_new_tokens=8,
        batch_size=16, seed=1, allow_empty_pool=True, progress=False,
    )  # fmt: skip
    return cfg, build_dataset(cfg, model=gemma3_fp32.model, tokenizer=gemma3_fp32.tokenizer)


def test_each_kind_is_labelled_by_its_rule(mixed):
    cfg, res = mixed
    assert res.n_generated == sum(N_ROWS.values())
    assert Counter(r["kind"] for r in res.rows) == N_ROWS
    prompts = {p.id: p for p in load_scenarios(kinds=KINDS, instructed_mode="on_policy")}
    for r in res.rows:
        p = prompts[r["prompt_id"]]
        assert r["text"] == r["prompt"] + r["completion"] and r["completion_start"] == len(r["prompt"])
        assert r["label_rule"] == p.label_rule and r["cluster"] == p.cluster and r["group"] == p.group
        if r["kind"] == "control":
            assert r["label"] == "control" and r["label_keyword"] is None and 0 < r["n_new_tokens"] <= 8
        elif r["kind"] in ("instructed_pairs", "incentive"):
            assert r["label_rule"] == "answer_key" and r["label"] == r["label_answer_key"]
            assert r["label"] == AnswerKeyJudge().label_one(p, r["completion"])
            assert r["label_keyword"] in ("honest", "deceptive", "ambiguous")  # other judges' opinions kept
        else:
            assert r["label"] == r["label_keyword"] and r["label_answer_key"] is None
        assert r["n_new_tokens"] <= 16


def test_splits_keep_groups_whole_and_natural_layouts(mixed):
    cfg, res = mixed
    split_of = defaultdict(set)
    for r in res.rows:
        split_of[r["group"]].add(r["prompt_split"])
        if r["split"] in ("train", "eval"):
            assert r["split"] == r["prompt_split"]
            assert r["label"] in ("honest", "deceptive", "control")
        elif r["kind"] in ("instructed_pairs", "incentive", "control"):
            assert r["label"] == "ambiguous" and r["split"] == "unpooled"  # natural layout: only ambiguous left out
    assert all(len(s) == 1 for s in split_of.values())
    for kind in KINDS[1:]:  # one selected group per cluster: those clusters share a stratum, so eval is not empty
        assert {r["prompt_split"] for r in res.rows if r["kind"] == kind} == {"train", "eval"}
    k = res.manifest["kinds"]
    assert set(k) == set(KINDS) and k["control"]["label_rule"] == "control"
    decisive = Counter(r["kind"] for r in res.rows if r["split"] in ("train", "eval") and r["label"] != "control")
    for kind in ("instructed_pairs", "incentive"):
        lay = k[kind]["layout"]
        assert sum(sum(c.get(lab, 0) for lab in ("honest", "deceptive"))
                   for s, c in k[kind]["rows"].items() if s in ("train", "eval")) == decisive[kind]
        assert lay["groups_both_labels"] + lay["groups_honest_only"] + lay["groups_deceptive_only"] == len(
            {r["group"] for r in res.rows if r["kind"] == kind and r["split"] in ("train", "eval")})


def test_mixed_folder_reads_through_evals_and_datasets(mixed):
    import datasets

    from gemma4_saelens_ext.evals.data import load_rows

    cfg, res = mixed
    ds = datasets.load_dataset(cfg.out)
    rows = load_rows(cfg.out, "train") + load_rows(cfg.out, "eval")
    assert len(rows) == len(ds["train"]) + len(ds["eval"])
    assert {"control"} <= {r["kind"] for r in rows} and len({r["kind"] for r in rows}) >= 2
    card = (Path(cfg.out) / "README.md").read_text()
    for kind in KINDS:
        rule = res.manifest["kinds"][kind]["label_rule"]
        assert f"`{kind}`: label rule `{rule}`" in card and LABEL_RULES[rule] in card


def test_resume_off_policy_in_the_same_folder_needs_no_sampling(mixed):
    cfg, res = mixed
    again = build_dataset(BuildConfig(**{**cfg.__dict__, "instructed_mode": "off_policy", "resume": True}))
    assert again.n_generated == 0  # off-policy statements are written; the other kinds come from the checkpoint
    inst = [r for r in again.rows if r["kind"] == "instructed_pairs"]
    assert len(inst) == 8 and {r["label_rule"] for r in inst} == {"instruction"}
    assert {r["key"]: r["completion"] for r in again.rows if r["kind"] == "incentive"} == {
        r["key"]: r["completion"] for r in res.rows if r["kind"] == "incentive"}


def test_off_policy_statement_starts_on_a_token_boundary(gemma3_fp32):
    """``activations(completion_start=...)`` keeps tokens starting at or after the offset: the statement's first
    token must start exactly there (a space before it would glue it to a token starting one character early)."""
    tok = gemma3_fp32.tokenizer
    prompts = load_scenarios(kinds=["instructed_pairs"])
    for p in prompts:
        text = p.text + p.fixed_completion
        starts = [s for s, e in tok(text, return_offsets_mapping=True)["offset_mapping"] if e > s]
        assert len(p.text) in starts, p.id
