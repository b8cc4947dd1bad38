"""Resolve a model name (``embedded:tiny``, a local path, or a hub id) and load model and tokenizer."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
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

from align.errors import ConfigError, ModelError

log = logging.getLogger("align")

EMBEDDED = "embedded:tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def align_home() -> Path:
    """Where built models, SFT checkpoints and reference caches live: ``$ALIGN_HOME`` or ``~/.cache/align``."""
    return Path(os.environ.get("ALIGN_HOME", Path.home() / ".cache" / "align"))


def is_embedded(name: str) -> bool:
    """Whether ``name`` is the embedded model: ``embedded:tiny`` or ``embedded:tiny?corpus=DIR``."""
    return name == EMBEDDED or name.startswith(EMBEDDED + "?")


def embedded_corpus(name: str, key: str = "model.name_or_path") -> str | None:
    """The ``corpus`` folder of ``embedded:tiny?corpus=DIR`` (None for plain ``embedded:tiny``: then
    ``$ALIGN_DATA_DIR``, else no corpus). A relative folder is taken from the working directory, as data paths are."""
    if name == EMBEDDED:
        return None
    from urllib.parse import parse_qs

    query = parse_qs(name[len(EMBEDDED) + 1:], keep_blank_values=True)
    if set(query) != {"corpus"} or len(query["corpus"]) != 1 or not query["corpus"][0]:
        raise ConfigError(f"{key}: {name!r}: the embedded model takes one setting, corpus=DIR (the folder of the "
                          "preference files its tokenizer is trained on)")
    return query["corpus"][0]


def resolve_model_path(name: str, key: str = "model.name_or_path") -> str:
    """``embedded:tiny`` (``?corpus=DIR``: its tokenizer's corpus) → the built local directory; a local path as it
    is; a hub id once it is known to be loadable (see :func:`check_hub_id`)."""
    if is_embedded(name):
        from align.models.tiny import corpus_files, ensure_tiny

        return str(ensure_tiny(align_home() / "models", files=corpus_files(embedded_corpus(name, key))))
    if not Path(name).expanduser().exists():
        check_hub_id(name, key)
    return name


_HUB_REACHABLE: bool | None = None


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connection to the hub (cached per process), instead of Transformers' 30–50 s of retries."""
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        import socket
        from urllib.parse import urlparse

        from huggingface_hub import constants

        url = urlparse(constants.ENDPOINT)
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
                _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def check_hub_id(name: str, key: str = "model.name_or_path") -> None:
    """A name that is not a local path is a hub id: fine if it is in the local Hugging Face cache or the hub can be
    reached; else a clear error naming ``key`` and the id and saying what to do."""
    from huggingface_hub import constants, try_to_load_from_cache

    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".json", ".bin"))
    if looks_like_path:
        raise ModelError(f"{key}: no such directory: {name} (looked from {Path.cwd()})")
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub id either
        raise ModelError(f"{key}: no such directory, and not a hub id: {name}") from None
    if cached or (not constants.HF_HUB_OFFLINE and _hub_reachable()):
        if cached and not constants.HF_HUB_OFFLINE and not _hub_reachable():
            os.environ["HF_HUB_OFFLINE"] = "1"  # use the cached copy at once instead of retrying for a minute
            constants.HF_HUB_OFFLINE = True
        return
    raise ModelError(f"{key}: {name!r} is neither a local directory nor in the Hugging Face cache, and the hub "
                     f"{'is switched off (HF_HUB_OFFLINE=1)' if constants.HF_HUB_OFFLINE else 'cannot be reached'}. "
                     f"Download it once where there is network (`hf download {name}`), copy it here and point {key} "
                     "at the local directory; or run where the hub is reachable.")


def load_tokenizer(name: str, key: str = "model.name_or_path") -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it has a pad token (falls back to eos); ``key`` names the setting in errors."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name, key))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def _naming_pickled_files(path: str):
    """Turn the ``weights_only`` refusal of a pickled weights file (an ``UnpicklingError`` deep in Transformers)
    into a one-line error naming the file."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as e:
        files = sorted(str(f) for f in Path(path).glob("*.bin")) or [path]
        found = re.search(r"unsupported GLOBAL [\w.]+", str(e))
        raise ModelError(f"{', '.join(files)}: refused: it holds pickled objects, not plain tensors"
                         f"{f' ({found.group(0)})' if found else ''}; use safetensors weights") from None


def load_model(name: str, dtype: str = "float32", key: str = "model.name_or_path") -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (``float32`` | ``bfloat16`` | ``float16`` | ``auto``); ``key`` names the
    setting in errors. Pickled weights (``pytorch_model.bin`` holding objects) are refused, naming the file."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name, key)
    with _naming_pickled_files(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])


# The PEFT adapter name under which a run that starts from an existing adapter keeps a frozen copy of it: the
# reference is then base + that adapter, never the bare base (:mod:`align.reference.build` reads it).
REFERENCE_ADAPTER = "reference"


def is_adapter(name: str) -> bool:
    """True if ``name`` is a local PEFT adapter directory (``adapter_config.json``), not a full model."""
    return (Path(resolve_model_path(name)) / "adapter_config.json").is_file()


def load_policy(name: str, dtype: str = "float32") -> torch.nn.Module:
    """A causal LM to train. A PEFT adapter directory loads as its base model with that adapter trainable, plus
    a frozen copy of the adapter under :data:`REFERENCE_ADAPTER`: the run's reference is then
    base + the adapter it started from, never the bare base."""
    if not is_adapter(name):
        return load_model(name, dtype)
    from peft import PeftModel

    path = resolve_model_path(name)
    base_name = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path")
    with _naming_pickled_files(path):
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
    path = Path(resolve_model_path(name, "--model")) / MODEL_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"unreadable {path}: {e}") from e
    if not isinstance(info, dict):
        raise ModelError(f"unreadable {path}: expected a JSON object, got {type(info).__name__}")
    return info


def is_reward_model(name: str) -> bool:
    """True if ``name``'s config declares a sequence-classification architecture (a scalar-head reward model)."""
    config = AutoConfig.from_pretrained(resolve_model_path(name, "--model"))
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_reward_model(name: str, dtype: str = "float32", tokenizer: PreTrainedTokenizerBase | None = None):
    """A scalar-head reward model (``AutoModelForSequenceClassification``, one label). From a causal LM the head
    is new (randomly initialised), which is how reward-model training starts. The pad id the head pools by is
    set from ``tokenizer``."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "num_labels", 1) != 1 and is_reward_model(name):
        raise ModelError(f"{name} has {config.num_labels} output labels; a reward model has exactly one")
    with _naming_pickled_files(path):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=DTYPES[dtype])
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.pad_token_id == tokenizer.eos_token_id:
            log.warning("pad token = eos token: the reward is read at the last token that is not eos")
    return model


def check_finite_weights(model: torch.nn.Module, name: str, use: str = "it cannot be evaluated") -> torch.nn.Module:
    """``model``, or a clear error if any weight is NaN or infinite (a broken run's model scores garbage and
    sampling from it fails deep in ``generate``); ``use`` ends the message."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ModelError(f"{name} has non-finite weights ({len(bad)} tensors with NaN or inf, e.g. {bad[0]}): {use}")
    return model
