"""Every case of the bad-input corpus (tests/data/bad_inputs) through load_examples and tokenize_examples."""

from __future__ import annotations

import math
import re

import pytest

from align.data.example import DataError
from align.data.loaders import load_examples
from align.data.tokenize import tokenize_examples
from tests.data.bad_inputs import CASES, BadInput, usable

IDS = [c.kind for c in CASES]


def _formats(case: BadInput) -> list[str]:
    return ["auto"] + ([case.format] if case.format else [])


def test_corpus_covers_the_kinds_asked_for():
    kinds = {c.kind for c in CASES}
    assert len(kinds) == len(CASES) >= 30
    reasons = {r for c in CASES for r in c.skipped}
    for needed in ("invalid text (lone surrogate)", "corrupt compressed stream", "truncated compressed stream",
                   "invalid json", "non-numeric label", "label out of range", "missing field 'rejected'",
                   "wrong type for 'chosen'", "empty response", "identical responses", "fewer than 2 responses",
                   "all responses tied", "prompt mismatch", "malformed dialogue", "malformed message",
                   "unrecognised row format", "unreadable file", "invalid utf-8"):
        assert needed in reasons, needed
    assert all(c.path.exists() for c in CASES)
    assert all(c.path.stat().st_size < 20_000 for c in CASES if c.path.is_file())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lenient_load_gives_the_expected_skips(case: BadInput):
    for fmt in _formats(case):
        if case.error:
            with pytest.raises(DataError, match=case.error) as info:
                load_examples(case.path, format=fmt, columns=case.columns)
            assert "\n" not in str(info.value)
            continue
        examples, report = load_examples(case.path, format=fmt, columns=case.columns)
        assert (len(examples), dict(report.skipped)) == (case.examples, case.skipped), fmt
        assert report.examples == len(examples) and sum(report.formats.values()) == len(examples)
        assert all(math.isfinite(s) and abs(s) <= 3.4028234663852886e38 for ex in examples for s in ex.labels)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strict_load_raises_the_expected_data_error(case: BadInput):
    for fmt in _formats(case):
        pattern = case.error or case.strict
        if pattern is None:
            examples, report = load_examples(case.path, format=fmt, columns=case.columns, strict=True)
            assert len(examples) == case.examples
            assert set(report.skipped) <= {"unranked reply", "deleted reply"}
            continue
        with pytest.raises(DataError) as info:
            load_examples(case.path, format=fmt, columns=case.columns, strict=True)
        message = str(info.value)
        assert re.search(pattern, message), message
        assert "\n" not in message
        message.encode("utf-8")  # printable: no lone surrogate from the data


@pytest.mark.parametrize("case", usable(), ids=[c.kind for c in usable()])
def test_kept_examples_tokenize(case: BadInput, small_tokenizer):
    examples, _ = load_examples(case.path, format=case.format or "auto", columns=case.columns)
    lists, report = tokenize_examples(examples, small_tokenizer, max_prompt_length=64, max_response_length=32)
    assert len(lists) + sum(report.dropped.values()) == len(examples)
    assert all(t.prompt_ids and all(t.response_ids) for t in lists)
