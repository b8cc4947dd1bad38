"""Moved to :mod:`align.rewards.functions` (reward sources sit with the rewards, below the recipe schema); these
names stay importable."""

from align.rewards.functions import module_dirs, modules_beside, resolve_function

__all__ = ["module_dirs", "modules_beside", "resolve_function"]
