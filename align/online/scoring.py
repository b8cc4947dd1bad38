"""Reward sources for sampled completions: a Python function named ``module:function`` (TRL's signature), any
Hugging Face sequence-classification reward model, or a reward model ``align train`` made (``algorithm: reward``).

A function is called as ``f(prompts=[...], completions=[...], **columns)`` with one entry per completion (B·G),
``columns`` being the prompt rows' other fields, each repeated for the prompt's G completions. For chat prompts the
completions are ``[{"role": "assistant", "content": text}]``, as TRL passes them. A function may return None for a
completion it does not apply to: that value is NaN, and the weighted sum over sources skips it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from align.data.prompts import PromptExample
from align.data.tokenize import TokenizedList, render
from align.errors import ConfigError, RewardError
from align.rewards.functions import resolve_function
from align.rewards.spec import RewardSpec


class RewardSource:
    """A loaded reward source: call it on B prompts and their G completions each, get ``[B, G]`` rewards."""

    def __init__(self, spec: RewardSpec, *, device: torch.device | None = None, batch_size: int = 16):
        self.spec, self.name, self.weight, self.transform = spec, spec.label, spec.weight, spec.transform
        self._fn = resolve_function(spec.function) if spec.function else None
        self._model = self._tokenizer = None
        self._batch_size = batch_size
        if spec.model:
            from align.models.loading import load_reward_model, load_tokenizer

            self._tokenizer = load_tokenizer(spec.model)
            self._model = load_reward_model(spec.model, tokenizer=self._tokenizer).eval()
            if device is not None:
                self._model = self._model.to(device)

    def __call__(self, prompts: Sequence[PromptExample], texts: Sequence[Sequence[str]]) -> torch.Tensor:
        if self._fn is not None:
            return self._call_function(prompts, texts)
        return self._call_model(prompts, texts)

    def _call_function(self, prompts: Sequence[PromptExample], texts: Sequence[Sequence[str]]) -> torch.Tensor:
        flat_prompts, flat_comps, cols = [], [], {}
        keys = sorted({k for p in prompts for k in p.columns})
        for p, group in zip(prompts, texts):
            for t in group:
                flat_prompts.append(p.prompt)
                flat_comps.append([{"role": "assistant", "content": t}] if isinstance(p.prompt, list) else t)
                for k in keys:
                    cols.setdefault(k, []).append(p.columns.get(k))
        values = list(self._fn(prompts=flat_prompts, completions=flat_comps, **cols))
        if len(values) != len(flat_comps):
            raise RewardError(f"reward function {self.spec.function} returned {len(values)} values for "
                             f"{len(flat_comps)} completions")
        out = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
        return out.reshape(len(prompts), -1)

    def _call_model(self, prompts: Sequence[PromptExample], texts: Sequence[Sequence[str]]) -> torch.Tensor:
        from align.forward import reward_scores

        tok = self._tokenizer
        lists = []
        for p, group in zip(prompts, texts):
            head, rendered = render(tok, p.prompt, tuple(group))
            ids = tok(head, add_special_tokens=False)["input_ids"]
            if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
                ids = [tok.bos_token_id] + ids
            responses = tuple(tuple(tok(r, add_special_tokens=False)["input_ids"]) or (tok.eos_token_id,)
                              for r in rendered)
            lists.append(TokenizedList(tuple(ids), responses, (0.0,) * len(responses)))
        return reward_scores(self._model, lists, batch_size=self._batch_size, pad_token_id=tok.pad_token_id or 0)


def load_sources(specs: Sequence[RewardSpec], **kwargs: Any) -> list[RewardSource]:
    """Every reward source of a recipe, loaded (reward models onto ``device``)."""
    if not specs:
        raise ConfigError("no reward given: set at least one reward (a function 'module:function' or a model)")
    return [RewardSource(s, **kwargs) for s in specs]
