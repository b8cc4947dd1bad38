"""End to end on the real HH slice with a small model: learning, summary.json, cache reuse, resume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from align.config import load_recipe
from align.data.loaders import load_examples
from align.data.tokenize import tokenize_examples
from align.forward import score_lists
from align.models import load_model, load_tokenizer
from align.pipeline import load_data, run_training
from align.trainers import DPOLossConfig, DPOTrainer, ListDataset
from tests.conftest import HH


def _recipe(model_dir, tmp_path, **extra):
    overrides = [f"model.name_or_path={model_dir}", f"data.train={HH}", "data.max_rows=80",
                 "data.max_prompt_length=48", "data.max_response_length=32", "sft.enabled=true", "sft.max_steps=3",
                 "sft.batch_size=8", "train.max_steps=12", "train.learning_rate=2e-3", "train.logging_steps=1",
                 "train.per_device_train_batch_size=8", "train.save_steps=100", "loss.beta=0.5",
                 f"reference.cache_dir={tmp_path / 'refcache'}", "eval.batch_size=32"]
    return load_recipe("recipes/dpo_tiny.yaml", overrides + [f"{k}={v}" for k, v in extra.items()])


def test_train_lowers_loss_and_second_run_reuses_cache(small_model_dir, tmp_path):
    s1 = run_training(_recipe(small_model_dir, tmp_path), tmp_path / "r1", progress=False)
    for key in ("algorithm", "steps", "train_loss_first", "train_loss_last", "eval", "reference_cache",
                "tokens_per_second", "peak_memory_mb", "data"):
        assert key in s1
    assert s1["algorithm"] == "dpo" and s1["steps"] == 12
    # Step 1: policy == reference, so every h = 0 and the DPO loss is exactly log 2.
    assert abs(s1["train_loss_first"] - 0.693147) < 1e-4
    assert s1["train_loss_last"] < s1["train_loss_first"] - 0.05
    rc = s1["reference_cache"]
    # Entries are (prompt, response) sequences: two per HH pair, all distinct here.
    assert rc["computed"] == 2 * (s1["data"]["train_lists"] + s1["data"]["eval_lists"]) > 0 and rc["hits"] == 0
    # Step 0: the policy's log-probs equal the cached reference's (the reference is the starting policy).
    assert s1["reference_check"]["step0_max_abs_diff"] < 1e-4
    assert s1["data"]["rows_read"] == 80 and s1["data"]["examples"] <= 80
    assert set(s1["eval"]["by_scorer"]) == {"logprob", "logprob_mean", "implicit", "implicit_mean"}
    assert s1["eval"]["n_pairs"] == s1["data"]["eval_lists"]
    assert json.loads((tmp_path / "r1" / "summary.json").read_text())["steps"] == 12
    # "before" comes from the cached reference log-probs (no second forward): equal to scoring the start model.
    from align.evaluation import evaluate_policy

    recipe = _recipe(small_model_dir, tmp_path)
    data = load_data(recipe, load_tokenizer(str(small_model_dir)))
    direct = evaluate_policy(load_model(s1["start_model"]), data.eval, progress=False)
    assert s1["eval_before"]["by_scorer"] == direct["by_scorer"]
    assert (tmp_path / "r1" / "model" / "config.json").exists()

    # Second run, another output dir: the SFT model is reused, so the reference weights are identical and the
    # cache computes nothing.
    s2 = run_training(_recipe(small_model_dir, tmp_path), tmp_path / "r2", progress=False)
    assert s2["reference_cache"]["computed"] == 0
    assert s2["reference_cache"]["hits"] == rc["computed"]
    assert s2["reference_cache"]["key"] == rc["key"]
    assert s2["start_model"] == s1["start_model"]



def test_a_subset_or_a_shuffled_copy_of_the_data_computes_nothing(small_model_dir, tmp_path):
    """Entries are addressed by their own token ids: any data set made of sequences seen before is all hits."""
    import gzip
    import random

    lines = gzip.open(HH, "rt").read().splitlines()[:80]
    random.Random(0).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    plain = {"sft.enabled": "false", "train.max_steps": 1}
    first = run_training(_recipe(small_model_dir, tmp_path, **plain), tmp_path / "a", progress=False)
    assert first["reference_cache"]["computed"] > 0
    subset = run_training(_recipe(small_model_dir, tmp_path, **plain, **{"data.max_rows": 30}), tmp_path / "b",
                          progress=False)
    assert subset["reference_cache"]["computed"] == 0 and subset["reference_cache"]["hits"] > 0
    # the shuffled copy splits train/eval differently: every sequence is still one seen before
    again = run_training(_recipe(small_model_dir, tmp_path, **plain, **{"data.train": str(shuffled)}), tmp_path / "c",
                         progress=False)
    assert again["reference_cache"]["key"] == first["reference_cache"]["key"]
    assert again["reference_cache"]["computed"] == 0
    assert again["reference_cache"]["hits"] == first["reference_cache"]["computed"]


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def test_resume_reproduces_uninterrupted_run(small_model_dir, tmp_path):
    tok = load_tokenizer(str(small_model_dir))
    examples, _ = load_examples(HH, max_rows=48)
    lists, _ = tokenize_examples(examples, tok, max_prompt_length=32, max_response_length=24)
    ref, _ = score_lists(load_model(str(small_model_dir)), lists, pad_token_id=tok.pad_token_id)
    refs = [ref[i, : len(t.response_ids)].tolist() for i, t in enumerate(lists)]

    def trainer(out, callbacks=()):
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, max_steps=8, learning_rate=1e-3,
                                 save_steps=4, report_to="none", use_cpu=True, seed=3, logging_steps=1)
        return DPOTrainer(load_model(str(small_model_dir)), args, DPOLossConfig(), ListDataset(lists, refs),
                          processing_class=tok, callbacks=list(callbacks))

    straight = trainer(tmp_path / "straight")
    straight.train()
    interrupted = trainer(tmp_path / "resumed", [_StopAt(4)])
    interrupted.train()
    assert interrupted.state.global_step == 4 and (tmp_path / "resumed" / "checkpoint-4").exists()
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))
    assert resumed.state.global_step == 8
    losses = lambda t: [h["loss"] for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert losses(resumed)[-4:] == losses(straight)[-4:] or torch.allclose(
        torch.tensor(losses(resumed)[-4:]), torch.tensor(losses(straight)[-4:]), rtol=1e-5)
    for (n, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"resumed weights differ at {n}")


def test_lora_run_reference_is_base_model(small_model_dir, tmp_path):
    overrides = {"peft.enabled": "true", "peft.r": 4, "train.max_steps": 4, "sft.enabled": "false"}
    s = run_training(_recipe(small_model_dir, tmp_path, **overrides), tmp_path / "lora", progress=False)
    # The reference is the base model with the adapter disabled: its log-probs equal the plain model's, so a
    # plain (non-PEFT) run on the same data hits the same cache entries.
    assert s["reference_cache"]["computed"] > 0
    plain = run_training(_recipe(small_model_dir, tmp_path, **{"train.max_steps": 1, "sft.enabled": "false"}),
                         tmp_path / "plain", progress=False)
    assert plain["reference_cache"]["key"] == s["reference_cache"]["key"]
    assert plain["reference_cache"]["computed"] == 0
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "lora" / "model" / "config.json").exists()  # merged, loadable by `align eval --model`
    assert abs(s["train_loss_first"] - 0.693147) < 1e-4  # adapter starts at zero: policy == reference


def test_a_run_from_an_existing_adapter_keeps_it_as_its_reference(small_model_dir, tmp_path):
    """Starting from a trained adapter, the reference is base + that adapter (a frozen copy), never the bare base:
    at step 0 the policy equals it, and its values are the merged model's."""
    lora = {"peft.enabled": "true", "peft.r": 4, "sft.enabled": "false"}
    first = run_training(_recipe(small_model_dir, tmp_path, **lora, **{"train.max_steps": 6}), tmp_path / "lora",
                         progress=False)
    adapter = tmp_path / "lora" / "adapter"
    again = run_training(_recipe(small_model_dir, tmp_path, **lora, **{"model.name_or_path": str(adapter),
                                                                       "train.max_steps": 2}),
                         tmp_path / "again", progress=False)
    assert again["reference_cache"]["key"] != first["reference_cache"]["key"]  # not the bare base
    assert again["reference_cache"]["computed"] > 0
    assert again["reference_check"]["step0_max_abs_diff"] < 1e-4
    assert abs(again["train_loss_first"] - 0.693147) < 1e-4
    # The cached reference values are those of base + the first run's adapter (its merged model).
    from align.reference import CachedReference, ReferenceIdentity, ReferenceStore

    tok = load_tokenizer(str(small_model_dir))
    merged = load_model(str(tmp_path / "lora" / "model"))
    data = load_data(_recipe(small_model_dir, tmp_path), tok)
    lists = data.eval[:6]
    root = tmp_path / "refcache"
    key = again["reference_cache"]["key"]
    identity = ReferenceIdentity(**json.loads((root / key / "manifest.json").read_text())["identity"])
    cached = CachedReference(ReferenceStore(root, identity), None).list_logps(lists)
    direct, _ = score_lists(merged, lists, pad_token_id=tok.pad_token_id)
    for got, want in zip(cached, direct):
        assert got == pytest.approx(want[: len(got)].tolist(), abs=1e-4)
    bare, _ = score_lists(load_model(str(small_model_dir)), lists, pad_token_id=tok.pad_token_id)
    assert (bare - direct).nan_to_num().abs().max() > 1e-3  # the adapter matters: the test can fail
    # the saved result has no trace of the frozen reference copy
    assert not list((tmp_path / "again" / "adapter").glob("reference*"))
