"""The packed shared-prompt forward inside the trainers and the scoring loops: every offline algorithm takes the same
step (loss and gradients) as with one padded row per response, with and without LoRA, on K = 2..8 lists of mixed
lengths; scoring gives the same values; fallbacks are logged once and the reward model stays padded."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import TrainingArguments

from align.config import ConfigError, load_recipe
from align.forward import packing_plan, score_lists
from align.models import load_model, load_tokenizer
from align.trainers import DPOLossConfig, DPOTrainer, ListDataset
from tests.test_packed_forward import _lists
from tests.trainers.test_list_trainers import CASES as LIST_CASES

# every offline objective: the list trainers' cases (LiPO-λ sum/RAX, ListMLE, MMPO, Cringe) and DPO/IPO on pairs
CASES = {
    "dpo": (DPOTrainer, DPOLossConfig(beta=0.5)),
    "ipo": (DPOTrainer, DPOLossConfig(beta=0.5, loss_type="ipo")),
    **LIST_CASES,
}


def _model(model_dir, lora: bool):
    model = load_model(str(model_dir))
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)  # init_lora_weights=False: B is random, so the adapter changes the outputs
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 lora_dropout=0.0, init_lora_weights=False))
    return model


def _refs(model_dir, lists):
    ref_model = load_model(str(model_dir))
    torch.manual_seed(0)
    with torch.no_grad():  # a reference other than the policy, so the log-ratios are not 0
        for p in ref_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    values, _ = score_lists(ref_model, lists, packing=False)
    return [values[i, : len(t.response_ids)].tolist() for i, t in enumerate(lists)]


def _step(cls, config, model_dir, lists, refs, out, packing: bool, lora: bool):
    """One SGD step (lr 1, no clipping) on all lists at once: the weights move by minus the gradient."""
    tok = load_tokenizer(str(model_dir))
    model = _model(model_dir, lora)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=len(lists), max_steps=1,
                             learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
                             report_to="none", use_cpu=True, save_strategy="no", seed=0, logging_steps=1)
    trainer = cls(model, args, config, ListDataset(lists, refs if cls.needs_reference else None),
                  processing_class=tok, packing=packing)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(lists))])
    assert ("block_ids" in batch) == packing == trainer.packing.packed
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    grads = {n: start[n] - p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return loss, grads, trainer.token_stats("run")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_and_padded_steps_agree(case, lora, small_model_dir, tmp_path):
    cls, config = CASES[case]
    lists = _lists(3)  # K = 2..8, prompts of 1..12 tokens, responses of 1..9
    refs = _refs(small_model_dir, lists) if cls.needs_reference else None
    loss_p, grads_p, stats_p = _step(cls, config, small_model_dir, lists, refs, tmp_path / "p", True, lora)
    loss_u, grads_u, stats_u = _step(cls, config, small_model_dir, lists, refs, tmp_path / "u", False, lora)
    assert loss_p == pytest.approx(loss_u, rel=1e-4, abs=1e-5)
    assert grads_p.keys() == grads_u.keys() and len(grads_p) > 0
    biggest = max(g.abs().max().item() for g in grads_u.values())
    assert biggest > 1e-4  # the step moved the weights, so the comparison means something
    for name, g in grads_u.items():
        torch.testing.assert_close(grads_p[name], g, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    # the packed rows feed fewer tokens and less padding
    assert stats_p["tokens_per_step"] < stats_u["tokens_per_step"]
    assert stats_p["padding_fraction"] < stats_u["padding_fraction"]


def test_score_lists_packed_equals_padded_with_per_token_values(small_model_dir):
    model = load_model(str(small_model_dir))
    lists = _lists(4)
    want, want_tok = score_lists(model, lists, batch_size=3, per_token=True, packing=False)
    got, got_tok = score_lists(model, lists, batch_size=3, per_token=True, packing=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isnan(got).sum() == sum(8 - len(t.response_ids) for t in lists) > 0
    for a, b in zip(got_tok, want_tok):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_a_model_that_cannot_take_the_mask_falls_back_with_one_line(small_model_dir, caplog):
    model = load_model(str(small_model_dir))
    model.config._attn_implementation = "flash_attention_2"
    with caplog.at_level(logging.INFO, logger="align"):
        plans = [packing_plan(model) for _ in range(3)]
    assert all(not p.packed for p in plans) and "flash_attention_2" in plans[0].reason
    lines = [r.getMessage() for r in caplog.records if "packed forward off" in r.getMessage()]
    assert len(lines) == 1 and "flash_attention_2" in lines[0]


def test_an_adapted_head_takes_the_model_logits_and_agrees(small_model_dir, tmp_path):
    """A LoRA adapter on lm_head cannot go through the chunked head: the packed forward reads the model's own
    logits instead, and the step still equals the padded one."""
    from peft import LoraConfig, get_peft_model

    def lora_head(model_dir, lora):
        torch.manual_seed(1)
        return get_peft_model(load_model(str(model_dir)), LoraConfig(
            r=4, target_modules=["q_proj", "lm_head"], lora_dropout=0.0, init_lora_weights=False))

    lists = _lists(6)
    plan = packing_plan(lora_head(small_model_dir, True))
    assert plan.packed and not plan.chunked and "not a plain torch.nn.Linear" in plan.reason
    import tests.trainers.test_packed_trainers as me

    original, me._model = me._model, lora_head
    try:
        cls, config = CASES["cringe"]
        loss_p, grads_p, _ = _step(cls, config, small_model_dir, lists, None, tmp_path / "p", True, True)
        loss_u, grads_u, _ = _step(cls, config, small_model_dir, lists, None, tmp_path / "u", False, True)
    finally:
        me._model = original
    assert loss_p == pytest.approx(loss_u, rel=1e-4, abs=1e-5)
    assert any("lm_head" in n for n in grads_u)
    for name, g in grads_u.items():
        torch.testing.assert_close(grads_p[name], g, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_reward_model_trainer_stays_padded(small_reward_model_dir, small_tokenizer, tmp_path):
    from align.models.loading import load_reward_model
    from align.trainers import RewardLossConfig, RewardModelTrainer

    model = load_reward_model(str(small_reward_model_dir), tokenizer=small_tokenizer)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = RewardModelTrainer(model, args, RewardLossConfig(), ListDataset(_lists(7)[:2]),
                                 processing_class=small_tokenizer)
    assert not trainer.packing.packed and "sequence-classification head" in trainer.packing.reason
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert "attention_mask" in batch and "block_ids" not in batch


def test_recipe_key_is_validated():
    with pytest.raises(ConfigError, match="train.packing"):
        load_recipe("recipes/dpo_tiny.yaml", ["train.packing=sometimes"])
    assert load_recipe("recipes/dpo_tiny.yaml", ["train.packing=false"]).train.packing is False
    assert load_recipe("recipes/dpo_tiny.yaml").train.packing is True
