"""Benchmark: d-values + a 1000-flip grouped null (the suite's default path), the row-level permutation null, and a
naive loop, at 6144 latents x 10,000 samples in groups of ``--group-size`` rows.

    OMP_NUM_THREADS=2 python benchmarks/bench_dvalues.py [--latents 6144 --samples 10000 --perms 1000]

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
    y = (rng.random(a.samples) < 0.5).astype(np.int64)

    groups = np.arange(a.samples) // a.group_size
    y = np.tile([0, 1], a.samples // 2 + 1)[: a.samples]  # both classes in every group (a balanced pool)
    t = time.perf_counter()
    g = dvalue_analysis(x, y, groups=groups, n_permutations=a.perms, n_bootstrap=a.perms, min_class_size=2)
    grouped = time.perf_counter() - t

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

    print(f"grouped: d + {a.perms}-flip group null + {a.perms}-resample group bootstrap, {a.latents} latents x "
          f"{a.samples} samples in {g.n_groups} groups: {grouped:.2f} s (d_max {g.d_max:.3f}, p {g.p_d_max:.3f}); "
          f"target < 10 s: {'met' if grouped < 10 else 'NOT met'}")
    print(f"row-level: vectorized d + {a.perms}-permutation null, {a.latents} latents x {a.samples} samples: {fast:.2f} s "
          f"(d_max {obs:.3f}, null mean {null['d_max'].mean():.3f})")
    print(f"naive per-latent loop: {naive_sub:.2f} s on {a.naive_latents} latents x {a.naive_perms + 1} labelings, "
          f"extrapolated to full size: {naive_full:.0f} s")
    print(f"ratios: naive / grouped {naive_full / grouped:.0f}x, naive / row-level {naive_full / fast:.0f}x, "
          f"row-level / grouped {fast / grouped:.1f}x")


if __name__ == "__main__":
    main()
