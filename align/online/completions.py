"""What the policy writes during GRPO (TRL's ``log_completions``): at a logging step, a table of prompt, completion,
each reward and the advantage, to the console (plain text, strings cut short), to ``completions.jsonl`` in the run
directory (every row in full, one JSON object per completion) and to TensorBoard as a text entry.

A line of ``completions.jsonl``::

    {"step": 4, "prompt": "Sort: 3 1 2", "completion": "1 2 3", "rewards": {"reward_graded": 1.0}, "advantage": 0.7}

A reward that did not score a completion is ``null``. Prompts in chat form are written as their messages in the
file and as the last message's text on the console.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

FILENAME = "completions.jsonl"


def _flat(values: Any) -> list[Any]:
    """A tensor (any shape) or a (nested) sequence as one flat list."""
    if isinstance(values, torch.Tensor):
        return values.detach().float().flatten().tolist()
    out: list[Any] = []
    for v in values:
        out.extend(_flat(v) if isinstance(v, (list, tuple, torch.Tensor)) and not _is_messages(v) else [v])
    return out


def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) for m in v)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def text_of(x: Any) -> str:
    """A prompt or completion as one line of text: a chat's last message content, newlines shown as ``⏎``."""
    if _is_messages(x):
        x = x[-1].get("content", "")
    return str(x).replace("\r", "").replace("\n", "⏎")


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters (an ellipsis marks a cut)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class CompletionLog:
    """Logs sampled completions at a step (see the module docstring).

    Args:
        run_dir: where ``completions.jsonl`` is appended (None: no file).
        num_to_print: rows printed to the console (the first ones; None: all; 0: none). The file and
            TensorBoard get every row.
        width: characters of prompt and of completion shown on the console.
        writer: a TensorBoard ``SummaryWriter`` (or anything with ``add_text(tag, text, global_step)``), or None;
            :meth:`writer_of` finds the trainer's.
        main: whether this process writes (default: :func:`align.distributed.is_main`); pass the gathered values of
            every process on the main one.
        stream: the console (default ``sys.stdout``).
    """

    def __init__(self, run_dir: str | Path | None, *, num_to_print: int | None = 8, width: int = 48,
                 writer: Any = None, main: bool | None = None, stream: TextIO | None = None):
        if num_to_print is not None and (isinstance(num_to_print, bool) or num_to_print < 0):
            raise ValueError(f"num_to_print must be None or >= 0, got {num_to_print!r}")
        if main is None:
            from align.distributed import is_main

            main = is_main()
        self.path = Path(run_dir) / FILENAME if run_dir is not None else None
        self.num_to_print, self.width, self.writer, self.main = num_to_print, width, writer, main
        self.stream = stream

    @staticmethod
    def writer_of(trainer: Any) -> Any:
        """The ``SummaryWriter`` of a ``transformers.Trainer``'s TensorBoard callback, or None (no TensorBoard, or
        before training starts)."""
        from transformers.integrations import TensorBoardCallback

        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and getattr(cb, "tb_writer", None) is not None:
                return cb.tb_writer
        return None

    def rows(self, step: int, prompts: Sequence[Any], completions: Sequence[Any],
             rewards: Mapping[str, Any], advantages: Any) -> list[dict[str, Any]]:
        """One record per completion. ``prompts`` may hold one prompt per completion or one per group of
        completions (repeated for each); ``rewards`` maps a name to values (a list or a ``[B, G]`` tensor);
        ``advantages`` likewise."""
        comps = _flat(completions)
        n = len(comps)
        prompts = list(prompts)
        if prompts and n % len(prompts) == 0 and len(prompts) != n:
            g = n // len(prompts)
            prompts = [p for p in prompts for _ in range(g)]
        adv = _flat(advantages)
        values = {name: _flat(v) for name, v in rewards.items()}
        bad = {k: len(v) for k, v in {"prompts": prompts, "advantages": adv, **values}.items() if len(v) != n}
        if bad:
            raise ValueError(f"completion log: {n} completions but {bad}")
        return [{"step": int(step), "prompt": prompts[i], "completion": comps[i],
                 "rewards": {k: _number(v[i]) for k, v in values.items()}, "advantage": _number(adv[i])}
                for i in range(n)]

    def log(self, step: int, prompts: Sequence[Any], completions: Sequence[Any], rewards: Mapping[str, Any],
            advantages: Any, *, writer: Any = None) -> list[dict[str, Any]]:
        """Print, append and send the table of step ``step`` (on the main process; elsewhere nothing); returns the
        records. ``writer`` replaces the constructor's for this call (the trainer's TensorBoard writer exists only
        once training has begun: pass ``CompletionLog.writer_of(trainer)``)."""
        if not self.main:
            return []
        writer = writer if writer is not None else self.writer
        records = self.rows(step, prompts, completions, rewards, advantages)
        if self.num_to_print != 0 and records:
            print(self.table(records), file=self.stream or sys.stdout, flush=True)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if writer is not None and records:
            writer.add_text("completions", self.markdown(records), global_step=int(step))
        return records

    def table(self, records: Sequence[dict[str, Any]]) -> str:
        """The console table: the first ``num_to_print`` records, strings cut to ``width``."""
        shown = records if self.num_to_print is None else records[: self.num_to_print]
        names = list(records[0]["rewards"]) if records else []
        head = ["prompt", "completion", *names, "advantage"]
        body = [[cut(text_of(r["prompt"]), self.width), cut(text_of(r["completion"]), self.width),
                 *(_fmt(r["rewards"][k]) for k in names), _fmt(r["advantage"])] for r in shown]
        widths = [max(len(str(row[j])) for row in [head, *body]) for j in range(len(head))]
        line = lambda row: "  ".join(str(c).ljust(w) if j < 2 else str(c).rjust(w)  # noqa: E731
                                     for j, (c, w) in enumerate(zip(row, widths)))
        title = f"completions at step {records[0]['step']} ({len(shown)} of {len(records)})"
        return "\n".join([title, line(head), "  ".join("-" * w for w in widths), *map(line, body)])

    def markdown(self, records: Sequence[dict[str, Any]], width: int = 200) -> str:
        """The TensorBoard text: every record as a Markdown table row (strings cut to ``width``)."""
        names = list(records[0]["rewards"]) if records else []
        esc = lambda s: cut(text_of(s), width).replace("|", "\\|")  # noqa: E731
        lines = ["| prompt | completion | " + " | ".join(names) + " | advantage |",
                 "|---|---|" + "---|" * len(names) + "---|"]
        lines += [f"| {esc(r['prompt'])} | {esc(r['completion'])} | "
                  + " | ".join(_fmt(r["rewards"][k]) for k in names) + f" | {_fmt(r['advantage'])} |" for r in records]
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def read_completions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``completions.jsonl`` (lines that are not JSON objects are skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
