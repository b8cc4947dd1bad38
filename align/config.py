"""Recipes: YAML → typed, validated config dataclasses, before any data or model is loaded.

Why not ``HfArgumentParser.parse_dict``: it checks key names but not value types, ranges or nested sections, and
a recipe typo should fail in a second with the dotted key named, not an hour into a run. Every error is one
line naming the dotted key; unknown keys get a "did you mean" and, for TRL / ``TrainingArguments`` names, the
align key that does the same job.

Checks that need this machine or the model's ``config.json`` (but no weights and no data) are separate, so a
GPU recipe still loads on a laptop: :func:`preflight` (mixed precision needs CUDA; sequence lengths fit the
model's context). :func:`training_kwargs` turns a recipe into ``transformers.TrainingArguments`` keywords.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml

from align.errors import ConfigError
from align.models.hub import (  # noqa: F401  (importable from here as before)
    CONTEXT_FIELDS,
    check_lengths_against_model,
    model_context_length,
    read_model_config,
)
from align.rewards.spec import RewardSpec
from align.training_args import ALIGN_SETS, EQUIVALENTS, training_argument_fields
from align.validation import (  # noqa: F401  (check_fields, check_choices: importable from here as before)
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY_OPEN,
    Range,
    _did_you_mean,
    _name,
    _one_of,
    check_choices,
    check_fields,
    check_number,
    check_value,
)


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

    train: str = ""  # a file, a directory, a hub dataset name or a built-in task (task:NAME?...); no default
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
    # (data.train's; a data.eval file is read with eval_columns, or with the standard names when that is unset)
    columns: dict[str, str] = field(default_factory=dict)
    eval_columns: dict[str, str] | None = None

    def __post_init__(self) -> None:
        from align.data.formats import check_columns  # the formats own their field names

        try:
            self.columns = check_columns(self.columns)
        except ValueError as e:
            raise ConfigError(f"data.{e}") from e
        if self.eval_columns is not None:
            try:
                self.eval_columns = check_columns(self.eval_columns)
            except ValueError as e:
                raise ConfigError(f"data.eval_{e}") from e


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
    audit_samples: int = 64  # cache hits re-scored by the reference before training and compared; 0: off


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
    """The usual ``transformers.TrainingArguments``, same names and meanings; ``extra`` passes any other
    ``TrainingArguments`` field through (checked against the installed transformers before anything loads).

    ``warmup_steps`` below 1 is a fraction of the total steps (transformers 5 dropped ``warmup_ratio`` for this).
    ``max_steps`` -1 trains for ``num_train_epochs``. ``push_to_hub`` needs ``hub_model_id``: the trainer's own
    output directory is ``<output_dir>/checkpoints``, which would otherwise name the hub repository.
    ``on_non_finite`` is align's own (not a ``TrainingArguments`` field): ``error`` stops a run at a NaN or
    infinite loss or gradient, naming the step and the batch's rows; ``skip`` skips and counts it.
    """

    learning_rate: float = 5e-6
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    warmup_steps: int | float = 0
    lr_scheduler_type: str = "linear"
    optim: str = "adamw_torch_fused"  # transformers' default; any name of transformers.training_args.OptimizerNames
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    eval_strategy: Literal["no", "steps", "epoch"] = "no"  # loss on the held-out lists during training
    eval_steps: int | None = None  # default: logging_steps
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 42
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    report_to: str | list[str] = "none"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    on_non_finite: Literal["error", "skip"] = "error"  # align's own: a NaN/inf loss or gradient stops the run or
    # is skipped and counted (align.trainers.guards); not passed to TrainingArguments
    packing: bool = True  # align's own: each list's prompt once, lists packed per row, chunked log-probs (policy
    # training, reference cache, evaluation); false: one padded row per response. Not passed to TrainingArguments
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSection:
    """Ranking evaluation on the held-out lists, before and after training."""

    enabled: bool = True
    batch_size: int = 16


@dataclass
class IterateSection:
    """``align iterate``: rounds of sampling from the current policy, scoring, and offline training on the result.

    Attributes:
        rounds: how many rounds.
        prompts: the prompt source (a file, a hub name or ``task:NAME?...``); default ``data.train``.
        prompts_per_round: prompts sampled each round (a new slice of the prompts each round while they last).
        num_samples: N, completions per prompt.
        temperature, top_p: sampling settings.
        max_completion_length: completion length limit (tokens).
        build: ``best_worst`` (one pair per prompt: the best and the worst sample) or ``lists`` (all distinct
            samples, ranked by reward).
        rewards: the reward sources that rank the samples.
        eval_prompts: held-out prompts scored by sampling before the first and after every round.
        eval_samples: completions per held-out prompt.
        sample_batch_size: prompts per ``generate`` call.
    """

    rounds: int = 2
    prompts: str | None = None
    prompts_per_round: int = 64
    num_samples: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 64
    build: Literal["best_worst", "lists"] = "best_worst"
    rewards: list[RewardSpec] = field(default_factory=list)
    eval_prompts: int = 32
    eval_samples: int = 4
    sample_batch_size: int = 64


@dataclass
class Recipe:
    """A whole run. ``loss`` is validated against the chosen algorithm's loss config: :data:`align.losses.LOSSES`
    names each algorithm's loss (the trainers that run them, :data:`align.trainers.ALGORITHMS`, are the runs')."""

    algorithm: str = "dpo"
    output_dir: str = "runs/{algorithm}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    peft: PeftSection = field(default_factory=PeftSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    iterate: IterateSection = field(default_factory=IterateSection)
    loss: Any = None
    # The directory of the YAML file it was loaded from (None when built in Python): relative data paths and reward
    # modules are looked up there first. Not a field, so not a recipe key and not in recipe.json.
    recipe_dir = None


# Every int/float setting of every recipe section (tests/test_config.py checks none is missing). The loss configs
# range-check their own fields in __post_init__, so they hold in Python use too.
RANGES: dict[type, dict[str, Range]] = {
    DataConfig: {"eval_fraction": PROBABILITY_OPEN, "max_rows": COUNT, "max_train_examples": COUNT,
                 "max_eval_examples": COUNT, "max_prompt_length": COUNT, "max_response_length": COUNT},
    SFTStage: {"max_steps": COUNT, "learning_rate": POSITIVE, "batch_size": COUNT,
               "warmup_steps": Range(0, integer=True)},
    ReferenceConfig: {"batch_size": COUNT, "shard_size": COUNT, "audit_samples": Range(0, integer=True)},
    PeftSection: {"r": COUNT, "lora_alpha": COUNT, "lora_dropout": PROBABILITY_OPEN},
    TrainSection: {
        "learning_rate": POSITIVE, "per_device_train_batch_size": COUNT, "per_device_eval_batch_size": COUNT,
        "gradient_accumulation_steps": COUNT, "num_train_epochs": POSITIVE,
        "max_steps": Range(1, integer=True, also=(-1,)), "warmup_steps": NON_NEGATIVE,
        "adam_beta1": PROBABILITY_OPEN, "adam_beta2": PROBABILITY_OPEN, "weight_decay": NON_NEGATIVE,
        "max_grad_norm": NON_NEGATIVE, "logging_steps": COUNT, "eval_steps": COUNT, "save_steps": COUNT,
        "save_total_limit": COUNT, "seed": Range(0, 2**32 - 1, integer=True)},  # numpy's seed range
    EvalSection: {"batch_size": COUNT},
    IterateSection: {"rounds": COUNT, "prompts_per_round": COUNT, "num_samples": Range(2, integer=True),
                     "temperature": POSITIVE, "top_p": Range(0, 1, low_open=True),
                     "max_completion_length": COUNT, "eval_prompts": Range(0, integer=True),
                     "eval_samples": COUNT, "sample_batch_size": COUNT},
    RewardSpec: {"weight": Range()},
}


def _choices() -> dict[str, list[str]]:
    """String settings whose values transformers enumerates (dotted key → allowed values)."""
    from transformers import SchedulerType
    from transformers.training_args import OptimizerNames

    return {"train.lr_scheduler_type": [s.value for s in SchedulerType],
            "train.optim": [o.value for o in OptimizerNames]}


# ---------------------------------------------------------------------------------------------------------------
# parsing: types, unknown keys


def _check(tp: Any, value: Any, key: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``key``; a section (a dataclass) is built by from_dict."""
    return check_value(tp, value, key, build=from_dict)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError with the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(unknown_key_message(prefix, str(k), names))
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


def _sections() -> dict[str, type]:
    """A recipe's sections: name → dataclass (``loss`` depends on the algorithm and is not one of them)."""
    hints = typing.get_type_hints(Recipe)
    return {f.name: hints[f.name] for f in dataclasses.fields(Recipe) if dataclasses.is_dataclass(hints[f.name])}


def _known_elsewhere(section: str, key: str) -> list[str]:
    """Dotted keys named ``key`` in other sections of a recipe, the ``loss`` of any algorithm included."""
    from align.losses import LOSSES

    found = [f"{name}.{key}" for name, cls in _sections().items()
             if name != section and key in {f.name for f in dataclasses.fields(cls)}]
    if section != "loss" and any(key in {f.name for f in dataclasses.fields(s.config)} for s in LOSSES.values()):
        found.append(f"loss.{key}")
    if section and key in {f.name for f in dataclasses.fields(Recipe)}:
        found.append(key)
    return found


def unknown_key_message(section: str, key: str, names: Iterable[str]) -> str:
    """One line for an unknown ``section.key``: the align key that does its job (for TRL / TrainingArguments
    names), else the closest known key of the section, else the known keys."""
    where = f"{section}.{key}" if section else key
    head = f"unknown key '{where}'"
    if section == "train" and key in ALIGN_SETS:
        return f"{head}: align sets {key} itself; {ALIGN_SETS[key]}"
    elsewhere = _known_elsewhere(section, key)
    if key in EQUIVALENTS:
        also = [k for k in elsewhere if k not in EQUIVALENTS[key]]
        return f"{head}: {EQUIVALENTS[key]}" + (f" (also a key: {', '.join(also)})" if also else "")
    if elsewhere:
        return f"{head}: did you mean {' or '.join(repr(k) for k in elsewhere)}?"
    if section == "train" and key in training_argument_fields():
        return (f"{head}: {key} is a transformers.TrainingArguments field without its own recipe key; "
                f"set it as train.extra.{key}")
    hint = _did_you_mean(key, names, f"{section}." if section else "")
    if hint:
        return head + hint
    return f"{head} (known here: {', '.join(sorted(names))})"


# ---------------------------------------------------------------------------------------------------------------
# train.extra and TrainingArguments


def _simple_arms(tp: Any) -> tuple[Any, ...] | None:
    """The arms of ``tp`` if every one is a plain scalar type (int, float, bool, str, None, an Enum, a Literal)."""
    arms = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    simple = all(a in (int, float, bool, str, type(None)) or typing.get_origin(a) is Literal
                 or (isinstance(a, type) and issubclass(a, Enum)) for a in arms)
    return arms if simple else None


def _check_extra_value(tp: Any, value: Any, key: str) -> Any:
    """One ``train.extra`` value checked against the TrainingArguments field's type where that type is simple
    (a float given as YAML 1.1 reads ``1e-6``, a string, becomes the float)."""
    arms = _simple_arms(tp)
    if arms is None:
        return value
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, Enum)]
    if enums and isinstance(value, str):
        allowed = [m.value for e in enums for m in e]
        if value not in allowed:
            raise ConfigError(f"{key}: {_one_of(allowed, value)}")
        return value
    for arm in arms:
        if arm is type(None) and value is None:
            return value
        if typing.get_origin(arm) is Literal and any(type(value) is type(a) and value == a
                                                       for a in typing.get_args(arm)):
            return value
        if arm in (bool, int, str) and type(value) is arm:
            return value
        if arm is float and str not in arms:
            try:
                number = _check(float, value, key)
            except ConfigError:
                continue
            check_number(key, number, Range())
            return value if type(value) is int else number
    names = " | ".join("null" if a is type(None) else _name(a) for a in arms)
    raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")


def check_train_extra(extra: Mapping[str, Any], prefix: str = "train.extra") -> dict[str, Any]:
    """``extra`` checked: every key a ``transformers.TrainingArguments`` field that align does not set itself and
    that has no key of its own in ``train``; values of simple types type-checked (floats finite, and a float
    written ``1e-6``, which YAML 1.1 reads as a string, converted)."""
    import transformers

    fields = training_argument_fields()
    own = {f.name for f in dataclasses.fields(TrainSection)} - {"extra"}
    out = {}
    for k, v in extra.items():
        key = f"{prefix}.{k}"
        if k in ALIGN_SETS:
            raise ConfigError(f"{key}: align sets {k} itself; {ALIGN_SETS[k]}")
        if k in own:
            raise ConfigError(f"{key}: train.{k} is a recipe key of its own; set train.{k}, not train.extra.{k}")
        if k not in fields:
            why = EQUIVALENTS.get(k) or (f"not a field of transformers.TrainingArguments (transformers "
                                         f"{transformers.__version__}){_did_you_mean(k, fields)}")
            raise ConfigError(f"{key}: {why}")
        out[k] = _check_extra_value(fields[k], v, key)
    return out


def training_kwargs(recipe: Recipe, output_dir: str | Path) -> dict[str, Any]:
    """Keyword arguments of ``transformers.TrainingArguments`` for ``recipe``'s run in ``output_dir``: the
    ``train`` section, then ``train.extra``, then what align sets itself (:data:`ALIGN_SETS`).

    ``train.gradient_checkpointing`` is passed as ``activation_checkpointing`` (its name since transformers 5):
    the old name warns on every construction, even when false.
    """
    import torch

    t = recipe.train
    kw = {k: v for k, v in vars(t).items()
          if k not in ("extra", "gradient_checkpointing", "on_non_finite", "packing")}
    new_name = "activation_checkpointing" in training_argument_fields()
    kw["activation_checkpointing" if new_name else "gradient_checkpointing"] = t.gradient_checkpointing
    kw.update(t.extra)
    kw["ddp_find_unused_parameters"] = False  # every trainable parameter gets a gradient: skip DDP's extra pass
    kw.update(output_dir=str(Path(output_dir) / "checkpoints"), logging_first_step=True, save_strategy="steps",
              use_cpu=not torch.cuda.is_available(), disable_tqdm=False, remove_unused_columns=False)
    if not torch.cuda.is_available():
        kw.setdefault("dataloader_pin_memory", False)  # nothing to pin to; torch warns at every data loader
    return kw


# ---------------------------------------------------------------------------------------------------------------
# whole-recipe checks


def validate_recipe(recipe: Recipe) -> None:
    """Every range and cross-field rule of a recipe's sections (the loss config checks itself when built).
    :func:`load_recipe` calls it; call it on a Recipe built in Python."""
    for name, cls in _sections().items():
        section = getattr(recipe, name)
        for fname, rng in RANGES.get(cls, {}).items():
            check_number(f"{name}.{fname}", getattr(section, fname), rng)
    t = recipe.train
    if isinstance(t.warmup_steps, float) and t.warmup_steps >= 1 and not t.warmup_steps.is_integer():
        raise ConfigError(f"train.warmup_steps: got {t.warmup_steps}; allowed: a whole number of steps, or a "
                          "fraction of the total steps below 1")
    for key, allowed in _choices().items():
        value = getattr(t, key.split(".", 1)[1])
        if value not in allowed:
            raise ConfigError(f"{key}: {_one_of(allowed, value)}")
    t.extra = check_train_extra(t.extra)
    if t.push_to_hub and not t.hub_model_id:
        raise ConfigError("train.push_to_hub=true needs train.hub_model_id (e.g. you/my-model): the trainer's "
                          "directory <output_dir>/checkpoints would name the hub repository 'checkpoints'")
    if t.eval_strategy != "no" and not recipe.data.eval and recipe.data.eval_fraction == 0:
        raise ConfigError(f"train.eval_strategy={t.eval_strategy} needs held-out lists: set data.eval or "
                          "data.eval_fraction > 0")


def check_device(recipe: Recipe, cuda_available: bool | None = None) -> None:
    """Mixed precision (``train.bf16``, ``train.extra.fp16`` ...) needs a CUDA GPU: on the CPU it is very slow or
    unsupported in align's path. ``cuda_available`` defaults to ``torch.cuda.is_available()``."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return
    flags = {"train.bf16": recipe.train.bf16,
             **{f"train.extra.{k}": recipe.train.extra.get(k) for k in ("fp16", "bf16_full_eval", "fp16_full_eval")}}
    for key, on in flags.items():
        if on:
            raise ConfigError(f"{key}=true needs a CUDA GPU and none is visible (torch.cuda.is_available() is "
                              f"False); on the CPU train in float32: {key}=false")


def preflight(recipe: Recipe, *, training: bool = True) -> None:
    """The checks that need this machine or the models' ``config.json`` but no weights and no data: mixed
    precision needs CUDA (``training``), and the sequence lengths fit the policy's and the reference's context.
    Meant to run before any data or weights load (a hub model's ``config.json`` is fetched if not cached)."""
    if training:
        check_device(recipe)
    for key, name in (("model.name_or_path", recipe.model.name_or_path), ("model.reference", recipe.model.reference)):
        if name:
            check_lengths_against_model(recipe, read_model_config(name, key=key), model=name)


# ---------------------------------------------------------------------------------------------------------------
# loading


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
        try:
            value = yaml.safe_load(v) if v.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {pair!r}: the value is not YAML ({str(e).splitlines()[0]})") from e
        out.append((k.strip(), value))
    return out


def _anchor_corpus(name: str, recipe_dir: Path | None) -> str:
    """``embedded:tiny?corpus=DIR`` with a relative DIR found as data paths are (beside the recipe, else from the
    working directory), made absolute so that every later step reads the same folder."""
    from urllib.parse import quote

    from align.models.loading import embedded_corpus, is_embedded

    corpus = embedded_corpus(name) if is_embedded(name) else None
    if corpus is None:
        return name
    folder = Path(corpus).expanduser()
    if folder.is_absolute():
        return name
    for base in (recipe_dir, Path.cwd()):
        if base is not None and (base / folder).is_dir():
            return "embedded:tiny?corpus=" + quote(str((base / folder).resolve()), safe="/")
    return name


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply dotted overrides, validate everything (including the algorithm's loss).

    Nothing here depends on this machine: :func:`preflight` checks the device and the model's context."""
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
    from align.losses import LOSSES  # each algorithm's loss (and its config class), by name
    from align.rewards.functions import modules_beside

    recipe_dir = Path(path).resolve().parent if path is not None else None
    with modules_beside(recipe_dir):  # reward functions' modules: beside the recipe first
        recipe = from_dict(Recipe, tree)
        if recipe.algorithm not in LOSSES:
            raise ConfigError(f"algorithm: unknown {recipe.algorithm!r}; choose from {sorted(LOSSES)}"
                              f"{_did_you_mean(recipe.algorithm, LOSSES)}")
        recipe.loss = _check(LOSSES[recipe.algorithm].config, loss, "loss")
    recipe.recipe_dir = recipe_dir
    recipe.model.name_or_path = _anchor_corpus(recipe.model.name_or_path, recipe_dir)
    try:
        recipe.output_dir = recipe.output_dir.format(algorithm=recipe.algorithm)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"output_dir: {recipe.output_dir!r} may contain only the placeholder {{algorithm}} "
                          f"({type(e).__name__}: {e})") from None
    validate_recipe(recipe)
    return recipe


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain-data form of a recipe (written beside every run as ``recipe.json``)."""
    return dataclasses.asdict(recipe)
