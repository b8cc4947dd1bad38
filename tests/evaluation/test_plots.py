"""Each plot writes a real PNG, copes with missing values and empty inputs, and leaves no figure open."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from align.evaluation.calibration import reliability
from align.evaluation.plots import plot_accuracy_vs_beta, plot_margin_histogram, plot_reliability

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


@pytest.fixture(autouse=True)
def no_figures_left():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def test_accuracy_vs_beta(tmp_path):
    betas = [0.01, 0.1, 1.0]
    out = plot_accuracy_vs_beta(
        tmp_path / "deep" / "acc.png",
        betas,
        {"R* (summed)": [0.9, None, 0.7], "R̃* (length-normalised)": [None, None, None]},
        {"policy": 0.62, "reference": None},
        ci={"R* (summed)": [(0.85, 0.95), None, (0.6, 0.8)]},
        title="idealized vs observed",
    )
    assert out == tmp_path / "deep" / "acc.png" and _is_png(out)


def test_accuracy_vs_beta_empty_and_bad_input(tmp_path):
    assert _is_png(plot_accuracy_vs_beta(str(tmp_path / "empty.png"), [], {}, {}))
    with pytest.raises(ValueError, match="betas"):
        plot_accuracy_vs_beta(tmp_path / "x.png", [0.0, 1.0], {"a": [0.5, 0.5]}, {})
    with pytest.raises(ValueError, match="2 values for 3 betas"):
        plot_accuracy_vs_beta(tmp_path / "x.png", [0.1, 1, 10], {"a": [0.5, 0.5]}, {})


@pytest.mark.parametrize("margins", [torch.randn(500), [0.3, -0.1, 2.0], [1.0], torch.tensor([]), []])
def test_margin_histogram(tmp_path, margins):
    out = plot_margin_histogram(tmp_path / "sub" / "hist.png", margins, title="margins")
    assert _is_png(out)


def test_margin_histogram_rejects_nan(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        plot_margin_histogram(tmp_path / "h.png", [0.0, float("nan")])


@pytest.mark.parametrize("margins", [torch.randn(300) * 3, torch.tensor([0.0, 0.0]), torch.tensor([])])
def test_reliability_plot(tmp_path, margins):
    out = plot_reliability(tmp_path / "rel.png", reliability(margins, scale=0.5), title="calibration")
    assert _is_png(out)
