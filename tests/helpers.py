"""What several test modules share: the CLI run in-process, `align` launched in a subprocess (under `accelerate
launch` when a config is named), and the hash of a saved model's weights."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import traceback
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO

ACCELERATE = REPO / "recipes" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of a launched `align`: this checkout, DeepSpeed on CPU, one thread a process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", **extra)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def align_command(args: list[str], config: str | None = None) -> list[str]:
    """``python -m align ARGS``, or under ``accelerate launch --config_file recipes/accelerate/CONFIG``."""
    if config is None:
        return [sys.executable, "-m", "align", *args]
    return [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
            str(ACCELERATE / config), "--main_process_port", str(free_port()), "-m", "align", *args]


def model_hash(run: Path) -> str:
    """SHA-256 over the names and values of ``run/model/model.safetensors``."""
    weights = load_file(str(Path(run) / "model" / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode() + weights[name].numpy().tobytes())
    return h.hexdigest()


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``align ARGS`` in this process: its exit code and stderr; anything escaping ``main`` fails the test (it would
    be a traceback for a user)."""
    from align.cli import main

    try:
        code = main(args)
    except BaseException:
        pytest.fail(f"align {args[0]} raised on {args}:\n{traceback.format_exc()}")
    return code, capsys.readouterr().err
