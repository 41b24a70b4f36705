"""Benchmark: d-values + a 1000-draw grouped null (the suite's default path) for each label layout (both labels
1:1 in every group: group flips; one label per group, 25% honest: group-label permutations; both labels 25/75 in
every group: balance-weighted flips), the row-level permutation null, and a naive loop, at 6144 latents x 10,000
samples in groups of ``--group-size`` rows.

    OMP_NUM_THREADS=2 python benchmarks/bench_dvalues.py [--latents 6144 --samples 10000 --perms 1000]

Wall time is what the target is about; on a shared machine the CPU time (all threads) is printed beside it.
The naive version loops over latents and permutations in Python/numpy (one latent's d per call). Timing it in
full would take hours, so it is timed on a subset (``--naive-latents`` latents x ``--naive-perms`` permutations)
and extrapolated linearly to the full size; the printout says so.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gemma4_saelens_ext.evals.dvalues import dvalue_analysis
from gemma4_saelens_ext.evals.stats import d_summary, fast_cohens_d, permutation_null_d


def naive_d(x: np.ndarray, y: np.ndarray) -> float:
    a, b = x[y == 1], x[y == 0]
    sp = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return 0.0 if sp == 0 else (a.mean() - b.mean()) / sp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latents", type=int, default=6144)
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--naive-latents", type=int, default=64)
    ap.add_argument("--naive-perms", type=int, default=5)
    ap.add_argument("--group-size", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.samples, a.latents), dtype=np.float32)
    x[rng.random(x.shape) < 0.9] = 0  # SAE latents are sparse-ish; zeros do not change the dense cost
    groups = np.arange(a.samples) // a.group_size
    n_groups = int(groups.max()) + 1
    layouts = {
        "balanced_within": np.tile([0, 1], a.samples // 2 + 1)[: a.samples],  # both classes 1:1 in every group
        "constant_within": (rng.permutation(n_groups) < n_groups // 4)[groups].astype(np.int64),  # 25% honest groups
        "mixed_unbalanced": (np.arange(a.samples) % a.group_size < a.group_size // 4).astype(np.int64),  # 25/75
    }
    times = {}
    for kind, yy in layouts.items():
        t, c = time.perf_counter(), time.process_time()
        r = dvalue_analysis(x, yy, groups=groups, n_permutations=a.perms, n_bootstrap=a.perms, min_class_size=2)
        times[kind], cpu = time.perf_counter() - t, time.process_time() - c
        assert r.layout["kind"] == kind, r.layout
        print(f"grouped, {kind}: d + {a.perms}-draw null ({r.null}) + {a.perms}-resample group bootstrap, "
              f"{a.latents} latents x {a.samples} samples in {r.n_groups} groups: {times[kind]:.2f} s wall, "
              f"{cpu:.2f} s CPU, all threads (d_max "
              f"{r.d_max:.3f}, p {r.p_d_max:.3f}); target < 10 s: {'met' if times[kind] < 10 else 'NOT met'}")
    y, grouped = layouts["balanced_within"], times["balanced_within"]

    t = time.perf_counter()
    d = fast_cohens_d(x, y)
    obs = d_summary(d)["d_max"]
    null = permutation_null_d(x, y, n_permutations=a.perms)
    fast = time.perf_counter() - t

    t = time.perf_counter()
    sub = x[:, : a.naive_latents]
    for p in range(a.naive_perms + 1):
        yy = y if p == 0 else rng.permutation(y)
        for j in range(sub.shape[1]):
            naive_d(sub[:, j], yy)
    naive_sub = time.perf_counter() - t
    naive_full = naive_sub * (a.latents / a.naive_latents) * ((a.perms + 1) / (a.naive_perms + 1))

    print(f"row-level: vectorized d + {a.perms}-permutation null, {a.latents} latents x {a.samples} samples: {fast:.2f} s "
          f"(d_max {obs:.3f}, null mean {null['d_max'].mean():.3f})")
    print(f"naive per-latent loop: {naive_sub:.2f} s on {a.naive_latents} latents x {a.naive_perms + 1} labelings, "
          f"extrapolated to full size: {naive_full:.0f} s")
    print(f"ratios (grouped = balanced_within): naive / grouped {naive_full / grouped:.0f}x, naive / row-level {naive_full / fast:.0f}x, "
          f"row-level / grouped {fast / grouped:.1f}x")


if __name__ == "__main__":
    main()
