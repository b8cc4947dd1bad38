"""A run's output directory: another run's outputs refused, --overwrite, the last whole checkpoint, resume notes."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from align.runstate import checkpoint_problem, last_whole_checkpoint, prepare_output_dir


def _checkpoint(root, step, *, state=True, weights=True, optimizer=True):
    d = root / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if state:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights:
        (d / "model.safetensors").write_bytes(b"x")
    if optimizer:  # plain tensors: a resume loads it as Transformers does (weights_only) before it starts
        torch.save({"state": {}, "param_groups": [{"lr": torch.tensor(1e-3)}]}, d / "optimizer.pt")
    return d


def test_a_directory_with_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "model").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds another run"):
        prepare_output_dir(tmp_path, {}, resume=False)
    prepare_output_dir(tmp_path, {}, resume=False, overwrite=True)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "model").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's own outputs go
    assert prepare_output_dir(tmp_path, {}, resume=False).resume_from is None  # now empty: accepted


def test_checkpoints_alone_also_mark_a_used_directory(tmp_path):
    _checkpoint(tmp_path, 2)
    with pytest.raises(ValueError, match="--resume"):
        prepare_output_dir(tmp_path, {}, resume=False)


@pytest.mark.parametrize("broken", [{"state": False}, {"weights": False}, {"optimizer": False}])
def test_resume_skips_an_incomplete_newest_checkpoint(tmp_path, broken, caplog):
    whole = _checkpoint(tmp_path, 2)
    torn = _checkpoint(tmp_path, 4, **broken)
    assert checkpoint_problem(torn) is not None and checkpoint_problem(whole) is None
    with caplog.at_level(logging.WARNING, logger="align"):
        state = prepare_output_dir(tmp_path, {}, resume=True)
    assert state.resume_from == str(whole) and state.skipped == [str(torn)]
    assert "incomplete" in caplog.text and "checkpoint-4" in caplog.text


def test_a_trainer_state_that_is_not_json_is_incomplete(tmp_path):
    d = _checkpoint(tmp_path, 3)
    (d / "trainer_state.json").write_text('{"global_step": ')
    assert last_whole_checkpoint(tmp_path / "checkpoints") == (None, [str(d)])


def test_resume_with_nothing_to_resume_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="align"):
        state = prepare_output_dir(tmp_path, {}, resume=True)
    assert state.resume_from is None and "no whole checkpoint" in caplog.text


def test_changed_settings_on_resume_are_listed_with_their_effect(tmp_path, caplog):
    (tmp_path / "recipe.json").write_text(json.dumps({"loss": {"beta": 0.1}, "train": {"learning_rate": 1e-3,
                                                                                       "max_steps": 10},
                                                      "data": {"max_rows": 100}}))
    _checkpoint(tmp_path, 5)
    recipe = {"loss": {"beta": 0.3}, "train": {"learning_rate": 5e-3, "max_steps": 20}, "data": {"max_rows": 50}}
    with caplog.at_level(logging.WARNING, logger="align"):
        state = prepare_output_dir(tmp_path, recipe, resume=True)
    ch = state.changes
    assert set(ch) == {"loss.beta", "train.learning_rate", "train.max_steps", "data.max_rows"}
    assert ch["loss.beta"]["effect"] == "takes effect" and ch["train.max_steps"]["effect"] == "takes effect"
    assert ch["train.learning_rate"]["effect"].startswith("ignored")
    assert "data in the order" in ch["data.max_rows"]["effect"]
    # the recipe written for the resumed run is what runs: the learning rate the checkpoint restores
    assert recipe["train"]["learning_rate"] == 1e-3 and recipe["loss"]["beta"] == 0.3
    assert "train.learning_rate changed" in caplog.text
    assert state.to_dict()["resumed_from"].endswith("checkpoint-5")


def test_resume_of_a_finished_run_is_left_alone_unless_asked_to_train_further(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    ran = {"train": {"max_steps": 2, "num_train_epochs": 1}, "loss": {"beta": 0.1}}
    (tmp_path / "recipe.json").write_text(json.dumps(ran))
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 2}))
    with caplog.at_level(logging.WARNING, logger="align"):
        state = prepare_output_dir(tmp_path, {**ran, "loss": {"beta": 0.3}}, resume=True)
    assert state.finished == {"steps": 2} and state.resume_from is None
    assert "nothing to do" in caplog.text and "loss.beta changed 0.1 → 0.3: not applied" in caplog.text
    more = prepare_output_dir(tmp_path, {"train": {"max_steps": 4, "num_train_epochs": 1}}, resume=True)
    assert more.finished is None and more.resume_from.endswith("checkpoint-2")
    epochs = {"train": {"max_steps": -1, "num_train_epochs": 2}}
    assert prepare_output_dir(tmp_path, epochs, resume=True).finished is None
    assert prepare_output_dir(tmp_path, {"train": {"max_steps": -1, "num_train_epochs": 1}}, resume=True).finished


def test_a_pickled_file_in_the_resumed_checkpoint_is_refused_by_name(tmp_path):
    d = _checkpoint(tmp_path, 2)

    class Payload:
        def __reduce__(self):
            return print, ("never",)

    torch.save({"x": Payload()}, d / "scheduler.pt")
    with pytest.raises(ValueError, match=r"checkpoint-2/scheduler\.pt: refused: it holds pickled objects"):
        prepare_output_dir(tmp_path, {}, resume=True)
