"""A corpus of bad inputs, one kind per file or directory, and what loading each must give.

    from tests.data.bad_inputs import CASES
    for case in CASES:
        load_examples(case.path, format=case.format or "auto", columns=case.columns)

``index.json`` maps each kind to its file and expected result; ``build.py`` wrote both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input and what ``load_examples`` must make of it.

    Attributes:
        kind: a short name (``"corrupt_gzip"``).
        path: the file or directory.
        format: an explicit format that reads it the same as ``"auto"``, or None where none does.
        columns: the ``columns=`` mapping to load it with (usually empty).
        examples: examples kept in lenient mode (None when loading is an error).
        skipped: skips by reason in lenient mode.
        strict: a regex the strict-mode ``DataError`` message matches (``re.search``); None when strict mode
            loads it like lenient mode.
        error: a regex of the ``DataError`` both modes raise (a source that cannot be read at all), else None.
    """

    kind: str
    path: Path
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    examples: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    strict: str | None = None
    error: str | None = None


def _load() -> tuple[BadInput, ...]:
    index = json.loads((HERE / "index.json").read_text(encoding="utf-8"))
    return tuple(BadInput(kind, HERE / e["path"], e.get("format"), e.get("columns", {}), e.get("examples"),
                          e.get("skipped", {}), e.get("strict"), e.get("error")) for kind, e in index.items())


CASES: tuple[BadInput, ...] = _load()


def usable() -> tuple[BadInput, ...]:
    """The cases that load to at least one example (for training / evaluation runs over the corpus)."""
    return tuple(c for c in CASES if c.error is None and c.examples)
