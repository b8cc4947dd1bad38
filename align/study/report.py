"""Moved to :mod:`align.study.results` (the study's results page); the old name stays importable."""

from align.study.results import (  # noqa: F401
    HOW_CHOSEN,
    SETUP,
    claim_table,
    environment,
    markdown,
)
