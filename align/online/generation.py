"""Sampling G completions per prompt with Hugging Face ``generate``: the groups GRPO and ``align iterate`` rank.

A group of G samples of one prompt is a ranked list (:class:`~align.data.tokenize.TokenizedList`) whose labels are
the rewards, so online and offline training share the list layout, the forward and the metrics.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from align.data.tokenize import TokenizedList


@dataclass
class Samples:
    """G completions for each of B prompts.

    Attributes:
        prompt_ids: ``B`` prompts' token ids.
        completion_ids: ``[B][G]`` each completion's ids, up to and including its end-of-turn token.
        texts: ``[B][G]`` the completions' text (special tokens removed).
        truncated: ``[B, G]`` bool: the completion hit ``max_new_tokens`` without ending.
        seconds: wall time of the generation.
    """

    prompt_ids: list[tuple[int, ...]]
    completion_ids: list[list[tuple[int, ...]]]
    texts: list[list[str]]
    truncated: torch.Tensor
    seconds: float

    def lists(self, scores: torch.Tensor | None = None) -> list[TokenizedList]:
        """The groups as tokenized lists, labelled with ``scores`` ``[B, G]`` (default 0)."""
        out = []
        for b, (p, comps) in enumerate(zip(self.prompt_ids, self.completion_ids)):
            labels = tuple(float(x) for x in scores[b]) if scores is not None else (0.0,) * len(comps)
            out.append(TokenizedList(p, tuple(c if c else (p[-1],) for c in comps), labels))
        return out


def sample(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, pad_token_id: int, eos_token_id: int,
           num_generations: int, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
           do_sample: bool = True, batch_size: int = 64, decode=None) -> Samples:
    """Sample ``num_generations`` completions of every prompt (left-padded batches of ``batch_size`` prompts).

    Args:
        model: a causal LM (unwrapped for generation).
        prompt_ids: the prompts' token ids.
        pad_token_id, eos_token_id: the tokenizer's; a completion ends at its first ``eos_token_id``.
        num_generations: G, completions per prompt.
        max_new_tokens: the completion length limit.
        temperature, top_p: sampling settings (top-k is off: the whole distribution, as TRL's GRPO).
        do_sample: False for greedy decoding (then use ``num_generations=1``).
        batch_size: prompts per ``generate`` call.
        decode: ``ids -> str`` for :attr:`Samples.texts` (the tokenizer's ``decode`` with special tokens skipped).
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    config = GenerationConfig(do_sample=do_sample, temperature=temperature if do_sample else None,
                              top_p=top_p if do_sample else None, top_k=0 if do_sample else None,
                              max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    comps: list[list[tuple[int, ...]]] = []
    truncated = torch.zeros(len(prompt_ids), num_generations, dtype=torch.bool)
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            chunk = [list(p) for p in prompt_ids[start : start + batch_size] for _ in range(num_generations)]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):  # left padding: every completion starts at the same column
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
            new = out[:, width:].cpu()
            for i in range(len(chunk)):
                b, g = divmod(start * num_generations + i, num_generations)
                row = new[i].tolist()
                end = row.index(eos_token_id) + 1 if eos_token_id in row else None
                tokens = tuple(row[:end] if end else row)
                truncated[b, g] = end is None
                if g == 0:
                    comps.append([])
                comps[b].append(tokens)
    texts = [[decode(c) if decode else "" for c in group] for group in comps]
    return Samples([tuple(p) for p in prompt_ids], comps, texts, truncated, time.perf_counter() - t0)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def seeded_sample(model: torch.nn.Module, tokenizer, prompt_ids: Sequence[Sequence[int]], *, n: int,
                  max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64,
                  seed: int = 0) -> Samples:
    """:func:`sample` with the tokenizer's pad/end ids and text, on a random stream seeded with ``seed`` (so two
    models are compared on the same draws); the global RNG is left as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return sample(model, prompt_ids, pad_token_id=tokenizer.pad_token_id or 0,
                      eos_token_id=tokenizer.eos_token_id, num_generations=n, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_p=top_p, batch_size=batch_size,
                      decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    finally:
        torch.random.set_rng_state(state)
