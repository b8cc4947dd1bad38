"""How a recipe names one reward source (GRPO's ``loss.rewards``, ``iterate.rewards``): plain data, checked when the
recipe loads; :mod:`align.online.scoring` turns it into a callable source."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from align.errors import ConfigError
from align.rewards.functions import resolve_function


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
    """

    function: str | None = None
    model: str | None = None
    weight: float = 1.0
    transform: Literal["none", "rank"] = "none"
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.function is None) == (self.model is None):
            raise ConfigError("a reward needs exactly one of 'function' (module:function) or 'model' (a path)")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise ConfigError(f"reward weight must be a finite number, got {self.weight!r}")
        if self.function is not None:
            resolve_function(self.function)  # fail at recipe load, not an hour into a run
        elif not (Path(self.model).exists() or self.model.count("/") == 1 and not self.model.startswith(".")):
            raise ConfigError(f"reward model {self.model!r}: no such directory")

    @property
    def label(self) -> str:
        """The name in logs and reports."""
        if self.name:
            return self.name
        return self.function.rsplit(":", 1)[-1] if self.function else Path(self.model.rstrip("/")).name
