"""The statistics that judge a claim, and the report, on hand inputs."""

from __future__ import annotations

import math

import pytest

from align.study.results import claim_table, markdown
from align.study.stats import compare, mean_ci, t_quantile, verdict


def test_mean_ci_is_the_student_t_interval_over_seeds():
    r = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1 (Bessel), t_{0.975, 2} = 4.303: half-width 4.303 / sqrt(3)
    h = 4.303 / math.sqrt(3)
    assert r["mean"] == 2.0 and r["ci"] == pytest.approx([2 - h, 2 + h]) and r["n"] == 3
    assert mean_ci([0.5])["ci"] is None
    assert mean_ci([0.2, 0.2])["ci"] == pytest.approx([0.2, 0.2])
    assert t_quantile(1) == 12.706 and t_quantile(100) == 1.96
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


@pytest.mark.parametrize("ci, direction, expected", [((0.1, 0.5), 1, "reproduced"), ((0.1, 0.5), -1, "reversed"),
                                                     ((-0.5, -0.1), -1, "reproduced"), ((-0.5, -0.1), 1, "reversed"),
                                                     ((-0.1, 0.5), 1, "inconclusive"), ((0.0, 0.5), 1, "inconclusive"),
                                                     (None, 1, "inconclusive")])
def test_verdict(ci, direction, expected):
    assert verdict(ci, direction) == expected


def test_compare_pairs_the_arms_by_seed():
    # unpaired, the arms' intervals overlap; every seed favours a by exactly 0.1, so the paired difference is sure
    c = compare("a beats b", "paper", "metric", {"a": [1.0, 2.0, 3.0], "b": [0.9, 1.9, 2.9]}, +1)
    assert set(c) >= {"claim", "paper", "metric", "arms", "verdict", "difference"}
    assert list(c["arms"]) == ["a", "b"] and c["arms"]["a"]["mean"] == 2.0
    assert c["difference"]["values"] == pytest.approx([0.1, 0.1, 0.1])
    assert c["difference"]["ci"] == pytest.approx([0.1, 0.1]) and c["verdict"] == "reproduced"
    lower = compare("a is lower", "p", "ECE", {"a": [0.3, 0.2], "b": [0.1, 0.0]}, -1)
    assert lower["verdict"] == "reversed" and lower["direction"] == "lower"
    noisy = compare("a beats b", "p", "m", {"a": [1.0, 0.0, 1.0], "b": [0.0, 1.0, 0.0]}, +1)
    assert noisy["verdict"] == "inconclusive"
    assert compare("x", "p", "m", {"a": [1.0], "b": [0.0]})["verdict"] == "inconclusive"  # one seed: no interval
    with pytest.raises(ValueError, match="paired"):
        compare("x", "p", "m", {"a": [1.0, 2.0], "b": [0.0]})
    with pytest.raises(ValueError, match="two arms"):
        compare("x", "p", "m", {"a": [1.0]})


def test_markdown_shows_every_arm_the_difference_and_the_verdict():
    c = compare("LiPO beats DPO", "Liu et al.", "true reward", {"LiPO": [0.5, 0.6], "DPO": [0.4, 0.45]}, +1)
    table = claim_table(c)
    assert "| LiPO | 0.550 |" in table and "| DPO | 0.425 |" in table
    assert "difference** LiPO - DPO | 0.125 |" in table and f"**Verdict: {c['verdict']}**" in table
    env = {"machine": "m", "python": "3", "torch": "t", "transformers": "x", "trl": "y", "date": "d", "gpu": None}
    page = markdown({"quick": True, "command": "python scripts/reproduce.py --quick", "environment": env,
                     "wall_seconds": 60.0, "claims": [c],
                     "settings": {"seeds": [1, 2], "sft_steps": 1, "list_prompts": 2, "steps": 1, "batch_size": 1,
                                  "eval_prompts": 1, "eval_samples": 1}})
    assert "quick run" in page and "python scripts/reproduce.py --quick" in page and "How hyper-parameters" in page
