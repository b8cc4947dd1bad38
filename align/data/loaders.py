"""Load preference data from files or the hub into RankedExamples, with a report of what was skipped.

    examples, report = load_examples("../shared/data/hh_rlhf_harmless_base.jsonl.gz")
    train, held_out = split_examples(examples, eval_fraction=0.1)

The row formats themselves (HH-RLHF, TRL, ranked/scored lists, OASST trees) live in ``formats.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from align.data.example import DataError, LoadReport, RankedExample
from align.data.formats import FORMATS, NOTES, convert

log = logging.getLogger("align.data")

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class _BadLine:
    """A line of a jsonl file that is not valid JSON."""


def load_examples(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",
    split: str = "train",
    strict: bool = False,
    max_rows: int | None = None,
) -> tuple[list[RankedExample], LoadReport]:
    """Read preference rows and turn them into ``RankedExample``s.

    Args:
        source: a local ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list of objects, one object,
            or jsonl content; ``.json.gz`` too) or ``.parquet`` file; else a local directory or
            a Hugging Face hub data set name (``org/name``), read with ``datasets.load_dataset``.
            A source that looks like a file path but does not exist is a ``DataError``.
        format: ``"auto"`` (each row's format is detected from its keys), ``"hh"`` (HH-RLHF
            dialogues), ``"trl"`` (``prompt``/``chosen``/``rejected``, string or conversational,
            also RewardBench rows with a ``subset``), ``"ranked"`` (``prompt``/``responses``/
            ``ranks`` or ``scores``) or ``"oasst"`` (OASST message trees). With an explicit
            format, rows that do not fit it are skipped.
        split: the split to read from a hub data set or directory.
        strict: raise ``DataError("row N: reason")`` at the first bad row instead of skipping
            it; N is 1-based (the line number, for jsonl files). Replies left out of an OASST
            list ("unranked reply", "deleted reply") are notes, never errors.
        max_rows: read at most this many rows (blank lines of a jsonl file are not rows).

    Returns:
        The examples, each with ``row`` = its 0-based row index in the source (for jsonl, the
        0-based line number), and a ``LoadReport``: rows read, examples kept, and skips by
        reason. One OASST tree row gives 0..n examples; its skips count lists or replies.

    Bad rows are skipped and counted by reason, never a crash and never a NaN label:
    "invalid json", "not an object", "unrecognised row format", "missing field 'X'",
    "wrong type for 'X'", "empty prompt", "empty response", "identical responses",
    "fewer than 2 responses", "labels do not match responses", "non-numeric label",
    "all responses tied", "prompt mismatch", "malformed dialogue", "malformed message"
    (plus the OASST notes above).
    """
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {sorted(FORMATS)}")
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    report = LoadReport()
    examples: list[RankedExample] = []
    for n, row in itertools.islice(_rows(source, split), max_rows):
        report.rows_read += 1
        items = ["invalid json"] if isinstance(row, _BadLine) else convert(row, format, n)
        for item in items:
            if isinstance(item, RankedExample):
                examples.append(item)
                continue
            if strict and item not in NOTES:
                raise DataError(f"row {n + 1}: {item}")
            report.skip(item)
    report.examples = len(examples)
    for reason, count in sorted(report.skipped.items()):
        level = logging.INFO if reason in NOTES else logging.WARNING
        log.log(level, "skipped %d %s: %s", count, "replies" if reason in NOTES else "rows", reason)
    log.info("%s: %d rows read, %d examples", os.fspath(source), report.rows_read, report.examples)
    return examples, report


def split_examples(
    examples: Iterable[RankedExample], eval_fraction: float
) -> tuple[list[RankedExample], list[RankedExample]]:
    """Split examples into (train, eval) by a hash of the prompt, keeping their order.

    An example goes to eval iff ``int(sha256(prompt_text).hexdigest()[:8], 16) / 2**32 <
    eval_fraction``, where ``prompt_text`` is the prompt string, or for chat messages their
    JSON (``sort_keys``, no ASCII escaping). So the same prompt never lands on both sides,
    the split needs no seed, and it stays the same for old rows when rows are added.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train: list[RankedExample] = []
    held_out: list[RankedExample] = []
    for ex in examples:
        text = ex.prompt if isinstance(ex.prompt, str) else json.dumps(ex.prompt, sort_keys=True, ensure_ascii=False)
        h = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 2**32
        (held_out if h < eval_fraction else train).append(ex)
    return train, held_out


# ---------------------------------------------------------------------------------------------
# sources: each yields (0-based row index, row) where a row is parsed JSON / a dict, or _BadLine


def _rows(source: str | os.PathLike[str], split: str) -> Iterator[tuple[int, Any]]:
    path = Path(source).expanduser()
    name = os.fspath(source)
    if path.is_file():
        lower = path.name.lower()
        if lower.endswith((".jsonl", ".jsonl.gz")):
            return _jsonl_rows(path)
        if lower.endswith((".json", ".json.gz")):
            return _json_rows(path)
        if lower.endswith(".parquet"):
            return _parquet_rows(path)
        raise DataError(f"{name}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
    if path.is_dir():
        return _dataset_rows(str(path), split, f"cannot load data set from directory {name!r}")
    if isinstance(source, os.PathLike) or not _HUB_NAME.fullmatch(name) or name.lower().endswith(SUFFIXES):
        raise DataError(f"no such file: {name}")
    return _dataset_rows(name, split, f"cannot load dataset {name!r} from the hub (offline?)")


def _open(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return _BadLine()


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with _open(path) as f:
            for n, line in enumerate(f):
                if line.strip():
                    yield n, _parse(line)
    except (OSError, EOFError, UnicodeDecodeError) as e:  # a truncated gzip, bad bytes, ...
        raise DataError(f"{path}: cannot read: {e}") from e


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with _open(path) as f:
            text = f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    try:
        data = json.loads(text)
    except ValueError:  # not one JSON document: read it as jsonl
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                yield n, _parse(line)
        return
    yield from enumerate(data) if isinstance(data, list) else [(0, data)]


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # a dependency of `datasets`

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield n, row
                n += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read parquet: {e}") from e


def _dataset_rows(name: str, split: str, what: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as e:  # connection, not found, bad split, ...: all mean "cannot read this source"
        raise DataError(f"{what}: {type(e).__name__}: {e}") from e
    yield from enumerate(data)
