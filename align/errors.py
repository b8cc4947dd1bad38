"""The project's own error types: mistakes a user can fix (a recipe, a data file, a model path, a cache).

``align``'s command line prints these as one line (``align train: error: ...``) and lets every other exception keep
its traceback, since anything else is a bug. Each is a ``ValueError`` so that code catching ``ValueError`` around a
recipe or a data file keeps working.
"""

from __future__ import annotations


class AlignError(ValueError):
    """A user-fixable problem; the message is one line that says what to change."""


class ConfigError(AlignError):
    """A recipe or an option that does not validate; the message names the dotted key."""


class DataError(AlignError):
    """A bad row in strict mode, or a data source that cannot be read at all."""


class ModelError(AlignError):
    """A model, tokenizer or adapter that cannot be found or loaded as asked."""


class TaskError(AlignError):
    """An unknown built-in task or task parameter."""


class RewardError(AlignError):
    """A reward source failed: it raised (``raised``: what), returned a wrong value, or did not return in time."""

    def __init__(self, message: str, raised: BaseException | None = None):
        super().__init__(message)
        self.raised = raised


class RunDirError(AlignError, FileNotFoundError):
    """A directory that is not a run where one is needed (``align report RUN_DIR``)."""


__all__ = ["AlignError", "ConfigError", "DataError", "ModelError", "RewardError", "RunDirError", "TaskError"]
