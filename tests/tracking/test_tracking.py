"""Tracking: report_to is checked before any model loads, and a real DPOTrainer's merged metrics and the
run-level values reach TensorBoard, read back with TensorBoard's own event reader."""

from __future__ import annotations

import importlib.util

import pytest
from transformers import TrainingArguments

from align.config import ConfigError
from align.models import load_model, load_tokenizer
from align.tracking import RunInfoCallback, add_run_info, check_report_to, flatten
from align.trainers import DPOLossConfig, DPOTrainer, ListDataset
from tests.trainers.test_dpo_trainer import _lists


def test_check_report_to_accepts_what_training_arguments_accepts():
    assert check_report_to("none") == [] and check_report_to(None) == [] and check_report_to([]) == []
    assert check_report_to("tensorboard") == ["tensorboard"]
    assert check_report_to(["tensorboard"]) == ["tensorboard"]
    assert "tensorboard" in check_report_to("all")  # installed in the dev environment
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'"):
        check_report_to("tensorbord")
    with pytest.raises(ConfigError, match="cannot be combined"):
        check_report_to(["none", "tensorboard"])


def test_missing_tracker_is_one_line_error(monkeypatch):
    # As if tensorboard (and tensorboardX) were not installed: transformers' own check then says no.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("tensorboard", "tensorboardX", "wandb")
                        else real(name, *a))
    with pytest.raises(ConfigError) as e:
        check_report_to("tensorboard")
    msg = str(e.value)
    assert "\n" not in msg and "train.report_to" in msg and "align[tracking]" in msg and "tensorboard" in msg
    with pytest.raises(ConfigError, match="pip install wandb"):
        check_report_to(["wandb"])
    assert "tensorboard" not in check_report_to("all")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": {}}) == {
        "a.b": 1, "a.c.d": None, "e": "[1, 2]", "f": "{}"}


def test_metrics_and_run_info_reach_tensorboard(small_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok)
    refs = [[-1.0 * (j + 1) for j in range(len(t.response_ids))] for t in lists]  # any fixed reference works
    out = tmp_path / "run" / "checkpoints"  # the pipeline's layout: output_dir is OUTPUT_DIR/checkpoints
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3,
                             logging_steps=1, report_to=["tensorboard"], use_cpu=True, save_strategy="no", seed=0)
    trainer = DPOTrainer(load_model(str(small_model_dir)), args, DPOLossConfig(beta=0.5), ListDataset(lists, refs),
                         processing_class=tok)
    values = {"recipe": {"algorithm": "dpo", "loss": {"beta": 0.5}, "train": {"learning_rate": 1e-3}},
              "data": {"rows_read": 8, "examples": 8, "skipped": {"identical responses": 2}, "train_lists": 8},
              "reference_cache": {"key": "abc123", "hits": 0, "computed": 8, "seconds": 0.1}}
    cb = add_run_info(trainer, values)
    trainer.train()
    assert cb.recorded == ["TensorBoardCallback"]

    # Transformers' default logging dir: <output_dir>/runs/<date>_<host>/ (no logging_dir argument in v5).
    event_files = list(out.glob("runs/*/events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
    ea = EventAccumulator(str(event_files[0].parent), size_guidance={"tensors": 0, "scalars": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    expected = {"train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
                "train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected", "train/tokens_per_second",
                "train/grad_norm", "train/learning_rate"}
    assert expected <= scalars, expected - scalars
    ranking = {t for t in scalars if t.startswith("train/ranking/")}
    assert {"train/ranking/kendall_tau", "train/ranking/ndcg"} <= ranking
    for tag in expected | ranking:  # every metric at every logging step
        assert [e.step for e in ea.Scalars(tag)] == [1, 2, 3], tag
    # Values, not just tags: the reward accuracy is a fraction and tokens/s is positive at every step.
    assert all(0.0 <= e.value <= 1.0 for e in ea.Scalars("train/rewards/accuracies"))
    assert all(e.value > 0 for e in ea.Scalars("train/tokens_per_second"))

    texts = {t: ea.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in ea.Tags()["tensors"]
             if t.endswith("/text_summary")}
    assert "| rows_read | 8 |" in texts["align/data/text_summary"]
    assert "| skipped.identical responses | 2 |" in texts["align/data/text_summary"]
    assert "| key | abc123 |" in texts["align/reference_cache/text_summary"]
    assert "| loss.beta | 0.5 |" in texts["align/recipe/text_summary"]

    hp = plugin_data_pb2.HParamsPluginData.FromString(ea.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert hp.session_start_info.hparams["loss.beta"].number_value == 0.5
    assert hp.session_start_info.hparams["algorithm"].string_value == "dpo"


def test_run_info_without_trackers_records_nothing():
    cb = RunInfoCallback({"data": {"rows_read": 1}}, [])

    class State:
        is_world_process_zero = True

    cb.on_train_begin(None, State(), None)
    assert cb.recorded == []
