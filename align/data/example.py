"""The one example type: a prompt with K >= 2 responses and their labels."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from align.errors import DataError

Message = dict[str, str]
Prompt = str | list[Message]
LabelKind = Literal["pair", "rank", "score"]


@dataclass(frozen=True)
class RankedExample:
    """A prompt and K >= 2 distinct, non-empty responses with a label each.

    Attributes:
        prompt: plain text, or chat messages (``{"role", "content"}``) ending with a user turn.
        responses: the K response texts.
        labels: one float per response, higher is better (the human labels; ``scores`` is a deprecated
            read-only alias). Ranks are stored as ``-rank`` (rank 0 = best), pairs as ``(1.0, 0.0)``; equal labels
            are ties (they form no pair).
        label_kind: where the labels came from: ``"pair"``, ``"rank"`` or ``"score"``.
        row: 0-based row number in the source, for messages.
        meta: free extra fields (e.g. a RewardBench ``subset``).
    """

    prompt: Prompt
    responses: tuple[str, ...]
    labels: tuple[float, ...]
    label_kind: LabelKind = "pair"
    row: int = -1
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.responses) != len(self.labels):
            raise DataError(f"row {self.row}: {len(self.responses)} responses but {len(self.labels)} labels")

    @property
    def scores(self) -> tuple[float, ...]:
        """Deprecated name of :attr:`labels` (read-only)."""
        return deprecated_scores(self)


def deprecated_scores(obj: Any) -> tuple[float, ...]:
    """``obj.labels``, with a DeprecationWarning: ``scores`` now means a model's outputs, never the human labels."""
    warnings.warn("`.scores` of an example or token list is deprecated: use `.labels` (the human labels)",
                  DeprecationWarning, stacklevel=3)
    return obj.labels


@dataclass
class LoadReport:
    """What a loader read: rows, examples kept, examples by detected format, and rows skipped by reason."""

    rows_read: int = 0
    examples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)  # format name ("hh", "trl", ...) -> examples
    fields: set[str] = field(default_factory=set)  # the field names the rows had (for messages, not the summary)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def merge(self, other: LoadReport) -> None:
        """Add another load's counts to this one (a separate eval file, say)."""
        self.rows_read += other.rows_read
        self.examples += other.examples
        self.skipped.update(other.skipped)
        self.formats.update(other.formats)
        self.fields.update(other.fields)

    def to_dict(self) -> dict[str, Any]:
        """The ``data`` object of ``summary.json`` and of ``align eval --output``."""
        return {"rows_read": self.rows_read, "examples": self.examples, "skipped": dict(sorted(self.skipped.items())),
                "formats": dict(sorted(self.formats.items()))}
