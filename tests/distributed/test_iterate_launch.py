"""``align iterate`` under ``accelerate launch`` on 2 CPU processes (gloo: DDP, DeepSpeed ZeRO-2 and ZeRO-3) against
1 process, same global batch (1 × 8 lists a step against 2 × 4): each process samples its share of the prompts, so
the two runs draw the same samples and build the same lists; the rounds' training gives the same losses; the
held-out prompts are the 8 of ``data.eval``; the main process alone writes the state, the lists, the metrics and
the summary."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from align.tasks import task_rows
from tests.conftest import REPO
from tests.helpers import align_command, launch_env

LOSS_TOL = 2e-4  # as tests/distributed/test_launch.py: the same math on other batch splits




def _env(home: Path) -> dict[str, str]:
    return launch_env(ALIGN_HOME=str(home), HF_HUB_OFFLINE="1")


def _recipe(tmp: Path, model_dir: Path) -> Path:
    r = yaml.safe_load((REPO / "recipes" / "iterate_dpo_tiny.yaml").read_text())
    held = tmp / "held_out.jsonl"  # 8 held-out prompts of the task, none of them a training prompt
    held.write_text("".join(json.dumps(row) + "\n" for row in
                            task_rows("task:sort?n=8&seed=7&min_len=4&max_len=4&max_digit=5")))
    r["model"]["name_or_path"] = str(model_dir)
    r["data"].update(train="task:sort?n=80&seed=0&min_len=2&max_len=3&max_digit=5", eval=str(held))
    r["sft"]["enabled"] = False
    r["train"].update(learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_steps=100,
                      max_steps=2)
    r["reference"] = {"cache_dir": str(tmp / "refcache"), "batch_size": 8}
    r["iterate"].update(rounds=2, prompts_per_round=8, num_samples=4, max_completion_length=6, eval_prompts=46,
                        eval_samples=2, sample_batch_size=3,  # 3 sampling batches: 2 on one process, 1 on the other
                        # every group a pair, so each round trains on 8 lists: one global batch per step
                        rewards=[{"function": "tests.online.rewards:length_distinct", "weight": 1.0}])
    path = tmp / "iterate.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _iterate(tmp: Path, recipe: Path, name: str, config: str | None, batch: int) -> tuple[dict, str, float]:
    args = ["iterate", str(recipe), "--output-dir", str(tmp / name), f"train.per_device_train_batch_size={batch}",
            f"reference.cache_dir={tmp / f'cache-{name}'}"]
    t0 = time.perf_counter()
    done = subprocess.run(align_command(args, config), cwd=REPO, env=_env(tmp / "home"), capture_output=True,
                          text=True, timeout=1200)
    seconds = time.perf_counter() - t0
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return json.loads((tmp / name / "summary.json").read_text()), done.stdout, seconds


def _losses(train_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((train_dir / "log_history.json").read_text()) if "loss" in h]


@pytest.fixture(scope="module")
def single(small_model_dir, tmp_path_factory):
    """The 1-process run every 2-process run is compared with."""
    tmp = tmp_path_factory.mktemp("iterate_launch")
    recipe = _recipe(tmp, small_model_dir)
    summary, _, seconds = _iterate(tmp, recipe, "one", None, 8)
    return tmp, recipe, summary, seconds


@pytest.mark.parametrize("config", ["cpu_ddp.yaml", "cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_two_processes_give_the_rounds_of_one(single, config):
    tmp, recipe, one, t_one = single
    name = config.removesuffix(".yaml")
    two, stdout, t_two = _iterate(tmp, recipe, name, config, 4)
    print(f"align iterate, 2 rounds: 1 process {t_one:.1f} s, 2 processes ({name}) {t_two:.1f} s (wall, start-up "
          "included)")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert stdout.count("wrote ") == 1  # the main process reports
    # the held-out prompts are data.eval's 8, not a split of the training prompts
    assert one["eval_initial"]["n_prompts"] == two["eval_initial"]["n_prompts"] == 8
    assert one["eval_initial"]["reward"] == two["eval_initial"]["reward"]
    for k in (0, 1):
        r1, r2 = tmp / "one" / f"round-{k}", tmp / name / f"round-{k}"
        # the same samples and the same lists, written once
        assert (r2 / "samples.jsonl").read_bytes() == (r1 / "samples.jsonl").read_bytes()
        assert (r2 / "data.jsonl").read_bytes() == (r1 / "data.jsonl").read_bytes()
        assert not list(r2.glob(".*.tmp"))
        m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (r1, r2))
        assert m1["samples"]["lists"] == m2["samples"]["lists"] == 8
        losses1, losses2 = _losses(r1 / "train"), _losses(r2 / "train")
        assert len(losses1) == len(losses2) == 2
        torch.testing.assert_close(torch.tensor(losses2), torch.tensor(losses1), atol=LOSS_TOL, rtol=0)
        assert m2["eval"]["n_prompts"] == 8
    assert two["reward_curve"] == pytest.approx(one["reward_curve"])
    state = json.loads((tmp / name / "state.json").read_text())
    assert all(state["rounds"][str(k)]["finished"] for k in (0, 1))
    assert len(list((tmp / name).glob("summary.json"))) == 1
