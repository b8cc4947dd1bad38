"""``align.logprobs`` against a naive loop, and ``align.forward`` (padding, list layout) against unpadded rows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align.data.collate import ListCollator, to_list_layout
from align.data.tokenize import TokenizedList
from align.forward import list_logprobs, score_lists
from align.logprobs import sequence_logprobs, token_logprobs


def _naive(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t mask[n, t] · log_softmax(logits[n, t-1])[ids[n, t]] for t ≥ 1, one scalar at a time."""
    N, L, _ = logits.shape
    sums = torch.zeros(N, dtype=torch.float64)
    per_tok = torch.zeros(N, L - 1, dtype=torch.float64)
    for n in range(N):
        for t in range(1, L):
            if mask[n, t]:
                lp = torch.log_softmax(logits[n, t - 1].double(), -1)[ids[n, t]]
                per_tok[n, t - 1] = lp
                sums[n] += lp
    return sums, per_tok


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    N, L, V = 4, 9, 17
    logits = 3 * torch.randn(N, L, V, generator=g)
    ids = torch.randint(0, V, (N, L), generator=g)
    # prompt / response / padding patterns, including position 0 set (must be ignored) and an all-zero row
    mask = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 1, 0, 1, 0, 1, 1],
        ]
    )
    return logits, ids, mask


def test_sequence_logprobs_equals_naive_loop(batch):
    logits, ids, mask = batch
    sums = sequence_logprobs(logits, ids, mask)
    want, _ = _naive(logits, ids, mask)
    assert sums.shape == (4,)
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums.double(), want, rtol=1e-5, atol=1e-5)
    assert sums[2].item() == 0.0  # nothing masked in → exactly 0


def test_per_token_values_sum_to_the_sums_and_are_zero_where_masked(batch):
    logits, ids, mask = batch
    sums, per_tok = sequence_logprobs(logits, ids, mask, per_token=True)
    _, want = _naive(logits, ids, mask)
    assert per_tok.shape == (4, 8)
    torch.testing.assert_close(per_tok.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_tok.sum(-1), sums)
    assert (per_tok[mask[:, 1:] == 0] == 0).all()
    assert (per_tok[mask[:, 1:] == 1] < 0).all()  # real log-probs of a 17-way softmax are strictly negative


def test_first_position_of_the_mask_is_ignored(batch):
    """Token 0 has no prediction; setting loss_mask[:, 0] must not change anything."""
    logits, ids, mask = batch
    m0, m1 = mask.clone(), mask.clone()
    m0[:, 0], m1[:, 0] = 0, 1
    torch.testing.assert_close(sequence_logprobs(logits, ids, m0), sequence_logprobs(logits, ids, m1))


def test_token_logprobs_alignment():
    """Logits that put all mass on token t+1 at position t: every next-token log-prob is ~0, any other ~-inf."""
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    logits = torch.full((1, 5, 6), -1e4)
    logits[0, torch.arange(4), ids[0, 1:]] = 0.0  # position t predicts ids[t+1]
    out = token_logprobs(logits, ids)
    assert out.shape == (1, 4)
    assert torch.allclose(out, torch.zeros(1, 4), atol=1e-6)
    shifted_wrong = token_logprobs(logits, torch.tensor([[3, 4, 1, 5, 1]]))
    assert (shifted_wrong < -1e3).all()


def test_low_precision_logits_are_upcast():
    """bf16 logits give float32 sums equal to the float32 computation on the same (bf16-rounded) values."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 50, generator=g).bfloat16()
    ids = torch.randint(0, 50, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    got = sequence_logprobs(logits, ids, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, sequence_logprobs(logits.float(), ids, mask))


def test_gradient_flows_only_through_masked_in_positions(batch):
    """d sums / d logits = onehot(target) - softmax on counted positions, and exactly 0 elsewhere."""
    logits, ids, mask = batch
    logits = logits.clone().requires_grad_(True)
    sequence_logprobs(logits, ids, mask).sum().backward()
    grad = logits.grad
    counted = mask[:, 1:].bool()  # predicting position t+1 from position t
    assert (grad[:, :-1][~counted] == 0).all()
    assert (grad[:, -1] == 0).all()  # the last position predicts nothing
    n, t = 0, 3  # mask[0, 4] = 1
    want = F.one_hot(ids[n, t + 1], logits.shape[-1]).float() - torch.softmax(logits[n, t].detach(), -1)
    torch.testing.assert_close(grad[n, t], want)


# ---------------------------------------------------------------------------------------------------------------
# align.forward on a tiny model: padding and the [B, K] layout do not change any response's log-prob
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from align.models.tiny import TinyShape, build_model, build_tokenizer

    tok = build_tokenizer([], 512)
    spec = TinyShape(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    model = build_model(tok, spec).eval()
    return tok, model


def _lists() -> list[TokenizedList]:
    # ragged on purpose: K = 2, 3, 2; prompts and responses of different lengths; ids well inside the vocab
    return [
        TokenizedList((5, 6, 7), ((10, 11), (12, 13, 14, 15)), (1.0, 0.0)),
        TokenizedList((8,), ((20,), (21, 22, 23), (24, 25)), (0.0, -2.0, -1.0)),
        TokenizedList((30, 31, 32, 33, 34), ((40, 41, 42), (43,)), (0.0, 1.0)),
    ]


@torch.no_grad()
def _unpadded(model, prompt, response) -> float:
    ids = torch.tensor([list(prompt) + list(response)])
    logits = model(input_ids=ids).logits
    lp = torch.log_softmax(logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    return lp[len(prompt) - 1 :].sum().item()  # predictions of the response tokens only


def test_collator_layout():
    items = [{"list": t, "index": i} for i, t in enumerate(_lists())]
    batch = ListCollator(pad_token_id=0, pad_to_multiple_of=5)(items)
    assert batch["input_ids"].shape == (7, 10)  # 7 responses; longest row 5 + 3 = 8, rounded up to 10
    assert batch["row_list"].tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert batch["row_slot"].tolist() == [0, 1, 0, 1, 2, 0, 1]
    assert batch["list_mask"].tolist() == [[True, True, False], [True, True, True], [True, True, False]]
    assert batch["lengths"].tolist() == [[2, 4, 0], [1, 3, 2], [3, 1, 0]]
    assert batch["labels"].tolist() == [[1.0, 0.0, 0.0], [0.0, -2.0, -1.0], [0.0, 1.0, 0.0]]
    assert batch["index"].tolist() == [0, 1, 2]
    # row 1 = list 0, slot 1: prompt (5, 6, 7) + response (12, 13, 14, 15), then padding
    assert batch["input_ids"][1].tolist() == [5, 6, 7, 12, 13, 14, 15, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert batch["loss_mask"][1].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert (batch["loss_mask"].sum(1) == torch.tensor([2, 4, 1, 3, 2, 3, 1])).all()
    filled = to_list_layout(torch.arange(7.0), batch, fill=-1.0)
    assert filled.tolist() == [[0.0, 1.0, -1.0], [2.0, 3.0, 4.0], [5.0, 6.0, -1.0]]


def test_list_logprobs_equals_unpadded_rows(tiny):
    _, model = tiny
    lists = _lists()
    batch = ListCollator(pad_token_id=0)([{"list": t} for t in lists])
    with torch.no_grad():
        got = list_logprobs(model, batch)
    assert got.shape == (3, 3)
    for b, t in enumerate(lists):
        for k, r in enumerate(t.response_ids):
            assert got[b, k].item() == pytest.approx(_unpadded(model, t.prompt_ids, r), rel=1e-5, abs=1e-4), (b, k)
    assert got[0, 2].item() == 0.0 and got[2, 2].item() == 0.0  # padded slots hold 0


def test_score_lists_reorders_back_and_marks_empty_slots_nan(tiny):
    """score_lists runs lists longest first in small batches; values must come back to each list's own row."""
    _, model = tiny
    lists = _lists()
    model.train()
    try:
        values, tokens = score_lists(model, lists, batch_size=2, per_token=True)
        assert model.training  # the caller's mode is restored
    finally:
        model.eval()
    assert values.shape == (3, 3)
    assert math.isnan(values[0, 2].item()) and math.isnan(values[2, 2].item())
    assert tokens is not None
    for b, t in enumerate(lists):
        assert len(tokens[b]) == len(t.response_ids)
        for k, r in enumerate(t.response_ids):
            want = _unpadded(model, t.prompt_ids, r)
            assert values[b, k].item() == pytest.approx(want, rel=1e-5, abs=1e-4), (b, k)
            assert tokens[b][k].shape == (len(r),)
            assert tokens[b][k].sum().item() == pytest.approx(values[b, k].item(), rel=1e-5, abs=1e-4)
