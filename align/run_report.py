"""``align report RUN_DIR``: one Markdown page with PNG plots that summarises a finished run from its files only.

It reads ``summary.json`` (required), ``recipe.json`` and the logged history: ``log_history.json`` in the run
directory (the trainer's log dicts) when present, else ``log_history`` of the last checkpoint's
``trainer_state.json``. Curves are plotted generically: the loss, every ``reward*`` / ``rewards/*`` series (DPO's
implicit rewards, GRPO's ``reward/mean``, ...), every ``ranking/*`` series and the rest (learning rate, grad
norm, tokens/s, log-probs), each with its ``eval_`` counterpart when logged.

Runs that learn from their own samples (GRPO, ``align iterate``) get their held-out rewards before and after
training, an iterate run its rounds, and both sample completions (:mod:`align.online.report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from transformers.trainer_utils import get_last_checkpoint

from align.errors import DataError, RunDirError
from align.online.report import plot_sampling_eval, rounds_table, samples_section, sampling_eval_table
from align.run_summary import (
    SCORER_LABELS,
    cache_table,
    ci_level,
    data_table,
    eval_table,
    loss_settings,
    reference_description,
    relpath,
    reproduce_section,
    training_table,
)

# Keys of the trainer's end-of-training log entry and bookkeeping: one value per run, not curves.
NOT_CURVES = frozenset({"step", "epoch", "train_runtime", "train_samples_per_second", "train_steps_per_second",
                        "total_flos", "train_loss", "eval_runtime", "eval_samples_per_second",
                        "eval_steps_per_second"})


def read_json(path: Path) -> Any:
    """A JSON file's content, or a one-line ValueError naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def load_log_history(run_dir: str | Path) -> tuple[list[dict[str, Any]], Path | None]:
    """The trainer's logged history of a run and the file it came from (``[], None`` when there is none).

    ``RUN_DIR/log_history.json`` (a list of log dicts) wins; else ``log_history`` of ``trainer_state.json`` in the
    last ``RUN_DIR/checkpoints/checkpoint-*`` (which lacks the steps after that checkpoint).
    """
    run_dir = Path(run_dir)
    path = run_dir / "log_history.json"
    if path.is_file():
        history = read_json(path)
    else:
        ckpts = run_dir / "checkpoints"
        last = get_last_checkpoint(str(ckpts)) if ckpts.is_dir() else None
        path = Path(last) / "trainer_state.json" if last else None
        if path is None or not path.is_file():
            return [], None
        history = (read_json(path) or {}).get("log_history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise DataError(f"{path}: expected a list of log dicts")
    return history, path


def curves(history: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric logged key (but :data:`NOT_CURVES`) as ``(steps, values)``, in logging order; entries
    without a ``step`` are placed by their position."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for i, h in enumerate(history):
        step = h.get("step", i)
        for k, v in h.items():
            if k in NOT_CURVES or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            xs, ys = out.setdefault(k, ([], []))
            xs.append(step)
            ys.append(float(v))
    return out


def group_of(key: str) -> str:
    """Which figure a logged key goes to: ``loss``, ``rewards``, ``ranking`` or ``training``."""
    base = key.removeprefix("eval_")
    if base == "loss":
        return "loss"
    if base.startswith("reward"):
        return "rewards"
    if base.startswith("ranking/"):
        return "ranking"
    return "training"


def plot_panels(path: Path, series: dict[str, tuple[list[float], list[float]]], title: str) -> Path:
    """Small multiples: one panel per logged name, its train and ``eval_`` series together, step on x."""
    names = sorted({k.removeprefix("eval_") for k in series})
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, label, style in ((name, "train", "-"), (f"eval_{name}", "eval", "--")):
            if key in series:
                xs, ys = series[key]
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if f"eval_{name}" in series and name in series:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_eval(path: Path, summary: dict[str, Any]) -> Path | None:
    """Held-out pairwise accuracy per scorer before and after training, with CI error bars."""
    before = (summary.get("eval_before") or {}).get("by_scorer") or {}
    after = (summary.get("eval") or {}).get("by_scorer") or {}
    scorers = list(after) + [s for s in before if s not in after]
    if not scorers:
        return None
    fig = Figure(figsize=(1.8 + 1.6 * len(scorers), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, (label, by) in enumerate((("before", before), ("after", after))):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(scorers):
            m = by.get(s) or {}
            v = m.get("pairwise_accuracy")
            if v is None:
                continue
            ci = (m.get("ci") or {}).get("pairwise_accuracy") or [v, v]
            xs.append(i + (j - 0.5) * 0.38)
            ys.append(v)
            lo.append(v - (ci[0] if ci[0] is not None else v))
            hi.append((ci[1] if ci[1] is not None else v) - v)
        if xs:
            ax.bar(xs, ys, width=0.36, yerr=[lo, hi], capsize=3, color=f"C{j}", label=label)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(scorers)), [SCORER_LABELS.get(s, s) for s in scorers], fontsize=7, rotation=12)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_title(f"before / after training ({ci_level(summary)}% CI)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curve_points(obj: Any) -> tuple[list[float], list[float]] | None:
    """A summary curve (e.g. GRPO's ``reward_curve``) as ``(x, y)``: a list of numbers (x = 1, 2, ...), of
    ``[step, value]`` pairs, of ``{"step", "value"}`` dicts, or a ``{step: value}`` mapping."""
    if isinstance(obj, dict):
        pts = [(float(k), v) for k, v in obj.items()]
    elif isinstance(obj, list) and obj and all(isinstance(v, (int, float)) for v in obj):
        pts = [(i + 1, v) for i, v in enumerate(obj)]
    elif isinstance(obj, list) and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in obj):
        pts = [tuple(v) for v in obj]
    elif isinstance(obj, list) and all(isinstance(v, dict) and "value" in v for v in obj):
        pts = [(v.get("step", i + 1), v["value"]) for i, v in enumerate(obj)]
    else:
        return None
    pts = [(x, y) for x, y in pts if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y)]
    return ([p[0] for p in pts], [float(p[1]) for p in pts]) if pts else None


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    fig.clear()
    return path


def write_plots(run_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]],
                plots_dir: Path) -> dict[str, Path]:
    """Every plot the page shows, by name: ``eval``, ``loss``, ``rewards``, ``ranking``, ``training``,
    ``reward_curve`` (those with data)."""
    out: dict[str, Path] = {}
    p = plot_eval(plots_dir / "eval.png", summary) or plot_sampling_eval(plots_dir / "eval.png", summary)
    if p:
        out["eval"] = p
    groups: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for key, xy in curves(history).items():
        groups.setdefault(group_of(key), {})[key] = xy
    titles = {"loss": "loss", "rewards": "rewards", "ranking": "ranking metrics of the training batches",
              "training": "optimisation and throughput"}
    for name, title in titles.items():
        if groups.get(name):
            out[name] = plot_panels(plots_dir / f"{name}.png", groups[name], title)
    for key in sorted(k for k in summary if k.startswith("reward") and k.endswith("curve")):
        pts = curve_points(summary[key])
        if pts:
            out[key] = plot_panels(plots_dir / f"{key}.png", {key: pts}, key)
    by_round = summary.get("eval_reward_curve")  # align iterate: each reward on the held-out prompts per round
    if isinstance(by_round, dict):
        series = {name: pts for name, ys in by_round.items() if (pts := curve_points(
            [[i, y] for i, y in enumerate(ys or []) if y is not None]))}
        if series:
            out["eval_reward_curve"] = plot_panels(plots_dir / "eval_reward_curve.png", series,
                                                   "held-out reward by round (0: before round 0; k: after round k-1)")
    return out


def report_markdown(run_dir: Path, summary: dict[str, Any], recipe: dict[str, Any] | None,
                    history_source: Path | None, plots: dict[str, Path], page_dir: Path) -> str:
    """The page: evaluation table and plot, training curves, training/timing, data, reference cache, recipe."""
    recipe = recipe or {}
    algo = summary.get("algorithm") or recipe.get("algorithm") or "?"
    base = (recipe.get("model") or {}).get("name_or_path") or summary.get("start_model") or "?"

    def img(name: str, alt: str) -> list[str]:
        return [f"![{alt}]({relpath(plots[name], page_dir)})", ""] if name in plots else []

    lines = [f"# Run report: `{run_dir.name}`", "",
             f"`{algo}` from `{base}`, {summary.get('steps', '?')} steps; loss settings {loss_settings(recipe)}. "
             f"Model: `{summary.get('model_dir', '?')}`.", "",
             "## Held-out evaluation", "", sampling_eval_table(summary) or eval_table(summary), "",
             *img("eval", "held-out evaluation before/after"), *img("eval_reward_curve", "held-out reward by round")]
    rounds = rounds_table(summary)
    if rounds:
        lines += ["## Rounds", "", rounds, "", "Each round's training run (its log, model and summary) is in "
                  "`round-K/train/`.", ""]
    lines += ["## Training curves", ""]
    if history_source is None:
        lines += ["No logged history found (no `log_history.json`, no checkpoint with `trainer_state.json`).", ""]
    else:
        lines += [f"From `{relpath(history_source, run_dir)}`.", ""]
        for name, alt in (("loss", "loss"), ("rewards", "rewards"), ("ranking", "ranking metrics"),
                          ("training", "optimisation and throughput")):
            lines += img(name, alt)
    for key in sorted(k for k in plots if k.startswith("reward") and k.endswith("curve")):
        lines += img(key, key)
    samples = samples_section(run_dir, summary)
    if samples:
        lines += ["## Sample completions", "", samples, ""]
    lines += ["## Training", "", training_table(summary), "",
              "## Data", "", data_table(summary, recipe), "",
              "## Reference", "", f"Reference model: {reference_description(summary, recipe)}.", "",
              cache_table(summary), "",
              "## Recipe", "", reproduce_section(recipe or None, summary.get("command")), ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, output: str | Path | None = None,
                 plots_dir: str | Path | None = None) -> Path:
    """Write the report of a finished run: ``RUN_DIR/report.md`` (or ``output``) and its PNGs in
    ``RUN_DIR/report_plots/`` (or ``plots_dir``), linked relative to the page. Returns the page's path.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``summary.json`` (one line).
        ValueError: a run file that is not valid JSON or has the wrong shape (one line).
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise RunDirError(f"{run_dir}: no summary.json, so not a finished align run "
                                "(`align train` writes it when the run ends)")
    summary = read_json(summary_path)
    if not isinstance(summary, dict):
        raise DataError(f"{summary_path}: expected a JSON object")
    recipe = read_json(run_dir / "recipe.json") if (run_dir / "recipe.json").is_file() else None
    history, source = load_log_history(run_dir)
    page = Path(output) if output else run_dir / "report.md"
    plots = write_plots(run_dir, summary, history, Path(plots_dir) if plots_dir else run_dir / "report_plots")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(report_markdown(run_dir, summary, recipe, source, plots, page.parent))
    return page
