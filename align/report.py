"""Moved to :mod:`align.run_report` (``align report RUN_DIR``); the old name stays importable."""

from align.run_report import (  # noqa: F401
    NOT_CURVES,
    curve_points,
    curves,
    group_of,
    load_log_history,
    plot_eval,
    plot_panels,
    read_json,
    report_markdown,
    write_plots,
    write_report,
)
