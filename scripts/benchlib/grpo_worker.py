"""scripts/bench_grpo.py's worker: one configuration (align or TRL GRPO at one β) in this process.

Both sides start from the same saved weights and tokenizer, take the same prompts in the same order (TRL with
``shuffle_dataset=False``; align's dataset laid out so that its seeded sampler yields that order, checked), score
with the same reward function, and share every setting the two trainers name alike (G, completion length, dapo, β,
ε, temperature 1, top-p 1, top-k off, AdamW with a linear schedule, clipping 1.0, no dropout, no gradient
checkpointing, one generation per optimizer step). TRL 1.16 multiplies the KL term by the (differentiable)
importance ratio by default (``use_bias_correction_kl``, DeepSeek-V3.2's unbiased KL gradient): a different gradient
from DeepSeekMath's k3, which align implements, so it is turned off here. Per step the worker records the
generation, reference and reward-scoring seconds and the tokens the training forward was fed; the training share is
the step's time less those.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from benchlib import process
from benchlib.memory import maxrss_mb, peak_gpu_mb, ru_maxrss_mb
from benchlib.models import load_measured_policy
from benchlib.timing import quiet, steady_state, timer_callback, timing_warmup

SIDES = ("align", "trl")
REWARD = "benchlib.grpo_worker:reward_graded"  # align.tasks.sort's graded reward, timed (see reward_graded)
PHASES = ("generation_seconds", "reference_seconds", "scoring_seconds", "fed_tokens")


def config_name(side: str, beta: float) -> str:
    """``align_beta0``, ``trl_beta0.04``, ..."""
    return f"{side}_beta{beta:g}"


def parse_config(name: str) -> tuple[str, float]:
    """(side, β) of a configuration name."""
    side, _, beta = name.partition("_beta")
    if side not in SIDES or not beta:
        raise ValueError(f"unknown configuration {name!r}; expected SIDE_betaB with SIDE in {SIDES}")
    return side, float(beta)


def prompt_dataset_class():
    """align's ``PromptDataset`` (exported by ``align.trainers``, else from its GRPO module)."""
    try:
        from align.trainers import PromptDataset
    except ImportError:
        from align.trainers.grpo import PromptDataset
    return PromptDataset


PROBE: StepProbe | None = None  # this worker's per-step probe, while a configuration runs


def reward_graded(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """``align.tasks.sort.reward_graded``, its seconds added to the running configuration's probe: both sides
    call this same function, so reward scoring is timed alike."""
    from align.tasks.sort import reward_graded as graded

    t = time.perf_counter()
    try:
        return graded(prompts, completions, **kwargs)
    finally:
        if PROBE is not None:
            PROBE.add("scoring_seconds", time.perf_counter() - t)


def time_module(module: torch.nn.Module, probe: StepProbe, key: str) -> None:
    """Add the seconds of every forward of ``module`` to ``probe[key]``."""
    starts: list[float] = []
    module.register_forward_pre_hook(lambda m, a: starts.append(time.perf_counter()))
    module.register_forward_hook(lambda m, a, o: probe.add(key, time.perf_counter() - starts.pop()))


def load_prompt_set(spec: dict[str, Any], tokenizer) -> tuple[list, list[dict[str, Any]]]:
    """align's tokenized prompts and TRL's conversational rows, both in the run's order (``spec["order"]``)."""
    from align.data.prompts import load_prompts, tokenize_prompts

    examples, _ = load_prompts(spec["prompts"])
    tokenized, _ = tokenize_prompts(examples, tokenizer, max_prompt_length=spec["max_prompt_length"])
    order = spec["order"]
    rows = [{"prompt": examples[i].prompt, **examples[i].columns} for i in order]
    return [tokenized[i] for i in order], rows


class StepProbe:
    """Per-optimizer-step sums of what the trainers' hooks report (seconds of a phase, tokens fed), closed at each
    step's end by :meth:`callback`."""

    def __init__(self):
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []

    def add(self, key: str, value: float) -> None:
        self.current[key] += value

    def timed(self, key: str, fn, *a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.add(key, time.perf_counter() - t)

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class Close(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                probe.steps.append(dict(probe.current))
                probe.current.clear()

        return Close()


def training_kwargs(spec: dict[str, Any], output_dir: str, batch: int) -> dict[str, Any]:
    """TrainingArguments fields shared verbatim by both sides (``batch``: align counts prompts, TRL completions)."""
    return {"output_dir": output_dir, "per_device_train_batch_size": batch, "max_steps": spec["steps"],
            "learning_rate": spec["learning_rate"], "lr_scheduler_type": "linear", "warmup_steps": 0,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "gradient_accumulation_steps": 1, "logging_steps": 1,
            "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "seed": spec["seed"],
            "data_seed": spec["seed"], "use_cpu": spec["device"] != "cuda", "bf16": spec["dtype"] == "bfloat16",
            "gradient_checkpointing": False, "dataloader_num_workers": 0, "disable_tqdm": True}


def trl_config(spec: dict[str, Any], beta: float, output_dir: str, **extra):
    """TRL's ``GRPOConfig`` for this benchmark."""
    from trl import GRPOConfig

    g = spec["num_generations"]
    return GRPOConfig(**training_kwargs(spec, output_dir, spec["batch_prompts"] * g), num_generations=g,
                      max_completion_length=spec["max_completion_length"], loss_type="dapo", beta=beta,
                      temperature=1.0, top_p=1.0, top_k=0, scale_rewards="group", epsilon=0.2,
                      mask_truncated_completions=False, disable_dropout=True, shuffle_dataset=False,
                      log_completions=False, use_bias_correction_kl=False, **extra)


def align_config(spec: dict[str, Any], beta: float):
    """align's ``GRPOLossConfig`` for this benchmark."""
    from align.trainers import GRPOLossConfig

    return GRPOLossConfig(rewards=[{"function": REWARD, "weight": 1.0}], num_generations=spec["num_generations"],
                          max_completion_length=spec["max_completion_length"], beta=beta, loss_type="dapo",
                          temperature=1.0, top_p=1.0, scale_rewards="group", epsilon=0.2, unlikeliness=0.0,
                          generation_batch_size=spec["batch_prompts"])


def sampler_order(trainer, n: int) -> list[int] | None:
    """The permutation of the dataset's n indices that the trainer's seeded sampler draws (a PromptDataset laid out
    by it yields the prompts in a chosen order), or None where the sampler is not one permutation (the dataset is
    then left in order, and the result says whether the orders matched)."""
    try:
        perm = list(iter(trainer._get_train_sampler()))
    except Exception:  # noqa: BLE001 - a sampler this benchmark cannot read: no reordering
        return None
    return perm if sorted(perm) == list(range(n)) else None


def run_align(spec, beta: float, policy, tokenizer, prompts, out: dict[str, Any]) -> list[dict[str, float]]:
    from transformers import TrainingArguments

    from align.trainers import GRPOTrainer

    PromptDataset = prompt_dataset_class()

    global PROBE
    probe, timer = StepProbe(), timer_callback(spec["device"])
    PROBE = probe

    class Counted(GRPOTrainer):
        """align's trainer, unchanged except that the tokens fed to its training forward are counted."""

        def compute_loss(self, model, inputs, *a, **kw):
            ids = inputs.get("input_ids") if isinstance(inputs, dict) else None
            if torch.is_tensor(ids) and model.training:
                probe.add("fed_tokens", ids.numel())
            return super().compute_loss(model, inputs, *a, **kw)

    class Recorded(PromptDataset):
        """The prompts, recording the order in which the trainer fetches them."""

        seen: list[tuple[int, ...]] = []

        def __getitem__(self, i):
            item = super().__getitem__(i)
            Recorded.seen.append(tuple(item["prompt"].prompt_ids))
            return item

    args = TrainingArguments(**training_kwargs(spec, str(Path(spec["run_dir"]) / out["config"]),
                                               spec["batch_prompts"]))
    t0 = time.perf_counter()
    trainer = Counted(policy, args, align_config(spec, beta), Recorded(prompts), processing_class=tokenizer,
                      callbacks=[timer, probe.callback()])
    perm = sampler_order(trainer, len(prompts))
    if perm is not None:  # position k of the sampler's order gets prompts[k]
        laid = [None] * len(prompts)
        for k, i in enumerate(perm):
            laid[i] = prompts[k]
        trainer.train_dataset = Recorded(laid)
    ref = getattr(getattr(trainer, "live_reference", None), "model", None)
    hooked = isinstance(ref, torch.nn.Module) and ref is not trainer.model
    if hooked:  # where align logs no reference time: its reference model's forwards, timed
        time_module(ref, probe, "reference_hook_seconds")
    quiet(trainer)
    out["init_seconds"] = time.perf_counter() - t0
    trainer.train()
    n = spec["steps"] * spec["batch_prompts"]
    out["order"] = {"reordered": perm is not None,
                    "same_as_trl": Recorded.seen[:n] == [tuple(p.prompt_ids) for p in prompts][:n]}
    by_step = {h["step"]: h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h}
    steps = []
    for s, probed in enumerate(probe.steps, start=1):
        h = by_step.get(s, {})
        logged_ref = h.get("timing/reference_seconds")
        steps.append({"generation_seconds": h.get("timing/generation_seconds"),
                      "reference_seconds": logged_ref if logged_ref is not None else (
                          probed.get("reference_hook_seconds", 0.0) if hooked else None),
                      "scoring_seconds": probed.get("scoring_seconds", 0.0), "fed_tokens": probed.get("fed_tokens"),
                      "logged_scoring_seconds": h.get("timing/scoring_seconds"),
                      "logged_tokens_per_step": h.get("tokens_per_step"), "loss": h.get("loss")})
    out["reference_time_source"] = ("logged" if any("timing/reference_seconds" in h for h in by_step.values())
                                    else "forward hooks" if hooked else None)
    out.update(_loop(trainer, timer, spec))
    return steps


def run_trl(spec, beta: float, policy, tokenizer, prompts, rows, out: dict[str, Any]) -> list[dict[str, float]]:
    import datasets
    from trl import GRPOTrainer

    global PROBE
    datasets.disable_progress_bars()
    probe, timer = StepProbe(), timer_callback(spec["device"])
    PROBE = probe

    class Timed(GRPOTrainer):
        """TRL's trainer, unchanged except that its generation and reference pass are timed and the tokens of its
        training forward counted (from the padded batch it builds)."""

        def _generate_single_turn(self, *a, **kw):
            return probe.timed("generation_seconds", super()._generate_single_turn, *a, **kw)

        def _get_per_token_logps_and_entropies(self, model, *a, **kw):
            call = super()._get_per_token_logps_and_entropies
            if model is self.ref_model and model is not None:
                return probe.timed("reference_seconds", call, model, *a, **kw)
            return call(model, *a, **kw)

        def _compute_loss(self, model, inputs):
            n, p = inputs["prompt_ids"].shape
            probe.add("fed_tokens", n * (p + inputs["completion_ids"].shape[1]))
            return super()._compute_loss(model, inputs)

    for name in ("_generate_single_turn", "_get_per_token_logps_and_entropies", "_compute_loss"):
        if not hasattr(GRPOTrainer, name):
            raise RuntimeError(f"this TRL has no GRPOTrainer.{name}; update the benchmark's probes")
    config = trl_config(spec, beta, str(Path(spec["run_dir"]) / out["config"]))
    t0 = time.perf_counter()
    trainer = Timed(model=policy, reward_funcs=[reward_graded], args=config,
                    train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                    callbacks=[timer, probe.callback()])
    quiet(trainer)
    out["init_seconds"] = time.perf_counter() - t0
    ids = trainer._tokenize_prompts([r["prompt"] for r in rows])[0]  # TRL renders the chat itself: align's ids?
    out["identical_prompt_ids"] = {"prompts": len(rows), "identical": sum(
        list(a) == list(b.prompt_ids) for a, b in zip(ids, prompts))}
    trainer.train()
    losses = [h.get("loss") for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    steps = [{**{k: p.get(k, 0.0 if k != "reference_seconds" or beta > 0 else None) for k in PHASES},
              "logged_tokens_per_step": None, "loss": loss} for p, loss in zip(probe.steps, losses)]
    out.update(_loop(trainer, timer, spec))
    return steps


def _loop(trainer, timer, spec: dict[str, Any]) -> dict[str, Any]:
    steps = trainer.state.global_step
    return steady_state(timer, steps, timing_warmup(spec, steps))


def split_steps(steps: list[dict[str, Any]], seconds: list[float], warmup: int) -> dict[str, Any]:
    """Means over the timed steps of each phase, and the training share: the step's seconds less its generation,
    reference and scoring seconds (a phase a side does not report counts as 0 there and stays in training)."""
    rows = []
    for s, sec in zip(steps, seconds):
        known = sum(s.get(k) or 0.0 for k in ("generation_seconds", "reference_seconds", "scoring_seconds"))
        rows.append({**s, "step_seconds": sec, "training_seconds": sec - known})
    timed = rows[warmup:] or rows

    def mean(key):
        vals = [r[key] for r in timed if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    keys = ("step_seconds", "generation_seconds", "reference_seconds", "scoring_seconds", "training_seconds",
            "fed_tokens", "logged_tokens_per_step")
    return {"per_step": rows, "timed_mean": {k: mean(k) for k in keys}}


def run_worker(config: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process and return its measurements (peak RSS is this process's)."""
    from transformers.utils import logging as hf_logging

    from align.models.loading import load_tokenizer

    hf_logging.set_verbosity_error()
    side, beta = parse_config(config)
    process.start_worker(side == "trl", ("align.trainers",), spec.get("threads"))
    device = spec["device"]
    out: dict[str, Any] = {"config": config, "side": side, "beta": beta, "rss_after_imports_mb": maxrss_mb()}
    tokenizer = load_tokenizer(spec["model_dir"])
    prompts, rows = load_prompt_set(spec, tokenizer)
    policy = load_measured_policy(spec, out)
    t0 = time.perf_counter()
    if side == "trl":
        steps = run_trl(spec, beta, policy, tokenizer, prompts, rows, out)
    else:
        steps = run_align(spec, beta, policy, tokenizer, prompts, out)
    out.update(split_steps(steps, out["step_seconds"], out["warmup_steps"]))
    out["worker_seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = maxrss_mb()
    out["ru_maxrss_mb"] = ru_maxrss_mb()
    out["peak_rss_above_imports_mb"] = out["peak_rss_mb"] - out["rss_after_imports_mb"]
    out["peak_gpu_mb"] = peak_gpu_mb() if device == "cuda" else None
    out["waited_for_turns_seconds"] = process.TURNS.waited
    out["turns"] = process.TURNS.finish()
    return out
