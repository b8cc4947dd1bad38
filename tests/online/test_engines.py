"""Generation engines: the shared-prefix engine (each prompt prefilled once, its cache copied to the G samples, one
seeded stream per sample) gives Hugging Face ``generate``'s greedy samples exactly and its sampling distribution,
and its samples depend only on their seeds, not on batching."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from align.online.engines import HFGenerateEngine, SharedPrefixEngine, make_engine, stream_seed

PROMPTS = [(5, 17, 33, 2), (7,), (40, 41, 42, 43, 44, 45, 46, 47, 48), (9, 9)]


@pytest.fixture(scope="module")
def model(small_model_dir):
    return AutoModelForCausalLM.from_pretrained(small_model_dir).eval()


def _kw(**extra):
    return dict(pad_token_id=0, eos_token_id=1, max_new_tokens=10, **extra)


def test_greedy_samples_are_generate_s(model):
    plain = HFGenerateEngine().generate(model, PROMPTS, num_generations=1, do_sample=False, **_kw())
    shared = SharedPrefixEngine().generate(model, PROMPTS, num_generations=3, do_sample=False, **_kw())
    for b in range(len(PROMPTS)):
        assert shared.completion_ids[b] == [plain.completion_ids[b][0]] * 3
    assert torch.equal(shared.truncated[:, 0], plain.truncated[:, 0])


def test_samples_depend_only_on_their_seeds(model):
    seeds = [stream_seed(0, 3, i) for i in range(len(PROMPTS))]
    whole = SharedPrefixEngine().generate(model, PROMPTS, num_generations=4, seeds=seeds, batch_size=4, **_kw())
    split = SharedPrefixEngine().generate(model, PROMPTS, num_generations=4, seeds=seeds, batch_size=1, **_kw())
    alone = SharedPrefixEngine().generate(model, PROMPTS[2:3], num_generations=4, seeds=seeds[2:3], **_kw())
    assert whole.completion_ids == split.completion_ids
    assert alone.completion_ids[0] == whole.completion_ids[2]
    other = SharedPrefixEngine().generate(model, PROMPTS, num_generations=4, seeds=[s + 1 for s in seeds], **_kw())
    assert other.completion_ids != whole.completion_ids
    assert len({c for g in whole.completion_ids for c in g}) > len(PROMPTS)  # samples within a group differ


def _chi_square(tokens: list[int], probs: torch.Tensor, bins: int = 8) -> float:
    """Pearson's statistic of ``tokens`` against ``probs`` over ``bins`` groups of tokens of about equal mass."""
    order = probs.argsort(descending=True)
    cum = probs[order].cumsum(0)
    group = torch.zeros_like(probs, dtype=torch.long)
    group[order] = (cum / cum[-1] * bins).ceil().clamp(1, bins).long() - 1
    expected = torch.zeros(bins).index_add(0, group, probs) * len(tokens)
    observed = torch.bincount(group[torch.tensor(tokens)], minlength=bins).float()
    keep = expected > 0
    assert observed[~keep].sum() == 0  # nothing drawn outside the support
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampling_distribution_is_generate_s(model, temperature, top_p):
    """The first token of 3,000 samples of one prompt, from either engine, follows the model's warped next-token
    distribution (χ² over 8 equal-mass groups of tokens, 7 degrees of freedom: 99.9% of draws stay below 24.3); a
    distribution sampled at another temperature is told apart."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    n = 3000
    kw = dict(pad_token_id=0, eos_token_id=None, max_new_tokens=1, temperature=temperature, top_p=top_p)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[0]])).logits[:, -1].float()
    probs = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits)).softmax(-1)[0]
    torch.manual_seed(0)
    plain = HFGenerateEngine().generate(model, PROMPTS[:1], num_generations=n, **kw)
    shared = SharedPrefixEngine().generate(model, PROMPTS[:1], num_generations=n, seeds=[1], **kw)
    assert _chi_square([c[0] for c in plain.completion_ids[0]], probs) < 24.3
    assert _chi_square([c[0] for c in shared.completion_ids[0]], probs) < 24.3
    hot = SharedPrefixEngine().generate(model, PROMPTS[:1], num_generations=n, seeds=[2],
                                        **{**kw, "temperature": temperature * 2, "top_p": 1.0})
    assert _chi_square([c[0] for c in hot.completion_ids[0]], probs) > 24.3


def test_make_engine_names():
    assert isinstance(make_engine("shared_prefix"), SharedPrefixEngine)
    assert isinstance(make_engine("generate"), HFGenerateEngine)
    with pytest.raises(ValueError, match="unknown generation engine"):
        make_engine("vllm")
