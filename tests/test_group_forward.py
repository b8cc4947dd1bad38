"""The group-packed forward of sampled completions (each prompt once, log-probs at completion positions only, in the
completion layout) gives the per-token log-probs and the GRPO gradients of one padded ``prompt + completion`` row
per sample computed with the model's full logits; for G = 2..16 groups of mixed prompt and completion lengths,
β = 0 and > 0, μ = 1 and 2, with and without LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from align.data.collate import ListCollator
from align.data.tokenize import TokenizedList
from align.forward import PackingPlan
from align.group_forward import collate_groups, completion_logps
from align.logprobs import token_logprobs
from align.losses.grpo import grpo_loss

PACKED, PADDED = PackingPlan(True), PackingPlan(False)


def _groups(G: int, seed: int) -> list[TokenizedList]:
    """Three groups of G completions: prompts of 1..30 tokens, completions of 1..12 tokens."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> tuple[int, ...]:
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return tuple(torch.randint(3, 500, (n,), generator=g).tolist())

    return [TokenizedList(ids(1, 30), tuple(ids(1, 12) for _ in range(G)), (0.0,) * G) for _ in range(3)]


def _padded_rows(model, groups) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference computation: one right-padded row per sample, the model's full logits, per-token log-probs
    ``[N, L-1]`` at the completion tokens, moved to the completion layout."""
    batch = ListCollator(0)([{"list": t} for t in groups])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    per_tok = token_logprobs(out.logits, batch["input_ids"])
    mask = batch["loss_mask"][:, 1:].bool()
    lengths = mask.sum(-1)
    layout = torch.zeros(mask.shape[0], int(lengths.max()))
    for r in range(mask.shape[0]):
        n = int(lengths[r])
        layout = layout.index_put((torch.full((n,), r), torch.arange(n)), per_tok[r][mask[r]])
    return layout, (torch.arange(layout.shape[1])[None] < lengths[:, None]).float()


def _model(small_model_dir, lora: bool):
    model = AutoModelForCausalLM.from_pretrained(small_model_dir, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 lora_dropout=0.0, init_lora_weights=False))
    return model.train()


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("G", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("lora", [False, True])
def test_completion_logps_equal_padded_rows(small_model_dir, G, lora):
    model = _model(small_model_dir, lora)
    groups = _groups(G, seed=G)
    with torch.no_grad():
        want, want_mask = _padded_rows(model, groups)
        for plan in (PACKED, PADDED):
            batch = collate_groups(groups, plan, 0)
            got = completion_logps(model, batch, plan, entropy=True)
            assert got.logps.shape == want.shape
            torch.testing.assert_close(got.mask, want_mask)
            torch.testing.assert_close(got.logps, want, atol=1e-5, rtol=0)
            assert (got.entropy * (1 - got.mask)).abs().max() == 0 and (got.entropy[got.mask.bool()] > 0).all()
    packed = collate_groups(groups, PACKED, 0)
    assert packed["input_ids"].numel() < sum(len(t.prompt_ids) + len(r) for t in groups for r in t.response_ids)


@pytest.mark.parametrize("G", [2, 4, 16])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("mu", [1, 2])
@pytest.mark.parametrize("lora", [False, True])
def test_grpo_gradients_equal_padded_rows(small_model_dir, G, beta, mu, lora):
    model = _model(small_model_dir, lora)
    groups = _groups(G, seed=100 + G)
    g = torch.Generator().manual_seed(G)
    with torch.no_grad():
        base, mask = _padded_rows(model, groups)
    adv = torch.randn(base.shape[0], generator=g)
    old = base + 0.05 * torch.randn(base.shape, generator=g) if mu > 1 else None  # π_old one update behind
    ref = base + 0.1 * torch.randn(base.shape, generator=g) if beta else None
    mask = mask * (torch.rand(mask.shape, generator=g) > 0.1)  # some tokens masked (truncated / dropped)

    def loss_of(logps):
        out = grpo_loss(logps, adv, mask, old_logps=old, ref_logps=ref, beta=beta, loss_type="dapo")
        return out.losses.sum() / out.count

    want_loss = loss_of(_padded_rows(model, groups)[0])
    want_loss.backward()
    want = _grads(model)
    for plan in (PACKED, PADDED):
        got_loss = loss_of(completion_logps(model, collate_groups(groups, plan, 0), plan).logps)
        got_loss.backward()
        got = _grads(model)
        torch.testing.assert_close(got_loss, want_loss, atol=1e-5, rtol=0)
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4, msg=name)
