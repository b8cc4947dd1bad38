"""GRPO through `align train` on the bad reward functions of tests/data/bad_inputs/rewards.py, a model with a NaN
weight, and sizes the model or the machine cannot take: a one-line error with exit 2 (never a traceback, never
exit 0 with a reward of 0 or without a model); unscored samples counted in the logs and the summary."""

from __future__ import annotations

import json
import re
import time
import traceback

import pytest

from align.cli import main
from tests.data.bad_inputs.rewards import REWARD_CASES

ARGS = ["data.train=task:sort?n=40&seed=0&min_len=3&max_len=3&max_digit=5", "data.eval=null", "sft.enabled=false",
        "train.max_steps=2", "train.logging_steps=1", "train.save_steps=1", "train.per_device_train_batch_size=4",
        "loss.num_generations=4", "loss.max_completion_length=6", "eval.enabled=false"]


def _grpo(model_dir, out, *extra: str) -> list[str]:
    return ["train", "recipes/grpo_rank_tiny.yaml", "--output-dir", str(out), f"model.name_or_path={model_dir}",
            *ARGS, *extra]


def _reward(name: str, extra: str = "") -> str:
    return f"loss.rewards=[{{function: tests.data.bad_inputs.rewards:{name}{extra}}}]"


def _run(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except BaseException:  # anything escaping main() would be a traceback for a user (SystemExit included)
        pytest.fail(f"align {args[0]} raised on {args}:\n{traceback.format_exc()}")
    return code, capsys.readouterr().err


def _error_line(err: str) -> str:
    lines = re.findall(r"align train: error: (.*)", err)  # after a progress bar's carriage returns
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", [n for n, e in REWARD_CASES.items() if e is not None])
def test_a_bad_reward_stops_grpo_with_one_line(name, small_model_dir, tmp_path, capsys):
    extra = ", reward_timeout_s: 1" if name == "never_returns" else ""
    t0 = time.perf_counter()
    code, err = _run(_grpo(small_model_dir, tmp_path / "run", _reward(name, extra)), capsys)
    assert code == 2 and re.search(REWARD_CASES[name], _error_line(err)), err
    assert not (tmp_path / "run" / "summary.json").exists()
    assert time.perf_counter() - t0 < 120


def test_unscored_samples_are_counted_in_the_logs_and_the_summary(small_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(_grpo(small_model_dir, out, _reward("half_none")), capsys)
    assert code == 0, err
    logged = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert [h["reward/unscored"] for h in logged] == [8, 8]  # 4 prompts × 4 samples a step, every other one
    assert json.loads((out / "summary.json").read_text())["unscored_samples"] == 16


def test_a_model_with_a_nan_weight_is_refused(small_model_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(small_model_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    AutoTokenizer.from_pretrained(small_model_dir).save_pretrained(tmp_path / "nan")
    code, err = _run(_grpo(tmp_path / "nan", tmp_path / "run"), capsys)
    line = _error_line(err)
    assert code == 2 and "has non-finite weights" in line and "layers.0.mlp.up_proj.weight" in line, err


@pytest.mark.parametrize("setting, message", [
    ("loss.max_completion_length=100000000", r"loss\.max_completion_length=100000000 \+ the longest prompt \(\d+ "
                                             r"tokens\) = \d+ exceeds the model's context \(max_position_embeddings"),
    ("loss.num_generations=10000000", r"loss\.num_generations=10000000 × 4 prompts a step × \d+ tokens .* needs at "
                                      r"least [\d.]+ GiB .* more than the [\d.]+ GiB available"),
])
def test_sizes_the_model_or_the_machine_cannot_take_are_refused_up_front(setting, message, small_model_dir, tmp_path,
                                                                         capsys):
    t0 = time.perf_counter()
    code, err = _run(_grpo(small_model_dir, tmp_path / "run", setting), capsys)
    assert code == 2 and re.search(message, _error_line(err)), err
    assert time.perf_counter() - t0 < 60
