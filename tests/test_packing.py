"""``PackedListCollator`` and ``packed_attention_mask`` on hand-derived examples (layout, gather index, counts)."""

from __future__ import annotations

import math

import pytest
import torch

from align.data.collate import ListCollator
from align.data.packing import PackedListCollator, packed_attention_mask
from align.data.tokenize import TokenizedList


def _lists() -> list[TokenizedList]:
    return [
        TokenizedList((5, 6, 7), ((10, 11), (12, 13, 14)), (1.0, 0.0)),  # 3 + 2 + 3 = 8 tokens
        TokenizedList((8,), ((20,), (21, 22), (24, 25)), (0.0, -2.0, -1.0)),  # 1 + 1 + 2 + 2 = 6 tokens
    ]


def test_two_lists_in_one_row_hand_example():
    items = [{"list": t, "index": 7 + i, "ref_logps": [-1.0] * len(t.response_ids)} for i, t in enumerate(_lists())]
    batch = PackedListCollator(pad_token_id=0, max_row_tokens=16)(items)
    # first-fit decreasing: list 0 (8 tokens) first, then list 1 (6 tokens); 14 tokens in one row of width 14
    assert batch["input_ids"].tolist() == [[5, 6, 7, 10, 11, 12, 13, 14, 8, 20, 21, 22, 24, 25]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 0, 1, 1, 2, 1, 2]]
    assert batch["block_ids"].tolist() == [[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]
    assert batch["segment_ids"].tolist() == [[-1, -1, -1, 0, 0, 1, 1, 1, -1, 2, 3, 3, 4, 4]]
    # every response token and the position predicting it; each first token comes from its prompt's last token
    assert batch["token_target"].tolist() == [10, 11, 12, 13, 14, 20, 21, 22, 24, 25]
    assert batch["token_pos"].tolist() == [2, 3, 2, 5, 6, 8, 8, 10, 8, 12]
    assert batch["token_response"].tolist() == [0, 0, 1, 1, 1, 2, 3, 3, 4, 4]
    assert batch["token_row"].tolist() == [0] * 10
    # the [B, K] layout is ListCollator's
    plain = ListCollator(pad_token_id=0)(items)
    for key in ("row_list", "row_slot", "labels", "list_mask", "lengths", "index"):
        assert torch.equal(batch[key], plain[key]), key
    assert batch["index"].tolist() == [7, 8]
    assert batch["ref_logps"][1].tolist() == [-1.0, -1.0, -1.0] and math.isnan(batch["ref_logps"][0, 2].item())
    # counts: 14 real tokens, no padding; the unshared layout feeds 5 rows of 3 + 3 = 6 tokens (19 of them real)
    assert batch["num_real_tokens"].item() == 14
    assert batch["num_pad_tokens"].item() == 0 and batch["pad_fraction"].item() == 0.0
    assert batch["num_unshared_tokens"].item() == 5 * 6 == plain["input_ids"].numel()
    assert batch["num_unshared_real_tokens"].item() == 5 + 6 + 2 + 3 + 3 == plain["attention_mask"].sum().item()
    assert batch["max_sequence_tokens"].item() == 6


def test_one_list_per_row_pads_the_tail_and_counts_it():
    items = [{"list": t} for t in _lists()]
    batch = PackedListCollator(pad_token_id=99, max_row_tokens=1, pad_to_multiple_of=5)(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 10, 11, 12, 13, 14, 99, 99],
                                           [8, 20, 21, 22, 24, 25, 99, 99, 99, 99]]
    assert batch["position_ids"][1].tolist() == [0, 1, 1, 2, 1, 2, 0, 1, 2, 3]  # the tail counts from 0
    assert batch["block_ids"][1].tolist() == [1, 1, 1, 1, 1, 1, -1, -1, -1, -1]
    assert batch["token_row"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert batch["token_pos"].tolist() == [2, 3, 2, 5, 6, 0, 0, 2, 0, 4]
    assert batch["num_real_tokens"].item() == 14
    assert batch["num_pad_tokens"].item() == 6
    assert batch["pad_fraction"].item() == pytest.approx(6 / 20)


def test_mask_of_the_hand_example():
    batch = PackedListCollator(pad_token_id=0, max_row_tokens=1, pad_to_multiple_of=4)(
        [{"list": TokenizedList((5, 6), ((10,), (12, 13)), (1.0, 0.0))}]
    )
    # row: P P R0 R1 R1 · · · (width 8)
    mask = packed_attention_mask(batch)
    assert mask.shape == (1, 1, 8, 8) and mask.dtype == torch.bool
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],  # prompt token 0: itself
            [1, 1, 0, 0, 0, 0, 0, 0],  # prompt token 1: the prompt so far
            [1, 1, 1, 0, 0, 0, 0, 0],  # response 0: the prompt and itself
            [1, 1, 0, 1, 0, 0, 0, 0],  # response 1, token 0: the prompt and itself, not response 0
            [1, 1, 0, 1, 1, 0, 0, 0],  # response 1, token 1
            [0, 0, 0, 0, 0, 1, 0, 0],  # padding: causal among the padding only, never empty
            [0, 0, 0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask[0, 0], want)
    additive = packed_attention_mask(batch, torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert (additive[0, 0][want] == 0).all() and (additive[0, 0][~want] == torch.finfo(torch.bfloat16).min).all()


def test_lists_never_see_each_other():
    batch = PackedListCollator(pad_token_id=0, max_row_tokens=64)([{"list": t} for t in _lists()])
    mask = packed_attention_mask(batch)[0, 0]
    assert not mask[8:, :8].any() and not mask[:8, 8:].any()


def test_empty_prompt_and_empty_response_score_what_list_collator_scores():
    """ListCollator ignores position 0 of a row, so with an empty prompt a response's first token is not scored."""
    items = [{"list": TokenizedList((), ((3, 4, 5), ()), (1.0, 0.0))}, {"list": TokenizedList((1,), ((2,),), (0.0,))}]
    batch = PackedListCollator(pad_token_id=0, max_row_tokens=64)(items)
    plain = ListCollator(pad_token_id=0)(items)
    assert batch["token_target"].tolist() == [4, 5, 2]
    assert batch["token_response"].tolist() == [0, 0, 2]
    assert (plain["loss_mask"][:, 1:].sum(1)).tolist() == [2, 0, 1]


def test_a_list_longer_than_the_row_gets_its_own_row():
    items = [{"list": t} for t in _lists()]
    batch = PackedListCollator(pad_token_id=0, max_row_tokens=7)(items)
    assert batch["input_ids"].shape == (2, 8)  # list 0 (8 tokens) alone; list 1 (6 tokens) cannot join it


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty batch"):
        PackedListCollator(pad_token_id=0)([])
