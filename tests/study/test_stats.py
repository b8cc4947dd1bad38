"""The statistics that judge a claim, and the report, on hand inputs."""

from __future__ import annotations

import math

import pytest

from align.study.results import claim_table, markdown
from align.study.stats import compare, mean_ci, t_quantile


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


def test_compare_pairs_the_arms_by_seed_and_item():
    # unpaired, the arms overlap; every seed and item favours a by exactly 0.1, so the paired difference is sure
    a = [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]
    c = compare("a beats b", "paper", "metric", {"a": a, "b": [[x - 0.1 for x in s] for s in a]}, +1,
                smallest_effect=0.02)
    assert set(c) >= {"claim", "paper", "metric", "arms", "verdict", "difference", "smallest_effect", "seeds"}
    assert list(c["arms"]) == ["a", "b"] and c["arms"]["a"]["mean"] == pytest.approx(2.5)
    assert c["difference"]["values"] == pytest.approx([0.1, 0.1, 0.1])
    assert c["difference"]["ci"] == pytest.approx([0.1, 0.1]) and c["verdict"] == "reproduced"
    assert c["seeds"] == 3 and c["smallest_effect"] == 0.02 and "seeds_needed" not in c
    lower = compare("a is lower", "p", "ECE", {"a": [[0.3], [0.2]], "b": [[0.1], [0.0]]}, -1, smallest_effect=0.01)
    assert lower["verdict"] == "reversed" and lower["direction"] == "lower"
    noisy = compare("a beats b", "p", "m", {"a": [[1.0], [0.0], [1.0]], "b": [[0.0], [1.0], [0.0]]}, +1)
    assert noisy["verdict"] == "undecided" and noisy["seeds_needed"] >= 4
    one = compare("x", "p", "m", {"a": [[1.0, 0.5]], "b": [[0.0, 0.2]]})
    assert one["verdict"] == "undecided" and one["seeds"] == 1 and one["seeds_needed"] >= 2  # no interval
    close = compare("x", "p", "m", {"a": [[0.5, 0.6], [0.5, 0.61]] * 2, "b": [[0.5, 0.6]] * 4}, smallest_effect=0.02)
    assert close["verdict"] == "equivalent"
    floor = compare("x", "p", "m", {"a": [[0.0, 0.0]] * 3, "b": [[0.0, 0.0]] * 3})  # both arms never pass
    assert floor["verdict"] == "undecided" and "no spread" in floor["note"] and floor["seeds_needed"] == 4
    with pytest.raises(ValueError, match="paired"):
        compare("x", "p", "m", {"a": [[1.0], [2.0]], "b": [[0.0]]})
    with pytest.raises(ValueError, match="paired by item"):
        compare("x", "p", "m", {"a": [[1.0, 2.0]], "b": [[0.0]]})
    with pytest.raises(ValueError, match="two arms"):
        compare("x", "p", "m", {"a": [[1.0]]})


def test_markdown_shows_every_arm_the_difference_and_the_verdict():
    c = compare("LiPO beats DPO", "Liu et al.", "true reward", {"LiPO": [[0.5], [0.6]], "DPO": [[0.4], [0.45]]}, +1)
    table = claim_table(c)
    assert "| LiPO | 0.550 |" in table and "| DPO | 0.425 |" in table
    assert "difference** LiPO - DPO | 0.125 |" in table and f"**Verdict: {c['verdict']}** (δ = 0.02, 2 seeds" in table
    env = {"machine": "m", "python": "3", "torch": "t", "transformers": "x", "trl": "y", "date": "d", "gpu": None}
    page = markdown({"quick": True, "command": "python scripts/reproduce.py --quick", "environment": env,
                     "wall_seconds": 60.0, "claims": [c],
                     "settings": {"seeds": [1, 2], "sft_steps": 1, "list_prompts": 2, "steps": 1, "batch_size": 1,
                                  "eval_prompts": 1, "eval_samples": 1}})
    assert "| 1 | LiPO beats DPO | undecided | 0.02 | 2 |" in page and "hierarchical bootstrap" in page
    assert "quick run" in page and "python scripts/reproduce.py --quick" in page and "How hyper-parameters" in page


def test_reproduce_refuses_a_seed_budget_without_until_decided(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--max-seeds", "3"])
    assert "--max-seeds applies to --until-decided" in capsys.readouterr().err
