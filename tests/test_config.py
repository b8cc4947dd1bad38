"""Recipes: every shipped recipe validates; bad keys and types are clear errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from align.config import ConfigError, load_recipe
from align.trainers import DPOLossConfig
from tests.conftest import REPO

RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)  # launcher configs


def test_there_are_recipes():
    assert any(p.name == "dpo_tiny.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_validates(path: Path):
    recipe = load_recipe(path)
    assert recipe.algorithm
    if recipe.train.deepspeed:
        assert (REPO / recipe.train.deepspeed).exists(), f"{path}: {recipe.train.deepspeed} missing"


def test_overrides_and_types(tmp_path):
    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["loss.beta=0.25", "train.learning_rate=1e-3",
                                                     "loss.loss_type=ipo", "data.max_rows=10"])
    assert isinstance(r.loss, DPOLossConfig) and r.loss.beta == 0.25 and r.loss.loss_type == "ipo"
    assert r.train.learning_rate == 1e-3 and r.data.max_rows == 10


@pytest.mark.parametrize("override, message", [
    (["train.lerning_rate=1"], "unknown key 'train.lerning_rate'"),
    (["data.max_rows=ten"], "data.max_rows: expected"),
    (["loss.beta=high"], "loss.beta: expected"),
    (["loss.loss_type=sigmoidd"], "loss.loss_type: expected one of"),
    (["loss.gamma=1"], "unknown key 'loss.gamma'"),
    (["algorithm=ppo"], "algorithm: unknown 'ppo'"),
    (["sft.enabled=3"], "sft.enabled: expected"),
    (["model=3"], "model: expected a mapping"),
    (["nonsense"], "not key=value"),
])
def test_bad_recipes_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_recipe(REPO / "recipes/dpo_tiny.yaml", override)


def test_unreadable_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: [dpo\n")
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(bad)


def _error(recipe: str, overrides: list[str]) -> str:
    """The one-line ConfigError that loading ``recipe`` with ``overrides`` raises."""
    with pytest.raises(ConfigError) as e:
        load_recipe(REPO / f"recipes/{recipe}.yaml", overrides)
    assert "\n" not in str(e.value)
    return str(e.value)


# --- ranges: every numeric setting, NaN / ±inf refused, one line naming the key, the value and the range ---------

@pytest.mark.parametrize("recipe, override, message", [
    ("dpo_tiny", "loss.beta=.inf", "loss.beta: got inf; allowed: a finite number > 0"),
    ("dpo_tiny", "loss.beta=.nan", "loss.beta: got nan"),
    ("cringe_tiny", "loss.b=.nan", "loss.b: got nan; allowed: a finite number"),
    ("cringe_tiny", "loss.alpha=.inf", "loss.alpha: got inf; allowed: a finite number >= 0"),
    ("cringe_tiny", "loss.tau=-.inf", "loss.tau: got -inf"),
    ("cringe_tiny", "loss.k=0", "loss.k: got 0; allowed: an integer >= 1"),
    ("mmpo_tiny", "loss.gamma=-.inf", "loss.gamma: got -inf; allowed: a number > 0 (.inf allowed)"),
    ("mmpo_tiny", "loss.beta=.inf", "loss.beta: got inf"),
    ("lipo_tiny", "loss.beta=.inf", "loss.beta: got inf"),
    ("rm_bt_tiny", "loss.center_rewards_coefficient=.inf", "loss.center_rewards_coefficient: got inf"),
    ("rm_mmpo_tiny", "loss.gamma=.nan", "loss.gamma: got nan"),
    ("dpo_tiny", "train.learning_rate=nan", "train.learning_rate: got nan; allowed: a finite number > 0"),
    ("dpo_tiny", "train.learning_rate=.inf", "train.learning_rate: got inf"),
    ("dpo_tiny", "train.num_train_epochs=.inf", "train.num_train_epochs: got inf"),
    ("dpo_tiny", "train.max_grad_norm=.nan", "train.max_grad_norm: got nan"),
    ("dpo_tiny", "train.weight_decay=-0.1", "train.weight_decay: got -0.1; allowed: a finite number >= 0"),
    ("dpo_tiny", "data.eval_fraction=1.5", "data.eval_fraction: got 1.5; allowed: a finite number in [0, 1)"),
    ("dpo_tiny", "data.eval_fraction=1", "data.eval_fraction: got 1.0"),  # everything held out: nothing to train
    ("dpo_tiny", "reference.shard_size=0", "reference.shard_size: got 0; allowed: an integer >= 1"),
    ("dpo_tiny", "reference.batch_size=0", "reference.batch_size: got 0"),
    ("dpo_tiny", "eval.batch_size=0", "eval.batch_size: got 0"),
    ("dpo_tiny", "data.max_train_examples=-1", "data.max_train_examples: got -1; allowed: an integer >= 1"),
    ("dpo_tiny", "data.max_eval_examples=0", "data.max_eval_examples: got 0"),
    ("dpo_tiny", "data.max_rows=-1", "data.max_rows: got -1"),
    ("dpo_tiny", "data.max_prompt_length=0", "data.max_prompt_length: got 0"),
    ("dpo_tiny", "data.max_response_length=-5", "data.max_response_length: got -5"),
    ("dpo_tiny", "train.max_steps=0", "train.max_steps: got 0; allowed: -1 or an integer >= 1"),
    ("dpo_tiny", "train.max_steps=-2", "train.max_steps: got -2"),
    ("dpo_tiny", "train.per_device_train_batch_size=0", "train.per_device_train_batch_size: got 0"),
    ("dpo_tiny", "train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps: got 0"),
    ("dpo_tiny", "train.logging_steps=0", "train.logging_steps: got 0"),
    ("dpo_tiny", "train.save_steps=0", "train.save_steps: got 0"),
    ("dpo_tiny", "train.save_total_limit=0", "train.save_total_limit: got 0"),
    ("dpo_tiny", "train.warmup_steps=-1", "train.warmup_steps: got -1"),
    ("dpo_tiny", "train.warmup_steps=2.5", "train.warmup_steps: got 2.5; allowed: a whole number of steps"),
    ("dpo_tiny", "train.seed=-1", "train.seed: got -1"),
    ("dpo_tiny", "train.adam_beta2=1", "train.adam_beta2: got 1.0; allowed: a finite number in [0, 1)"),
    ("dpo_tiny", "sft.learning_rate=0", "sft.learning_rate: got 0.0"),
    ("dpo_tiny", "sft.max_steps=0", "sft.max_steps: got 0"),
    ("dpo_tiny", "sft.batch_size=0", "sft.batch_size: got 0"),
    ("dpo_tiny", "sft.warmup_steps=-1", "sft.warmup_steps: got -1"),
    ("dpo_tiny_lora", "peft.r=0", "peft.r: got 0"),
    ("dpo_tiny_lora", "peft.lora_dropout=1", "peft.lora_dropout: got 1.0"),
    ("dpo_tiny_lora", "peft.lora_alpha=0", "peft.lora_alpha: got 0"),
    ("dpo_tiny", "loss.label_smoothing=0.5",
     "loss.label_smoothing: got 0.5; allowed: a finite number in [0, 0.5)"),
    # settings a loss type ignores are errors, not silently dropped
    ("dpo_tiny", "loss.loss_type=ipo loss.label_smoothing=0.1",
     "loss.label_smoothing applies to loss_type sigmoid (cDPO) and robust (rDPO), not 'ipo'"),
])
def test_out_of_range_numbers_name_key_value_and_range(recipe, override, message):
    assert message in _error(recipe, override.split())


@pytest.mark.parametrize("recipe, override", [
    ("dpo_tiny", "train.max_steps=-1"),  # -1: train for num_train_epochs
    ("mmpo_tiny", "loss.gamma=.inf"),  # γ = inf is DPO (documented)
    ("rm_mmpo_tiny", "loss.gamma=.inf"),
    ("dpo_tiny", "data.eval_fraction=0"),
    ("dpo_tiny", "train.warmup_steps=0.1"),  # a fraction of the total steps (transformers 5)
    ("dpo_tiny", "loss.loss_type=robust loss.label_smoothing=0.1"),
    ("cringe_tiny", "loss.b=-3.5 loss.alpha=0"),
    ("dpo_tiny", "train.max_grad_norm=0"),  # 0: no clipping
    ("dpo_tiny", "data.max_rows=null"),
])
def test_edge_values_that_mean_something_are_accepted(recipe, override):
    load_recipe(REPO / f"recipes/{recipe}.yaml", override.split())


def _numeric(tp) -> bool:
    import typing

    return any(a in (int, float) for a in (typing.get_args(tp) or (tp,)))


def test_every_numeric_recipe_setting_has_a_range():
    import dataclasses
    import typing

    from align.config import RANGES, Recipe

    hints = typing.get_type_hints(Recipe)
    sections = [hints[f.name] for f in dataclasses.fields(Recipe) if dataclasses.is_dataclass(hints[f.name])]
    assert len(sections) >= 7
    for cls in sections:
        numeric = {k for k, tp in typing.get_type_hints(cls).items() if _numeric(tp)}
        assert numeric <= set(RANGES.get(cls, {})), f"{cls.__name__}: no range for {numeric - set(RANGES.get(cls, {}))}"


def _valid_loss_kwargs(cls) -> dict:
    if cls.__name__ == "GRPOLossConfig":
        return {"rewards": [{"function": "tests.test_config:constant_reward"}]}
    return {"b": 0.0, "tau": 5.0} if cls.__name__ == "CringeLossConfig" else {}


def constant_reward(prompts, completions, **kwargs):
    """A reward function for configs under test (TRL's signature)."""
    return [0.0] * len(completions)


def _loss_float_fields():
    import dataclasses
    import typing

    from align.trainers import ALGORITHMS

    for algo in ALGORITHMS.values():
        for f in dataclasses.fields(algo.config):
            if typing.get_type_hints(algo.config)[f.name] is float:
                yield algo.config, f.name


@pytest.mark.parametrize("cls, name", list(_loss_float_fields()), ids=lambda x: getattr(x, "__name__", x))
def test_every_loss_float_refuses_nan_and_infinities(cls, name):
    inf_ok = name == "gamma"  # MMPO / reward-model γ = inf is DPO / Bradley-Terry
    for bad in (float("nan"), -float("inf")) + (() if inf_ok else (float("inf"),)):
        with pytest.raises(ConfigError, match=f"loss.{name}: got {bad}"):
            cls(**{**_valid_loss_kwargs(cls), name: bad})
    if inf_ok:
        assert getattr(cls(**{**_valid_loss_kwargs(cls), name: float("inf")}), name) == float("inf")


def test_range_descriptions():
    from align.config import Range

    assert Range(0, low_open=True).describe() == "a finite number > 0"
    assert Range(1, integer=True, also=(-1,)).describe() == "-1 or an integer >= 1"
    assert Range(0, 1, high_open=True).describe() == "a finite number in [0, 1)"
    assert Range(0, low_open=True, inf=True).describe() == "a number > 0 (.inf allowed)"
    assert Range(0, low_open=True, inf=True).allows(float("inf"))
    assert not Range(0, low_open=True, inf=True).allows(float("nan"))
    assert not Range().allows(float("-inf")) and Range().allows(-1e300)


# --- train.extra: TrainingArguments fields only, not the ones align sets, simple types checked ---------------------

@pytest.mark.parametrize("override, message", [
    ("train.extra.output_dir=x", "train.extra.output_dir: align sets output_dir itself; a run goes to the recipe's "
                                 "top-level output_dir or `align train --output-dir`"),
    ("train.extra.logging_dir=x", "train.extra.logging_dir: not a TrainingArguments field in transformers 5: "
                                  "TensorBoard writes under <output_dir>/checkpoints/runs/, or where the "
                                  "TENSORBOARD_LOGGING_DIR"),
    ("train.extra.warmup_ratio=0.1", "train.extra.warmup_ratio: transformers 5 has no warmup_ratio: set "
                                     "train.warmup_steps to a fraction"),
    ("train.extra.eval_stepz=3", r"re:train.extra.eval_stepz: not a field of transformers.TrainingArguments "
                                 r"\(transformers [0-9.]+\); did you mean 'eval_steps'\?$"),
    ("train.extra.use_cpu=true", "train.extra.use_cpu: align sets use_cpu itself"),
    ("train.extra.save_strategy=no", "train.extra.save_strategy: align sets save_strategy itself; align saves"),
    ("train.extra.logging_first_step=false", "train.extra.logging_first_step: align sets"),
    ("train.extra.disable_tqdm=true", "train.extra.disable_tqdm: align sets"),
    ("train.extra.remove_unused_columns=true", "train.extra.remove_unused_columns: align sets"),
    ("train.extra.activation_checkpointing=true", "use train.gradient_checkpointing"),
    ("train.extra.gradient_checkpointing=true", "set train.gradient_checkpointing, not train.extra"),
    ("train.extra.learning_rate=1", "set train.learning_rate, not train.extra.learning_rate"),
    ("train.extra.resume_from_checkpoint=x", "use `align train --resume`"),
    ("train.extra.dataloader_num_workers=two", "train.extra.dataloader_num_workers: expected int, got str 'two'"),
    ("train.extra.dataloader_num_workers=1.5", "train.extra.dataloader_num_workers: expected int"),
    ("train.extra.fp16=1", "train.extra.fp16: expected bool, got int 1"),
    ("train.extra.adam_epsilon=.nan", "train.extra.adam_epsilon: got nan; allowed: a finite number"),
    ("train.extra.adam_epsilon=fast", "train.extra.adam_epsilon: expected float"),
    ("train.extra.run_name=3", "train.extra.run_name: expected str | null, got int 3"),
    ("train.extra.hub_strategy=evry_save", "train.extra.hub_strategy: expected one of ['end', 'every_save', "
                                           "'checkpoint', 'all_checkpoints'], got 'evry_save'; did you mean "
                                           "'every_save'?"),
])
def test_train_extra_is_checked_before_anything_loads(override, message):
    _assert_says(_error("dpo_tiny", [override]), message)


def _assert_says(error: str, message: str) -> None:
    """``message`` is in ``error``; a ``re:`` message is a regular expression it must match."""
    if message.startswith("re:"):
        assert re.search(message[3:], error), error
    else:
        assert message in error, error


def test_train_extra_accepts_training_arguments_fields():
    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.extra.dataloader_num_workers=2",
                                                     "train.extra.adam_epsilon=1e-6", "train.extra.run_name=x",
                                                     "train.extra.lr_scheduler_kwargs={num_cycles: 2}"])
    assert r.train.extra == {"dataloader_num_workers": 2, "adam_epsilon": 1e-6, "run_name": "x",
                             "lr_scheduler_kwargs": {"num_cycles": 2}}


def test_training_kwargs_build_training_arguments_without_warnings(tmp_path):
    import dataclasses
    import warnings

    from transformers import TrainingArguments

    from align.config import ALIGN_SETS, TrainSection, training_kwargs

    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.extra.dataloader_num_workers=1", "train.optim=adamw_torch",
                                                     "train.warmup_steps=0.25"])
    kw = training_kwargs(r, tmp_path)
    own = {f.name for f in dataclasses.fields(TrainSection)} - {"extra", "gradient_checkpointing", "on_non_finite",
                                                                "packing"}
    assert set(kw) == own | set(r.train.extra) | {"output_dir", "logging_first_step", "save_strategy", "use_cpu",
                                                   "disable_tqdm", "remove_unused_columns", "activation_checkpointing",
                                                   "ddp_find_unused_parameters", "dataloader_pin_memory"}
    # every key align sets is refused in train.extra, but the default it only fills in where it applies
    assert set(kw) - own - set(r.train.extra) - {"dataloader_pin_memory"} <= set(ALIGN_SETS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = TrainingArguments(**kw)
    # `gradient_checkpointing=False` made transformers 5 print a FutureWarning on every run
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert args.output_dir == str(tmp_path / "checkpoints") and args.gradient_checkpointing is False
    assert args.optim == "adamw_torch" and args.warmup_steps == 0.25 and args.dataloader_num_workers == 1
    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.gradient_checkpointing=true"])
    assert TrainingArguments(**training_kwargs(r, tmp_path)).gradient_checkpointing is True


# --- unknown keys: did you mean, and the align key for TRL / TrainingArguments names -----------------------------

@pytest.mark.parametrize("override, message", [
    ("train.lerning_rate=1", "unknown key 'train.lerning_rate'; did you mean 'train.learning_rate'?"),
    ("data.max_prompt_lenght=3", "did you mean 'data.max_prompt_length'?"),
    ("train.max_length=1024", "unknown key 'train.max_length': align limits prompt and response separately: "
                              "data.max_prompt_length and data.max_response_length"),
    ("train.max_prompt_length=128", "unknown key 'train.max_prompt_length': did you mean 'data.max_prompt_length'?"),
    ("train.max_completion_length=128", "unknown key 'train.max_completion_length': use data.max_response_length"),
    ("train.beta=0.2", "unknown key 'train.beta': did you mean 'loss.beta'?"),
    ("train.loss_type=ipo", "unknown key 'train.loss_type': did you mean 'loss.loss_type'?"),
    ("train.label_smoothing=0.1", "did you mean 'loss.label_smoothing'?"),
    ("loss.learning_rate=1", "unknown key 'loss.learning_rate': did you mean 'sft.learning_rate' or "
                             "'train.learning_rate'?"),
    ("beta=0.1", "unknown key 'beta': did you mean 'loss.beta'?"),
    ("train.output_dir=x", "unknown key 'train.output_dir': align sets output_dir itself"),
    ("train.dataloader_num_workers=2", "unknown key 'train.dataloader_num_workers': dataloader_num_workers is a "
                                       "transformers.TrainingArguments field without its own recipe key; set it as "
                                       "train.extra.dataloader_num_workers"),
    ("train.hub_strategy=end", "set it as train.extra.hub_strategy"),
    ("train.warmup_ratio=0.1", "unknown key 'train.warmup_ratio': transformers 5 has no warmup_ratio"),
    ("train.precompute_ref_log_probs=true", "align always precomputes the reference log-probs"),
    ("train.ref_model=x", "use model.reference"),
    ("model.torch_dtype=bfloat16", "use model.dtype"),
    ("peft_config.r=8", "use the peft section"),
    ("train.evaluation_strategy=steps", "renamed: use train.eval_strategy"),
    ("train.lr_scheduler_type=cosin", "re:^train.lr_scheduler_type: expected one of .*, got 'cosin'; did you mean "
                                      "'cosine'\\?$"),
    ("train.optim=adamw8bit", r"re:^train.optim: expected one of \['adamw_torch', .*, \.\.\. \(\d+ in all\)\], "
                              r"got 'adamw8bit'; did you mean 'adamw_8bit'\?$"),
    ("algorithm=dpp", "algorithm: unknown 'dpp'; choose from ['cringe', 'dpo', 'grpo', 'lipo', 'mmpo', 'reward']; "
                      "did you mean 'dpo'?"),
    ("output_dir=runs/{name}", "output_dir: 'runs/{name}' may contain only the placeholder {algorithm}"),
])
def test_unknown_keys_point_to_the_align_key(override, message):
    _assert_says(_error("dpo_tiny", [override]), message)


def test_common_training_arguments_are_first_class(tmp_path):
    from align.config import training_kwargs

    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", [
        "train.push_to_hub=true", "train.hub_model_id=me/dpo", "train.eval_strategy=steps", "train.eval_steps=20",
        "train.optim=adamw_torch", "train.adam_beta1=0.8", "train.adam_beta2=0.99"])
    kw = training_kwargs(r, tmp_path)
    assert (kw["push_to_hub"], kw["hub_model_id"]) == (True, "me/dpo")
    assert (kw["eval_strategy"], kw["eval_steps"]) == ("steps", 20)
    assert (kw["optim"], kw["adam_beta1"], kw["adam_beta2"]) == ("adamw_torch", 0.8, 0.99)
    with pytest.raises(ConfigError, match="train.push_to_hub=true needs train.hub_model_id"):
        load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.push_to_hub=true"])
    with pytest.raises(ConfigError, match="train.eval_strategy=steps needs held-out lists"):
        load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.eval_strategy=steps", "data.eval_fraction=0"])


# --- the device and the model's context: checked before loading, separately from load_recipe ---------------------

def test_mixed_precision_without_cuda_is_refused():
    from align.config import check_device

    gpu = load_recipe(REPO / "recipes/gpu/dpo_qwen2_0.5b.yaml")  # loads anywhere
    with pytest.raises(ConfigError, match=r"train.bf16=true needs a CUDA GPU .*train.bf16=false"):
        check_device(gpu, cuda_available=False)
    check_device(gpu, cuda_available=True)
    fp16 = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.extra.fp16=true"])
    with pytest.raises(ConfigError, match="train.extra.fp16=true needs a CUDA GPU"):
        check_device(fp16, cuda_available=False)
    check_device(load_recipe(REPO / "recipes/dpo_tiny.yaml"), cuda_available=False)


def test_preflight_uses_this_machine(monkeypatch):
    import torch

    from align.config import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.bf16=true needs a CUDA GPU"):
        preflight(load_recipe(REPO / "recipes/dpo_tiny.yaml", ["train.bf16=true"]))


@pytest.mark.parametrize("config, limit", [
    ({"max_position_embeddings": 256}, 256),
    ({"n_positions": 128, "model_type": "gpt2"}, 128),
    ({"max_sequence_length": 300}, 300),
    ({"text_config": {"max_position_embeddings": 200}}, 200),
])
def test_lengths_must_fit_the_model_context(config, limit):
    from align.config import check_lengths_against_model

    check_lengths_against_model((limit - 10, 10), config)
    with pytest.raises(ConfigError) as e:
        check_lengths_against_model((limit - 10, 11), config, model="m")
    field = next(k for k in ("max_position_embeddings", "n_positions", "max_sequence_length") if k in str(config))
    assert str(e.value) == (f"data.max_prompt_length + data.max_response_length = {limit - 10} + 11 = {limit + 1} "
                            f"exceeds the context of m ({field}={limit} in its config.json); lower them to {limit} "
                            "tokens together")


def test_lengths_against_a_saved_model_and_a_recipe(small_model_dir, tmp_path):
    from align.config import check_lengths_against_model, preflight, read_model_config

    assert read_model_config(str(tmp_path / "no_model"), local_only=True) is None  # align eval then checks nothing

    assert read_model_config(str(small_model_dir)).max_position_embeddings == 1024
    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"model.name_or_path={small_model_dir}",
                                                     "data.max_prompt_length=1000", "data.max_response_length=100"])
    with pytest.raises(ConfigError, match="= 1100 exceeds the context of .*max_position_embeddings=1024"):
        check_lengths_against_model(r, str(small_model_dir))
    with pytest.raises(ConfigError, match="exceeds the context"):
        preflight(r, training=False)
    with pytest.raises(ConfigError, match=r"--max-prompt-length \+ --max-response-length = 100000 \+ 512"):
        check_lengths_against_model((100000, 512), read_model_config(str(small_model_dir)),
                                    keys=("--max-prompt-length", "--max-response-length"))
    check_lengths_against_model((100000, 512), {"model_type": "unknown"})  # no context field: nothing to check
    # the embedded model answers from its spec, without building it
    with pytest.raises(ConfigError, match="embedded:tiny"):
        preflight(load_recipe(REPO / "recipes/dpo_tiny.yaml", ["data.max_prompt_length=1000"]), training=False)
    preflight(load_recipe(REPO / "recipes/dpo_tiny.yaml"), training=False)
