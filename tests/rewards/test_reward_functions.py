"""The shipped ranking rewards as reward functions (TRL's signature): NDCG of a reranker's output against the
``relevance`` column, and the rank transform of any reward function; and as recipe rewards."""

from __future__ import annotations

import functools
import math

import pytest

from align.online.scoring import reward_sources
from align.rewards import ndcg_at_k, ndcg_reward, rank_reward

REL = [0.0, 1.0, 2.0]


def test_ndcg_reward_takes_trls_keyword_arguments():
    completions = ["[2] > [1] > [0]", [{"role": "assistant", "content": "0 1 2<|im_end|>"}], "2 2 0"]
    out = ndcg_reward(prompts=["p"] * 3, completions=completions, completion_ids=[[1]] * 3, trainer_state=None,
                      relevance=[REL] * 3, other_column=[1, 2, 3])
    assert out == pytest.approx([1.0, ndcg_at_k([0, 1, 2], REL), 0.0])
    at1 = functools.partial(ndcg_reward, k=1, format_penalty=-1.0)
    assert at1(prompts=["p"] * 2, completions=["1 0 2", "x"], relevance=[REL, REL]) == pytest.approx([1 / 3, -1.0])
    assert ndcg_reward(completions=["1 0 2"], relevance=[REL], k=[1]) == pytest.approx([1 / 3])


def test_ndcg_reward_errors_are_clear():
    with pytest.raises(ValueError, match="needs the dataset column 'relevance'"):
        ndcg_reward(prompts=["p"], completions=["0 1 2"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        ndcg_reward(completions=["0 1 2"], relevance=[REL], k=0)


def test_ndcg_reward_as_a_recipe_reward():
    from align.data.prompts import prompts_from_rows

    [source] = reward_sources(["align.rewards:ndcg_reward"])
    prompts, _ = prompts_from_rows([{"prompt": "rank 0..2", "relevance": REL}])
    r = source(prompts, [["[2] > [1] > [0]", "oops"]])
    assert r.tolist() == [[1.0, 0.0]]


def test_rank_reward_ranks_within_each_prompts_group():
    def length(prompts, completions, **kwargs):
        return [None if c == "skip" else float(len(c)) for c in completions]

    ranked = rank_reward(length)
    assert ranked.__name__ == "length_rank"
    out = ranked(prompts=["a", "a", "a", "b", "b", "b"], completions=["x", "xxx", "xx", "yy", "skip", "yy"])
    assert out == [0.0, 1.0, 0.5, 0.5, None, 0.5]
    by_size = rank_reward(length, group_size=2)
    assert by_size(prompts=None, completions=["x", "xx", "xxx", "y"]) == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        rank_reward(length, group_size=4)(completions=["x"] * 6)
    assert not any(isinstance(v, float) and math.isnan(v) for v in out if v is not None)
