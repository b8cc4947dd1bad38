"""Moved to :mod:`align.rewards.functions` (reward sources sit with the rewards, below the recipe schema); this name
stays importable."""

from align.rewards.functions import resolve_function

__all__ = ["resolve_function"]
