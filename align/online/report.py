"""The parts of ``align report`` for runs that learn from their own samples: GRPO (``summary.json`` with
``eval_before`` / ``eval`` from sampling, a ``completions.jsonl``) and ``align iterate`` (``eval_initial``, per-round
``rounds``, ``round-K/samples.jsonl``). Markdown pieces and one plot; :mod:`align.run_report` puts them on the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from align.online.completions import FILENAME, cut, read_completions, text_of
from align.run_summary import fmt, fmt_ci


def _is_sampling(ev: Any) -> bool:
    return isinstance(ev, dict) and isinstance(ev.get("reward"), dict)


def sampling_evals(summary: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The held-out sampling evaluation before and after training: GRPO's ``eval_before`` / ``eval``, or an
    iterate run's ``eval_initial`` / the last round's ``eval``; ``(None, None)`` for a ranking evaluation."""
    rounds = summary.get("rounds")
    if isinstance(rounds, list):
        after = next((r.get("eval") for r in reversed(rounds) if isinstance(r, dict) and r.get("eval")), None)
        before = summary.get("eval_initial")
    else:
        before, after = summary.get("eval_before"), summary.get("eval")
    before, after = (before if _is_sampling(before) else None), (after if _is_sampling(after) else None)
    return before, after


def sampling_eval_table(summary: dict[str, Any]) -> str | None:
    """Markdown table of each reward's mean on the held-out prompts (with its bootstrap interval) and pass@k,
    before and after training; None when the run has no sampling evaluation."""
    before, after = sampling_evals(summary)
    if before is None and after is None:
        return None
    ev = after or before
    names = list((after or {}).get("reward") or {}) + [n for n in (before or {}).get("reward") or {}
                                                      if n not in ((after or {}).get("reward") or {})]
    what = "after the last round" if isinstance(summary.get("rounds"), list) else "after training"
    lines = [f"Held-out prompts: {ev.get('n_prompts', '?')}, {ev.get('samples_per_prompt', '?')} samples each at "
             f"temperature {fmt(ev.get('temperature'), 2)}; in brackets the bootstrap interval over prompts.", "",
             f"| reward | metric | before | {what} |", "|---|---|---|---|"]

    def cell(e: dict[str, Any] | None, name: str) -> str:
        if not e or (e.get("reward") or {}).get(name) is None:
            return "—"
        return fmt_ci(e["reward"][name], (e.get("reward_ci") or {}).get(name))

    for name in names:
        lines.append(f"| {name} | mean reward | {cell(before, name)} | {cell(after, name)} |")
        ks = dict.fromkeys(list(((before or {}).get("pass_at_k") or {}).get(name) or {})
                           + list(((after or {}).get("pass_at_k") or {}).get(name) or {}))
        for k in ks:
            b = (((before or {}).get("pass_at_k") or {}).get(name) or {}).get(k)
            a = (((after or {}).get("pass_at_k") or {}).get(name) or {}).get(k)
            lines.append(f"| {name} | pass@{k} | {fmt(b)} | {fmt(a)} |")
    for key, label in (("mean_length", "mean completion length (tokens)"), ("truncated", "truncated fraction")):
        if (before or {}).get(key) is not None or (after or {}).get(key) is not None:
            lines.append(f"| — | {label} | {fmt((before or {}).get(key), 2)} | {fmt((after or {}).get(key), 2)} |")
    return "\n".join(lines)


def rounds_table(summary: dict[str, Any]) -> str | None:
    """An iterate run's rounds: lists built, the mean reward of the round's samples, the training loss and each
    reward on the held-out prompts after the round; None for other runs."""
    rounds = summary.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        return None
    names = list(summary.get("eval_reward_curve") or {})
    lines = ["| round | lists | sample reward (mean) | train loss first → last | "
             + " | ".join(f"held-out {n}" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    initial = (summary.get("eval_initial") or {}).get("reward") or {}
    if initial:
        lines.append("| before | — | — | — | " + " | ".join(fmt(initial.get(n)) for n in names) + " |")
    for r in rounds:
        s, t, ev = r.get("samples") or {}, r.get("train") or {}, (r.get("eval") or {}).get("reward") or {}
        lines.append(f"| {r.get('round', '?')} | {s.get('lists', '—')} | {fmt(s.get('reward_mean'))} | "
                     f"{fmt(t.get('train_loss_first'), 4)} → {fmt(t.get('train_loss_last'), 4)} | "
                     + " | ".join(fmt(ev.get(n)) for n in names) + " |")
    return "\n".join(lines)


def _rows_table(rows: list[dict[str, Any]], width: int, advantage: bool = True) -> list[str]:
    names = list(dict.fromkeys(k for r in rows for k in (r.get("rewards") or {})))
    cols = names + (["advantage"] if advantage else [])
    esc = lambda x: cut(text_of(x), width).replace("|", "\\|")  # noqa: E731
    out = ["| prompt | completion | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        rw = r.get("rewards") or {}
        values = [fmt(rw.get(n)) for n in names] + ([fmt(r.get("advantage"))] if advantage else [])
        out.append(f"| {esc(r.get('prompt', ''))} | {esc(r.get('completion', ''))} | " + " | ".join(values) + " |")
    return out


def _iterate_rows(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` completions of a round's ``samples.jsonl`` as completion-log records."""
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        rewards = rec.get("rewards") or {}
        for g, comp in enumerate(rec.get("completions") or []):
            rows.append({"prompt": rec.get("prompt", ""), "completion": comp,
                         "rewards": {k: v[g] if isinstance(v, list) and g < len(v) else None
                                     for k, v in rewards.items()}})
            if len(rows) >= n:
                return rows
    return rows


def samples_section(run_dir: Path, summary: dict[str, Any], n: int = 4, width: int = 80) -> str | None:
    """Sample completions: a GRPO run's first and last logged steps (``completions.jsonl``), or an iterate run's
    first and last rounds (``round-K/samples.jsonl``); None when there are none."""
    blocks: list[str] = []
    path = run_dir / FILENAME
    if path.is_file():
        records = read_completions(path)
        steps = sorted({r.get("step") for r in records if isinstance(r.get("step"), int)})
        for step in dict.fromkeys([steps[0], steps[-1]] if steps else []):
            rows = [r for r in records if r.get("step") == step][:n]
            blocks += [f"Step {step} (first {len(rows)} of the step's completions, from `{FILENAME}`):", "",
                       *_rows_table(rows, width), ""]
    elif isinstance(summary.get("rounds"), list):
        rounds = sorted(int(p.name.split("-", 1)[1]) for p in run_dir.glob("round-*")
                        if p.name.split("-", 1)[1].isdigit() and (p / "samples.jsonl").is_file())
        for k in dict.fromkeys([rounds[0], rounds[-1]] if rounds else []):
            rows = _iterate_rows(run_dir / f"round-{k}" / "samples.jsonl", n)
            blocks += [f"Round {k} (first {len(rows)} samples, from `round-{k}/samples.jsonl`):", "",
                       *_rows_table(rows, width, advantage=False), ""]
    return "\n".join(blocks).rstrip() or None


def plot_sampling_eval(path: Path, summary: dict[str, Any]) -> Path | None:
    """Bars of each reward's held-out mean before and after training, with bootstrap error bars."""
    before, after = sampling_evals(summary)
    names = list(dict.fromkeys(list((before or {}).get("reward") or {}) + list((after or {}).get("reward") or {})))
    if not names:
        return None
    fig = Figure(figsize=(1.8 + 1.6 * len(names), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, (label, ev) in enumerate((("before", before), ("after", after))):
        xs, ys, err = [], [], [[], []]
        for i, name in enumerate(names):
            v = ((ev or {}).get("reward") or {}).get(name)
            if v is None:
                continue
            lo, hi = ((ev or {}).get("reward_ci") or {}).get(name) or (v, v)
            xs.append(i + (j - 0.5) * 0.38)
            ys.append(v)
            err[0].append(max(v - (lo if lo is not None else v), 0.0))
            err[1].append(max((hi if hi is not None else v) - v, 0.0))
        if xs:
            ax.bar(xs, ys, width=0.36, yerr=err, capsize=3, color=f"C{j}", label=label)
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=12)
    ax.set_ylabel("held-out mean reward")
    ax.set_title("held-out reward before / after training", fontsize=10)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    fig.clear()
    return path
