"""Reward sources for sampled completions: a Python function named ``module:function`` (TRL's signature), any
Hugging Face sequence-classification reward model, or a reward model ``align train`` made (``algorithm: reward``).

A function is called as ``f(prompts=[...], completions=[...], **columns)`` with one entry per completion (B·G),
``columns`` being the prompt rows' other fields, each repeated for the prompt's G completions. For chat prompts the
completions are ``[{"role": "assistant", "content": text}]``, as TRL passes them. A function may return None (or
NaN) for a completion it does not apply to: that value is NaN, and the weighted sum over sources skips it; samples
no source scored are counted (:class:`UnscoredTally`).

A function that raises (``SystemExit`` and ``KeyboardInterrupt`` included), returns something other than one real
number or None per completion, or returns ±inf, stops the run with a one-line :class:`RewardError` naming the
function, the prompt and the cause. With ``reward_timeout_s`` set, each call runs in a worker thread and a call
that does not return in time is an error; Python cannot kill a thread, so the abandoned call keeps running in the
background (as a daemon thread: it does not keep the process alive) until it returns on its own.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence
from typing import Any

import torch

from align.config import RewardSpec
from align.data.prompts import PromptExample
from align.data.tokenize import TokenizedList, render
from align.online.functions import resolve_function


class RewardError(ValueError):
    """A reward source failed: it raised (``raised``: what), returned a wrong value, or did not return in time."""

    def __init__(self, message: str, raised: BaseException | None = None):
        super().__init__(message)
        self.raised = raised


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
    a reward beyond float32's range stays what it is; :func:`align.rewards.combine` says if a sum overflows)."""

    def __init__(self, spec: RewardSpec, *, device: torch.device | None = None, batch_size: int = 16,
                 tally: UnscoredTally | None = None):
        self.spec, self.name, self.weight, self.transform = spec, spec.label, spec.weight, spec.transform
        self.tally = tally if tally is not None else UnscoredTally(1)
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
        flat_prompts, flat_comps, cols, owner = [], [], {}, []
        keys = sorted({k for p in prompts for k in p.columns})
        for b, (p, group) in enumerate(zip(prompts, texts)):
            for t in group:
                owner.append(b)
                flat_prompts.append(p.prompt)
                flat_comps.append([{"role": "assistant", "content": t}] if isinstance(p.prompt, list) else t)
                for k in keys:
                    cols.setdefault(k, []).append(p.columns.get(k))
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
                                 {k: [v[i] for i in take] for k, v in cols.items()}, "")
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
        timeout = self.spec.reward_timeout_s
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
                raise RewardError(f"reward function {self.spec.function} did not return within reward_timeout_s="
                                  f"{timeout:g} s on {where} (the call is abandoned; a thread cannot be killed, so "
                                  "it runs on in the background)")
        if "error" in result:
            e = result["error"]
            raise RewardError(f"reward function {self.spec.function} raised {type(e).__name__}"
                              f"{': ' + _one_line(e) if str(e) else ''} on {where}", e) from None
        return result["value"]

    def _check_values(self, values: Any, owner: list[int], prompts: Sequence[PromptExample]) -> list[float]:
        """One float per completion (None → NaN), or a :class:`RewardError` naming the first bad value's prompt."""
        fn, n = self.spec.function, len(owner)
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
        raise ValueError("no reward given: set at least one reward (a function 'module:function' or a model)")
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
