"""Bad reward functions (TRL's signature ``f(prompts, completions, **columns)``), one kind of failure each, and
what a run must make of each: ``REWARD_CASES`` maps a function name to a regex of the one-line error it gives,
or to None where the run goes on (the value is accepted, or counted as unscored)."""

from __future__ import annotations

import math
import time
from typing import Any

from align.rewards.text import completion_text


def _length(completions: list) -> list[float]:
    return [float(len(completion_text(c))) for c in completions]


def raises(prompts: list, completions: list, **columns: Any) -> list[float]:
    """Fails on any prompt whose text holds the digit 3 (the error must name the first such prompt)."""
    if any("3" in str(p) for p in prompts):
        raise ZeroDivisionError("division by zero in the user's reward")
    return _length(completions)


def returns_none(prompts: list, completions: list, **columns: Any) -> None:
    return None


def returns_scalar(prompts: list, completions: list, **columns: Any) -> float:
    return 1.0


def returns_nested(prompts: list, completions: list, **columns: Any) -> list[list[float]]:
    return [[v] for v in _length(completions)]


def returns_complex(prompts: list, completions: list, **columns: Any) -> list[complex]:
    return [complex(v, 1.0) for v in _length(completions)]


def returns_strings(prompts: list, completions: list, **columns: Any) -> list[str]:
    return ["1.0" for _ in completions]


def wrong_length(prompts: list, completions: list, **columns: Any) -> list[float]:
    return _length(completions)[:-1]


def returns_inf(prompts: list, completions: list, **columns: Any) -> list[float]:
    return [math.inf] + _length(completions)[1:]


def huge_finite(prompts: list, completions: list, **columns: Any) -> list[float]:
    """1e300 times the length: finite, but no weighted sum of it fits float32."""
    return [1e300 * (1.0 + v) for v in _length(completions)]


def all_none(prompts: list, completions: list, **columns: Any) -> list[None]:
    return [None] * len(completions)


def all_nan(prompts: list, completions: list, **columns: Any) -> list[float]:
    return [math.nan] * len(completions)


def half_none(prompts: list, completions: list, **columns: Any) -> list[float | None]:
    """Every other completion unscored: the run goes on and counts them."""
    return [v if i % 2 == 0 else None for i, v in enumerate(_length(completions))]


def system_exit(prompts: list, completions: list, **columns: Any) -> list[float]:
    raise SystemExit(0)


def keyboard_interrupt(prompts: list, completions: list, **columns: Any) -> list[float]:
    raise KeyboardInterrupt


def never_returns(prompts: list, completions: list, **columns: Any) -> list[float]:
    """Sleeps far longer than any test's ``reward_timeout_s`` (a daemon thread: it does not hold the process)."""
    time.sleep(3600)
    return _length(completions)


# name -> regex of the one-line error (None: accepted; `half_none` is counted as unscored)
REWARD_CASES: dict[str, str | None] = {
    "raises": r"reward function \S+:raises raised ZeroDivisionError: division by zero in the user's reward on "
              r"prompt \d",
    "returns_none": r"reward function \S+:returns_none returned None on prompts 0-\d+ \(the whole batch",
    "returns_scalar": r"reward function \S+:returns_scalar returned 1\.0 on prompts",
    "returns_nested": r"reward function \S+:returns_nested returned \[\d+\.0\] \(list\) for completion 0 on prompt 0",
    "returns_complex": r"returned \(\d+\+1j\) \(complex\) for completion 0 on prompt 0",
    "returns_strings": r"returned '1\.0' \(str\) for completion 0 on prompt 0",
    "wrong_length": r"reward function \S+:wrong_length returned \d+ values for \d+ completions",
    "returns_inf": r"returned inf for completion 0 on prompt 0.*must be finite",
    "huge_finite": r"the weighted sum of rewards overflows float32 \(\|reward\| up to huge_finite: \d(\.\d+)?e\+30[01]",
    "all_none": r"no sample was scored: every reward \(all_none\) gave None or NaN",
    "all_nan": r"no sample was scored: every reward \(all_nan\) gave None or NaN",
    "half_none": None,
    "system_exit": r"reward function \S+:system_exit raised SystemExit: 0 on prompts",
    "keyboard_interrupt": r"reward function \S+:keyboard_interrupt raised KeyboardInterrupt on prompts",
    "never_returns": r"reward function \S+:never_returns did not return within reward_timeout_s=1 s",
}
