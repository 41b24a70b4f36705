"""Peak-memory helpers shared by the benchmarks.

Peak RSS is read from ``/proc/self/status`` ``VmHWM`` (the high-water mark of this process's own address space),
not ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` across ``execve`` from the pre-exec address space, and
Python's ``subprocess`` starts children with ``vfork``, whose pre-exec address space is the parent's. A child started
by a parent holding 3 GiB therefore reports ``ru_maxrss`` >= 3 GiB even if it never uses more than a few MiB: that was
the "fixed ~3 GiB transient in the first nf4 forward" of earlier extraction benchmarks (the parent had two Gemma 3
270M models loaded), not bitsandbytes.
"""

from __future__ import annotations


def peak_rss_mib() -> float:
    """High-water RSS of this process (MiB) since it started (VmHWM; Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not in /proc/self/status (Linux only)")


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status (Linux only)")


def rss_parts_mib() -> dict[str, float]:
    """Current RSS split into anonymous memory (private allocations) and file pages (memory-mapped files such as
    safetensors weights: page cache the kernel can drop and re-read)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out
