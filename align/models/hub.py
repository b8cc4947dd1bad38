"""What can be known of a model without its weights: its ``config.json`` (from a local directory, the hub cache, or
the hub) and the context length it declares; the recipe checks (:func:`align.config.preflight`) and ``align eval``
use it before anything heavy loads."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from align.errors import ConfigError

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_context_length(model_config: Any) -> tuple[int, str] | None:
    """The longest sequence a model takes and the config field that says so (the first of
    :data:`CONTEXT_FIELDS`, in the text config of a multimodal model), or None if its config names none.
    ``model_config``: a ``PretrainedConfig`` or a ``config.json`` as a dict."""
    if hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    elif isinstance(model_config, Mapping) and isinstance(model_config.get("text_config"), Mapping):
        model_config = model_config["text_config"]
    for name in CONTEXT_FIELDS:
        v = model_config.get(name) if isinstance(model_config, Mapping) else getattr(model_config, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v, name
    return None


def read_model_config(name: str, *, local_only: bool = False, key: str = "model.name_or_path") -> Any:
    """A model's config without its weights: ``transformers.AutoConfig`` (the raw ``config.json`` for an
    architecture this transformers does not know). ``embedded:tiny`` answers from its spec without building it.
    With ``local_only``, None when the config is not on this machine."""
    from transformers import AutoConfig, PretrainedConfig

    from align.models.loading import is_embedded, resolve_model_path  # torch and transformers: only when asked

    if is_embedded(name):
        from align.models.tiny import TinyShape

        return dataclasses.asdict(TinyShape())
    if local_only and not Path(name).expanduser().exists():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
        except ValueError:  # not even a valid hub id (a path that does not exist)
            cached = False
        if not cached:
            return None  # not on this machine: the check is left to the load, which names the problem
    path = resolve_model_path(name, key)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=local_only)
    except ValueError:  # an architecture unknown to this transformers: the raw config.json still says its context
        return PretrainedConfig.get_config_dict(path, local_files_only=local_only)[0]
    except OSError:
        if local_only:
            return None
        raise


def check_lengths_against_model(lengths: Any, model_config: Any, *,
                                keys: tuple[str, str] = ("data.max_prompt_length", "data.max_response_length"),
                                model: str | None = None) -> None:
    """``max_prompt_length + max_response_length`` must fit the model's context (see :func:`model_context_length`).

    Args:
        lengths: a :class:`~align.config.Recipe` (its ``data`` lengths) or ``(max_prompt_length, max_response_length)``.
        model_config: a ``PretrainedConfig``, a ``config.json`` dict, or a model name / path to read one from.
        keys: how the two settings are named in the error (``--max-prompt-length`` ... for ``align eval``).
        model: the model's name, for the error.
    """
    if not isinstance(lengths, tuple):  # a Recipe
        lengths = (lengths.data.max_prompt_length, lengths.data.max_response_length)
    if isinstance(model_config, (str, Path)):
        model, model_config = model or str(model_config), read_model_config(str(model_config))
    found = model_context_length(model_config)
    if found is None:
        return
    limit, field_name = found
    prompt, response = lengths
    if prompt + response > limit:
        raise ConfigError(f"{keys[0]} + {keys[1]} = {prompt} + {response} = {prompt + response} exceeds the "
                          f"context of {model or 'the model'} ({field_name}={limit} in its config.json); "
                          f"lower them to {limit} tokens together")
