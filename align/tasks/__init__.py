"""Built-in tasks with verifiable rewards (for GRPO and on-policy ranking runs on CPU), and their rows as a data
source.

Source syntax: ``task:<name>?<key>=<value>&...``, e.g. ``task:sort?n=2000&seed=0&max_len=4``. The keys are
the parameters of the task's ``make_rows`` (``n``, default 1000; ``seed``, default 0; then the task's
difficulty settings), each value converted to the type of that parameter's default (``true``/``false``/``1``/``0``
for booleans). An unknown task or key, or a value that does not convert, is a one-line ``ValueError``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from align.data.prompts import register_prompt_source
from align.errors import TaskError
from align.tasks.common import pass_at_k, preference_probability

TASKS: dict[str, str] = {"sort": "align.tasks.sort"}  # name -> module with make_rows, sft_rows, score, correct
PREFIX = "task:"
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def is_task_source(source: str) -> bool:
    """True if ``source`` names a built-in task (``task:...``) rather than a file or dataset."""
    return source.startswith(PREFIX)


def task_module(name: str):
    """The module of task ``name`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])


def _convert(key: str, value: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return _BOOLS[value.lower()]
        return type(default)(value) if default is not None else value
    except (KeyError, ValueError):
        raise TaskError(f"task parameter {key}={value!r} is not a {type(default).__name__}") from None


def task_rows(source: str) -> list[dict[str, Any]]:
    """The rows of a ``task:<name>?key=value&...`` source (syntax in the module docstring)."""
    if not is_task_source(source):
        raise TaskError(f"a task source starts with {PREFIX!r}, got {source!r}")
    parts = urlsplit(source[len(PREFIX):])
    module = task_module(parts.path)
    params = inspect.signature(module.make_rows).parameters
    defaults = {k: p.default for k, p in params.items()} | {"n": 1000, "seed": 0}
    kwargs: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        if key not in defaults:
            raise TaskError(f"task {parts.path!r} has no parameter {key!r}; it takes {', '.join(defaults)}")
        if key in kwargs:
            raise TaskError(f"task parameter {key!r} given twice in {source!r}")
        kwargs[key] = _convert(key, value, defaults[key])
    return module.make_rows(**{"n": defaults["n"], "seed": defaults["seed"], **kwargs})


register_prompt_source(PREFIX, task_rows)  # `load_prompts("task:sort?n=100")` reads a task's rows

__all__ = ["TASKS", "is_task_source", "pass_at_k", "preference_probability", "task_module", "task_rows"]
