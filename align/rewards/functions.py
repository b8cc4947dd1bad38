"""Importing user reward functions named ``module:function`` (light: the config checks them at recipe load)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from align.errors import ConfigError


def resolve_function(path: str) -> Callable[..., Sequence[float | None]]:
    """The function ``module:function`` names (importing the module); a clear ValueError if it cannot be had."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"reward function {path!r}: expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward function {path!r} cannot be imported: {e}") from e
    if not callable(fn):
        raise ConfigError(f"reward function {path!r} is not callable")
    return fn
