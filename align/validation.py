"""Checks on settings, shared by the recipe schema (:mod:`align.config`) and the loss configs (:mod:`align.losses`):
a :class:`Range` says which numbers a setting may take, :func:`check_value` checks a value against its declared type,
and :func:`check_number`, :func:`check_fields` and :func:`check_choices` raise a one-line
:class:`~align.errors.ConfigError` naming the key. A leaf module: it imports
nothing of align but its error types, so any layer may use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from align.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take. NaN never; ±inf only where ``inf`` says +inf means something.

    Attributes:
        low / high: bounds (None: unbounded); ``low_open`` / ``high_open`` exclude the bound itself.
        integer: the setting counts something (described as "an integer").
        inf: +inf is allowed (e.g. MMPO's γ = inf is DPO).
        also: values allowed outside the bounds, e.g. ``max_steps = -1`` (train for ``num_train_epochs``).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    inf: bool = False
    also: tuple[float, ...] = ()

    def allows(self, v: float) -> bool:
        """Whether ``v`` is in range."""
        if v in self.also:
            return True
        if isinstance(v, float) and (math.isnan(v) or (math.isinf(v) and not (self.inf and v > 0))):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return self.high is None or (v < self.high or (not self.high_open and v == self.high))

    def describe(self) -> str:
        """E.g. ``a finite number > 0``, ``an integer >= 1``, ``-1 or an integer >= 1``, ``a number in [0, 1)``."""
        kind = "an integer" if self.integer else ("a number" if self.inf else "a finite number")
        lo = self.low if not self.integer or self.low is None else int(self.low)
        hi = self.high if not self.integer or self.high is None else int(self.high)
        if lo is not None and hi is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        elif lo is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {lo}"
        elif hi is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {hi}"
        else:
            text = kind
        text += " (.inf allowed)" if self.inf else ""
        return " or ".join([*(str(int(a) if self.integer else a) for a in self.also), text])


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1, integer=True)  # a size or a number of steps: at least 1
PROBABILITY_OPEN = Range(0, 1, high_open=True)  # [0, 1)


def check_number(key: str, value: Any, rng: Range) -> None:
    """Raise a one-line ConfigError naming ``key``, ``value`` and the allowed range unless ``value`` is in ``rng``.
    ``None`` passes (whether a setting may be null is its type's business)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected {rng.describe()}, got {type(value).__name__} {value!r}")
    if rng.integer and not isinstance(value, int):
        raise ConfigError(f"{key}: expected {rng.describe()}, got {value!r}")
    if not rng.allows(value):
        raise ConfigError(f"{key}: got {value!r}; allowed: {rng.describe()}")


def check_fields(obj: Any, prefix: str, **ranges: Range) -> None:
    """``check_number`` on each named attribute of ``obj``, keys ``prefix.name`` (for a config's ``__post_init__``);
    then :func:`check_choices` on the whole dataclass, so every option is checked at construction."""
    for name, rng in ranges.items():
        check_number(f"{prefix}.{name}" if prefix else name, getattr(obj, name), rng)
    if dataclasses.is_dataclass(obj):
        check_choices(obj, prefix)


def _scalar(tp: Any) -> bool:
    """A type made only of Literal choices, bool, int, float, str and None (no list, mapping or section)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_scalar(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is Literal or tp in (bool, int, float, str, type(None))


def check_choices(obj: Any, prefix: str) -> None:
    """Every scalar field of dataclass ``obj`` has its declared type: a Literal field one of its choices, a bool a
    bool, and so on (a one-line ConfigError naming ``prefix.name``). What a recipe's parser checks, for configs
    built in Python too."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp = hints.get(f.name)
        if tp is not None and _scalar(tp):
            check_value(tp, getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)


def check_value(tp: Any, value: Any, key: str, build: Callable[[type, dict, str], Any] | None = None) -> Any:
    """``value`` as type ``tp`` (Literal choices, bool, int, float, str, None, unions, lists and mappings of them),
    or a one-line ConfigError naming ``key``. ``build(cls, mapping, key)`` makes a dataclass-typed value (a recipe
    section); without it such a value is refused."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return check_value(arm, value, key, build)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {_one_of(list(args), value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if build is None:
            raise ConfigError(f"{key}: a {tp.__name__} section is not a plain value")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [check_value(args[0], v, f"{key}[{i}]", build) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{key}: {value} is too large for a float") from None
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string; accept what is plainly a number
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {_name(tp)}, got {type(value).__name__} {value!r}")


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(yaml.safe_dump(a).split("\n")[0] for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _one_of(allowed: list[Any], value: Any) -> str:
    """``expected one of [...], got 'x'; did you mean 'y'?`` (a long list shortened)."""
    shown = repr(allowed) if len(allowed) <= 12 else f"{allowed[:10]!r}"[:-1] + f", ... ({len(allowed)} in all)]"
    return f"expected one of {shown}, got {value!r}{_did_you_mean(value, allowed)}"


def _did_you_mean(word: Any, candidates: Iterable[Any], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest candidate (difflib), or ``""``."""
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


__all__ = ["COUNT", "NON_NEGATIVE", "POSITIVE", "PROBABILITY_OPEN", "ConfigError", "Range", "check_choices",
           "check_fields", "check_number", "check_value"]
