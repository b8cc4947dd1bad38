"""PNG figures for ranking evaluations: accuracy against β, margin histograms, reliability diagrams.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``: nothing is
registered in pyplot's figure manager (no leaks across calls, ``plt.get_fignums()`` stays empty), the global
backend of the caller (e.g. a notebook) is left alone, and it works headless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _new_axes(figsize: tuple[float, float] = (6.4, 4.4)) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=130)
    fig.clear()
    return path


def plot_accuracy_vs_beta(
    path: str | Path,
    betas: list[float],
    idealized: dict[str, list[float | None]],
    observed: dict[str, float | None],
    ci: dict[str, list[tuple[float, float] | None]] | None = None,
    title: str = "",
) -> Path:
    """Idealized ranking accuracy against β (log x axis), one line per ``idealized`` series with an optional
    ``ci`` band, and a dashed horizontal line per ``observed`` accuracy. ``None`` entries are skipped."""
    if any(not b > 0 for b in betas):
        raise ValueError(f"betas must be > 0 for a log axis, got {betas}")
    for name, ys in {**idealized, **(ci or {})}.items():
        if len(ys) != len(betas):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(betas)} betas")
    fig, ax = _new_axes()
    for i, (name, ys) in enumerate(idealized.items()):
        pts = [(b, y) for b, y in zip(betas, ys) if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=name)
        band = [(b, *lh) for b, lh in zip(betas, (ci or {}).get(name, [])) if lh is not None]
        if band:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, color=f"C{i}", alpha=0.2, linewidth=0)
    for j, (name, y) in enumerate((k, v) for k, v in observed.items() if v is not None):
        ax.axhline(y, linestyle="--", color=f"C{len(idealized) + j}", label=f"{name} ({y:.3f})")
    ax.set_xscale("log")
    if betas:
        ax.set_xlim(min(betas) / 1.5, max(betas) * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("β")
    ax.set_ylabel("ranking accuracy")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_margin_histogram(
    path: str | Path,
    margins: torch.Tensor | Sequence[float],
    title: str = "",
    xlabel: str = "score(preferred) − score(dispreferred)",
) -> Path:
    """Histogram of per-pair margins with a line at 0 and the fraction > 0 in the corner. Non-finite margins
    raise ``ValueError``; no margins gives empty axes marked "no pairs"."""
    m = torch.as_tensor(margins, dtype=torch.float64).detach().cpu().reshape(-1).numpy()
    if not np.isfinite(m).all():
        raise ValueError(f"margins contain {int((~np.isfinite(m)).sum())} non-finite value(s) out of {m.size}")
    fig, ax = _new_axes()
    if m.size == 0:
        ax.text(0.5, 0.5, "no pairs", transform=ax.transAxes, ha="center", va="center")
    else:
        ax.hist(m, bins=int(min(40, math.ceil(2 * math.sqrt(m.size)))), color="C0", alpha=0.8)
        ax.axvline(0, color="k", linewidth=1)
        ax.text(0.02, 0.97, f"fraction > 0: {(m > 0).mean():.3f}  (n = {m.size})", transform=ax.transAxes, ha="left",
                va="top", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_reliability(path: str | Path, calibration: dict[str, Any], title: str = "") -> Path:
    """Reliability diagram from :func:`align.evaluation.calibration.reliability`: observed frequency against
    mean predicted probability per bin (marker area ∝ count, count written beside), the diagonal, and the ECE."""
    fig, ax = _new_axes((5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    bins = calibration.get("bins", [])
    ece = calibration.get("ece", float("nan"))
    ece_txt = "n/a" if ece is None or math.isnan(ece) else f"{ece:.3f}"
    if bins:
        x = [b["mean_predicted"] for b in bins]
        y = [b["observed"] for b in bins]
        counts = np.array([b["count"] for b in bins], dtype=float)
        ax.plot(x, y, color="C0", linewidth=1, alpha=0.6)
        ax.scatter(x, y, s=20 + 300 * counts / counts.max(), color="C0", alpha=0.8, zorder=3,
                   label="bins (area ∝ count)")
        for xi, yi, c in zip(x, y, counts):
            ax.annotate(f"{int(c)}", (xi, yi), textcoords="offset points", xytext=(6, -10), fontsize="x-small")
    else:
        ax.text(0.5, 0.5, "no pairs", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(f"predicted P(preferred wins) = σ({calibration.get('scale', 1.0):g}·margin)")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title}  (ECE = {ece_txt})" if title else f"ECE = {ece_txt}")
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)
