"""What a benchmark ran on: machine, load, library versions."""

from __future__ import annotations

import os
import platform
from typing import Any

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "align")


def load_average() -> list[str] | None:
    """1, 5 and 15-minute load averages: other work on the machine skews every timing here."""
    try:
        return [f"{x:.2f}" for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """Platform, CPU count, torch threads, the device (and GPU name) and the load average now."""
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "load_average_at_start": load_average()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's and each package's installed version ("not installed" where absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def header_lines(machine: dict[str, Any], v: dict[str, str], device: str) -> list[str]:
    """The markdown "Machine: ..." and "Versions: ..." lines of a benchmark table."""
    return [
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs (torch threads {machine['torch_threads']})"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + (f", load average {' '.join(machine['load_average_at_start'])} at start, "
           f"{' '.join(machine['load_average_at_end'])} at end" if machine.get("load_average_at_end") else "")
        + f"; device {device}.",
        f"Versions: python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
        f"datasets {v['datasets']}, accelerate {v['accelerate']}, align {v['align']}.",
    ]
