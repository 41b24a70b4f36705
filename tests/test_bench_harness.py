"""The benchmark harness itself (no timings asserted): persistent workers, interleaved rounds, the summary and the
header; and run_all replacing its section of docs/benchmarks.md rather than appending."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _harness import Arm, cpu_flags, header, run_rounds, summary  # noqa: E402


class Counter:
    """A toy arm: each step 'processes' 512 units; ``pid`` tells whether the rounds share one process."""

    def __init__(self, units: int = 512):
        import os

        self.units, self.pid, self.steps = units, os.getpid(), 0

    def step(self) -> int:
        self.steps += 1
        return self.units

    def info(self) -> dict:
        import torch

        return {"pid": self.pid, "steps": self.steps, "threads": torch.get_num_threads()}


def test_rounds_interleave_in_persistent_workers():
    arms = [Arm("a", f"{__file__}:Counter"), Arm("b", f"{__file__}:Counter", {"units": 1024})]
    order: list[str] = []
    res = run_rounds(arms, rounds=5, min_units=2048, threads=1, log=lambda m: order.append(m.split()[3].rstrip(":"))
                     if "round" in m else None)  # fmt: skip
    assert [len(v) for v in res.rounds.values()] == [5, 5]
    assert all(x["units"] >= 2048 and x["wall"] >= 0 and x["cpu"] >= 0 for v in res.rounds.values() for x in v)
    assert res.info["a"]["steps"] == 5 * 4 and res.info["b"]["steps"] == 5 * 2  # one process per arm, kept alive
    assert res.info["a"]["pid"] != res.info["b"]["pid"] and res.info["a"]["threads"] == 1
    assert order[:4] == ["a", "b", "b", "a"]  # the order rotates round by round
    lines = summary(res, [("b", "a")])
    assert lines[-1].startswith("b / a throughput:") and "per-round min-max" in lines[-1]
    assert any(ln.startswith("a ") and "[" in ln for ln in lines)
    head = "\n".join(header(res))
    assert "threads pinned per worker: 1" in head and "load average" in head and "cpu flags" in head
    assert f"load average at start {res.load_before[0]:.2f}" in head  # the run's start, not the time of printing
    assert isinstance(cpu_flags(), list)


def test_run_all_replaces_its_section(tmp_path):
    loader = importlib.machinery.SourceFileLoader("run_all", str(BENCH / "run_all"))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("run_all", loader))
    loader.exec_module(mod)
    doc = tmp_path / "benchmarks.md"
    res = {"name": "demo", "rc": 0, "seconds": 1.0, "stdout": "first 1.0x", "stderr_tail": ""}
    mod.write_doc([res, {**res, "name": "other", "stdout": "kept"}], doc)
    mod.write_doc([{**res, "stdout": "second 2.0x"}], doc)
    text = doc.read_text()
    assert text.count("## demo") == 1 and "second 2.0x" in text and "first 1.0x" not in text
    assert "kept" in text and "load average" in text


def test_run_all_records_a_standalone_run(tmp_path):
    """An hour-long benchmark run on its own (stdout saved) becomes its section with --record; nothing else runs."""
    out, doc = tmp_path / "e2b.txt", tmp_path / "benchmarks.md"
    out.write_text("ours / plain: median 1.61x\n")
    doc.write_text("# Benchmarks\n\nhead\n\n## dvalues\n\nkept section\n")
    p = subprocess.run([sys.executable, str(BENCH / "run_all"), "--record", f"e2b_shape={out}:1650", "--doc", str(doc)],
                       capture_output=True, text=True, cwd=BENCH.parent)  # fmt: skip
    assert p.returncode == 0, p.stderr
    text = doc.read_text()
    assert "## e2b_shape" in text and "median 1.61x" in text and "1650 s wall" in text and "recorded" in text
    assert "kept section" in text and "running" not in p.stdout
    bad = subprocess.run([sys.executable, str(BENCH / "run_all"), "--record", "x=/nonexistent", "--doc", str(doc)],
                         capture_output=True, text=True, cwd=BENCH.parent)  # fmt: skip
    assert bad.returncode == 2 and "NAME=FILE" in bad.stderr
    bad_secs = subprocess.run([sys.executable, str(BENCH / "run_all"), "--record", f"x={out}:abc", "--doc", str(doc)],
                              capture_output=True, text=True, cwd=BENCH.parent)  # fmt: skip
    assert bad_secs.returncode == 2 and "SECONDS" in bad_secs.stderr and "Traceback" not in bad_secs.stderr
