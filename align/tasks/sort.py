"""Sorting a short list of digits: a verifiable task with a graded reward, small enough for the embedded model.

Row format (chat messages, ChatML through the tokenizer's template)::

    {"prompt": [{"role": "user", "content": "Sort: 3 1 2"}], "answer": "1 2 3"}

The completion is the sorted digits separated by single spaces (ascending, duplicates kept), e.g. ``"1 2 3"``.

Scoring (:func:`score`): the completion is parsed into integers (see :func:`parse`); unparseable → 0. Otherwise
the score is the fraction of positions that hold the right digit, over the longer of the two lists:
``|{i : pred_i = gold_i}| / max(len(pred), len(gold))``. So ``"1 2 3"`` → 1, ``"1 3 2"`` → 1/3, ``"1 2"`` → 2/3,
``"1 2 3 4"`` → 3/4. :func:`correct` is the exact match (score 1).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from align.errors import RewardError, TaskError
from align.rewards.text import completion_text

TASK = "sort"
_INT = re.compile(r"[+-]?\d+")


def make_rows(n: int, seed: int = 0, min_len: int = 3, max_len: int = 5, max_digit: int = 9,
              distinct: bool = False) -> list[dict[str, Any]]:
    """``n`` rows with lists of ``min_len``..``max_len`` digits drawn uniformly (with repeats) from
    ``0..max_digit``; the same ``seed`` gives the same rows. Columns: ``prompt`` (chat messages), ``answer``
    (the sorted digits, space-separated)."""
    if n < 0 or not 1 <= min_len <= max_len or not 0 <= max_digit <= 9:
        raise TaskError(f"sort task needs n >= 0, 1 <= min_len <= max_len, 0 <= max_digit <= 9; got n={n}, "
                         f"min_len={min_len}, max_len={max_len}, max_digit={max_digit}")
    if distinct and max_len > max_digit + 1:
        raise TaskError(f"sort task: {max_len} distinct digits do not fit in 0..{max_digit}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(min_len, max_len)
        digits = rng.sample(range(max_digit + 1), k) if distinct else [rng.randint(0, max_digit) for _ in range(k)]
        rows.append({"prompt": [{"role": "user", "content": "Sort: " + " ".join(map(str, digits))}],
                     "answer": " ".join(map(str, sorted(digits)))})
    return rows


def sft_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL conversational prompt-completion rows whose completion is the correct answer."""
    return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["answer"]}]} for r in rows]


def parse(completion: str | list[dict[str, str]]) -> list[int] | None:
    """The integers of a completion, or None when it is not a list of integers. Text from the first end-of-turn
    marker on is dropped; whitespace and commas separate items; any other token makes it unparseable."""
    items = completion_text(completion).replace(",", " ").split()
    if not items or not all(_INT.fullmatch(t) for t in items):
        return None
    return [int(t) for t in items]


def score(completion: str | list[dict[str, str]], row: dict[str, Any]) -> float:
    """Graded score in [0, 1]: fraction of positions right over the longer list; 0 when unparseable."""
    pred, gold = parse(completion), [int(t) for t in str(row["answer"]).replace(",", " ").split()]
    if pred is None:
        return 0.0
    return sum(p == g for p, g in zip(pred, gold)) / max(len(pred), len(gold))


def correct(completion: str | list[dict[str, str]], row: dict[str, Any]) -> bool:
    """Exact match: the parsed completion equals the sorted list."""
    return parse(completion) == [int(t) for t in str(row["answer"]).replace(",", " ").split()]


def _rows(n: int, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    answers = kwargs.get("answer")
    if answers is None or len(answers) != n:
        raise RewardError(f"sort reward needs the dataset column 'answer' with one value per completion "
                         f"({n}), got {None if answers is None else len(answers)}")
    return [{"answer": a} for a in answers]


def reward_exact(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 for an exactly sorted list, else 0.0. Needs the ``answer`` column."""
    return [float(correct(c, r)) for c, r in zip(completions, _rows(len(completions), kwargs))]


def reward_graded(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """TRL reward function: the graded :func:`score`. Needs the ``answer`` column."""
    return [score(c, r) for c, r in zip(completions, _rows(len(completions), kwargs))]
