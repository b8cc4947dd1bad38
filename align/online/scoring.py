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

A function that raises (``SystemExit`` and ``KeyboardInterrupt`` included), returns something other than one real
number or None per completion, or returns ±inf, stops the run with a one-line :class:`RewardError` naming the
function, the prompt and the cause. With ``reward_timeout_s`` set, each call runs in a worker thread and a call
that does not return in time is an error; Python cannot kill a thread, so the abandoned call keeps running in the
background (as a daemon thread: it does not keep the process alive) until it returns on its own. Samples no source
scored are counted (:class:`UnscoredTally`)."""

from __future__ import annotations

import math
import numbers
import threading
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


def _one_line(x: Any, limit: int = 200) -> str:
    text = " ".join(str(x).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(v: Any) -> str:
    return _one_line(repr(v), 80)


def _prompts_named(prompts: Sequence[PromptExample], indices: Sequence[int]) -> str:
    """``prompt 3 (data row 17)`` or ``prompts 0-7 (the whole batch)``."""
    idx = list(indices)
    if len(idx) == 1:
        row = prompts[idx[0]].row
        return f"prompt {idx[0]}" + (f" (data row {row})" if row >= 0 else "")
    return f"prompts 0-{len(idx) - 1} (the whole batch of {len(idx)})" if idx else "an empty batch"


class UnscoredTally:
    """Counts the samples that no reward source scored (every source gave None or NaN), across the sources of one
    recipe: each source reports the NaN mask of its call, and once every source has scored the same completions
    the samples missing from all of them are added to ``unscored`` (and the rest to ``scored``)."""

    def __init__(self, n_sources: int):
        self.n_sources, self.scored, self.unscored = n_sources, 0, 0
        self._texts: int | None = None  # id of the completions the pending masks are of
        self._masks: dict[int, torch.Tensor] = {}

    def add(self, source: Any, texts: Any, missing: torch.Tensor) -> None:
        """Record ``source``'s NaN mask for the completions ``texts`` (the same object for every source; the
        sources score one batch after another, so masks of another batch start afresh)."""
        if id(texts) != self._texts:
            self._texts, self._masks = id(texts), {}
        self._masks[id(source)] = missing
        if len(self._masks) >= self.n_sources:
            masks, self._texts, self._masks = list(self._masks.values()), None, {}
            if len({tuple(m.shape) for m in masks}) == 1:
                none = torch.stack(masks).all(0)
                self.unscored += int(none.sum())
                self.scored += int((~none).sum())


class RewardSource:
    """A loaded reward source: call it on B prompts and their G completions each, get ``[B, G]`` rewards (float64:
    a reward beyond float32's range stays what it is; :func:`align.rewards.combine` says if a sum overflows).

    Attributes:
        name: the name in logs; weight: its weight in the sum of rewards; transform: ``none`` or ``rank``.
        spec: the :class:`~align.config.RewardSpec` it was made from (None for a callable given directly).
        tally: the :class:`UnscoredTally` it reports to (shared by the sources of one run).
    """

    def __init__(self, spec: RewardSpec, *, device: torch.device | None = None, batch_size: int = 16,
                 tally: UnscoredTally | None = None):
        self.spec, self.name, self.weight, self.transform = spec, spec.label, spec.weight, spec.transform
        self.tally = tally if tally is not None else UnscoredTally(1)
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
        self.tally = UnscoredTally(1)
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

    @property
    def label(self) -> str:
        """How messages name the source: its ``module:function``, a callable's name, or its model path."""
        if self.spec is None:
            return self.name
        return self.spec.function or self.spec.model

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
        flat_prompts, flat_comps, cols, owner = [], [], {}, []
        keys = sorted({k for p in prompts for k in p.columns} - NOT_COLUMNS)
        clash = sorted(set(keys) & {"prompts", "completions", "trainer_state"})
        if clash:
            raise RewardError(f"reward {self.name}: a data column is named {clash[0]!r}, which is a reward-function "
                              "argument; rename it (data.columns)")
        for b, (p, group) in enumerate(zip(prompts, texts)):
            for g, t in enumerate(group):
                owner.append(b)
                flat_prompts.append(p.prompt)
                flat_comps.append([{"role": "assistant", "content": t}] if isinstance(p.prompt, list) else t)
                cols.setdefault("completion_ids", []).append(
                    list(completion_ids[b][g]) if completion_ids is not None else None)
                for k in keys:
                    cols.setdefault(k, []).append(p.columns.get(k))
        cols["trainer_state"] = trainer_state
        where = _prompts_named(prompts, range(len(prompts)))
        try:
            values = self._invoke(flat_prompts, flat_comps, cols, where)
        except RewardError as e:
            if e.raised is None or not isinstance(e.raised, Exception) or len(prompts) < 2:
                raise
            # Find the first prompt the function fails on alone, to name it (only when the batch failed).
            for b in range(len(prompts)):
                take = [i for i, o in enumerate(owner) if o == b]
                try:
                    self._invoke([flat_prompts[i] for i in take], [flat_comps[i] for i in take],
                                 {k: v if k == "trainer_state" else [v[i] for i in take] for k, v in cols.items()}, "")
                except RewardError as alone:
                    if alone.raised is None:
                        break
                    raise RewardError(str(alone) + _prompts_named(prompts, [b]), alone.raised) from None
            raise
        out = torch.tensor(self._check_values(values, owner, prompts), dtype=torch.float64)
        out = out.reshape(len(prompts), -1) if out.numel() else out.reshape(len(prompts), 0)
        self.tally.add(self, texts, torch.isnan(out))
        return out

    def _invoke(self, prompts: list, completions: list, cols: dict[str, list], where: str) -> Any:
        """Call the function (in a worker thread under ``reward_timeout_s``); any exception, ``SystemExit`` and
        ``KeyboardInterrupt`` included, becomes a :class:`RewardError` naming the function and the prompts."""
        timeout = self.spec.reward_timeout_s if self.spec is not None else None
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["value"] = self._fn(prompts=prompts, completions=completions, **cols)
            except BaseException as e:  # noqa: BLE001 - reported below, whatever the function raised
                result["error"] = e

        if timeout is None:
            call()
        else:
            worker = threading.Thread(target=call, name=f"reward {self.name}", daemon=True)
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                raise RewardError(f"reward function {self.label} did not return within reward_timeout_s="
                                  f"{timeout:g} s on {where} (the call is abandoned; a thread cannot be killed, so "
                                  "it runs on in the background)")
        if "error" in result:
            e = result["error"]
            raise RewardError(f"reward function {self.label} raised {type(e).__name__}"
                              f"{': ' + _one_line(e) if str(e) else ''} on {where}", e) from None
        return result["value"]

    def _check_values(self, values: Any, owner: list[int], prompts: Sequence[PromptExample]) -> list[float]:
        """One float per completion (None → NaN), or a :class:`RewardError` naming the first bad value's prompt."""
        fn, n = self.label, len(owner)
        if isinstance(values, torch.Tensor) or hasattr(values, "tolist") and not isinstance(values, numbers.Number):
            values = values.tolist()
        whole = _prompts_named(prompts, range(len(prompts)))
        try:
            if values is None or isinstance(values, (str, bytes, dict, numbers.Number)):
                raise TypeError
            values = list(values)
        except TypeError:
            raise RewardError(f"reward function {fn} returned {_short(values)} on {whole}: it must return a list "
                              f"of {n} numbers (None where a completion is not scored)") from None
        if len(values) != n:
            raise RewardError(f"reward function {fn} returned {len(values)} values for {n} completions on {whole}")
        out = []
        for i, v in enumerate(values):
            if v is None:
                out.append(math.nan)
                continue
            if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex():
                v = v.item()
            if getattr(getattr(v, "dtype", None), "kind", "") == "b":  # numpy's bool, as Python's: 0 or 1
                v = bool(v)
            if not isinstance(v, numbers.Real):
                raise RewardError(f"reward function {fn} returned {_short(v)} ({type(v).__name__}) for completion "
                                  f"{i} on {_prompts_named(prompts, [owner[i]])}: each value must be a real number "
                                  "or None")
            f = float(v)
            if math.isinf(f):
                raise RewardError(f"reward function {fn} returned {f} for completion {i} on "
                                  f"{_prompts_named(prompts, [owner[i]])}: a reward must be finite (None or NaN "
                                  "for a completion it does not score)")
            out.append(f)
        return out

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
        out = reward_scores(self._model, lists, batch_size=self._batch_size, pad_token_id=tok.pad_token_id or 0)
        self.tally.add(self, texts, torch.isnan(out))
        return out


def load_sources(specs: Sequence[RewardSpec], **kwargs: Any) -> list[RewardSource]:
    """Every reward source of a recipe, loaded (reward models onto ``device``)."""
    if not specs:
        raise ConfigError("no reward given: set at least one reward (a function 'module:function' or a model)")
    tally = UnscoredTally(len(specs))
    return [RewardSource(s, tally=tally, **kwargs) for s in specs]


def unscored_callback(tally: UnscoredTally) -> Any:
    """A ``TrainerCallback`` that adds ``reward/unscored`` (samples no reward scored since the previous log) to
    every training log; its ``total`` is the count over the whole ``train()`` call (for ``summary.json``)."""
    from transformers import TrainerCallback

    class UnscoredCallback(TrainerCallback):
        def __init__(self) -> None:
            self.base = self.last = tally.unscored

        @property
        def total(self) -> int:
            return tally.unscored - self.base

        def on_train_begin(self, args, state, control, **kwargs):
            self.base = self.last = tally.unscored

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs:
                return
            logs["reward/unscored"] = tally.unscored - self.last
            self.last = tally.unscored
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1]["reward/unscored"] = logs["reward/unscored"]

    return UnscoredCallback()


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
    tally = UnscoredTally(len(out))  # one count of unscored samples over all the run's sources
    seen: dict[str, int] = {}
    for src in out:
        src.tally = tally
        seen[src.name] = seen.get(src.name, 0) + 1
        if seen[src.name] > 1:
            src.name = f"{src.name}_{seen[src.name]}"
    return out
