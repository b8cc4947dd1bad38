"""Load preference data from files or the hub into RankedExamples, with a report of what was skipped.

    examples, report = load_examples("../shared/data/hh_rlhf_harmless_base.jsonl.gz")
    train, held_out = split_examples(examples, eval_fraction=0.1)

The row formats themselves (HH-RLHF, TRL, ranked/scored lists, OASST trees) live in ``formats.py``; the
readers of each kind of source (text files, parquet, directories, the hub) in ``sources.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from align.data.example import LoadReport, RankedExample
from align.data.formats import ACCEPTED, FORMATS, NOTES, UNRECOGNISED, check_columns, convert_row
from align.data.sources import BadRow, read_rows
from align.errors import ConfigError, DataError

log = logging.getLogger("align.data")


def load_examples(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",
    split: str = "train",
    strict: bool = False,
    max_rows: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> tuple[list[RankedExample], LoadReport]:
    """Read preference rows and turn them into ``RankedExample``s.

    Args:
        source: a local ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list of objects, one object,
            or jsonl content; ``.json.gz`` too) or ``.parquet`` file; a local directory of such
            files (read in sorted order, row numbers running on across files); else a Hugging Face
            hub data set name (``org/name``), read with ``datasets.load_dataset``. Text files are
            UTF-8 (a BOM is fine; UTF-16 with a BOM too) and gzip-compressed or not, whatever their
            suffix says. A source that looks like a file path but does not exist is a ``DataError``.
        format: ``"auto"`` (each row's format is detected from its keys), ``"hh"`` (HH-RLHF
            dialogues), ``"trl"`` (``prompt``/``chosen``/``rejected``, string or conversational,
            also RewardBench rows with a ``subset``), ``"ranked"`` (``prompt``/``responses``/
            ``ranks`` or ``scores``) or ``"oasst"`` (OASST message trees). With an explicit
            format, rows that do not fit it are skipped.
        split: the split to read from a hub data set or a directory whose file names carry split
            names (``train.jsonl``, ``test-00.parquet``, as ``datasets`` names them).
        strict: raise ``DataError("row N: reason")`` at the first bad row instead of skipping
            it; N is 1-based (the line number, for jsonl files; a directory adds the file and its own
            row). Replies left out of an OASST list ("unranked reply", "deleted reply") are notes,
            never errors.
        max_rows: read at most this many rows (blank lines of a jsonl file are not rows).
        columns: rename the data's fields to the formats' before a row's format is detected, e.g.
            ``{"question": "prompt", "response_j": "chosen", "response_k": "rejected"}``; targets
            must be in ``formats.FIELDS``. A row without a mapped field is skipped as "missing field
            'question'" (skip reasons name the data's fields).

    Returns:
        The examples, each with ``row`` = its 0-based row index in the source (for jsonl, the
        0-based line number), and a ``LoadReport``: rows read, examples kept, examples by format,
        and skips by reason. One OASST tree row gives 0..n examples; its skips count lists or replies.

    Bad rows are skipped and counted by reason, never a crash and never a NaN label:
    "invalid json", "invalid utf-8", "not an object", "unrecognised row format",
    "missing field 'X'", "wrong type for 'X'", "empty prompt", "empty response",
    "identical responses", "fewer than 2 responses", "labels do not match responses",
    "non-numeric label", "label out of range" (not finite in float32, or a span that is not),
    "all responses tied" (in float32), "invalid text (lone surrogate)", "prompt mismatch",
    "malformed dialogue", "malformed message" (plus the OASST notes above); a damaged source
    part adds "corrupt compressed stream" / "truncated compressed stream" (rows before it are
    kept), "corrupt parquet data", or in a directory "unreadable file".
    A source that cannot be read at all is a one-line ``DataError``.
    """
    if max_rows is not None and max_rows < 0:
        raise ConfigError(f"max_rows must be >= 0, got {max_rows}")
    return examples_from_rows(itertools.islice(read_rows(source, split), max_rows), format=format, strict=strict,
                              columns=columns, source_name=os.fspath(source))


def examples_from_rows(rows: Iterable[Any], *, format: str = "auto", strict: bool = False,
                       columns: Mapping[str, str] | None = None, source_name: str = "rows"
                       ) -> tuple[list[RankedExample], LoadReport]:
    """:func:`load_examples` on rows already in memory: dicts (a ``datasets.Dataset``, a list of dicts) or
    ``(row number, row, where)`` triples as the source readers yield them."""
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected 'auto' or one of {sorted(FORMATS)}")
    mapping = check_columns(columns)
    report = LoadReport()
    examples: list[RankedExample] = []
    triples = (r if isinstance(r, tuple) and len(r) == 3 else (i, r, "") for i, r in enumerate(rows))
    for n, row, where in triples:
        report.rows_read += 1
        if isinstance(row, dict):
            report.fields.update(map(str, row))
        name, items = (None, [row.reason]) if isinstance(row, BadRow) else convert_row(row, format, n, mapping)
        for item in items:
            if isinstance(item, RankedExample):
                examples.append(item)
                report.formats[name or format] += 1
                continue
            if item not in NOTES:
                detail = _detail(item, row)
                if strict:
                    raise DataError(f"row {n + 1}{where}: {item}{detail}")
                if item == UNRECOGNISED and not report.skipped[UNRECOGNISED]:  # once per load: how to fix it
                    log.warning("row %d%s: %s%s", n + 1, where, item, detail)
            report.skip(item)
    report.examples = len(examples)
    for reason, count in sorted(report.skipped.items()):
        level = logging.INFO if reason in NOTES else logging.WARNING
        log.log(level, "skipped %d %s: %s", count, "replies" if reason in NOTES else "rows", reason)
    log.info("%s: %d rows read, %d examples (%s)", source_name, report.rows_read, report.examples,
             _formats_text(report))
    return examples, report


# What a data.eval file that gave nothing may need: data.columns renames the training file's fields only.
EVAL_COLUMNS_HINT = " (data.columns renames data.train's fields only; data.eval_columns renames this file's)"


def require_examples(report: LoadReport, source: str, what: str = "data", columns: Mapping[str, str] | None = None,
                     hint: str = "") -> None:
    """Raise a one-line ``DataError`` when a load gave no example: it names the source, what was skipped, the
    fields its rows have and the column mapping that was applied, so a wrong mapping is visible at once."""
    if report.examples:
        return
    fields = ", ".join(sorted(report.fields)) or "none"
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items())) or "nothing"
    mapping = f"; columns renamed with {dict(columns)}" if columns else "; read with the standard field names"
    raise DataError(f"{what} {source}: {report.rows_read} rows read, 0 examples (skipped {skipped}); its rows' "
                    f"fields: {fields}{mapping}{hint}")


def _detail(reason: str, row: Any) -> str:
    """More words for a message than the short skip reason: the fields an unrecognised row has and what
    would be accepted, or what broke a source."""
    if isinstance(row, BadRow):
        return f" ({row.detail})" if row.detail else ""
    if reason == UNRECOGNISED and isinstance(row, dict):
        fields = ", ".join(repr(str(k)) for k in sorted(map(str, row))[:12]) + (", ..." if len(row) > 12 else "")
        return f" (fields: {fields or 'none'}); {ACCEPTED}"
    return ""


def _formats_text(report: LoadReport) -> str:
    if not report.formats:
        return "no format detected" if report.rows_read else "no rows"
    if len(report.formats) == 1:
        return f"format {next(iter(report.formats))}"
    return "formats " + ", ".join(f"{k} {v}" for k, v in sorted(report.formats.items()))


def _prompt_key(prompt: Any) -> str:
    """The text a prompt is compared and hashed by: the string, or the messages' JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def split_examples(
    examples: Iterable[RankedExample], eval_fraction: float
) -> tuple[list[RankedExample], list[RankedExample]]:
    """Split examples into (train, eval) by prompt, keeping their order on each side.

    The distinct prompts are ordered by ``sha256(prompt_text)`` (UTF-8, lone surrogates passed
    through) and the first ``round(eval_fraction * n_prompts)`` of them go to eval, with every
    example of those prompts; ``prompt_text`` is the prompt string, or for chat messages their JSON
    (``sort_keys``, no ASCII escaping). The count is kept at >= 1 when ``eval_fraction > 0`` and
    there are >= 2 prompts, and below ``n_prompts`` when ``eval_fraction < 1``. So the same prompt
    never lands on both sides, the split needs no seed, the held-out size is what was asked for even
    on a small file, and reordering the input changes neither side's membership.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    examples = list(examples)
    keys = [_prompt_key(ex.prompt) for ex in examples]
    distinct = sorted(set(keys), key=lambda k: (hashlib.sha256(k.encode("utf-8", "surrogatepass")).digest(), k))
    n = len(distinct)
    count = round(eval_fraction * n)
    if eval_fraction > 0 and n >= 2:
        count = max(count, 1)
    if eval_fraction < 1:
        count = min(count, max(n - 1, 0))
    held = set(distinct[:count])
    train = [ex for ex, k in zip(examples, keys) if k not in held]
    held_out = [ex for ex, k in zip(examples, keys) if k in held]
    return train, held_out
