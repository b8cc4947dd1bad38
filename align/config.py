"""Recipes: YAML → typed, validated config dataclasses, before any model is loaded.

Why not ``HfArgumentParser.parse_dict``: it checks key names but not value types or nested sections, and a
recipe typo should fail in a second with the dotted key named, not an hour into a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe that does not validate; the message names the dotted key."""


@dataclass
class ModelConfig:
    """Which model to train. ``embedded:tiny`` builds the offline default; else a hub id or a local path."""

    name_or_path: str = "embedded:tiny"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    reference: str | None = None  # default: the policy's starting weights (after SFT, if any)
    disable_dropout: bool = True


@dataclass
class DataConfig:
    """Where the ranked lists come from and how they are tokenized."""

    train: str = "../shared/data/hh_rlhf_harmless_base.jsonl.gz"
    eval: str | None = None  # a separate file; else a held-out fraction of train, split by prompt hash
    format: Literal["auto", "hh", "trl", "ranked", "oasst"] = "auto"
    split: str = "train"  # for hub datasets
    eval_fraction: float = 0.1
    max_rows: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_prompt_length: int = 512
    max_response_length: int = 512
    truncation: Literal["truncate", "drop"] = "truncate"
    strict: bool = False
    # The data's field names -> the formats' (prompt, chosen, rejected, responses, ranks, scores, subset, ...),
    # e.g. {question: prompt, response_j: chosen, response_k: rejected}
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from align.data.formats import check_columns  # the formats own their field names

        try:
            self.columns = check_columns(self.columns)
        except ValueError as e:
            raise ValueError(f"data.{e}") from e


@dataclass
class SFTStage:
    """An optional short SFT on the preferred responses before alignment (TRL's SFTTrainer)."""

    enabled: bool = False
    max_steps: int = 100
    learning_rate: float = 1e-3
    batch_size: int = 16
    warmup_steps: int = 10


@dataclass
class ReferenceConfig:
    """The shared reference log-prob cache."""

    cache_dir: str | None = None  # default: $ALIGN_HOME/reference (~/.cache/align/reference)
    batch_size: int = 16
    shard_size: int = 512
    on_corrupt: Literal["recompute", "error"] = "recompute"


@dataclass
class PeftSection:
    """LoRA through PEFT. The reference is then the base model with the adapter disabled."""

    enabled: bool = False
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainSection:
    """The usual ``transformers.TrainingArguments``; ``extra`` passes any other field through unchanged."""

    learning_rate: float = 5e-6
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    report_to: str | list[str] = "none"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSection:
    """Ranking evaluation on the held-out lists, before and after training."""

    enabled: bool = True
    batch_size: int = 16


@dataclass
class Recipe:
    """A whole run. ``loss`` is validated against the chosen algorithm's loss config."""

    algorithm: str = "dpo"
    output_dir: str = "runs/{algorithm}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    peft: PeftSection = field(default_factory=PeftSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    loss: Any = None


def _check(tp: Any, value: Any, key: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in args:
            try:
                return _check(arm, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string; accept what is plainly a number
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {_name(tp)}, got {type(value).__name__} {value!r}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError with the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown key '{where}' (known here: {', '.join(sorted(names))})")
    kwargs = {k: _check(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in kwargs]
    if missing:
        where = ", ".join(f"'{prefix}.{k}'" if prefix else f"'{k}'" for k in missing)
        raise ConfigError(f"missing required key {where}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a config's own checks (__post_init__)
        raise ConfigError(str(e)) from e


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[last] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """``["train.learning_rate=1e-5", "loss.beta=0.2"]`` → dotted keys with YAML-parsed values."""
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        out.append((k.strip(), yaml.safe_load(v) if v.strip() else None))
    return out


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply dotted overrides, validate everything (including the algorithm's loss)."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read recipe {path}: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"recipe {path} must be a mapping at the top level")
    for k, v in parse_overrides(overrides or []):
        _set_dotted(tree, k, v)
    loss = tree.pop("loss", None) or {}
    recipe = from_dict(Recipe, tree)
    from align.trainers import ALGORITHMS  # the registry names each algorithm's loss config

    if recipe.algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: unknown {recipe.algorithm!r}; choose from {sorted(ALGORITHMS)}")
    recipe.loss = _check(ALGORITHMS[recipe.algorithm].config, loss, "loss")
    recipe.output_dir = recipe.output_dir.format(algorithm=recipe.algorithm)
    return recipe


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain-data form of a recipe (written beside every run as ``recipe.json``)."""
    return dataclasses.asdict(recipe)
