"""Ground-truth preference lists: ranking by the true score, the true pair probabilities, and ECE against them."""

from __future__ import annotations

import math

import pytest
import torch

from align.evaluation.calibration import ece_against
from align.online.task_lists import sample_ranked_rows
from align.tasks.preferences import (
    ranked_row,
    ranked_rows,
    true_pair_probabilities,
    true_preferences,
)

ROW = {"prompt": [{"role": "user", "content": "Sort: 3 1 2"}], "answer": "1 2 3"}


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_true_preferences_are_bradley_terry_on_scores():
    p = true_preferences([1.0, 2 / 3, 0.0], temperature=0.5)
    assert p[0, 1] == pytest.approx(sig((1 - 2 / 3) / 0.5)) and p[1, 0] == pytest.approx(1 - p[0, 1])
    assert p[0, 2] == pytest.approx(sig(2.0)) and p[1, 1] == 0.5


def test_ranked_row_orders_by_true_score_and_dedups():
    row, reason = ranked_row(ROW, ["1 3 2", "1 2 3", " 1 3 2 ", "", "9", "1 2"], "sort", temperature=0.2)
    assert reason is None
    # scores: "1 2 3" 1, "1 2" 2/3, "1 3 2" 1/3, "9" 0 (one position, wrong, over 3)
    assert row["responses"] == ["1 2 3", "1 2", "1 3 2", "9"]
    assert row["scores"] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert row["answer"] == "1 2 3" and row["preference_temperature"] == 0.2 and row["prompt"] == ROW["prompt"]
    bw, _ = ranked_row(ROW, ["1 3 2", "1 2 3", "9", "1 2"], "sort", build="best_worst")
    assert bw["responses"] == ["1 2 3", "9"] and bw["scores"] == pytest.approx([1.0, 0.0])


def test_rows_without_a_preference_are_counted():
    rows, skipped = ranked_rows([ROW, ROW, ROW], [["1 2 3", "1 2 3", ""], ["x", "y"], ["3 2 1", "1 2 3"]], "sort")
    assert len(rows) == 1 and rows[0]["responses"] == ["1 2 3", "3 2 1"]
    assert skipped == {"fewer than 2 distinct completions": 1, "all scores equal": 1}
    with pytest.raises(ValueError, match="build"):
        ranked_row(ROW, ["1", "2"], "sort", build="pairs")
    with pytest.raises(ValueError, match="groups"):
        ranked_rows([ROW], [], "sort")


def test_true_pair_probabilities_skip_ties():
    row = {"scores": [1.0, 0.5, 0.5], "preference_temperature": 0.25}
    pairs = true_pair_probabilities(row)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2)]
    assert [p for _, _, p in pairs] == pytest.approx([sig(2.0), sig(2.0)])


def test_ece_against_true_probabilities_by_hand():
    assert ece_against(torch.tensor([0.7, 0.9]), torch.tensor([0.7, 0.9])) == pytest.approx(0.0)
    # one pair, predicted 0.9 against truth 0.6
    assert ece_against(torch.tensor([0.9]), torch.tensor([0.6])) == pytest.approx(0.3)
    # an uninformative 0.5 against a sure preference is off by 0.46 (the reverse orientation is not added, so it
    # cannot cancel inside the bin that holds 0.5)
    assert ece_against(torch.tensor([0.5, 0.5]), torch.tensor([0.96, 0.96])) == pytest.approx(0.46)
    # two bins: 0.15 and 0.75 predicted vs 0.35 and 0.65 → (0.2 + 0.1) / 2
    assert ece_against(torch.tensor([0.15, 0.75]), torch.tensor([0.35, 0.65])) == pytest.approx(0.15)
    # two pairs in one bin [0.8, 0.9): mean predicted 0.85 vs mean target 0.75 → 0.1 (errors average out in a bin)
    assert ece_against(torch.tensor([0.82, 0.88]), torch.tensor([0.9, 0.6])) == pytest.approx(0.1)
    assert math.isnan(ece_against(torch.tensor([]), torch.tensor([])))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ece_against(torch.tensor([1.2]), torch.tensor([0.5]))


def test_sample_ranked_rows_from_a_small_model(small_model_dir, small_tokenizer):
    from align.data.prompts import load_prompts, tokenize_prompts
    from align.models.loading import load_model

    prompts, _ = load_prompts("task:sort?n=4&seed=2&max_len=3")
    tp, _ = tokenize_prompts(prompts, small_tokenizer)
    model = load_model(str(small_model_dir))
    a = sample_ranked_rows(model, small_tokenizer, tp, "sort", 4, max_new_tokens=6, seed=1)
    b = sample_ranked_rows(model, small_tokenizer, tp, "sort", 4, max_new_tokens=6, seed=1)
    assert a == b  # seeded
    rows, skipped = a
    assert len(rows) + sum(skipped.values()) == 4
    for r in rows:
        assert r["scores"] == sorted(r["scores"], reverse=True) and len(r["responses"]) >= 2
