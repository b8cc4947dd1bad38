"""The parts every kind of run shares (one offline training run, a GRPO run, ``align iterate``'s rounds, the study's
runs): the :class:`RunContext` (output directory and its lock, seed, ``TrainingArguments``, SFT stage, the policy
made ready, callbacks, saving, the summary keys and files), finding a data file, peak memory. Below the run drivers
(:mod:`align.pipeline`, :mod:`align.online_run`, :mod:`align.iterate`), which import from here and never from each
other's internals.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import TrainingArguments

from align.config import Recipe, preflight, to_dict, training_kwargs
from align.distributed import barrier, is_main, is_zero3_partitioned
from align.errors import ConfigError, DataError
from align.io import write_json
from align.modelcard import write_model_card
from align.models.loading import MODEL_INFO, REFERENCE_ADAPTER, align_home, is_adapter
from align.runstate import RunState, check_no_links, claim_output_dir, prepare_output_dir
from align.tracking import add_run_info, check_report_to
from align.trainers import ALGORITHMS, PreferenceTrainer


def resolve_path(path: str, search_dirs: Sequence[str | Path] = ()) -> str:
    """A relative data path, looked up in ``search_dirs`` in order (the recipe's folder, then the working
    directory); a hub name or an absolute path is returned as it is. A path found nowhere is an error that says
    where it looked."""
    if not str(path).strip():  # Path("") is the working directory: never read it by accident
        raise DataError("no data given: set data.train (a file, a directory, a hub dataset name or task:NAME?...)")
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    for base in search_dirs:
        if (Path(base) / p).exists():
            return str(Path(base) / p)
    if p.exists():
        return str(p)
    if p.suffix or path.startswith((".", "~")) or path.count("/") > 1:  # a file path, not a hub name
        tried = [str((Path(b) / p).resolve()) for b in search_dirs] or [str(p.resolve())]
        raise DataError(f"no such file: {path} (looked in {', '.join(dict.fromkeys(tried))})")
    return path


def maybe_lora(model: torch.nn.Module, recipe: Recipe, task: str) -> torch.nn.Module:
    """``model`` wrapped in a LoRA adapter (PEFT ``task`` type ``CAUSAL_LM`` or ``SEQ_CLS``) if the recipe's
    ``peft`` section is enabled, else ``model`` itself."""
    if not recipe.peft.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    p = recipe.peft
    return get_peft_model(model, LoraConfig(r=p.r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                                            target_modules=p.target_modules, task_type=task))


def training_arguments(recipe: Recipe, output_dir: Path) -> TrainingArguments:
    """``TrainingArguments`` from the recipe's ``train`` section (``extra`` passes through)."""
    return TrainingArguments(**training_kwargs(recipe, output_dir))


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout probability of ``model`` set to 0."""
    # As TRL does by default: dropout makes the policy's log-probs noisy against a dropout-free reference.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def peak_memory_mb() -> float:
    """Peak GPU memory allocated if on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_trained(trainer: PreferenceTrainer, recipe: Recipe, out: Path, start_model: str) -> Path:
    """Save the trained model to ``out/model`` (every rank takes part: ZeRO-3 gathers the weights; the main
    process writes). A PEFT run also keeps its adapter in ``out/adapter`` and writes a merged model that
    ``align eval --model`` loads directly. ``model/align_model.json`` records the kind, β and the reference."""
    model_dir = out / "model"
    policy = trainer.model
    if hasattr(policy, "peft_config"):
        if REFERENCE_ADAPTER in policy.peft_config:
            policy.delete_adapter(REFERENCE_ADAPTER)  # the frozen reference copy is not part of the result
        trainer.save_model(str(out / "adapter"))
        if is_main():
            policy.merge_and_unload().save_pretrained(str(model_dir))
            trainer.processing_class.save_pretrained(str(model_dir))
    else:
        trainer.save_model(str(model_dir))
    if is_main():
        algo = ALGORITHMS[recipe.algorithm]
        # What `align eval` needs to score this model the way it was trained: its kind, β, and the reference
        # (for a reward model: the language model it started from, the π_ref of the idealized ranking accuracy).
        # The data settings let `align eval --split eval` re-read the run's own held-out sequences.
        d = recipe.data
        info = {"kind": algo.model_kind, "algorithm": recipe.algorithm, "beta": getattr(recipe.loss, "beta", None),
                "reference": recipe.model.reference or start_model,
                "data": {"max_prompt_length": d.max_prompt_length, "max_response_length": d.max_response_length,
                         "eval_fraction": d.eval_fraction}}
        write_json(model_dir / MODEL_INFO, info)
    barrier()
    return model_dir


def run_sft(start_model: str, rows: list[dict], recipe: Recipe) -> str:
    """The recipe's SFT stage on TRL prompt-completion ``rows`` (cached under ``$ALIGN_HOME/sft``)."""
    from align.sft import run_sft as _run

    d = recipe.data
    return _run(start_model, rows, recipe.sft, align_home() / "sft", dtype=recipe.model.dtype,
                max_length=d.max_prompt_length + d.max_response_length, seed=recipe.train.seed)


def sft_stage(start_model: str, rows: Callable[[], list[dict]], recipe: Recipe) -> tuple[str, float]:
    """The recipe's SFT stage from ``start_model`` on ``rows()`` (prompt-completion rows, made only when the stage
    runs): the trained model's directory and the seconds it took; ``(start_model, 0.0)`` when the stage is off."""
    if not recipe.sft.enabled:
        return start_model, 0.0
    if is_adapter(start_model):
        raise ConfigError(f"model.name_or_path {start_model} is a PEFT adapter: an SFT stage on top of it is not "
                          "supported; set sft.enabled=false")
    t0 = time.perf_counter()
    return run_sft(start_model, rows(), recipe), time.perf_counter() - t0


def ready_model(model: torch.nn.Module, recipe: Recipe, device: Any = None, task: str = "CAUSAL_LM"
                ) -> torch.nn.Module:
    """``model`` ready to train: LoRA-wrapped (PEFT ``task``) if the recipe asks, unless it is already an adapter
    (an adapter the policy started from keeps training), on ``device`` unless ZeRO-3 placed it, dropout off if
    asked."""
    if not hasattr(model, "peft_config"):
        model = maybe_lora(model, recipe, task)
    if device is not None and not is_zero3_partitioned(model):
        model = model.to(device)
    if recipe.model.disable_dropout:
        disable_dropout(model)
    return model


T = TypeVar("T")


@dataclass
class RunContext:
    """One training run's shared parts, from a claimed output directory to the written summary.

    Made by :func:`open_run`; the run drivers (offline training, GRPO) load their data, models and trainer with it
    and add only what is theirs (their data, their trainer, their summary keys).

    Attributes:
        recipe / out / state: the run's settings, its output directory and where it starts (resume).
        recipe_dict: the settings in effect (what ``recipe.json`` records; see :func:`prepare_output_dir`).
        args: the ``TrainingArguments``; made first because under ``accelerate launch`` they set up the process
            group (and ZeRO-3 partitioning at model load), so what follows runs split across ranks.
    """

    recipe: Recipe
    out: Path
    recipe_dict: dict[str, Any]
    state: RunState
    args: TrainingArguments
    progress: bool = True
    command: str | None = None
    started: float = field(default_factory=time.perf_counter)
    sft_seconds: float = 0.0

    def sft(self, start_model: str, rows: Callable[[], list[dict]]) -> str:
        """:func:`sft_stage` of the run's recipe; its time goes to ``sft_seconds``."""
        start_model, seconds = sft_stage(start_model, rows, self.recipe)
        self.sft_seconds += seconds
        return start_model

    def ready(self, model: torch.nn.Module, task: str = "CAUSAL_LM") -> torch.nn.Module:
        """:func:`ready_model` on the run's device."""
        return ready_model(model, self.recipe, self.args.device, task)

    def record_settings(self) -> None:
        """Write ``recipe.json``: the settings in effect (the main process)."""
        if is_main():
            write_json(self.out / "recipe.json", self.recipe_dict)

    def attach(self, trainer: Any, info: dict[str, Any]) -> None:
        """The run's callbacks on ``trainer``: quiet means quiet (no progress bar, no printed log lines; the
        trackers still get them), and the run's information (recipe, data, ...) for the trackers."""
        if not self.progress:
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
        add_run_info(trainer, {"recipe": to_dict(self.recipe), **info})

    def train(self, trainer: Any) -> tuple[Any, float]:
        """``trainer.train()`` from the checkpoint the run resumes (if any); returns its output and seconds."""
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=self.state.resume_from)
        return result, time.perf_counter() - t0

    def save(self, trainer: PreferenceTrainer, start_model: str) -> Path:
        """Save the trained model (:func:`save_trained`) once nothing links out of the output directory."""
        check_no_links(self.out)
        return save_trained(trainer, self.recipe, self.out, start_model)

    def summary(self, trainer: Any, result: Any, train_seconds: float, model_dir: Path, start_model: str
                ) -> dict[str, Any]:
        """The ``summary.json`` keys every training run has (the driver adds its own)."""
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return {
            "algorithm": self.recipe.algorithm,
            "steps": result.global_step,
            "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None,
            "train_loss_mean": result.training_loss,  # over every step of this train() call, logged or not
            **{"padding_fraction": None, "tokens_per_step": None, **trainer.token_stats("run")},
            "tokens_per_second": round(trainer.tokens_per_second(), 1),
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "train_seconds": round(train_seconds, 2),
            "sft_seconds": round(self.sft_seconds, 2),
            "wall_seconds": round(time.perf_counter() - self.started, 2),
            "model_dir": str(model_dir),
            "start_model": start_model,
            "world_size": self.args.world_size,
            "command": self.command,
            "resume": self.state.to_dict(),
            "non_finite_steps": trainer.guard.events,
        }

    def finish(self, trainer: Any, model_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
        """Write ``summary.json``, ``log_history.json`` and the model card (the main process); every rank waits."""
        if is_main():
            write_json(self.out / "summary.json", summary)
            write_json(self.out / "log_history.json", trainer.state.log_history)
            write_model_card(model_dir, summary, to_dict(self.recipe), self.command)
        barrier()
        return summary


def open_run(recipe: Recipe, output_dir: str | Path | None, body: Callable[[RunContext], T], *,
             finished: Callable[[dict[str, Any]], T], resume: bool = False, overwrite: bool = False,
             progress: bool = True, command: str | None = None) -> T:
    """Run ``body`` in a :class:`RunContext`: trackers and device settings checked before anything loads, the
    output directory claimed (one run at a time; refused: /, ~, a project root, links) and checked for resume or
    overwrite, the seed set, the ``TrainingArguments`` made. ``--resume`` of a finished run runs nothing and
    returns ``finished(its summary)``; the model is left untouched."""
    check_report_to(recipe.train.report_to)  # a missing tracker or a bad device setting fails before any load
    preflight(recipe)
    out = Path(output_dir or recipe.output_dir)
    with claim_output_dir(out, command):
        recipe_dict = to_dict(recipe)
        state = prepare_output_dir(out, recipe_dict, resume=resume, overwrite=overwrite)
        if state.finished is not None:
            return finished(state.finished)
        started = time.perf_counter()
        torch.manual_seed(recipe.train.seed)
        args = training_arguments(recipe, out)
        args.disable_tqdm = not progress
        return body(RunContext(recipe, out, recipe_dict, state, args, progress, command, started))
