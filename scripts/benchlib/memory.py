"""Peak memory of the current process."""

from __future__ import annotations

import resource


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (Linux reports KiB). In a child started by a large parent this is
    at least the parent's peak: Linux carries the RSS high-water mark across fork/vfork + exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def maxrss_mb() -> float:
    """This process's own peak resident set size so far: ``VmHWM`` of /proc/self/status (the high-water mark of
    this exec's address space only), else ``ru_maxrss`` where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mb()


def peak_gpu_mb() -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB, or None without CUDA."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
