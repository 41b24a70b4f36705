#!/usr/bin/env python
"""Model memory by precision, side by side in one run: nf4 / int8 / fp16 / fp32 weights of the same checkpoints.

Each load runs in a fresh process and reports the parameter+buffer bytes (``model.get_memory_footprint()``) and the
process RSS after loading. Gemma's embeddings (and Gemma 4's per-layer embedding table) are not quantized by
bitsandbytes, so the nf4 saving is far below 4x on these embedding-heavy small models.

    python benchmarks/bench_memory.py [--models gemma-3-270m,gemma-4-e2b-mini]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

PRECISIONS = ("nf4", "int8", "fp16", "fp32")


def _measure(model: str, precision: str) -> dict:
    code = (
        "import json,psutil;from gemma4_saelens_ext.models.load import load_model;"
        f"lm=load_model({model!r},{precision!r});"
        "print(json.dumps({'footprint_mib': lm.model.get_memory_footprint()/2**20,"
        "'rss_mib': psutil.Process().memory_info().rss/2**20}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gemma-3-270m,gemma-4-e2b-mini")
    args = ap.parse_args()
    print(f"# model memory after load, {platform.machine()}, CPU")
    print(f"{'model':18s} " + " ".join(f"{p + ' MiB':>10s}" for p in PRECISIONS) + "   fp16/nf4   fp32/nf4")
    for model in args.models.split(","):
        res = {p: _measure(model, p) for p in PRECISIONS}
        fp = {p: r["footprint_mib"] for p, r in res.items()}
        print(f"{model:18s} " + " ".join(f"{fp[p]:10.0f}" for p in PRECISIONS)
              + f"   {fp['fp16'] / fp['nf4']:7.2f}x  {fp['fp32'] / fp['nf4']:7.2f}x")
        print(f"  {model} RSS after load (MiB): " + ", ".join(f"{p} {r['rss_mib']:.0f}" for p, r in res.items()))
        print(f"  {model} weight memory fp16 / nf4: {fp['fp16'] / fp['nf4']:.2f}x (nf4 keeps non-Linear modules in the checkpoint dtype)")


if __name__ == "__main__":
    main()
