"""Experiment tracking through Transformers' own integrations (``train.report_to``).

The trainers' logs (loss, ``rewards/*``, ``ranking/*``, ``logps/*``, ``tokens_per_second``, ...) reach every tracker
through the integration callbacks ``transformers.Trainer`` builds from ``report_to``; nothing here re-logs them.
This module adds two things those callbacks do not do:

- :func:`check_report_to` refuses a tracker that is not installed with a one-line error before any model loads
  (Transformers only finds out when it builds the callback, after data and model have loaded).
- :class:`RunInfoCallback` records run-level values (the recipe, the data report, the reference-cache statistics)
  once at train begin, the way each tracker keeps such values: TensorBoard text summaries and HParams, the W&B
  run config, MLflow params (plus the whole dict as a JSON artifact).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import integration_utils

from align.errors import ConfigError

log = logging.getLogger("align")

# report_to name -> (transformers' availability checks, what to install). The checks are looked up by name in
# transformers.integrations.integration_utils when called, so they are always the installed version's own.
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("is_tensorboard_available",), "the tensorboard package: pip install 'align[tracking]' "
                    "(or pip install tensorboard)"),
    "wandb": (("is_wandb_available",), "the wandb package: pip install wandb"),
    "mlflow": (("is_mlflow_available",), "the mlflow package (and DISABLE_MLFLOW_INTEGRATION unset): "
               "pip install mlflow"),
    "comet_ml": (("is_comet_available",), "the comet-ml package and a COMET_API_KEY: pip install comet-ml"),
    "trackio": (("is_trackio_available",), "the trackio package: pip install trackio"),
    "clearml": (("is_clearml_available",), "the clearml package: pip install clearml"),
    "neptune": (("is_neptune_available",), "the neptune package: pip install neptune"),
    "dvclive": (("is_dvclive_available",), "the dvclive package: pip install dvclive"),
    "swanlab": (("is_swanlab_available",), "the swanlab package: pip install swanlab"),
    "codecarbon": (("is_codecarbon_available",), "the codecarbon package: pip install codecarbon"),
    "dagshub": (("is_dagshub_available",), "the dagshub and mlflow packages: pip install dagshub mlflow"),
    "azure_ml": (("is_azureml_available",), "the azureml-core package: pip install azureml-core"),
    "flyte": (("is_flytekit_available", "is_flyte_deck_standard_available"),
              "the flytekit and flytekitplugins-deck-standard packages: "
              "pip install flytekit flytekitplugins-deck-standard"),
    "kubeflow": (("is_kubeflow_available",), "a Kubeflow trainer (KUBEFLOW_TRAINER_SERVER_URL set)"),
}

# Scalars the HParams dashboard shows beside each run's hyperparameters (tags as TensorBoardCallback writes them;
# an algorithm that logs no such scalar leaves its column empty).
HPARAM_METRICS: tuple[str, ...] = ("train/loss", "train/rewards/accuracies", "train/rewards/margins",
                                   "train/ranking/kendall_tau", "train/ranking/ndcg", "eval/loss")


def check_report_to(value: str | list[str] | None) -> list[str]:
    """The trackers ``train.report_to`` names, as ``TrainingArguments`` reads it, each one checked to be usable.

    Accepts ``"none"`` (or ``None``, ``[]``), ``"all"`` (every installed tracker, as Transformers picks them), one
    name or a list of names of ``transformers.integrations.INTEGRATION_TO_CALLBACK``.

    Returns:
        the tracker names (``[]`` for none).

    Raises:
        ConfigError: an unknown name, ``none``/``all`` mixed with names, or a tracker whose package is not
            installed (the message names what to install).
    """
    names = [value] if isinstance(value, str) else list(value or [])
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return list(integration_utils.get_available_reporting_integrations())
    known = integration_utils.INTEGRATION_TO_CALLBACK
    for name in names:
        if name in ("none", "all"):
            raise ConfigError(f"train.report_to: {name!r} cannot be combined with other trackers, got {names}")
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"train.report_to: unknown tracker {name!r}; known: none, all, {', '.join(known)}")
        checks, needs = TRACKERS.get(name, ((), ""))
        if not all(getattr(integration_utils, fn, lambda: True)() for fn in checks):
            raise ConfigError(f"train.report_to: {name!r} needs {needs}")
    return names


def flatten(values: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; lists and tuples become JSON text, other leaves stay."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key, sep))
        elif isinstance(v, (list, tuple, Mapping)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def markdown_table(values: Mapping[str, Any]) -> str:
    """A two-column Markdown table (key, value) of :func:`flatten` ``(values)``."""
    rows = [f"| {k} | {'—' if v is None else v} |" for k, v in flatten(values).items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


class RunInfoCallback(TrainerCallback):
    """Records run-level values in every tracker ``report_to`` started, once, at train begin (main process only).

    Args:
        values: section name → JSON-able value, e.g. ``{"recipe": to_dict(recipe), "data": data.to_dict(),
            "reference_cache": {key, hits, computed, seconds}}``; a callable is called at train begin. A
            ``"recipe"`` section also becomes the
            TensorBoard HParams of the run (flattened: ``loss.beta``, ``train.learning_rate``, ...).
        callbacks: the trainer's callback list (``trainer.callback_handler.callbacks``) in which to find the
            integration callbacks; :func:`add_run_info` passes it.

    It must run after the integration callbacks' own ``on_train_begin`` (which opens the writer or the run):
    ``Trainer`` puts the ``report_to`` callbacks first and :func:`add_run_info` appends this one.

    Tested with TensorBoard only; the W&B and MLflow branches follow the attributes of ``WandbCallback``
    (``_wandb``, ``_initialized``) and ``MLflowCallback`` (``_ml_flow``, ``_initialized``,
    ``_MAX_PARAM_VAL_LENGTH``, ``_MAX_PARAMS_TAGS_PER_BATCH``) in transformers 5.
    """

    def __init__(self, values: Mapping[str, Any], callbacks: list[TrainerCallback] | None = None):
        self.values = dict(values)
        self.callbacks = callbacks if callbacks is not None else []
        self.recorded: list[str] = []  # the trackers written to, for tests and logs

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.recorded:
            return
        # a value may be a callable, read now: the reference statistics exist only once the pass has run
        self.values = {k: v() if callable(v) else v for k, v in self.values.items()}
        writers = {integration_utils.TensorBoardCallback: self._tensorboard,
                   integration_utils.WandbCallback: self._wandb, integration_utils.MLflowCallback: self._mlflow}
        for cb in self.callbacks:
            for cls, record in writers.items():
                if isinstance(cb, cls):
                    try:
                        if record(cb):
                            self.recorded.append(cls.__name__)
                    except Exception as e:  # a tracker's hiccup must not end an hours-long run
                        log.warning("could not record run info with %s: %s", cls.__name__, e)

    def _tensorboard(self, cb) -> bool:
        writer = cb.tb_writer
        if writer is None:
            return False
        for section, value in self.values.items():
            text = markdown_table(value) if isinstance(value, Mapping) else f"```\n{value}\n```"
            writer.add_text(f"align/{section}", text)
        recipe = self.values.get("recipe")
        if isinstance(recipe, Mapping) and hasattr(writer, "_get_file_writer"):
            # TensorBoard's HParams records (the experiment's config and this run's start info), written into this
            # run's own event file rather than the sub-run SummaryWriter.add_hparams would create, so each run's
            # hyperparameters sit beside its scalars.
            from torch.utils.tensorboard.summary import hparams

            hp = {k: v for k, v in flatten(recipe).items() if isinstance(v, (bool, int, float, str))}
            exp, ssi, _ = hparams(hp, dict.fromkeys(HPARAM_METRICS, 0.0))
            fw = writer._get_file_writer()
            fw.add_summary(exp)
            fw.add_summary(ssi)
        writer.flush()
        return True

    def _wandb(self, cb) -> bool:
        wandb = cb._wandb
        if wandb is None or getattr(wandb, "run", None) is None:
            return False
        wandb.config.update({"align": self.values}, allow_val_change=True)
        return True

    def _mlflow(self, cb) -> bool:
        mlflow = cb._ml_flow
        if not cb._initialized or mlflow.active_run() is None:
            return False
        # MLflow param names allow alphanumerics, _ - . space / ; values are capped in length and per batch.
        params = {re.sub(r"[^0-9A-Za-z_\-. /]", "_", f"align.{k}"): str(v) for k, v in flatten(self.values).items()}
        params = {k: v for k, v in params.items() if len(v) <= cb._MAX_PARAM_VAL_LENGTH}
        items = list(params.items())
        for i in range(0, len(items), cb._MAX_PARAMS_TAGS_PER_BATCH):
            mlflow.log_params(dict(items[i: i + cb._MAX_PARAMS_TAGS_PER_BATCH]))
        mlflow.log_dict(self.values, "align/run_info.json")
        return True


def add_run_info(trainer, values: Mapping[str, Any]) -> RunInfoCallback:
    """Append a :class:`RunInfoCallback` recording ``values`` to ``trainer`` (a ``transformers.Trainer``); call
    it after building the trainer and before ``train()``."""
    cb = RunInfoCallback(values, trainer.callback_handler.callbacks)
    trainer.add_callback(cb)
    return cb
