"""Generation engines: how a rollout trainer draws G completions of each prompt.

An engine takes a model and prompts and returns :class:`~align.online.generation.Samples`. Two are built in:

- ``shared_prefix`` (default): each prompt's key/value cache is computed once and copied to its G samples, then
  the samples are decoded together; every sample draws from its own random stream, seeded by (run seed, window,
  prompt index, sample index), so the samples do not depend on how prompts are batched, split across processes or
  resumed. Sampling is the same distribution as ``generate``'s: Hugging Face's own temperature / top-k / top-p
  processors, then a categorical draw.
- ``generate``: Hugging Face ``generate`` on G left-padded copies of each prompt (the prompt is prefilled G
  times; the global random stream).

A vLLM engine would implement the same :meth:`GenerationEngine.generate` (prompt ids in, token ids out) against a
``vllm.LLM`` that holds a copy of the policy's weights, with ``SamplingParams(n=G, seed=...)`` per prompt, and
would reload the weights into it after each optimizer step (as TRL's ``vllm_mode="colocate"`` does); the trainer
would not change.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from align.errors import ConfigError
from align.online.generation import Samples, _eval_mode, sample


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. run seed, window, prompt index, sample index), the same on every host."""
    digest = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class GenerationEngine(abc.ABC):
    """Draws ``num_generations`` completions of each prompt.

    ``seeds`` gives one seed per prompt: an engine that honours it makes each prompt's samples a function of its
    seed alone (``shared_prefix``); one that cannot (``generate``) seeds its one stream with the first seed.
    """

    name: str = ""

    @abc.abstractmethod
    def generate(self, model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, num_generations: int,
                 max_new_tokens: int, pad_token_id: int, eos_token_id: int | None, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, do_sample: bool = True, seeds: Sequence[int] | None = None,
                 batch_size: int = 64, decode: Callable[[Sequence[int]], str] | None = None) -> Samples:
        """G completions of every prompt (see :class:`~align.online.generation.Samples`)."""


class HFGenerateEngine(GenerationEngine):
    """Hugging Face ``generate`` on G copies of every prompt (:func:`align.online.generation.sample`)."""

    name = "generate"

    def generate(self, model, prompt_ids, *, num_generations, max_new_tokens, pad_token_id, eos_token_id,
                 temperature=1.0, top_p=1.0, top_k=0, do_sample=True, seeds=None, batch_size=64, decode=None):
        if top_k:
            raise ValueError("the generate engine samples from the whole distribution (top_k=0)")
        if seeds:
            torch.manual_seed(seeds[0])
        return sample(model, prompt_ids, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                      num_generations=num_generations, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, do_sample=do_sample, batch_size=batch_size, decode=decode)


class SharedPrefixEngine(GenerationEngine):
    """Each prompt prefilled once, its cache copied to its G samples, every sample on its own seeded stream."""

    name = "shared_prefix"

    def generate(self, model, prompt_ids, *, num_generations, max_new_tokens, pad_token_id, eos_token_id,
                 temperature=1.0, top_p=1.0, top_k=0, do_sample=True, seeds=None, batch_size=64, decode=None):
        t0 = time.perf_counter()
        G = num_generations
        seeds = list(seeds) if seeds is not None else [int(torch.randint(0, 2**62, (1,))) for _ in prompt_ids]
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        warp = LogitsProcessorList()
        if do_sample and temperature != 1.0:
            warp.append(TemperatureLogitsWarper(temperature))
        if do_sample and top_k:
            warp.append(TopKLogitsWarper(top_k))
        if do_sample and top_p < 1.0:
            warp.append(TopPLogitsWarper(top_p))
        comps: list[list[tuple[int, ...]]] = []
        truncated = torch.zeros(len(prompt_ids), G, dtype=torch.bool)
        with _eval_mode(model), torch.no_grad():
            for start in range(0, len(prompt_ids), batch_size):
                chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
                streams = [torch.Generator().manual_seed(stream_seed(s, g))
                           for s in seeds[start : start + batch_size] for g in range(G)]
                tokens, ended = _decode(model, chunk, G, max_new_tokens, pad_token_id, eos_token_id, warp,
                                        streams if do_sample else None)
                for b in range(len(chunk)):
                    comps.append([tokens[b * G + g] for g in range(G)])
                    truncated[start + b] = torch.tensor([not ended[b * G + g] for g in range(G)])
        texts = [[decode(c) if decode else "" for c in group] for group in comps]
        return Samples([tuple(p) for p in prompt_ids], comps, texts, truncated, time.perf_counter() - t0)


def _decode(model: torch.nn.Module, prompts: list[list[int]], G: int, max_new_tokens: int, pad_token_id: int,
            eos_token_id: int | None, warp: LogitsProcessorList, streams: list[torch.Generator] | None
            ) -> tuple[list[tuple[int, ...]], list[bool]]:
    """Decode G samples of each prompt; returns each sample's tokens (up to and including the end token) and
    whether it ended. ``streams``: one generator per sample (sampling), or None (greedy)."""
    device = next(model.parameters()).device
    B, width = len(prompts), max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("cannot sample from an empty prompt")
    ids = torch.full((B, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends in the last column
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    if width > 1:  # the prompt but its last token, once per prompt; the last token starts the decoding
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], past_key_values=cache,
              use_cache=True, logits_to_keep=1)  # only the cache is kept: no prompt-wide [B, P, V] logits
        cache.batch_repeat_interleave(G)
    R = B * G
    attn = torch.ones((R, width + max_new_tokens), dtype=mask.dtype, device=device)  # grown by slicing
    attn[:, :width] = mask.repeat_interleave(G, 0)
    cur, cur_pos = ids[:, -1:].repeat_interleave(G, 0), pos[:, -1:].repeat_interleave(G, 0)
    out = torch.full((R, max_new_tokens), pad_token_id, dtype=torch.long)
    done = torch.zeros(R, dtype=torch.bool)
    ended = torch.zeros(R, dtype=torch.bool)
    steps = 0
    for t in range(max_new_tokens):
        logits = model(input_ids=cur, attention_mask=attn[:, : width + t], position_ids=cur_pos,
                       past_key_values=cache, use_cache=True).logits[:, -1, :].float()
        if streams is None:
            nxt = logits.argmax(-1).cpu()
        else:
            nxt = _categorical(torch.softmax(warp(None, logits), -1).cpu(), streams)
        nxt = torch.where(done, pad_token_id, nxt)
        out[:, t] = nxt
        steps = t + 1
        if eos_token_id is not None:
            ended |= ~done & (nxt == eos_token_id)
        done |= ended
        if bool(done.all()):
            break
        cur, cur_pos = nxt[:, None].to(device), cur_pos + 1
    tokens = []
    for r in range(R):
        row = out[r, :steps].tolist()
        end = row.index(eos_token_id) + 1 if eos_token_id is not None and eos_token_id in row else None
        tokens.append(tuple(row[:end] if end else row))
    return tokens, ended.tolist()


def _categorical(probs: torch.Tensor, streams: list[torch.Generator]) -> torch.Tensor:
    """One draw per row of ``probs [R, V]``, row r from ``streams[r]``: inverse-CDF sampling with one uniform per
    row (the first token whose cumulative probability exceeds u·total; a zero-probability token is never drawn).
    One batched search instead of R ``multinomial`` calls."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in streams])
    cdf = probs.double().cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp(max=probs.shape[1] - 1)


ENGINES: dict[str, type[GenerationEngine]] = {e.name: e for e in (SharedPrefixEngine, HFGenerateEngine)}


def make_engine(name: str) -> GenerationEngine:
    """The engine registered as ``name`` (``shared_prefix`` or ``generate``)."""
    if name not in ENGINES:
        raise ConfigError(f"unknown generation engine {name!r}; choose from {sorted(ENGINES)}")
    return ENGINES[name]()
