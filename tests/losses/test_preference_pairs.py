"""``align.losses.pairs``: which (list, winner, loser) triples a ``[B, K]`` batch of labelled lists implies."""

from __future__ import annotations

import itertools

import torch

from align.losses import count_pairs, preference_pairs


def _triples(labels, mask) -> list[tuple[int, int, int]]:
    p = preference_pairs(torch.tensor(labels), torch.tensor(mask))
    return list(zip(p.batch.tolist(), p.winner.tolist(), p.loser.tolist()))


def _naive(labels, mask) -> set[tuple[int, int, int]]:
    return {
        (b, i, j)
        for b, row in enumerate(labels)
        for i, j in itertools.permutations(range(len(row)), 2)
        if mask[b][i] and mask[b][j] and row[i] > row[j]
    }


def test_k2_is_one_pair_per_list_in_list_order():
    """K = 2 with distinct labels: exactly one pair per list, lists in order, winner = the higher label."""
    labels = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]]
    assert _triples(labels, [[True, True]] * 3) == [(0, 0, 1), (1, 1, 0), (2, 1, 0)]


def test_ties_form_no_pair():
    """(1, 1) has no pair; (3, 3, 1) has (0,2) and (1,2) but not (0,1) or (1,0)."""
    assert _triples([[1.0, 1.0]], [[True, True]]) == []
    assert sorted(_triples([[3.0, 3.0, 1.0]], [[True] * 3])) == [(0, 0, 2), (0, 1, 2)]


def test_masked_slots_form_no_pair():
    """Slot 1 is padding with the best label; slot 3 is padding with the worst. Only (0 > 2) remains."""
    assert _triples([[2.0, 9.0, 1.0, -9.0]], [[True, False, True, False]]) == [(0, 0, 2)]


def test_fully_masked_or_single_slot_lists_give_nothing():
    assert _triples([[1.0, 0.0]], [[False, False]]) == []
    assert _triples([[1.0, 0.0]], [[True, False]]) == []


def test_full_ranking_of_k_gives_k_choose_2():
    """A strict ranking of K = 4 gives 4·3/2 = 6 pairs, each winner ranked above its loser."""
    labels = [[0.0, -3.0, -1.0, -2.0]]  # ranks 0, 3, 1, 2 stored as -rank
    got = _triples(labels, [[True] * 4])
    assert len(got) == 6
    assert set(got) == {(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 2, 1), (0, 2, 3), (0, 3, 1)}


def test_random_batches_match_the_naive_definition_and_count_pairs():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        B, K = (int(x) for x in torch.randint(1, 6, (2,), generator=g))
        labels = torch.randint(0, 3, (B, K), generator=g).float()  # small range → many ties
        mask = torch.rand(B, K, generator=g) > 0.25
        got = _triples(labels.tolist(), mask.tolist())
        assert len(got) == len(set(got))
        assert set(got) == _naive(labels.tolist(), mask.tolist())
        assert count_pairs(labels, mask) == len(got)


def test_integer_mask_is_accepted():
    """The collator's masks are 0/1 longs in places; they must mean the same as bools."""
    labels = torch.tensor([[1.0, 0.0, 2.0]])
    p_bool = preference_pairs(labels, torch.tensor([[True, True, False]]))
    p_int = preference_pairs(labels, torch.tensor([[1, 1, 0]]))
    assert p_int.winner.tolist() == p_bool.winner.tolist() == [0]
    assert p_int.loser.tolist() == p_bool.loser.tolist() == [1]
    assert count_pairs(labels, torch.tensor([[1, 1, 0]])) == 1


def test_take_gathers_winner_and_loser_values():
    labels = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    values = torch.tensor([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])
    p = preference_pairs(labels, torch.ones(2, 3, dtype=torch.bool))
    win, lose = p.take(values)
    got = sorted(zip(p.batch.tolist(), win.tolist(), lose.tolist()))
    # list 0: 1 > 2 > 0 → (11,12), (11,10), (12,10); list 1: 0 > 1, 0 > 2 → (20,21), (20,22)
    assert got == [(0, 11.0, 10.0), (0, 11.0, 12.0), (0, 12.0, 10.0), (1, 20.0, 21.0), (1, 20.0, 22.0)]
    assert len(p) == 5
