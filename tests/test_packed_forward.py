"""``packed_forward`` (shared prompts, block mask, chunked log-probs) gives ``policy_forward``'s values and
gradients, on tiny Llama / Qwen2 / Qwen3 / Mistral models, sdpa and eager attention, with and without LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config, Qwen3Config

from align.data.collate import ListCollator
from align.data.packing import PackedListCollator
from align.data.tokenize import TokenizedList
from align.forward import PackingUnsupportedError, packed_forward, packed_unsupported_reason, policy_forward
from align.logprobs import sequence_logprobs

SMALL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
CONFIGS = {"qwen2": lambda: Qwen2Config(**SMALL), "qwen3": lambda: Qwen3Config(**SMALL, head_dim=8),
           "mistral": lambda: MistralConfig(**SMALL)}  # fmt: skip


def _model(arch: str, attn: str, small_model_dir, lora: bool = False, lora_head: bool = False):
    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(small_model_dir, attn_implementation=attn)
    else:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(CONFIGS[arch](), attn_implementation=attn)
    assert model.config._attn_implementation == attn
    if lora or lora_head:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj", "down_proj"] + (["lm_head"] if lora_head else [])
        torch.manual_seed(1)  # init_lora_weights=False: B is random, so the adapter changes the outputs
        model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, lora_dropout=0.0,
                                                 init_lora_weights=False))
    return model.train()


def _lists(seed: int = 0) -> list[TokenizedList]:
    """Seven lists with K = 2..8, prompts of 1..12 tokens and responses of 1..9 tokens."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> tuple[int, ...]:
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return tuple(torch.randint(3, 500, (n,), generator=g).tolist())

    return [TokenizedList(ids(1, 12), tuple(ids(1, 9) for _ in range(K)), tuple(float(-k) for k in range(K)))
            for K in range(2, 9)]


def _loss(logps: torch.Tensor, list_mask: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 2.0, logps.numel()).reshape(logps.shape)  # every response its own weight
    return (logps * weights * list_mask).sum()


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


def _compare(model, lists, max_row_tokens, chunked=True):
    items = [{"list": t} for t in lists]
    plain = ListCollator(pad_token_id=0)(items)
    packed = PackedListCollator(pad_token_id=0, max_row_tokens=max_row_tokens)(items)
    want = policy_forward(model, plain).logps
    _loss(want, plain["list_mask"]).backward()
    want_grads = _grads(model)
    got = packed_forward(model, packed, chunked=chunked, chunk_size=7)
    _loss(got.logps, packed["list_mask"]).backward()
    got_grads = _grads(model)
    assert got.logps.shape == want.shape == (7, 8)
    torch.testing.assert_close(got.logps, want, rtol=1e-5, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 0
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    return packed


# the full matrix on the two architectures the project targets; the other two on the plain setting
MATRIX = [(arch, attn, tuning, rows) for arch in ("llama", "qwen2") for attn in ("sdpa", "eager")
          for tuning in ("full", "lora") for rows in ("several_lists_per_row", "one_list_per_row")]
MATRIX += [(arch, attn, "full", "several_lists_per_row") for arch in ("qwen3", "mistral") for attn in ("sdpa", "eager")]


@pytest.mark.parametrize("arch, attn, tuning, rows", MATRIX)
def test_packed_forward_equals_policy_forward(arch, attn, tuning, rows, small_model_dir):
    model = _model(arch, attn, small_model_dir, lora=tuning == "lora")
    packed = _compare(model, _lists(), 10**6 if rows == "several_lists_per_row" else 1)
    assert packed["input_ids"].shape[0] == (1 if rows == "several_lists_per_row" else 7)


def test_unchunked_head_and_a_lora_head(small_model_dir):
    """chunked=False runs the head module itself, so it also works with a LoRA adapter on lm_head."""
    model = _model("qwen2", "sdpa", small_model_dir, lora_head=True)
    assert "not a plain torch.nn.Linear" in packed_unsupported_reason(model)
    assert packed_unsupported_reason(model, chunked=False) is None
    _compare(model, _lists(1), 40, chunked=False)


def test_per_token_values_and_selected_logits(small_model_dir):
    model = _model("llama", "sdpa", small_model_dir).eval()
    lists = _lists(2)
    items = [{"list": t} for t in lists]
    plain = ListCollator(pad_token_id=0)(items)
    packed = PackedListCollator(pad_token_id=0, max_row_tokens=30)(items)
    with torch.no_grad():
        ref = policy_forward(model, plain, keep_logits=True)
        _, ref_tok = sequence_logprobs(ref.logits, plain["input_ids"], plain["loss_mask"], per_token=True)
    with torch.inference_mode():  # how the scoring loops run
        out = packed_forward(model, packed, per_token=True)
    mask = plain["loss_mask"][:, 1:].bool()
    per_response = out.per_response(packed)
    assert len(per_response) == plain["input_ids"].shape[0]
    for n, values in enumerate(per_response):
        torch.testing.assert_close(values, ref_tok[n][mask[n]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.token_logps, ref_tok[mask], rtol=1e-5, atol=1e-5)
    # logits at the tokens of responses 3 and 10 only, as the full logits hold them at those positions
    logits, targets, owner = out.response_logits(packed, torch.tensor([10, 3]))
    want = torch.cat([ref.logits[n, :-1][mask[n]] for n in (3, 10)])
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    assert targets.tolist() == [t for n in (3, 10) for t in plain["input_ids"][n, 1:][mask[n]].tolist()]
    assert owner.tolist() == [3] * int(mask[3].sum()) + [10] * int(mask[10].sum())


def test_refusals(small_model_dir):
    items = [{"list": t} for t in _lists()]
    packed = PackedListCollator(pad_token_id=0)(items)
    model = _model("llama", "sdpa", small_model_dir)
    assert packed_unsupported_reason(model, packed) is None
    model.config._attn_implementation = "flash_attention_2"  # the reason is read from the config alone
    assert "flash_attention_2" in packed_unsupported_reason(model)
    with pytest.raises(PackingUnsupportedError, match="cannot take a custom 4D mask"):
        packed_forward(model, packed)
    # a sliding window shorter than the longest prompt + response (20 tokens here) would be lost
    model = AutoModelForCausalLM.from_config(MistralConfig(**SMALL, sliding_window=8), attn_implementation="sdpa")
    assert "exceeds the sliding window 8" in packed_unsupported_reason(model, packed)
    model.config.model_type = "gemma2"
    assert "not one checked" in packed_unsupported_reason(model)


def test_refuses_prompt_learning_adapters(small_model_dir):
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(_model("llama", "sdpa", small_model_dir),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert "virtual tokens" in packed_unsupported_reason(model)
