"""Resolve a model name (``embedded:tiny``, a local path, or a hub id) and load model and tokenizer."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger("align")

EMBEDDED = "embedded:tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def align_home() -> Path:
    """Where built models, SFT checkpoints and reference caches live: ``$ALIGN_HOME`` or ``~/.cache/align``."""
    return Path(os.environ.get("ALIGN_HOME", Path.home() / ".cache" / "align"))


def resolve_model_path(name: str) -> str:
    """``embedded:tiny`` → the built local directory; anything else is passed through to ``from_pretrained``."""
    if name == EMBEDDED:
        from align.models.tiny import ensure_tiny

        return str(ensure_tiny(align_home() / "models"))
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it has a pad token (falls back to eos)."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (``float32`` | ``bfloat16`` | ``float16`` | ``auto``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=DTYPES[dtype])


def is_adapter(name: str) -> bool:
    """True if ``name`` is a local PEFT adapter directory (``adapter_config.json``), not a full model."""
    return (Path(resolve_model_path(name)) / "adapter_config.json").is_file()


def load_policy(name: str, dtype: str = "float32") -> torch.nn.Module:
    """A causal LM to train. A PEFT adapter directory loads as its base model with that adapter trainable, plus
    a frozen copy of the adapter under :data:`align.reference.REFERENCE_ADAPTER`: the run's reference is then
    base + the adapter it started from, never the bare base."""
    if not is_adapter(name):
        return load_model(name, dtype)
    from peft import PeftModel

    from align.reference.build import REFERENCE_ADAPTER

    path = resolve_model_path(name)
    base_name = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ValueError(f"{path}/adapter_config.json names no base_model_name_or_path")
    policy = PeftModel.from_pretrained(load_model(base_name, dtype), path, is_trainable=True)
    policy.load_adapter(path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    policy.set_adapter("default")
    for n, p in policy.named_parameters():  # set_adapter leaves only the active adapter trainable; make sure
        if f".{REFERENCE_ADAPTER}." in n:
            p.requires_grad_(False)
    return policy


MODEL_INFO = "align_model.json"  # written beside every model `align train` saves


def read_model_info(name: str) -> dict:
    """What ``align train`` recorded beside a saved model (kind, algorithm, β, the reference it was trained
    against), or ``{}`` for any other model."""
    path = Path(resolve_model_path(name)) / MODEL_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable {path}: {e}") from e
    if not isinstance(info, dict):
        raise ValueError(f"unreadable {path}: expected a JSON object, got {type(info).__name__}")
    return info


def is_reward_model(name: str) -> bool:
    """True if ``name``'s config declares a sequence-classification architecture (a scalar-head reward model)."""
    config = AutoConfig.from_pretrained(resolve_model_path(name))
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_reward_model(name: str, dtype: str = "float32", tokenizer: PreTrainedTokenizerBase | None = None):
    """A scalar-head reward model (``AutoModelForSequenceClassification``, one label). From a causal LM the head
    is new (randomly initialised), which is how reward-model training starts. The pad id the head pools by is
    set from ``tokenizer``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "num_labels", 1) != 1 and is_reward_model(name):
        raise ValueError(f"{name} has {config.num_labels} output labels; a reward model has exactly one")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=DTYPES[dtype])
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.pad_token_id == tokenizer.eos_token_id:
            log.warning("pad token = eos token: the reward is read at the last token that is not eos")
    return model
