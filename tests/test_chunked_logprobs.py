"""``chunked_token_logprobs`` (hidden states -> log-probs without full logits) against ``token_logprobs`` on the
full logits of the same head, in values and in gradients; ``output_head`` refuses heads it cannot reproduce."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from align.logprobs import (
    UnsupportedHeadError,
    chunked_token_logprobs,
    output_head,
    segment_sums,
    token_logprobs,
)

N, L, H, V = 3, 6, 16, 37


def _inputs(dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, L, H, generator=g).to(dtype).requires_grad_(True)
    weight = torch.randn(V, H, generator=g).to(dtype).requires_grad_(True)
    b = torch.randn(V, generator=g).to(dtype).requires_grad_(True) if bias else None
    ids = torch.randint(0, V, (N, L), generator=g)
    # a ragged selection of next-token predictions: (row, position t predicting ids[row, t + 1])
    picks = [(0, 0), (0, 1), (0, 4), (1, 2), (1, 3), (1, 4), (2, 0), (2, 2), (2, 3), (2, 4)]
    rows = torch.tensor([r for r, _ in picks])
    pos = torch.tensor([t for _, t in picks])
    return hidden, weight, b, ids, rows, pos


def _reference(hidden, weight, b, ids, rows, pos):
    """What the model path does today: full logits, then token_logprobs and a pick of the wanted entries."""
    logits = F.linear(hidden, weight, b)  # [N, L, V]
    return token_logprobs(logits, ids)[rows, pos]


def _grads(out, *tensors):
    weights = torch.linspace(0.5, 1.5, out.numel())  # a non-uniform upstream gradient
    return torch.autograd.grad((out * weights).sum(), [t for t in tensors if t is not None], retain_graph=True)


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_the_full_logits_path(chunk_size, bias):
    hidden, weight, b, ids, rows, pos = _inputs(bias=bias)
    want = _reference(hidden, weight, b, ids, rows, pos)
    got = chunked_token_logprobs(hidden, weight, ids[rows, pos + 1], index=rows * L + pos, bias=b,
                                 chunk_size=chunk_size)
    assert got.shape == (10,) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for g_got, g_want in zip(_grads(got, hidden, weight, b), _grads(want, hidden, weight, b)):
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-4)
    # hidden states that predict nothing get exactly zero gradient
    used = torch.zeros(N, L, dtype=torch.bool)
    used[rows, pos] = True
    assert (_grads(got, hidden)[0][~used] == 0).all()


def test_already_gathered_rows_give_the_same_values():
    hidden, weight, b, ids, rows, pos = _inputs()
    flat = chunked_token_logprobs(hidden, weight, ids[rows, pos + 1], index=rows * L + pos, bias=b, chunk_size=3)
    gathered = chunked_token_logprobs(hidden[rows, pos], weight, ids[rows, pos + 1], bias=b, chunk_size=3)
    torch.testing.assert_close(flat, gathered, rtol=0, atol=0)


def test_hand_example():
    """Two tokens, V = 3, weight = identity: logits are the hidden rows themselves."""
    hidden = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    got = chunked_token_logprobs(hidden, torch.eye(3), torch.tensor([1, 0]), chunk_size=1)
    want = torch.tensor([-torch.log(torch.tensor(3.0)), 2.0 - torch.log(torch.exp(torch.tensor(2.0)) + 2)])
    torch.testing.assert_close(got, want)


def test_bf16_inputs_are_close_to_the_float32_reference():
    hidden, weight, b, ids, rows, pos = _inputs(dtype=torch.bfloat16)
    got = chunked_token_logprobs(hidden, weight, ids[rows, pos + 1], index=rows * L + pos, bias=b, chunk_size=4)
    assert got.dtype == torch.float32
    exact = _reference(hidden.float(), weight.float(), b.float(), ids, rows, pos)
    # the head runs in bf16 like the model's own: |logit error| ~ 2^-8 · |logit| ~ 0.1 here
    torch.testing.assert_close(got, exact, rtol=0, atol=0.3)
    # and equals the full-logits path run in bf16 (same rounding of the logits) much more tightly
    torch.testing.assert_close(got, _reference(hidden, weight, b, ids, rows, pos), rtol=0, atol=1e-4)
    g_h, g_w, g_b = _grads(got, hidden, weight, b)
    assert g_h.dtype == g_w.dtype == g_b.dtype == torch.bfloat16
    w_h, w_w, w_b = _grads(exact, hidden, weight, b)
    for g, w in ((g_h, w_h), (g_w, w_w), (g_b, w_b)):
        torch.testing.assert_close(g.float(), w.float(), rtol=0.05, atol=0.05)


def test_empty_selection():
    hidden, weight, b, *_ = _inputs()
    got = chunked_token_logprobs(hidden, weight, torch.zeros(0, dtype=torch.long),
                                 index=torch.zeros(0, dtype=torch.long), bias=b)
    assert got.shape == (0,)
    g_h, g_w, g_b = torch.autograd.grad(got.sum(), [hidden, weight, b], allow_unused=True)
    assert all(g is None or (g == 0).all() for g in (g_h, g_w, g_b))


def test_bad_arguments():
    hidden, weight, _, ids, *_ = _inputs()
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_logprobs(hidden, weight, ids[0], chunk_size=0)
    with pytest.raises(ValueError, match="18 hidden rows for 6 targets"):
        chunked_token_logprobs(hidden, weight, ids[0])


def test_segment_sums():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    sums = segment_sums(values, torch.tensor([2, 0, 2, 2]), 4)
    assert sums.tolist() == [2.0, 0.0, 8.0, 0.0]
    sums.sum().backward()
    assert values.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_output_head_returns_the_tied_weight_and_refuses_what_it_cannot_reproduce():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    weight, bias = output_head(model)
    assert weight is model.model.embed_tokens.weight and bias is None
    model.config.final_logit_softcapping = 30.0  # Gemma-2 style: logits = 30 · tanh(logits / 30)
    with pytest.raises(UnsupportedHeadError, match="final_logit_softcapping=30.0"):
        output_head(model)
    model.config.final_logit_softcapping = None
    model.config.logit_scale = 0.0625  # Cohere style
    with pytest.raises(UnsupportedHeadError, match="logit_scale"):
        output_head(model)
    model.config.logit_scale = 1.0  # neutral
    output_head(model)


def test_output_head_refuses_a_lora_head():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    plain = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
    assert output_head(plain)[0].shape == (50, 16)  # attribute lookups reach the base model through peft
    on_head = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(UnsupportedHeadError, match="not a plain torch.nn.Linear"):
        output_head(on_head)
