"""`gemma4-sae demo` end to end at tiny budgets: every stage finishes, the report has finite numbers, re-runs reuse
finished stages, a failing stage is recorded with earlier outputs kept, and low disk is refused up front."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from gemma4_saelens_ext.cli import main
from gemma4_saelens_ext.errors import UserError
from gemma4_saelens_ext.pipeline.demo import (
    STAGES, DemoConfig, DemoError, _finite_numbers, check_disk, run_demo, stage_hashes,
)

QUICK = [
    "--quick", "--families", "werewolf,slug_snail", "--samples-per-prompt", "2", "--max-prompts-per-family", "1",
    "--max-new-tokens", "17", "--no-progress",
]  # fmt: skip


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


@pytest.mark.slow  # the whole demo: dataset, training, evals, twice
def test_demo_end_to_end_and_resume(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert [stages[s]["status"] for s in STAGES] == ["done"] * 4
    # the SAE trains on every row of the train prompts, never on an eval prompt
    import pyarrow.parquet as pq

    alls = pq.read_table(out / "dataset" / "data" / "all.parquet", columns=["prompt_split"]).column(0).to_pylist()
    assert stages["train"]["training_rows"] == alls.count("train") > 0 and "eval" in alls
    # one model load per precision: nf4 for the dataset, training and eval stages, fp32 once for portability
    loads = json.loads((out / "stages.json").read_text())["model_loads"]
    assert sorted(x["precision"] for x in loads) == ["fp32", "nf4"]
    assert not stages["dataset"]["input_variation_sampled"]
    assert all(stages[s]["seconds"] >= 0 for s in STAGES)
    printed = capsys.readouterr().out
    assert "stage" in printed and "total" in printed  # summary table

    report = json.loads((out / "report" / "report.json").read_text())
    for fam in ("reconstruction", "dvalues", "probes", "steering", "stability", "top_latents", "portability"):
        assert fam in report, fam
    nums = list(_numbers({k: report[k] for k in report if k not in ("settings", "versions")}))
    assert nums and all(math.isfinite(x) for x in nums), _finite_numbers(report)
    assert {"d_hist.png", "probes.png", "portability.png"} <= {p.name for p in (out / "report").glob("*.png")}
    # the default kinds: off-policy instructed pairs (60 statements in --quick) and control requests beside role play
    assert stages["dataset"]["kinds"] == ["role_play", "instructed_pairs", "control"]
    assert report["dataset"]["kind"] == "built" and report["dataset"]["sizes"]["eval"]["groups"] >= 15
    card = report["detection"]["kinds"]["instructed_pairs"]
    assert card["label_rule"].startswith("instruction: label = the instruction the statement was said under")
    dense = next(c for c in card["rows"] if c["family"] == "dense")
    assert dense["auroc_honest_deceptive"]["ci"] and dense["auroc_honest_deceptive"]["p"] is not None
    assert {(c["train_kind"], c["eval_kind"]) for c in report["detection"]["transfer"]} == {
        ("instructed_pairs", "instructed_pairs")}
    # the tiny role-play pool is empty, so steering (role-play prompts only: the keyword judge's rule) says why
    assert "judged kind" in report["steering"]["skipped"]
    md = (out / "report" / "report.md").read_text()
    assert md.index("## Detection card") < md.index("### Transfer matrix") < md.index("Steering")
    assert "Label rule: instruction" in md and "  • skipped: no eval prompt of a judged kind" in md
    card = (out / "release" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: saelens" in card
    from sae_lens import SAE

    assert SAE.load_from_disk(str(out / "sae")).cfg.d_in == 640

    # second run: everything reused, nothing recomputed
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    again = json.loads((out / "stages.json").read_text())["stages"]
    assert [again[s]["status"] for s in STAGES] == ["reused"] * 4

    # a changed setting redoes its stage and every later one, and only those
    suite = tmp_path / "my_suite.yaml"
    shutil.copyfile(Path(__file__).parents[1] / "evals" / "demo.yaml", suite)
    assert main(["demo", "--out", str(out), *QUICK, "--suite", str(suite)]) == 0
    third = json.loads((out / "stages.json").read_text())["stages"]
    assert [third[s]["status"] for s in STAGES] == ["reused", "reused", "done", "done"]

    # config errors stop the run before any stage (exit 2, nothing written)
    for flag, value in (("--config", "missing.yaml"), ("--suite", "missing_suite.yaml")):
        assert main(["demo", "--out", str(tmp_path / "early"), *QUICK, flag, str(tmp_path / value)]) == 2
        assert not (tmp_path / "early").exists()

    # a failing stage: recorded with its error, earlier outputs kept, non-zero exit
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copytree(out / "dataset", bad / "dataset")
    (bad / "dataset" / "data" / "all.parquet").write_bytes(b"not parquet")  # what the train stage reads
    (bad / "stages.json").write_text(json.dumps({"stages": {"dataset": stages["dataset"]}}))
    assert main(["demo", "--out", str(bad), *QUICK]) == 1
    rec = json.loads((bad / "stages.json").read_text())["stages"]
    assert rec["dataset"]["status"] == "reused" and (bad / "dataset" / "manifest.json").exists()
    assert rec["train"]["status"] == "failed" and "all.parquet" in rec["train"]["error"]
    assert "eval" not in rec or rec["eval"]["status"] != "done"


def test_stage_hashes_follow_the_settings_each_stage_depends_on():
    from gemma4_saelens_ext.pipeline.demo import stage_hashes

    base = stage_hashes(DemoConfig())
    assert stage_hashes(DemoConfig()) == base
    int8 = stage_hashes(DemoConfig(precision="int8"))
    assert all(int8[s] != base[s] for s in STAGES)  # the dataset and everything after it
    suite = stage_hashes(DemoConfig(suite="other.yaml"))
    assert [suite[s] == base[s] for s in STAGES] == [True, True, False, False]
    tokens = stage_hashes(DemoConfig(training_tokens=1000))
    assert [tokens[s] == base[s] for s in STAGES] == [True, False, False, False]
    assert stage_hashes(DemoConfig(progress=False)) == base  # display-only settings change nothing


def test_input_variation_prompts_sampled_only_when_the_eval_can_use_them():
    """The positive control reads the input-variation split only with >= control.min_groups question groups (else
    scripted rows); the decision is taken from the prompt selection, before sampling."""
    from gemma4_saelens_ext.pipeline.rows import input_variation_used
    from gemma4_saelens_ext.evals.suite import load_suite

    suite = load_suite("demo", sae={"path": "unused"})
    assert suite.control.min_groups == 6 and suite.control.scripted_fallback
    # 4 prompts per family: one sandbagging question (3 template variants) -> 1 group < 6
    assert not input_variation_used(DemoConfig(), suite)
    assert not input_variation_used(DemoConfig(families=["werewolf"]), suite)  # no input-variation family at all
    assert input_variation_used(DemoConfig(max_prompts_per_family=None), suite)  # all 8 questions
    suite.control.enabled = False
    assert not input_variation_used(DemoConfig(max_prompts_per_family=None), suite)
    # asked for by name, they are sampled whatever the eval would read
    assert input_variation_used(DemoConfig(kinds=["role_play", "input_variation"]), suite)
    suite.control.enabled, suite.control.scripted_fallback = True, False  # then the control reads what there is
    assert input_variation_used(DemoConfig(), suite)
    base = stage_hashes(DemoConfig())
    skip = stage_hashes(DemoConfig(), {"dataset": {"input_variation": False}})
    assert all(base[s] != skip[s] for s in STAGES)  # the dataset (and all after it) depend on the decision


def test_disk_space_checked_up_front(tmp_path: Path):
    assert check_disk(tmp_path / "not" / "yet", 0.0) > 0
    with pytest.raises(UserError, match="GB free"):  # a user error: exit 2, no traceback
        run_demo(DemoConfig(out=str(tmp_path / "d"), min_free_gb=1e9))
    assert not (tmp_path / "d").exists()
