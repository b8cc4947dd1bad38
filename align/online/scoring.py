"""Reward sources for sampled completions: a Python callable with TRL's reward-function signature (given itself, or
named ``module:function``), any Hugging Face sequence-classification reward model, or a reward model ``align
train`` made (``algorithm: reward``).

A function is called as TRL's ``GRPOTrainer`` calls it, with one entry per completion (B·G, each prompt's G
completions in a row)::

    f(prompts=[...], completions=[...], completion_ids=[...], trainer_state=..., **columns) -> list[float | None]

``columns`` are the prompt rows' other fields (each repeated for the prompt's G completions; ``prompt``,
``completion`` and ``completion_ids`` are not among them, as in TRL), ``completion_ids`` the completions' token
ids, ``trainer_state`` the trainer's ``TrainerState`` (None outside training). For chat prompts the completions are
``[{"role": "assistant", "content": text}]``, as TRL passes them. A function may return None for a completion it
does not apply to: that value is NaN, and the weighted sum over sources skips it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from align.data.prompts import PromptExample
from align.data.tokenize import TokenizedList, render
from align.errors import ConfigError, RewardError
from align.rewards.functions import resolve_function
from align.rewards.spec import RewardSpec

RewardFunction = Callable[..., Sequence[float | None]]
# Row fields that are not passed on as columns (TRL leaves out the same three).
NOT_COLUMNS = frozenset({"prompt", "completion", "completion_ids"})


class RewardSource:
    """A loaded reward source: call it on B prompts and their G completions each, get ``[B, G]`` rewards.

    Attributes:
        name: the name in logs; weight: its weight in the sum of rewards; transform: ``none`` or ``rank``.
        spec: the :class:`~align.config.RewardSpec` it was made from (None for a callable given directly).
    """

    def __init__(self, spec: RewardSpec, *, device: torch.device | None = None, batch_size: int = 16):
        self.spec, self.name, self.weight, self.transform = spec, spec.label, spec.weight, spec.transform
        self._fn: RewardFunction | None = resolve_function(spec.function, spec.module_dirs) if spec.function else None
        self._model = self._tokenizer = None
        self._batch_size = batch_size
        if spec.model:
            from align.models.loading import load_reward_model, load_tokenizer

            self._tokenizer = load_tokenizer(spec.model)
            self._model = load_reward_model(spec.model, tokenizer=self._tokenizer).eval()
            if device is not None:
                self._model = self._model.to(device)

    @classmethod
    def from_function(cls, fn: RewardFunction, *, name: str | None = None, weight: float = 1.0,
                      transform: str = "none") -> RewardSource:
        """A source from a callable with TRL's reward-function signature (named after ``fn.__name__``)."""
        if not callable(fn):
            raise ConfigError(f"reward: {fn!r} is not callable")
        if transform not in ("none", "rank"):
            raise ConfigError(f"reward transform must be 'none' or 'rank', got {transform!r}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight)):
            raise ConfigError(f"reward weight must be a finite number, got {weight!r}")
        self = cls.__new__(cls)
        self.spec, self._fn, self._model, self._tokenizer, self._batch_size = None, fn, None, None, 16
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.weight, self.transform = float(weight), transform
        return self

    def describe(self) -> dict[str, Any]:
        """What the source is, for a run's summary: name, weight, transform and its ``function`` (``module:name``;
        for a callable given directly, its module and qualified name) or ``model``."""
        out: dict[str, Any] = {"name": self.name, "weight": self.weight, "transform": self.transform}
        if self.spec is not None:
            out.update({"function": self.spec.function} if self.spec.function else {"model": self.spec.model})
        else:
            fn = self._fn
            out["function"] = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
        return out

    def __call__(self, prompts: Sequence[PromptExample], texts: Sequence[Sequence[str]], *,
                 completion_ids: Sequence[Sequence[Sequence[int]]] | None = None, trainer_state: Any = None
                 ) -> torch.Tensor:
        """Rewards ``[B, G]`` of ``texts`` (``[B][G]`` completions of ``prompts``); ``completion_ids`` (``[B][G]``
        token ids) and ``trainer_state`` are passed on to a function (a reward model reads the texts)."""
        if self._fn is not None:
            return self._call_function(prompts, texts, completion_ids, trainer_state)
        return self._call_model(prompts, texts)

    def _call_function(self, prompts: Sequence[PromptExample], texts: Sequence[Sequence[str]],
                       completion_ids: Sequence[Sequence[Sequence[int]]] | None, trainer_state: Any) -> torch.Tensor:
        flat_prompts, flat_comps, flat_ids, cols = [], [], [], {}
        keys = sorted({k for p in prompts for k in p.columns} - NOT_COLUMNS)
        for b, (p, group) in enumerate(zip(prompts, texts)):
            for g, t in enumerate(group):
                flat_prompts.append(p.prompt)
                flat_comps.append([{"role": "assistant", "content": t}] if isinstance(p.prompt, list) else t)
                flat_ids.append(list(completion_ids[b][g]) if completion_ids is not None else None)
                for k in keys:
                    cols.setdefault(k, []).append(p.columns.get(k))
        clash = sorted(set(keys) & {"prompts", "completions", "trainer_state"})
        if clash:
            raise ConfigError(f"reward {self.name}: a data column is named {clash[0]!r}, which is a reward-function "
                             "argument; rename it (data.columns)")
        values = list(self._fn(prompts=flat_prompts, completions=flat_comps, completion_ids=flat_ids,
                               trainer_state=trainer_state, **cols))
        if len(values) != len(flat_comps):
            raise RewardError(f"reward function {self.name} returned {len(values)} values for "
                              f"{len(flat_comps)} completions (one per completion, None where it does not apply)")
        try:
            out = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
        except (TypeError, ValueError) as e:
            raise RewardError(f"reward function {self.name} returned a value that is not a number or None: {e}") from e
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


def reward_sources(reward_funcs: Sequence[RewardFunction | RewardSpec | str | dict] | RewardFunction | str,
                   reward_weights: Sequence[float] | None = None, *, search_dirs: Sequence[Any] = (),
                   device: torch.device | None = None, batch_size: int = 16) -> list[RewardSource]:
    """Reward sources from what TRL's ``GRPOTrainer(reward_funcs=..., args=GRPOConfig(reward_weights=...))`` takes.

    Args:
        reward_funcs: one entry or a list, each a callable with TRL's reward-function signature (see the module
            docstring), a :class:`~align.config.RewardSpec` (or a mapping of its fields), a ``module:function``
            string, or a reward model's directory or hub id.
        reward_weights: one weight per entry (TRL's ``reward_weights``); None keeps each spec's weight (1 for a
            callable or a string).
        search_dirs: where ``module:function`` modules are looked up first (e.g. a recipe's directory).
        device, batch_size: for reward models.

    Returns:
        One :class:`RewardSource` per entry; names are unique (a repeated name gets ``_2``, ``_3``, ...).
    """
    from align.rewards.functions import modules_beside

    entries = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not entries:
        raise ConfigError("reward_funcs: give at least one reward (a callable, 'module:function' or a model path)")
    if reward_weights is not None:
        weights = list(reward_weights)
        if len(weights) != len(entries):
            raise ConfigError(f"reward_weights has {len(weights)} values for {len(entries)} reward_funcs")
    out: list[RewardSource] = []
    with modules_beside(*search_dirs):
        for i, entry in enumerate(entries):
            if callable(entry) and not isinstance(entry, (RewardSpec, torch.nn.Module)):
                src = RewardSource.from_function(entry)
            elif isinstance(entry, torch.nn.Module):
                raise ConfigError(f"reward_funcs[{i}]: pass a reward model by its directory or hub id, not a loaded "
                                 "module (align loads it with its tokenizer)")
            else:
                src = RewardSource(RewardSpec.of(entry), device=device, batch_size=batch_size)
            if reward_weights is not None:
                w = weights[i]
                if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)):
                    raise ConfigError(f"reward_weights[{i}] must be a finite number, got {w!r}")
                src.weight = float(w)
            out.append(src)
    seen: dict[str, int] = {}
    for src in out:
        seen[src.name] = seen.get(src.name, 0) + 1
        if seen[src.name] > 1:
            src.name = f"{src.name}_{seen[src.name]}"
    return out
