"""Real 2-process launches of ``align train`` on the CPU (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3, LoRA + DDP.

Each run is compared with a 1-process run of the same recipe and the same global batch (1 × 8 lists against
2 × 4): the same reference identity and the same cached values (each 2-process run builds its own cache, split
across ranks), the same losses over the first steps, one summary.json written by the main process, and a model
``align eval`` loads. A resumed run computes no reference value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from align.reference.store import _key_list
from tests.conftest import HH, REPO
from tests.helpers import ACCELERATE, align_command, launch_env

# Same global batch in every run: 8 lists a step, one process x 8 or two x 4. Constant LR so a resumed run can be
# compared step for step with a straight one.
COMMON = ["data.max_rows=64", "data.max_prompt_length=32", "data.max_response_length=24", "sft.enabled=false",
          "train.max_steps=3", "train.learning_rate=2e-3", "train.lr_scheduler_type=constant", "train.warmup_steps=0",
          "train.logging_steps=1", "train.save_steps=3", "loss.beta=0.5", "reference.batch_size=8",
          "reference.shard_size=16", "eval.batch_size=16"]
LOSS_TOL = 2e-4  # the same math on other batch splits: float32 sums in another order and other padding widths






def _recipe_args(model_dir: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "recipes/dpo_tiny.yaml", "--output-dir", str(out), f"model.name_or_path={model_dir}",
            f"data.train={HH}", f"reference.cache_dir={cache}", *COMMON, *extra]


def _train(model_dir: Path, tmp: Path, name: str, config: str | None, *extra: str, resume: bool = False):
    """Run ``align train`` (under ``accelerate launch`` when ``config`` is given); returns (summary, output)."""
    out, cache = tmp / name, tmp / f"cache-{name}"
    args = _recipe_args(model_dir, cache, out, *extra) + (["--resume"] if resume else [])
    done = subprocess.run(align_command(args, config), cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return json.loads((out / "summary.json").read_text()), output


def _cached_values(cache_root: Path) -> dict[bytes, float]:
    """Every entry of every store under ``cache_root``: key -> summed log-prob (read straight from the shards)."""
    from safetensors import safe_open

    values = {}
    for shard in cache_root.glob("*/shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            for k, v in zip(_key_list(f.get_tensor("keys")), f.get_tensor("logps").tolist()):
                values[k] = v
    return values


def _losses(run: Path) -> list[float]:
    state = json.loads((run / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def single(small_model_dir, tmp_path_factory):
    """The 1-process run every 2-process run is compared with."""
    tmp = tmp_path_factory.mktemp("launch")
    summary, _ = _train(small_model_dir, tmp, "single", None, "train.per_device_train_batch_size=8")
    return tmp, summary


def _check_against_single(single, summary: dict, output: str, name: str, *, same_cache: bool = True) -> None:
    tmp, base = single
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert output.count("summary.json and the model in") == 1  # only the main process reports (and writes)
    if same_cache:
        rc, brc = summary["reference_cache"], base["reference_cache"]
        assert rc["key"] == brc["key"] and rc["computed"] == brc["computed"] > 0 and rc["hits"] == 0
        mine, theirs = _cached_values(tmp / f"cache-{name}"), _cached_values(tmp / "cache-single")
        assert mine.keys() == theirs.keys()
        assert max(abs(mine[k] - theirs[k]) for k in mine) < 1e-4
    torch.testing.assert_close(torch.tensor(_losses(tmp / name)), torch.tensor(_losses(tmp / "single")),
                               atol=LOSS_TOL, rtol=0)
    assert summary["reference_check"]["step0_max_abs_diff"] < 1e-3
    assert not list((tmp / name).glob("**/summary.json"))[1:]  # one summary.json
    # the packed shared-prompt forward ran (under ZeRO-3 with the model's own logits: the head is partitioned)
    assert summary["packing"]["packed"] and base["packing"]["packed"]
    assert summary["packing"]["chunked_head"] == (name != "zero3"), summary["packing"]
    assert 0 <= summary["padding_fraction"] < 1 and summary["tokens_per_step"] > 0


def _eval_computes_nothing(single, name: str) -> dict:
    """``align eval --split eval`` of the trained model: the reference entries training cached are all hits."""
    tmp, _ = single
    out = tmp / f"{name}-eval.json"
    cmd = [sys.executable, "-m", "align", "eval", "--model", str(tmp / name / "model"), "--data", str(HH),
           "--max-rows", "64", "--split", "eval", "--max-prompt-length", "32", "--max-response-length", "24",
           "--cache-dir", str(tmp / f"cache-{name}"), "--bootstrap", "50", "--no-plots", "--output", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["scorer"] == "implicit"
    assert result["reference_cache"]["computed"] == 0 and result["reference_cache"]["hits"] > 0
    return result


def test_ddp(single, small_model_dir):
    tmp, _ = single
    summary, output = _train(small_model_dir, tmp, "ddp", "cpu_ddp.yaml", "train.per_device_train_batch_size=4")
    _check_against_single(single, summary, output, "ddp")
    _eval_computes_nothing(single, "ddp")


def test_zero2(single, small_model_dir):
    tmp, _ = single
    summary, output = _train(small_model_dir, tmp, "zero2", "cpu_zero2.yaml", "train.per_device_train_batch_size=4")
    _check_against_single(single, summary, output, "zero2")
    _eval_computes_nothing(single, "zero2")


def test_zero3(single, small_model_dir):
    """ZeRO-3 partitions the weights at load: the identity must still be of the full weights (the same key), the
    reference pass runs inside the engine, and saving gathers the weights into a loadable model."""
    tmp, _ = single
    summary, output = _train(small_model_dir, tmp, "zero3", "cpu_zero3.yaml", "train.per_device_train_batch_size=4")
    _check_against_single(single, summary, output, "zero3")
    _eval_computes_nothing(single, "zero3")


def test_lora_ddp(single, small_model_dir):
    """LoRA + DDP: the reference is the base model with the adapter disabled: the plain run's identity and values."""
    tmp, _ = single
    summary, output = _train(small_model_dir, tmp, "lora", "cpu_ddp.yaml", "train.per_device_train_batch_size=4",
                             "peft.enabled=true", "peft.r=4")
    assert summary["world_size"] == 2 and output.count("summary.json and the model in") == 1
    rc, brc = summary["reference_cache"], single[1]["reference_cache"]
    assert rc["key"] == brc["key"] and rc["computed"] == brc["computed"]
    mine, theirs = _cached_values(tmp / "cache-lora"), _cached_values(tmp / "cache-single")
    assert mine.keys() == theirs.keys() and max(abs(mine[k] - theirs[k]) for k in mine) < 1e-4
    assert abs(summary["train_loss_first"] - 0.693147) < 1e-4  # the adapter starts at zero: policy == reference
    assert summary["reference_check"]["step0_max_abs_diff"] < 1e-3
    assert (tmp / "lora" / "adapter" / "adapter_config.json").exists()
    _eval_computes_nothing(single, "lora")


def test_resumed_ddp_run_computes_no_reference_value(single, small_model_dir):
    tmp, _ = single
    first, _ = _train(small_model_dir, tmp, "resume", "cpu_ddp.yaml", "train.per_device_train_batch_size=4",
                      "train.max_steps=2", "train.save_steps=2")
    assert first["steps"] == 2 and first["reference_cache"]["computed"] > 0
    resumed, output = _train(small_model_dir, tmp, "resume", "cpu_ddp.yaml", "train.per_device_train_batch_size=4",
                             "train.save_steps=3", resume=True)
    assert resumed["steps"] == 3
    assert resumed["reference_cache"]["computed"] == 0 and resumed["reference_cache"]["hits"] > 0
    # the resumed third step is the straight run's third step
    assert _losses(tmp / "resume")[-1] == pytest.approx(_losses(tmp / "single")[-1], abs=LOSS_TOL)


@pytest.mark.parametrize("path", sorted(ACCELERATE.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load_and_name_existing_deepspeed_files(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    ds = (raw.get("deepspeed_config") or {}).get("deepspeed_config_file")
    assert config.distributed_type is not None
    if ds:
        assert (REPO / ds).is_file(), ds
    if path.name.startswith("cpu_"):
        assert raw["num_processes"] == 2 and raw.get("use_cpu") is False
