"""The benchmarks' measuring harness: each arm in its own persistent worker process, rounds interleaved, medians and
spreads of wall and CPU time, and a header that says when, where and under what load.

    arms = [Arm("ours", f"{__file__}:make_ours", {"layer": 25}), Arm("plain", f"{__file__}:make_plain")]
    res = run_rounds(arms, rounds=5, min_units=2048)
    print("\\n".join(header(res) + summary(res)))

A worker imports its factory (``path/to/file.py:function``), calls it once with the arm's kwargs (loading is
setup, not timed by the rounds) and gets back a ``step()`` callable returning the units (tokens) it processed, or an
object with ``step()`` and optionally ``info() -> dict`` and ``save(path)``. A round repeats ``step()`` until at least
``min_units`` units are done and reports the wall time (``perf_counter``) and the CPU time of the whole worker
(``process_time``: all its threads). Round ``r`` runs the arms in an order rotated by ``r``, one arm at a time, so the
arms share the machine's slow and busy spells instead of one arm getting all of one. Every worker pins the same
thread count (``torch.set_num_threads`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``). Ratios are per round (arms of
one round ran minutes apart at most) and are reported as the median with the min-max over rounds.

Run with ``--worker SPEC`` this file is the worker itself (a line-based JSON protocol on stdin/stdout).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: worker environment that makes this CPU run the kernels of an AVX2-only x86 (no AVX512, no fp16/bf16 arithmetic,
#: no AMX): torch's own kernels, oneDNN and MKL capped at AVX2; arms also keep bitsandbytes off its AVX512-BF16
#: kernel (:func:`bnb_generic_if_emulating`). An emulation, labelled as such wherever it is reported.
EMULATE_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "BENCH_EMULATE_AVX2": "1"}  # fmt: skip

FLAGS = ("avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "avx512_vnni",
         "amx_bf16", "amx_int8", "amx_tile")  # fmt: skip


@dataclass
class Arm:
    name: str
    #: "path/to/file.py:function" returning step() (or an object with step(), info(), save(path))
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: extra environment of the worker (e.g. PYTHONPATH of another checkout)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Results:
    threads: int
    rounds: dict[str, list[dict[str, float]]]
    setup: dict[str, dict[str, Any]]
    info: dict[str, dict[str, Any]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    unit: str = "tokens"


def bnb_generic_if_emulating(model: Any) -> None:
    """Under :data:`EMULATE_AVX2`, keep the model's bitsandbytes 4-bit layers on their generic (dequantize + matmul)
    CPU path, as on a CPU without AVX512-BF16."""
    if os.environ.get("BENCH_EMULATE_AVX2") != "1":
        return
    import bitsandbytes as bnb

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


# ------------------------------------------------------------------------------------------------------------ header
def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in FLAGS if f in have]


def cpu_model() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(res: Results, extra: str = "") -> list[str]:
    """The lines that open a benchmark's output: date, machine, CPU flags, the run's threads and its starting load."""
    import torch

    la = res.load_before
    return [
        f"# date {time.strftime('%Y-%m-%d %H:%M %Z')} | host {platform.node()} | {cpu_model()} | {os.cpu_count()} logical CPUs"
        f" | torch {torch.__version__}" + (f" | {extra}" if extra else ""),
        f"# cpu flags: {' '.join(cpu_flags()) or 'unknown'}",
        f"# threads pinned per worker: {res.threads} (torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS); "
        f"load average at start {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}",
    ]


# ------------------------------------------------------------------------------------------------------------ parent
class _Worker:
    def __init__(self, arm: Arm, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **arm.env,
               "BENCH_THREADS": str(threads)}  # fmt: skip
        spec = json.dumps({"factory": arm.factory, "kwargs": arm.kwargs})
        self.name = arm.name
        self.proc = subprocess.Popen([sys.executable, "-u", __file__, "--worker", spec], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None, text=True, env=env)  # fmt: skip

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker {self.name!r} exited (code {self.proc.wait()}); see stderr above")
            if line.startswith("@@ "):  # protocol lines; anything else is the arm's own output
                out = json.loads(line[3:])
                if "error" in out:
                    raise RuntimeError(f"benchmark worker {self.name!r} failed:\n{out['error']}")
                return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "quit"})
            except RuntimeError:
                pass
            self.proc.wait(timeout=60)


def run_rounds(arms: list[Arm], *, rounds: int = 5, min_units: int = 2048, threads: int | None = None,
               unit: str = "tokens", save_dir: str | None = None, log=print) -> Results:
    """Start every arm's worker (one after another), then ``rounds`` interleaved rounds (see module docstring).
    ``save_dir``: each worker's ``save(path)`` writes ``save_dir/<arm>.safetensors`` after the rounds."""
    threads = threads or os.cpu_count() or 1
    load_before = os.getloadavg()
    workers: list[_Worker] = []
    res = Results(threads, {a.name: [] for a in arms}, {}, {}, load_before, load_before, unit)
    try:
        for arm in arms:
            log(f"[bench] starting {arm.name}")
            w = _Worker(arm, threads)
            workers.append(w)
            res.setup[arm.name] = w.read()
        for r in range(rounds):
            order = workers[r % len(workers):] + workers[: r % len(workers)]
            for w in order:
                res.rounds[w.name].append(w.ask({"cmd": "round", "min_units": min_units}))
                x = res.rounds[w.name][-1]
                log(f"[bench] round {r + 1}/{rounds} {w.name}: {x['units']} {unit}, wall {x['wall']:.2f} s, "
                    f"cpu {x['cpu']:.2f} s, load {os.getloadavg()[0]:.2f}")
        for w in workers:
            res.info[w.name] = w.ask({"cmd": "info"})["info"]
            if save_dir:
                w.ask({"cmd": "save", "path": str(Path(save_dir) / f"{w.name}.safetensors")})
    finally:
        for w in workers:
            w.close()
    res.load_after = os.getloadavg()
    return res


def _q(xs: list[float]) -> tuple[float, float, float, float, float]:
    s = sorted(xs)
    qs = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
    return s[0], qs[0], qs[1], qs[2], s[-1]


def rate(x: dict[str, float]) -> float:
    return x["units"] / x["wall"]


def summary(res: Results, baselines: list[tuple[str, str]] = ()) -> list[str]:
    """One line per arm (median, IQR and min-max of wall and CPU seconds per round, units/s) and one per
    (arm, baseline) pair: the per-round throughput ratio arm / baseline, median [min-max]."""
    n = min(len(v) for v in res.rounds.values())
    lines = [f"# {n} interleaved rounds of >= {min(x['units'] for v in res.rounds.values() for x in v)} {res.unit} per "
             f"arm; load average at end {res.load_after[0]:.2f} {res.load_after[1]:.2f} {res.load_after[2]:.2f}",
             f"{'arm':<22} {'wall s/round: median [IQR] (min-max)':<40} {'cpu s/round: median [IQR]':<28} "
             f"{res.unit}/s median"]  # fmt: skip
    for name, xs in res.rounds.items():
        w, c = _q([x["wall"] for x in xs]), _q([x["cpu"] for x in xs])
        lines.append(f"{name:<22} {f'{w[2]:.2f} [{w[1]:.2f}-{w[3]:.2f}] ({w[0]:.2f}-{w[4]:.2f})':<40} "
                     f"{f'{c[2]:.2f} [{c[1]:.2f}-{c[3]:.2f}]':<28} {statistics.median(rate(x) for x in xs):.2f}")
    for a, b in baselines:
        ra = [rate(x) / rate(y) for x, y in zip(res.rounds[a], res.rounds[b])]
        lo, _, med, _, hi = _q(ra)
        lines.append(f"{a} / {b} throughput: {med:.2f}x (per-round min-max {lo:.2f}-{hi:.2f}x)")
    return lines


# ------------------------------------------------------------------------------------------------------------ worker
def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _worker(spec: dict[str, Any]) -> None:
    import importlib.util
    import traceback

    try:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
        path, fn = spec["factory"].rsplit(":", 1)
        mod_spec = importlib.util.spec_from_file_location(f"bench_arm_{Path(path).stem}", path)
        mod = importlib.util.module_from_spec(mod_spec)
        sys.path.insert(0, str(Path(path).parent))
        mod_spec.loader.exec_module(mod)
        t = time.perf_counter()
        arm = getattr(mod, fn)(**spec["kwargs"])
        step = arm if callable(arm) else arm.step
        _say({"setup_s": time.perf_counter() - t, "threads": torch.get_num_threads()})
    except Exception:  # noqa: BLE001 - reported to the parent
        _say({"error": traceback.format_exc()})
        return
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                _say({"bye": True})
                return
            if msg["cmd"] == "round":
                units = calls = 0
                w, c = time.perf_counter(), time.process_time()
                while units < msg["min_units"]:
                    units += int(step())
                    calls += 1
                _say({"wall": time.perf_counter() - w, "cpu": time.process_time() - c, "units": units, "calls": calls})
            elif msg["cmd"] == "info":
                _say({"info": arm.info() if hasattr(arm, "info") else {}})
            elif msg["cmd"] == "save":
                if hasattr(arm, "save"):
                    arm.save(msg["path"])
                _say({"saved": hasattr(arm, "save")})
        except Exception:  # noqa: BLE001
            _say({"error": traceback.format_exc()})


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(json.loads(sys.argv[2]))
