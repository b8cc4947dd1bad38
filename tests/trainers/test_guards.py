"""Numerical guards: a NaN loss or gradient stops the run with the step and rows, or is skipped and counted."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainingArguments

from align.models import load_model, load_tokenizer
from align.trainers import DPOLossConfig, DPOTrainer, ListDataset
from align.trainers.guards import NonFiniteError, NonFiniteGuard
from tests.trainers.test_dpo_trainer import _lists


def _trainer(small_model_dir, tmp_path, refs_fn, **kw):
    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok)[:8]
    refs = [refs_fn(i, len(t.response_ids)) for i, t in enumerate(lists)]
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2,
                             per_device_train_batch_size=4, logging_steps=1, disable_tqdm=True, save_strategy="no")
    trainer = DPOTrainer(load_model(str(small_model_dir)), args, DPOLossConfig(), ListDataset(lists, refs),
                         processing_class=tok, **kw)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    return trainer, lists


def _nan_in_second_batch(i, k):
    return [math.nan if i == 5 else -10.0] * k  # list 5 is in the second batch of 4


def test_a_nan_loss_stops_the_run_naming_step_and_rows(small_model_dir, tmp_path):
    trainer, lists = _trainer(small_model_dir, tmp_path, _nan_in_second_batch)
    with pytest.raises(NonFiniteError) as err:
        trainer.train()
    msg = str(err.value)
    assert "non-finite loss" in msg and "step 2" in msg
    assert str([t.row for t in lists[4:8]]) in msg  # the batch's source rows
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # step 2 never applied


def test_skip_mode_skips_and_counts_and_keeps_the_weights_finite(small_model_dir, tmp_path):
    trainer, lists = _trainer(small_model_dir, tmp_path, _nan_in_second_batch, on_non_finite="skip")
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert [e["step"] for e in trainer.guard.events] == [2]
    assert trainer.guard.events[0]["rows"] == [t.row for t in lists[4:8]]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any((a - b).abs().max() > 0 for a, b in zip(trainer.model.parameters(), start))  # step 1 did train


def test_a_non_finite_gradient_is_caught_before_the_optimizer_step():
    model = torch.nn.Linear(2, 1)
    model.weight.grad = torch.tensor([[math.inf, 0.0]])
    with pytest.raises(NonFiniteError, match="non-finite gradient at step 7"):
        NonFiniteGuard("error").check_gradients(model, 7)
    skip = NonFiniteGuard("skip")
    skip.check_gradients(model, 7)
    assert model.weight.grad is None and skip.events == [{"step": 7, "rows": [], "cause": "non-finite gradient"}]
    model.weight.grad = torch.ones(1, 2)
    skip.check_gradients(model, 8)  # finite: untouched
    assert model.weight.grad is not None and len(skip.events) == 1
