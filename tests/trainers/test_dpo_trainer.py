"""DPOTrainer on a small model: exact loss normalisation under gradient accumulation, and learning."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import TrainingArguments

from align.data.example import RankedExample
from align.data.tokenize import TokenizedList, tokenize_examples
from align.forward import score_lists
from align.losses import ListScores, dpo_loss
from align.models import load_model, load_tokenizer
from align.trainers import DPOLossConfig, DPOTrainer, ListDataset


def _lists(tok, n=8):
    # Mixed list sizes (K = 2, 3, 4) so lists carry 1, 3 or 6 pairs: a mean of micro-batch means would differ
    # from the mean over all pairs of the step, so this catches a wrong normaliser.
    exs = []
    for i in range(n):
        k = 2 + i % 3
        exs.append(RankedExample([{"role": "user", "content": f"Question {i}: how do cats sleep?"}],
                                 tuple(f"answer {j} to {i}" + " zz" * j for j in range(k)),
                                 tuple(float(-j) for j in range(k)), "rank", i))
    lists, _ = tokenize_examples(exs, tok, max_prompt_length=64, max_response_length=32)
    return lists


def _one_step(model_dir, lists, refs, tmp_path, batch, accum):
    model = load_model(str(model_dir))
    tok = load_tokenizer(str(model_dir))
    args = TrainingArguments(output_dir=str(tmp_path / f"b{batch}x{accum}"), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accum, max_steps=1, learning_rate=0.5, optim="sgd",
                             lr_scheduler_type="constant", max_grad_norm=0.0, report_to="none", use_cpu=True,
                             save_strategy="no", seed=0, data_seed=0)
    trainer = DPOTrainer(model, args, DPOLossConfig(beta=0.5), ListDataset(lists, refs), processing_class=tok)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    return model


def test_gradient_accumulation_invariance(small_model_dir, tmp_path):
    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok)
    ref_model = load_model(str(small_model_dir))
    with torch.no_grad():  # a reference different from the policy, so h != 0 and gradients are not symmetric
        for p in ref_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    refs_t, _ = score_lists(ref_model, lists, pad_token_id=tok.pad_token_id)
    refs = [refs_t[i, : len(t.response_ids)].tolist() for i, t in enumerate(lists)]

    start = load_model(str(small_model_dir))
    a = _one_step(small_model_dir, lists, refs, tmp_path, batch=8, accum=1)
    b = _one_step(small_model_dir, lists, refs, tmp_path, batch=2, accum=4)

    # The expected update, computed without the Trainer: SGD step on the mean DPO loss over all 20 pairs.
    manual = copy.deepcopy(start)
    pol, _ = score_lists(manual, lists, pad_token_id=tok.pad_token_id)  # no grad: just shapes
    from align.data.collate import ListCollator
    from align.forward import list_logprobs

    batch = ListCollator(tok.pad_token_id)([{"list": t, "ref_logps": r} for t, r in zip(lists, refs)])
    manual.train()
    scores = ListScores(list_logprobs(manual, batch), batch["labels"], batch["list_mask"], ref_logps=batch["ref_logps"])
    out = dpo_loss(scores, DPOLossConfig(beta=0.5))
    assert len(out.pairs) == sum(len(t.response_ids) * (len(t.response_ids) - 1) // 2 for t in lists) == 24
    out.losses.mean().backward()
    with torch.no_grad():
        for p in manual.parameters():
            p.sub_(0.5 * p.grad)

    moved = 0.0
    for (name, pa), pb, pm, p0 in zip(a.named_parameters(), b.parameters(), manual.parameters(), start.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=f"8x1 vs 2x4 differ at {name}")
        torch.testing.assert_close(pa, pm, rtol=1e-4, atol=1e-6, msg=f"trainer vs manual step differ at {name}")
        moved = max(moved, (pa - p0).abs().max().item())
    assert moved > 1e-4  # the step really moved the weights


def test_trainer_without_reference_values_builds_them_from_its_starting_weights(small_model_dir, tmp_path):
    """No reference given: the trainer identifies its starting weights, fills the cache before the first step,
    and the first step sees policy == reference (loss log 2, step-0 check ~0)."""
    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2,
                             per_device_train_batch_size=4, logging_steps=1, disable_tqdm=True)
    start = load_model(str(small_model_dir))
    trainer = DPOTrainer(copy.deepcopy(start), args, DPOLossConfig(), ListDataset(lists), processing_class=tok)
    trainer.train()
    expected, _ = score_lists(start, lists, pad_token_id=tok.pad_token_id)
    for got, want in zip(trainer.train_dataset.ref_logps, expected):
        assert got == pytest.approx(want[: len(got)].tolist(), abs=1e-5)
    assert trainer.reference_stats.computed == sum(len(t.response_ids) for t in lists)
    assert trainer.reference_check["step0_max_abs_diff"] < 1e-4
    assert abs(trainer.state.log_history[0]["loss"] - 0.693147) < 1e-4
    # The trained policy is no longer the reference: a sequence the cache lacks cannot be scored with it.
    from align.reference import CacheError

    new = TokenizedList((1, 2, 3), ((4, 5), (6, 7)), (1.0, 0.0))
    with pytest.raises(CacheError, match="no reference model"):
        trainer.reference.list_logps([new])


def test_dpo_config_validation():
    with pytest.raises(ValueError, match="beta"):
        DPOLossConfig(beta=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOLossConfig(label_smoothing=0.5)
