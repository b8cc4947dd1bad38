"""LiPO, MMPO and Cringe trainers: exact gradient accumulation on mixed-size lists, and learning end to end."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainingArguments

from align.config import load_recipe
from align.forward import score_lists
from align.models import load_model, load_tokenizer
from align.pipeline import run_training
from align.trainers import (
    CringeLossConfig,
    CringeTrainer,
    DPOLossConfig,
    DPOTrainer,
    LiPOLossConfig,
    LiPOTrainer,
    ListDataset,
    MMPOLossConfig,
    MMPOTrainer,
    PreferenceTrainer,
)
from tests.conftest import HH, OASST
from tests.trainers.test_dpo_trainer import _lists

CASES = {
    "lipo_lambda_sum": (LiPOTrainer, LiPOLossConfig(beta=0.5)),
    "lipo_lambda_rax": (LiPOTrainer, LiPOLossConfig(beta=0.5, normalization="rax")),
    "lipo_list_mle": (LiPOTrainer, LiPOLossConfig(beta=0.5, loss_type="list_mle")),
    "mmpo_ranks": (MMPOTrainer, MMPOLossConfig(beta=0.5, gamma=2.0, margins="ranks")),
    "cringe": (CringeTrainer, CringeLossConfig(b=0.0, tau=5.0, k=1)),
}


def _step(cls, config, model_dir, lists, refs, out, batch, accum):
    tok = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                             max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
                             max_grad_norm=0.0, report_to="none", use_cpu=True, save_strategy="no", seed=0)
    trainer = cls(model, args, config, ListDataset(lists, refs if cls.needs_reference else None),
                  processing_class=tok)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_accumulation_invariance(case, small_model_dir, tmp_path):
    cls, config = CASES[case]
    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok)  # K = 2, 3, 4: per-list pair counts 1, 3, 6
    ref_model = load_model(str(small_model_dir))
    with torch.no_grad():
        for p in ref_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref, _ = score_lists(ref_model, lists, pad_token_id=tok.pad_token_id)
    refs = [ref[i, : len(t.response_ids)].tolist() for i, t in enumerate(lists)]
    start = load_model(str(small_model_dir))
    a = _step(cls, config, small_model_dir, lists, refs, tmp_path / "a", 8, 1)
    b = _step(cls, config, small_model_dir, lists, refs, tmp_path / "b", 2, 4)
    moved = 0.0
    for (name, pa), pb, p0 in zip(a.named_parameters(), b.parameters(), start.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=f"{case}: 8x1 vs 2x4 differ at {name}")
        moved = max(moved, (pa - p0).abs().max().item())
    assert moved > 1e-5


def _recipe(name, model_dir, tmp_path, *extra):
    data = OASST if name in ("lipo", "mmpo") else HH
    return load_recipe(f"recipes/{name}_tiny.yaml", [
        f"model.name_or_path={model_dir}", f"data.train={data}", "data.max_rows=40", "data.max_train_examples=24",
        "data.max_prompt_length=48", "data.max_response_length=24", "sft.enabled=false", "train.max_steps=12",
        "train.num_train_epochs=1", "train.learning_rate=3e-3", "train.logging_steps=1", "train.warmup_steps=0",
        "train.per_device_train_batch_size=4", "train.save_steps=100", f"reference.cache_dir={tmp_path / 'rc'}",
        *extra])


@pytest.mark.parametrize("name", ["lipo", "mmpo", "cringe"])
def test_recipe_trains_and_reports_list_metrics(name, small_model_dir, tmp_path):
    s = run_training(_recipe(name, small_model_dir, tmp_path), tmp_path / name, progress=False)
    assert s["algorithm"] == name and s["steps"] == 12
    losses = [s["train_loss_first"], s["train_loss_last"]]
    assert all(v == v for v in losses) and s["train_loss_last"] < s["train_loss_first"]
    assert {"list_exact_match", "kendall_tau", "ndcg"} <= set(s["eval"])
    # the packed forward ran; its padding share and tokens per step are in the summary and the logs
    assert s["packing"]["packed"] and s["packing"]["chunked_head"]
    assert 0 <= s["padding_fraction"] < 1 and s["tokens_per_step"] > 0
    logged = json.loads((tmp_path / name / "log_history.json").read_text())
    assert all(0 <= h["padding_fraction"] < 1 and h["tokens_per_step"] > 0 for h in logged if "loss" in h)
    if name == "cringe":  # no reference model: nothing cached, implicit reward not reported
        assert s["reference_cache"]["computed"] == 0 and s["reference_cache"]["key"] == ""
        assert "implicit" not in s["eval"]["by_scorer"]
    else:
        rc = s["reference_cache"]  # entries: one per distinct response sequence
        assert rc["computed"] + rc["hits"] >= s["data"]["train_lists"] + s["data"]["eval_lists"]
        assert rc["computed"] > 0 and s["reference_check"]["step0_max_abs_diff"] < 1e-4
        assert s["eval"]["scorer"] == "implicit"
    if name == "lipo":  # OASST lists: more pairs than lists
        assert s["eval"]["n_pairs"] > s["eval"]["n_lists"]


def test_lipo_and_dpo_share_the_reference_cache(small_model_dir, tmp_path):
    lipo = run_training(_recipe("lipo", small_model_dir, tmp_path, "train.max_steps=1"), tmp_path / "l",
                        progress=False)
    dpo = run_training(_recipe("lipo", small_model_dir, tmp_path, "train.max_steps=1", "algorithm=dpo", "loss={}"),
                       tmp_path / "d", progress=False)
    assert dpo["reference_cache"]["key"] == lipo["reference_cache"]["key"]
    assert dpo["reference_cache"]["computed"] == 0 and dpo["reference_cache"]["hits"] > 0


PAIR_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}
LOGPS = {"logps/chosen", "logps/rejected"}


@pytest.mark.parametrize(("cls", "config", "keys"), [
    (DPOTrainer, DPOLossConfig(), PAIR_METRICS | LOGPS),
    (MMPOTrainer, MMPOLossConfig(), PAIR_METRICS | LOGPS),
    (CringeTrainer, CringeLossConfig(b=0.0, tau=1.0), {"cringe/ce", "cringe/gate"} | LOGPS),
    (LiPOTrainer, LiPOLossConfig(), {"rewards/best", "rewards/mean"}),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_trainer_logs_its_loss_metrics_and_the_shared_ones(cls, config, keys, small_model_dir, tmp_path):
    """The loss reports its own metrics; the base adds the pairs' policy log-probs and the ranking metrics."""
    tok = load_tokenizer(str(small_model_dir))
    lists = _lists(tok, n=4)
    refs = [[-30.0] * len(t.response_ids) for t in lists]
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    model = load_model(str(small_model_dir)).train()
    trainer = cls(model, args, config, ListDataset(lists, refs if cls.needs_reference else None), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(model, batch)
    assert torch.isfinite(loss)
    logged = set(trainer._metrics["train"])
    assert keys <= logged and "ranking/kendall_tau" in logged
    assert (LOGPS <= logged) == (cls is not LiPOTrainer)


def test_a_trainer_refuses_another_loss_config(small_model_dir, tmp_path):
    tok = load_tokenizer(str(small_model_dir))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(TypeError, match="DPOTrainer needs a DPOLossConfig, got LiPOLossConfig"):
        DPOTrainer(load_model(str(small_model_dir)), args, LiPOLossConfig(), ListDataset(_lists(tok, n=2)),
                   processing_class=tok)
    with pytest.raises(TypeError, match="PreferenceTrainer sets no loss spec"):
        PreferenceTrainer(load_model(str(small_model_dir)), args, DPOLossConfig(), ListDataset(_lists(tok, n=2)),
                          processing_class=tok)
