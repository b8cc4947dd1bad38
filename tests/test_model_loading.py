"""Model loading: reward-model detection and loading, and the ``align_model.json`` beside saved models."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from align.models import load_tokenizer
from align.models.loading import MODEL_INFO, is_reward_model, load_reward_model, read_model_info


@pytest.fixture(scope="module")
def tok(small_tokenizer):
    return small_tokenizer


@pytest.fixture(scope="module")
def reward_dir(small_reward_model_dir):
    return small_reward_model_dir


def test_is_reward_model(small_model_dir, reward_dir):
    assert is_reward_model(str(small_model_dir)) is False  # a causal LM
    assert is_reward_model(str(reward_dir)) is True


def test_load_reward_model_from_a_causal_lm(small_model_dir, tok):
    model = load_reward_model(str(small_model_dir), tokenizer=tok)
    assert isinstance(model, torch.nn.Module) and model.config.num_labels == 1
    assert model.score.out_features == 1
    assert model.config.pad_token_id == tok.pad_token_id
    # the body is the language model's (only the head is new)
    lm = AutoModelForCausalLM.from_pretrained(str(small_model_dir))
    torch.testing.assert_close(model.model.embed_tokens.weight, lm.model.embed_tokens.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.model.layers[-1].mlp.down_proj.weight, lm.model.layers[-1].mlp.down_proj.weight,
                               rtol=0, atol=0)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, tok.pad_token_id, tok.pad_token_id]])
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (2, 1)


def test_load_reward_model_reloads_a_saved_one_unchanged(reward_dir, tok):
    a = load_reward_model(str(reward_dir), tokenizer=tok)
    b = load_reward_model(str(reward_dir))
    assert a.config.num_labels == 1 and a.config.architectures[0].endswith("ForSequenceClassification")
    torch.testing.assert_close(a.score.weight, b.score.weight, rtol=0, atol=0)  # the head is loaded, not new


def test_load_reward_model_sets_pad_id_from_the_tokenizer_and_warns_on_eos(small_model_dir, caplog):
    eos_pad = load_tokenizer(str(small_model_dir))
    eos_pad.pad_token = eos_pad.eos_token
    with caplog.at_level(logging.WARNING, logger="align"):
        model = load_reward_model(str(small_model_dir), tokenizer=eos_pad)
    assert model.config.pad_token_id == eos_pad.eos_token_id != 0
    assert "pad token = eos token" in caplog.text


def test_load_reward_model_dtype(small_model_dir):
    assert load_reward_model(str(small_model_dir), dtype="bfloat16").score.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_reward_model(str(small_model_dir), dtype="float64")


def test_load_reward_model_refuses_a_multi_label_classifier(small_model_dir, tmp_path):
    AutoModelForSequenceClassification.from_pretrained(str(small_model_dir), num_labels=3).save_pretrained(tmp_path)
    assert is_reward_model(str(tmp_path))
    with pytest.raises(ValueError, match="3 output labels"):
        load_reward_model(str(tmp_path))


def test_read_model_info(tmp_path):
    assert read_model_info(str(tmp_path)) == {}
    info = {"kind": "reward", "algorithm": "reward", "beta": None, "reference": "some/model"}
    (tmp_path / MODEL_INFO).write_text(json.dumps(info))
    assert read_model_info(str(tmp_path)) == info


@pytest.mark.parametrize("text", ['{"kind": "reward", ', "", "not json", "\x00\x01"])
def test_read_model_info_corrupt_file_raises(tmp_path, text):
    (tmp_path / MODEL_INFO).write_text(text)
    with pytest.raises(ValueError, match="unreadable"):
        read_model_info(str(tmp_path))


@pytest.mark.parametrize("text", ["[]", "null"])
def test_read_model_info_non_object_raises(tmp_path, text):
    # Valid JSON that is not an object is as unusable as invalid JSON: callers do ``info.get("reference")``
    # (align/evaluation/run.py), so it must be refused here rather than crash there with AttributeError.
    (tmp_path / MODEL_INFO).write_text(text)
    with pytest.raises(ValueError, match="unreadable"):
        read_model_info(str(tmp_path))
