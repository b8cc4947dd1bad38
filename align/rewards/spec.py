"""How a recipe names one reward source (GRPO's ``loss.rewards``, ``iterate.rewards``): plain data, checked when the
recipe loads; :mod:`align.online.scoring` turns it into a callable source."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from align.errors import ConfigError
from align.rewards.functions import module_dirs, resolve_function


@dataclass
class RewardSpec:
    """One reward source (GRPO's ``loss.rewards``, ``iterate.rewards``).

    Attributes:
        function: ``module:function`` of a Python reward function with TRL's signature
            ``f(prompts, completions, **columns) -> list[float | None]``.
        model: a directory or hub id of a sequence-classification reward model (one output), e.g. one that
            ``align train`` made with ``algorithm: reward``.
        weight: its weight in the sum of rewards (0: only logged, e.g. a metric of the true reward).
        transform: ``none``, or ``rank``: each reward replaced by its rank in its group mapped to [0, 1] (a
            scale-free use of a reward model).
        name: the name in logs (default: the function's or the model's).
        reward_timeout_s: for a function, the most seconds one call may take (None: no limit); a call that takes
            longer stops the run with an error. The call runs in a worker thread, which Python cannot kill: an
            abandoned call runs on in the background until it returns.
    """

    function: str | None = None
    model: str | None = None
    weight: float = 1.0
    transform: Literal["none", "rank"] = "none"
    name: str | None = None
    module_dirs = ()  # where ``function``'s module is looked up first (set at construction; not a recipe key)
    reward_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if (self.function is None) == (self.model is None):
            raise ConfigError("a reward needs exactly one of 'function' (module:function) or 'model' (a path)")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise ConfigError(f"reward weight must be a finite number, got {self.weight!r}")
        t = self.reward_timeout_s
        if t is not None and not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                                  and t > 0):
            raise ConfigError(f"reward_timeout_s must be a positive number of seconds, got {t!r}")
        if self.function is not None:
            self.module_dirs = module_dirs()  # the recipe's directory, searched first (not a field: not saved)
            resolve_function(self.function, self.module_dirs)  # fail at recipe load, not an hour into a run
        elif not (Path(self.model).exists() or self.model.count("/") == 1 and not self.model.startswith(".")):
            raise ConfigError(f"reward model {self.model!r}: no such directory")

    @classmethod
    def of(cls, entry: Any) -> RewardSpec:
        """A RewardSpec from a recipe's or a caller's entry: a RewardSpec, a mapping of its fields, or a string,
        ``module:function`` (a function) or else a reward model's directory or hub id."""
        if isinstance(entry, RewardSpec):
            return entry
        if isinstance(entry, Mapping):
            unknown = sorted(set(entry) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ConfigError(f"reward: unknown key(s) {unknown}; a reward has function or model, weight, "
                                  "transform and name")
            return cls(**entry)
        if isinstance(entry, str) and entry:
            is_function = ":" in entry and not Path(entry).exists()
            return cls(function=entry) if is_function else cls(model=entry)
        raise ConfigError(f"reward: expected 'module:function', a reward model path or a mapping, got {entry!r}")

    @property
    def label(self) -> str:
        """The name in logs and reports."""
        if self.name:
            return self.name
        return self.function.rsplit(":", 1)[-1] if self.function else Path(self.model.rstrip("/")).name
