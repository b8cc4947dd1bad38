"""Summaries and outputs: medians, ratios, targets, ``--compare-to``, JSON and markdown files."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

QUICK_TOLERANCE = 0.15  # --quick's ratios should be within 15% of the full run's


def median(runs: list[dict], key: str) -> float | None:
    """Median of ``key`` over the runs that have it (None when none has)."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (or b is 0)."""
    return a / b if a is not None and b else None


def fmt(v: float | None, spec: str = ".2f") -> str:
    """``v`` formatted, an em dash for None."""
    return "—" if v is None else format(v, spec)


def check_targets(ratios: dict[str, float | None], goals: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Each goal ``key -> (">=" | "<=", value)`` as ``{"target": ">= 2.5", "met": bool | None}``."""
    out = {}
    for k, (op, goal) in goals.items():
        v = ratios.get(k)
        out[k] = {"target": f"{op} {goal}", "met": None if v is None else (v >= goal if op == ">=" else v <= goal)}
    return out


def compare_ratios(summary: dict[str, Any], other: dict[str, Any], source: str) -> dict[str, Any]:
    """Each ratio of this run against the same key of another run's JSON (typically --quick against the full
    run): relative difference and whether it is within ``QUICK_TOLERANCE``."""
    out: dict[str, Any] = {"file": source, "tolerance": QUICK_TOLERANCE, "ratios": {}}
    for key, value in summary["ratios"].items():
        if isinstance(value, dict):
            continue  # a nested entry is not a ratio to compare
        ref = other.get("ratios", {}).get(key)
        ref = ref if isinstance(ref, (int, float)) else None
        rel = None if value is None or not ref else value / ref - 1
        out["ratios"][key] = {"this": value, "other": ref, "relative_difference": rel,
                              "within_tolerance": None if rel is None else abs(rel) <= QUICK_TOLERANCE}
    return out


def compare_lines(cmp: dict[str, Any] | None) -> list[str]:
    """The markdown table of a :func:`compare_ratios` result (nothing for None)."""
    if not cmp:
        return []
    lines = ["", f"Against `{Path(cmp['file']).name}` (within {cmp['tolerance']:.0%}?):", "",
             "| ratio | this run | that run | difference | within |", "|---|---:|---:|---:|---|"]
    for key, c in cmp["ratios"].items():
        rel = c["relative_difference"]
        lines.append(f"| `{key}` | {fmt(c['this'])} | {fmt(c['other'])} | "
                     f"{'—' if rel is None else format(rel, '+.1%')} | "
                     f"{'—' if c['within_tolerance'] is None else ('yes' if c['within_tolerance'] else 'no')} |")
    return lines


def write_outputs(summary: dict[str, Any], table: str, *, output: str | None, markdown: str | None,
                  markdown_is_default: bool, repo: Path) -> None:
    """Write the JSON (strict: non-finite numbers as null) and the markdown table; a default markdown path is
    relative to the repository, wherever the script was started from."""
    from align.io import json_text

    if output:
        Path(output).write_text(json_text(summary) + "\n")
    if markdown:
        path = repo / markdown if markdown_is_default else Path(markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)


def finish_table(lines: list[str], summary: dict[str, Any], command: str | None) -> str:
    """The table's end: the comparison with another run (``--compare-to``) and the command line."""
    lines = [*lines, *compare_lines(summary.get("compared_to"))]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def run_and_report(name: str, plan: dict[str, Any], args: Any, argv: list[str] | None, run_benchmark,
                   render_markdown, *, repo: Path, markdown_is_default: bool) -> dict[str, Any]:
    """A benchmark script's main run: ``run_benchmark(plan, work, ...)`` in a temporary work directory
    (:func:`benchlib.process.in_work_dir`), ``--compare-to`` applied, the table printed and the outputs written."""
    import json
    import sys

    from benchlib.process import in_work_dir

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    summary = in_work_dir(lambda work: run_benchmark(plan, work, in_process=args.in_process, log=log),
                          f"{name}-", args.workdir, args.keep_workdir, log)
    if args.compare_to:
        summary["compared_to"] = compare_ratios(summary, json.loads(Path(args.compare_to).read_text()),
                                                str(args.compare_to))
    command = f"python scripts/{name}.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = render_markdown(summary, command.strip())
    print(table)
    write_outputs(summary, table, output=plan["output"], markdown=plan["markdown"],
                  markdown_is_default=markdown_is_default, repo=repo)
    print(f"wall time {summary['wall_seconds']:.1f} s", file=sys.stderr)
    return summary
