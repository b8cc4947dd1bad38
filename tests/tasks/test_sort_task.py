"""The sort task's scoring rule on its docstring's examples, its rows and source syntax, the true preference
probability and pass@k on hand values."""

from __future__ import annotations

import math

import pytest
import torch

from align.tasks import pass_at_k, preference_probability, task_rows
from align.tasks import sort as task

ROW = {"answer": "1 2 3"}


@pytest.mark.parametrize("text, expected", [("1 2 3", 1.0), ("1 3 2", 1 / 3), ("1 2", 2 / 3), ("1 2 3 4", 3 / 4),
                                            ("3 2 1", 1 / 3), ("1, 2, 3", 1.0), ("1 2 3<|im_end|>9 9", 1.0),
                                            ("", 0.0), ("one two", 0.0), ("1 2 x", 0.0), ("9", 0.0)])
def test_graded_score_of_the_docstring_examples(text, expected):
    assert task.score(text, ROW) == pytest.approx(expected)


def test_exact_match_and_chat_completions():
    assert task.correct("1 2 3", ROW) and not task.correct("1 2", ROW) and not task.correct("x", ROW)
    chat = [{"role": "assistant", "content": "1 3 2"}]
    assert task.score(chat, ROW) == pytest.approx(1 / 3)
    assert task.reward_graded([None, None], [chat, "1 2 3"], answer=["1 2 3", "1 2 3"]) == pytest.approx([1 / 3, 1])
    assert task.reward_exact([None, None], ["1 2 3", "1 2"], answer=["1 2 3", "1 2 3"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="answer"):
        task.reward_graded([None], ["1"])


def test_rows_are_seeded_sorted_and_within_settings():
    rows = task_rows("task:sort?n=50&seed=3&min_len=2&max_len=4&max_digit=5")
    assert rows == task.make_rows(50, seed=3, min_len=2, max_len=4, max_digit=5)
    assert rows != task.make_rows(50, seed=4, min_len=2, max_len=4, max_digit=5)
    for r in rows:
        digits = [int(x) for x in r["prompt"][0]["content"].removeprefix("Sort: ").split()]
        assert 2 <= len(digits) <= 4 and max(digits) <= 5
        assert r["answer"] == " ".join(map(str, sorted(digits)))
        assert task.score(r["answer"], r) == 1.0
    distinct = task.make_rows(20, distinct=True, min_len=4, max_len=4)
    assert all(len(set(r["answer"].split())) == 4 for r in distinct)
    assert task.sft_rows(rows[:1])[0]["completion"] == [{"role": "assistant", "content": rows[0]["answer"]}]


@pytest.mark.parametrize("spec, match", [("sort?n=3", "starts with"), ("task:shuffle?n=3", "unknown task"),
                                         ("task:sort?size=3", "no parameter 'size'"),
                                         ("task:sort?n=three", "not a int"),
                                         ("task:sort?distinct=maybe", "not a bool"),
                                         ("task:sort?n=2&n=3", "given twice"),
                                         ("task:sort?min_len=4&max_len=2", "min_len <= max_len"),
                                         ("task:sort?max_digit=12", "max_digit <= 9"),
                                         ("task:sort?distinct=true&max_len=5&max_digit=2", "distinct"),
                                         ("task:sort?n", "bad query field")])
def test_bad_task_sources_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        task_rows(spec)


def test_task_source_defaults_and_booleans():
    assert len(task_rows("task:sort")) == 1000
    assert len(task_rows("task:sort?n=7&distinct=1")) == 7


def test_preference_probability_is_bradley_terry_on_true_scores():
    assert preference_probability(1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference_probability(1.0, 0.0, temperature=0.5) == pytest.approx(1 / (1 + math.exp(-2)))
    assert preference_probability(0.25, 0.75, temperature=0.25) == pytest.approx(1 / (1 + math.exp(2)))
    assert preference_probability(0.3, 0.3) == 0.5
    assert preference_probability(1000.0, 0.0) == 1.0 and preference_probability(0.0, 1000.0) == 0.0
    t = preference_probability(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), temperature=0.5)
    torch.testing.assert_close(t, torch.sigmoid(torch.tensor([2.0, -2.0])))
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            preference_probability(1.0, 0.0, temperature=bad)


@pytest.mark.parametrize("n, c, k, expected", [(4, 1, 1, 0.25), (4, 1, 2, 0.5), (5, 2, 2, 0.7), (4, 2, 3, 1.0),
                                               (4, 0, 4, 0.0), (8, 8, 1, 1.0), (10, 3, 5, 1 - 21 / 252)])
def test_pass_at_k_hand_values(n, c, k, expected):
    # 1 − C(n−c, k)/C(n, k): (4,1,2): 1 − 3/6; (5,2,2): 1 − 3/10; (10,3,5): 1 − C(7,5)/C(10,5) = 1 − 21/252
    assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)
