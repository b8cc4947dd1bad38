"""Prompts for online training (GRPO, ``align iterate``): a prompt plus the row's other fields, which reward
functions receive as keyword arguments (an ``answer`` to check against, say).

    prompts, report = load_prompts("task:sort?n=2000")          # a built-in task (align.tasks)
    prompts, report = load_prompts("my_prompts.jsonl")          # rows with a "prompt" field
    prompts, report = load_prompts("../shared/data/hh_rlhf_harmless_base.jsonl.gz")  # a preference file's prompts

From Python, :func:`prompt_dataset` takes the rows themselves (a ``datasets.Dataset`` or a list of dicts, as TRL's
``GRPOTrainer(train_dataset=...)``).

A row with a ``prompt`` (a non-empty string, or chat messages ending with a user turn) and no responses is a
prompt row; any other row is read as preference data and its prompt is taken. Bad rows are counted skips, as in
:func:`align.data.loaders.load_examples`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from align.data.example import LoadReport, Prompt, RankedExample
from align.data.formats import Skip, _check_prompt, _valid_text, convert_row
from align.data.sources import BadRow, read_rows
from align.data.tokenize import render
from align.errors import ConfigError, DataError

log = logging.getLogger("align.data")

_RESPONSE_FIELDS = ("chosen", "rejected", "responses", "message_tree_id")


@dataclass(frozen=True)
class PromptExample:
    """A prompt and the other fields of its row (passed to reward functions by name)."""

    prompt: Prompt
    columns: dict[str, Any] = field(default_factory=dict, compare=False)
    row: int = -1


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt's token ids (chat template applied, generation prompt added) and its example."""

    prompt_ids: tuple[int, ...]
    example: PromptExample


# Sources whose rows are generated rather than read, by prefix: ``task:`` is registered by :mod:`align.tasks` (which
# sits above the data layer and is imported with ``align``). prefix -> function(source) -> rows.
PROMPT_SOURCES: dict[str, Callable[[str], Sequence[Any]]] = {}


def register_prompt_source(prefix: str, rows_of: Callable[[str], Sequence[Any]]) -> None:
    """Make :func:`load_prompts` read a source starting with ``prefix`` as the rows ``rows_of(source)`` returns."""
    PROMPT_SOURCES[prefix] = rows_of


def _rows(source: str, split: str):
    for prefix, rows_of in PROMPT_SOURCES.items():
        if source.startswith(prefix):
            return ((n, row, "") for n, row in enumerate(rows_of(source)))
    return read_rows(source, split)


def _mapping(columns: Mapping[str, str] | None) -> dict[str, str]:
    mapping = dict(columns or {})
    if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()):
        raise ConfigError(f"columns must map field names to field names, got {mapping!r}")
    return mapping


def _collect(rows: Iterable[tuple[Any, str]], mapping: dict[str, str], strict: bool
             ) -> tuple[list[PromptExample], LoadReport, set[str]]:
    """The prompts of ``(row, where)`` pairs (a row: a mapping, or a :class:`BadRow` a reader could not parse); a
    bad row is a counted skip, an error under ``strict``. Also returns the field names the rows had."""
    report, out, seen = LoadReport(), [], set()
    for n, (row, where) in enumerate(rows):
        report.rows_read += 1
        if isinstance(row, Mapping):
            seen.update(map(str, row))
            row = dict(row)
        item = row.reason if isinstance(row, BadRow) else _prompt_of(row, n, mapping)
        if isinstance(item, str):
            if strict:
                raise DataError(f"{where}: {item}")
            report.skip(item)
            continue
        out.append(item)
        report.formats["prompts"] += 1
    report.fields.update(seen)
    report.examples = len(out)
    for reason, count in sorted(report.skipped.items()):
        log.warning("skipped %d rows: %s", count, reason)
    return out, report, seen


def load_prompts(source: str | os.PathLike[str], *, split: str = "train", strict: bool = False,
                 max_rows: int | None = None, columns: Mapping[str, str] | None = None
                 ) -> tuple[list[PromptExample], LoadReport]:
    """Read prompts from a file, a directory, the hub or a built-in task (``task:NAME?key=value&...``).

    Args mirror :func:`align.data.loaders.load_examples`; ``columns`` renames the data's fields first.
    """
    rows = ((row, f"row {n + 1}{where}") for n, row, where in
            itertools.islice(_rows(os.fspath(source), split), max_rows))
    out, report, _ = _collect(rows, _mapping(columns), strict)
    log.info("%s: %d rows read, %d prompts", os.fspath(source), report.rows_read, report.examples)
    return out, report


def _prompt_of(row: Any, n: int, mapping: dict[str, str]) -> PromptExample | str:
    if not isinstance(row, dict):
        return "not an object"
    row = {mapping.get(k, k): v for k, v in row.items() if v is not None}
    if "prompt" in row and not any(k in row for k in _RESPONSE_FIELDS):
        try:
            prompt = _check_prompt(row["prompt"])
        except Skip as e:
            return e.reason
        if not _valid_text(prompt):
            return "invalid text (lone surrogate)"
        return PromptExample(prompt, {k: v for k, v in row.items() if k != "prompt"}, n)
    _, items = convert_row(row, "auto", n, {})
    for item in items:
        if isinstance(item, RankedExample):
            return PromptExample(item.prompt, {}, n)
    return next((i for i in items if isinstance(i, str)), "unrecognised row format")


def tokenize_prompts(prompts: Sequence[PromptExample], tokenizer: PreTrainedTokenizerBase, *,
                     max_prompt_length: int = 512) -> tuple[list[TokenizedPrompt], int]:
    """Token ids of each prompt as generation will see them; a prompt longer than ``max_prompt_length`` keeps its
    last tokens (and the BOS). Returns the prompts and how many were truncated."""
    bos = tokenizer.bos_token_id
    out, truncated = [], 0
    for p in prompts:
        head, _ = render(tokenizer, p.prompt, ())
        ids = tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        if len(ids) > max_prompt_length:
            truncated += 1
            ids = [bos] + ids[len(ids) - max_prompt_length + 1:] if bos is not None else ids[-max_prompt_length:]
        out.append(TokenizedPrompt(tuple(ids), p))
    return out, truncated


class PromptSet(NamedTuple):
    """Tokenized prompts from in-memory rows: the prompts, what was read and skipped, how many were truncated."""

    prompts: list[TokenizedPrompt]
    report: LoadReport
    truncated: int


def prompts_from_rows(rows: Iterable[Mapping[str, Any]], *, strict: bool = False,
                      columns: Mapping[str, str] | None = None) -> tuple[list[PromptExample], LoadReport]:
    """Prompts from in-memory rows: a ``datasets.Dataset`` or a list of dicts, each with a ``prompt`` (a string, or
    chat messages ending with a user turn, as TRL's GRPO takes) and any other columns, which reward functions
    receive by name. ``columns`` renames fields first; bad rows are counted skips (an error with ``strict``); no
    usable row at all is an error naming the columns the rows have."""
    mapping = _mapping(columns)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise ConfigError(f"prompts: expected a datasets.Dataset or a list of dicts, got {type(rows).__name__}")
    out, report, seen = _collect(((row, f"row {n + 1}") for n, row in enumerate(rows)), mapping, strict)
    if not out:
        raise DataError(f"no usable prompts in {report.rows_read} rows (columns: {sorted(seen) or 'none'}; "
                        f"skipped: {dict(report.skipped) or 'none'}); each row needs a 'prompt'"
                        + (f" after renaming {mapping}" if mapping else ""))
    return out, report


def prompt_dataset(rows: Iterable[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, *,
                   max_prompt_length: int = 512, strict: bool = False,
                   columns: Mapping[str, str] | None = None) -> PromptSet:
    """:func:`prompts_from_rows`, tokenized as generation will see them (:func:`tokenize_prompts`).

    >>> # ds = datasets.Dataset.from_list([{"prompt": "Sort: 3 1 2", "answer": "1 2 3"}])
    >>> # prompts, report, truncated = prompt_dataset(ds, tokenizer, max_prompt_length=64)
    """
    examples, report = prompts_from_rows(rows, strict=strict, columns=columns)
    prompts, truncated = tokenize_prompts(examples, tokenizer, max_prompt_length=max_prompt_length)
    return PromptSet(prompts, report, truncated)
