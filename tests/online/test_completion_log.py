"""``CompletionLog``: the console table, ``completions.jsonl`` (one JSON object per completion) and the TensorBoard
text entry of a logging step's samples; only the main process writes."""

from __future__ import annotations

import io
import json

import pytest
import torch

from align.online.completions import FILENAME, CompletionLog, read_completions


class Writer:
    def __init__(self):
        self.calls = []

    def add_text(self, tag, text, global_step=None):
        self.calls.append((tag, text, global_step))


def _log(tmp_path, **kw):
    out, writer = io.StringIO(), Writer()
    log = CompletionLog(tmp_path, writer=writer, main=True, stream=out, **kw)
    return log, out, writer


def test_a_step_goes_to_the_console_the_file_and_tensorboard(tmp_path):
    log, out, writer = _log(tmp_path, num_to_print=3, width=12)
    prompts = ["Sort: 3 1 2", [{"role": "user", "content": "Sort: 2 1"}]]  # one per group of 2
    completions = [["1 2 3", "[0] > [0] > [1"], ["1 2", "a very long completion\nwith a newline"]]
    rewards = {"graded": torch.tensor([[1.0, 0.0], [1.0, float("nan")]]), "exact": [1, 0, 1, None]}
    adv = torch.tensor([[0.7, -0.7], [0.5, -0.5]])
    log.log(4, prompts, completions, rewards, adv)

    lines = [json.loads(x) for x in (tmp_path / FILENAME).read_text().splitlines()]
    assert len(lines) == 4 and lines == read_completions(tmp_path / FILENAME)
    assert lines[1] == {"step": 4, "prompt": "Sort: 3 1 2", "completion": "[0] > [0] > [1",
                        "rewards": {"graded": 0.0, "exact": 0.0}, "advantage": pytest.approx(-0.7)}
    assert lines[3]["prompt"] == [{"role": "user", "content": "Sort: 2 1"}]
    assert lines[3]["completion"] == "a very long completion\nwith a newline"  # the file keeps it whole
    assert lines[3]["rewards"] == {"graded": None, "exact": None}

    text = out.getvalue().splitlines()
    assert text[0] == "completions at step 4 (3 of 4)" and len(text) == 3 + 3
    assert text[1].split() == ["prompt", "completion", "graded", "exact", "advantage"]
    assert "[0] > [0] >…" in text[4] and "-0.700" in text[4]
    assert "Sort: 2 1" in text[5]  # a chat prompt shows its last message

    [(tag, md, step)] = writer.calls
    assert tag == "completions" and step == 4 and md.count("\n") == 1 + 4
    assert "\\|" not in md and "| Sort: 3 1 2 | 1 2 3 | 1.000 | 1.000 | 0.700 |" in md

    later = Writer()
    log.log(6, prompts, completions, rewards, adv, writer=later)  # appended; the writer of this call
    assert len((tmp_path / FILENAME).read_text().splitlines()) == 8
    assert len(writer.calls) == 1 and later.calls[0][2] == 6


def test_the_writer_of_a_trainer_is_its_tensorboard_callbacks():
    from types import SimpleNamespace

    from transformers.integrations import TensorBoardCallback

    tb = TensorBoardCallback.__new__(TensorBoardCallback)
    tb.tb_writer = Writer()
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[object(), tb]))
    assert CompletionLog.writer_of(trainer) is tb.tb_writer
    tb.tb_writer = None  # before training begins
    assert CompletionLog.writer_of(trainer) is None


def test_other_processes_write_nothing_and_bad_shapes_are_errors(tmp_path):
    out, writer = io.StringIO(), Writer()
    CompletionLog(tmp_path, writer=writer, main=False, stream=out).log(1, ["p"], ["c"], {"r": [1.0]}, [0.0])
    assert not (tmp_path / FILENAME).exists() and not out.getvalue() and not writer.calls
    log, out, _ = _log(tmp_path, num_to_print=0)
    log.log(1, ["p"], ["c"], {"r": [1.0]}, [0.0])
    assert not out.getvalue() and (tmp_path / FILENAME).exists()  # 0 printed rows, the file still written
    with pytest.raises(ValueError, match=r"3 completions but \{'advantages': 2\}"):
        log.log(1, ["p"], ["a", "b", "c"], {"r": [1.0, 2.0, 3.0]}, [0.0, 1.0])
    with pytest.raises(ValueError, match="num_to_print"):
        CompletionLog(tmp_path, num_to_print=-1)
