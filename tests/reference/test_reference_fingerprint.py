"""Tests of align.reference.fingerprint: what changes the weights and tokenizer fingerprints, and what does not."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from align.forward import score_lists
from align.models.tiny import build_model, build_tokenizer
from align.reference import ReferenceIdentity
from align.reference.fingerprint import (
    _FULL_HASH_ELEMENTS,
    _exact_checksums,
    tokenizer_fingerprint,
    weights_fingerprint,
)

from .conftest import SHARD, SPEC, cached

# ------------------------------------------------------------------------------------------------- weights


def test_weights_fingerprint_is_stable_across_identical_rebuilds(model, tok):
    fp = weights_fingerprint(model)
    assert fp == weights_fingerprint(model)
    assert fp == weights_fingerprint(build_model(tok, SPEC))
    assert fp != weights_fingerprint(build_model(tok, dataclasses.replace(SPEC, seed=1)))


@pytest.mark.parametrize("name", ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                  "model.layers.1.self_attn.k_proj.weight", "model.norm.weight"])
def test_weights_fingerprint_sees_one_ulp_in_any_tensor(model, name):
    fp = weights_fingerprint(model)
    m = copy.deepcopy(model)
    with torch.no_grad():
        flat = m.state_dict()[name].view(-1)
        i = flat.numel() // 2 + 1
        flat[i] = torch.nextafter(flat[i], torch.tensor(math.inf))
    assert weights_fingerprint(m) != fp


def test_weights_fingerprint_sees_the_dtype(model):
    fp = weights_fingerprint(model)
    assert weights_fingerprint(copy.deepcopy(model).to(torch.float64)) != fp
    assert weights_fingerprint(copy.deepcopy(model).to(torch.bfloat16)) != fp


@pytest.fixture(scope="module")
def big() -> torch.nn.Module:
    """A module with one tensor large enough (>= 2x the limit) to be fingerprinted by sampling."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4100, 2048, bias=False)
    torch.nn.init.normal_(lin.weight, std=0.02)
    assert lin.weight.numel() // _FULL_HASH_ELEMENTS >= 2
    return lin


@pytest.mark.parametrize("index", [1, 2, 4100 * 2048 - 1])  # odd indices are not in the strided sample
def test_a_sampled_large_tensor_still_sees_one_ulp_in_one_element(big, index):
    m = copy.deepcopy(big)
    flat = m.weight.data.view(-1)
    flat[index] = 0.0123
    fp = weights_fingerprint(m)
    flat[index] = torch.nextafter(flat[index], torch.tensor(1.0))
    assert weights_fingerprint(m) != fp
    flat[index] = 0.0123
    assert weights_fingerprint(m) == fp


def test_a_sampled_large_tensor_sees_two_swapped_elements():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Linear(4100, 2048, bias=False)
    flat = m.weight.data.view(-1)
    flat.copy_(torch.randint(-512, 512, (flat.numel(),), generator=g) / 1024.0)  # float sums exact in any order
    flat[1], flat[3] = 0.25, -0.5  # both unsampled (the stride is 2)
    fp = weights_fingerprint(m)
    flat[1], flat[3] = -0.5, 0.25
    assert weights_fingerprint(m) != fp


def test_a_sampled_large_tensor_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(_FULL_HASH_ELEMENTS + 1, generator=g) * 0.02)
                                for _ in range(3)])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weights_fingerprint(m)
        torch.set_num_threads(2)
        two = weights_fingerprint(m)
    finally:
        torch.set_num_threads(before)
    assert one == two


@pytest.mark.parametrize("n", [1, 65520, 65521, 65522, 3 * 65521 + 17])
def test_exact_checksums_are_the_defined_sums(n):
    """plain = sum of the 16-bit words, weighted = sum of word i times (i mod 65521) + 1, as Python integers."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(torch.bfloat16)
    words = x.view(torch.int16).tolist()
    assert _exact_checksums(x) == (sum(words), sum(w * (i % 65521 + 1) for i, w in enumerate(words)))
    x32 = torch.randn(n, generator=torch.Generator().manual_seed(n))
    words = x32.view(torch.int16).tolist()  # float32: two words an element
    assert _exact_checksums(x32) == (sum(words), sum(w * (i % 65521 + 1) for i, w in enumerate(words)))


def test_tied_weights_fingerprint_like_two_equal_copies():
    """A tied tensor is read once but counted under both names: the same fingerprint as untied equal copies."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(_FULL_HASH_ELEMENTS // 64 + 1, 128)
    head = torch.nn.Linear(128, emb.num_embeddings, bias=False)
    tied, untied = torch.nn.ModuleDict({"a": emb, "b": head}), copy.deepcopy(torch.nn.ModuleDict({"a": emb, "b": head}))
    tied["b"].weight = tied["a"].weight
    with torch.no_grad():
        untied["b"].weight.copy_(untied["a"].weight)
    assert weights_fingerprint(tied) == weights_fingerprint(untied)
    with torch.no_grad():
        untied["b"].weight[5, 7] += 1e-3
    assert weights_fingerprint(tied) != weights_fingerprint(untied)


# ------------------------------------------------------------------------------------------------- PEFT


@pytest.fixture(scope="module")
def peft_model(model):
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter: it changes the policy's numbers, not the reference's
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return pm


def test_peft_adapter_weights_are_left_out(peft_model):
    fp = weights_fingerprint(peft_model)
    m = copy.deepcopy(peft_model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
    assert weights_fingerprint(m) == fp
    with m.disable_adapter():
        assert weights_fingerprint(m) == fp


def test_peft_base_weights_are_kept(peft_model):
    fp = weights_fingerprint(peft_model)
    m = copy.deepcopy(peft_model)
    with torch.no_grad():
        base = next(p for n, p in m.named_parameters() if "q_proj.base_layer" in n)
        base.view(-1)[5] += 1e-3
    assert weights_fingerprint(m) != fp


def test_peft_reference_values_are_the_base_models(tmp_path, peft_model, model, tok, lists):
    """A PEFT policy's reference mode (adapter disabled) gives the base model's numbers and its cache."""
    lists = lists[:SHARD]
    policy = cached(tmp_path, peft_model, tok)
    base = cached(tmp_path, model, tok)
    assert policy.identity == base.identity
    assert policy.prefetch(lists).computed > 0
    assert base.prefetch(lists).computed == 0  # the same entries
    direct, _ = score_lists(model, lists)
    for got, want in zip(policy.list_logps(lists), direct):
        assert got == pytest.approx(want[: len(got)].tolist(), abs=1e-5)
    adapted, _ = score_lists(peft_model, lists)  # the adapter on: other numbers (the test can fail)
    assert (adapted - direct).nan_to_num().abs().max() > 1e-3


def test_peft_wrapped_model_has_the_base_models_fingerprint(peft_model, model, tok):
    """PEFT renames keys (``base_model.model.`` prefix, ``.base_layer``): the same reference must still share."""
    assert weights_fingerprint(peft_model) == weights_fingerprint(model)
    assert ReferenceIdentity.of(peft_model, tok).key == ReferenceIdentity.of(model, tok).key


def test_an_existing_adapter_is_part_of_the_reference(peft_model, model):
    """A run that starts from an adapter keeps a frozen copy as its reference: its weights are in the identity."""
    pm = copy.deepcopy(peft_model)
    pm.add_adapter("reference", pm.peft_config["default"])
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".reference." in name:
                p.copy_(dict(pm.named_parameters())[name.replace(".reference.", ".default.")])
    with_ref = weights_fingerprint(pm, adapter="reference")
    assert with_ref != weights_fingerprint(model)  # not the bare base
    trained = copy.deepcopy(pm)
    with torch.no_grad():  # training moves the trainable adapter, not the frozen reference copy
        for name, p in trained.named_parameters():
            if ".default." in name:
                p.add_(0.1)
    assert weights_fingerprint(trained, adapter="reference") == with_ref
    with torch.no_grad():
        next(p for n, p in trained.named_parameters() if ".reference." in n and "lora_B" in n).add_(0.1)
    assert weights_fingerprint(trained, adapter="reference") != with_ref


def test_peft_modules_to_save_has_the_base_models_fingerprint(model):
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["norm"]))
    with torch.no_grad():  # training moves the trainable copy; the reference (adapter disabled) is unchanged
        for name, p in pm.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.1)
    assert weights_fingerprint(pm) == weights_fingerprint(model)


# ------------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_fingerprint_is_stable_across_identical_rebuilds(tok, corpus):
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(build_tokenizer([corpus], 512))


def test_tokenizer_fingerprint_sees_the_chat_template(tok):
    fp = tokenizer_fingerprint(tok)
    t2 = copy.deepcopy(tok)
    t2.chat_template = t2.chat_template.replace("\n{{ m['content'] }}", " {{ m['content'] }}")
    assert t2.chat_template != tok.chat_template
    assert tokenizer_fingerprint(t2) != fp
    t2.chat_template = None
    assert tokenizer_fingerprint(t2) != fp
    t2.chat_template = tok.chat_template
    assert tokenizer_fingerprint(t2) == fp


def test_tokenizer_fingerprint_sees_the_vocabulary_and_special_tokens(tok, corpus):
    fp = tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(build_tokenizer([corpus], 400)) != fp
    t2 = copy.deepcopy(tok)
    t2.eos_token = "<|endoftext|>"
    assert tokenizer_fingerprint(t2) != fp
