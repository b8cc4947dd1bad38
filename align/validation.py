"""Checks on numeric settings, shared by the recipe schema (:mod:`align.config`) and the loss configs
(:mod:`align.losses`): a :class:`Range` says which values a setting may take, :func:`check_number` and
:func:`check_fields` raise a one-line :class:`~align.errors.ConfigError` naming the key. A leaf module: it imports
nothing of align but its error types, so any layer may use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
    """``check_number`` on each named attribute of ``obj``, keys ``prefix.name`` (for a config's ``__post_init__``)."""
    for name, rng in ranges.items():
        check_number(f"{prefix}.{name}" if prefix else name, getattr(obj, name), rng)


__all__ = ["COUNT", "NON_NEGATIVE", "POSITIVE", "PROBABILITY_OPEN", "ConfigError", "Range", "check_fields",
           "check_number"]
