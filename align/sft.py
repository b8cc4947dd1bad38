"""A short SFT on the preferred responses, through TRL's ``SFTTrainer``; the result is cached by content.

In a distributed run (``accelerate launch``) rank 0 runs the stage alone in a child process with the launcher's
environment removed (a Trainer inside the process group would try to train across ranks with one rank), while the
other ranks wait; every rank then loads the same cached result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from align import leases
from align.config import SFTStage
from align.data.example import RankedExample
from align.distributed import barrier, gather_objects, rank_world
from align.errors import DataError
from align.models.loading import load_model, load_tokenizer
from align.reference.fingerprint import weights_fingerprint

log = logging.getLogger("align.sft")

# What `accelerate launch` / torchrun set; the SFT child must not see it, or it joins (and hangs) the group.
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                 "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE")


def sft_rows(examples: list[RankedExample]) -> list[dict]:
    """TRL prompt-completion rows: each list's best response (conversational when the prompt is messages)."""
    rows = []
    for ex in examples:
        best = ex.responses[max(range(len(ex.labels)), key=ex.labels.__getitem__)]
        if isinstance(ex.prompt, list):
            rows.append({"prompt": ex.prompt, "completion": [{"role": "assistant", "content": best}]})
        else:
            rows.append({"prompt": ex.prompt, "completion": best})
    return rows


def run_sft(model_name: str, rows: list[dict], stage: SFTStage, root: Path, *, dtype: str = "float32",
            max_length: int = 1024, seed: int = 42) -> str:
    """SFT ``model_name`` on TRL prompt-completion ``rows`` (:func:`sft_rows` of ranked examples, or a task's
    answers); returns the saved directory, on every rank."""
    if not rows:
        raise DataError("the SFT stage has no rows to train on (set sft.enabled=false, or give data with answers)")
    rank, world = rank_world()
    if world == 1:
        return sft_on_rows(model_name, rows, stage, root, dtype=dtype, max_length=max_length, seed=seed)
    path = None
    if rank == 0:
        path = _sft_in_child(model_name, rows, stage, root, dtype, max_length, seed)
    barrier()
    return gather_objects(path)[0]


def _sft_in_child(model_name: str, rows: list[dict], stage: SFTStage, root: Path, dtype: str, max_length: int,
                  seed: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"model": model_name, "rows": rows, "stage": asdict(stage), "root": str(root),
                                    "dtype": dtype, "max_length": max_length, "seed": seed}))
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_ENV and not k.startswith("ACCELERATE_")}
        log.info("SFT stage: rank 0 runs it alone while the other ranks wait")
        done = subprocess.run([sys.executable, "-m", "align.sft", str(spec)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the SFT stage failed:\n{done.stderr[-4000:]}")
        return done.stdout.strip().splitlines()[-1]


def sft_on_rows(model_name: str, rows: list[dict], stage: SFTStage, root: Path, *, dtype: str = "float32",
                max_length: int = 1024, seed: int = 42) -> str:
    """SFT ``model_name`` on TRL prompt-completion ``rows``; returns the saved directory.

    The directory is keyed by the base weights, the rows and the settings, so a second run (and the reference
    cache behind it) reuses the same weights instead of training new, slightly different ones.
    A concurrent run training the same stage is waited for (it holds a lease, :mod:`align.leases`); a killed run's
    half-written copy is removed by the next run.
    """
    model = load_model(model_name, dtype)
    tokenizer = load_tokenizer(model_name)
    key = hashlib.sha256(json.dumps({"weights": weights_fingerprint(model), "rows": rows, "max_length": max_length,
                                     "seed": seed, "stage": stage.__dict__}, sort_keys=True).encode()).hexdigest()[:16]
    out = root / f"sft-{key}"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    with _claim(root / f".sft-{key}.claim", out):
        if (out / "config.json").exists():
            log.info("reusing SFT model %s", out)
            return str(out)
        return _train(model, tokenizer, rows, stage, root, key, out, max_length, seed)


def _train(model, tokenizer, rows: list[dict], stage: SFTStage, root: Path, key: str, out: Path, max_length: int,
           seed: int) -> str:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tmp = root / f".sft-{key}.{os.getpid()}.tmp"
    # activation_checkpointing (transformers 5's name): through the old gradient_checkpointing, whose TRL default
    # is set, transformers warns on every construction
    args = SFTConfig(output_dir=str(tmp / "trainer"), max_steps=stage.max_steps, learning_rate=stage.learning_rate,
                     per_device_train_batch_size=stage.batch_size, warmup_steps=stage.warmup_steps,
                     lr_scheduler_type="cosine", logging_steps=max(stage.max_steps // 5, 1), save_strategy="no",
                     report_to="none", bf16=False, use_cpu=not _has_gpu(), max_length=max_length, seed=seed,
                     activation_checkpointing=False, dataset_num_proc=None,
                     disable_tqdm=os.environ.get("TQDM_DISABLE") == "1")  # align.quiet() sets it
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    if not out.exists():
        tmp.replace(out)
    else:  # a concurrent run finished first; both trained the same thing
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def _remove_stale_temporaries(root: Path) -> None:
    """Delete ``.sft-KEY.PID.tmp`` directories whose process is gone (a kill in the middle of a stage)."""
    for tmp in root.glob(".sft-*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not leases.pid_alive(pid):
            log.info("removing %s, left by a killed SFT stage", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _claim(path: Path, out: Path):
    """Hold the lease at ``path`` while this process trains the stage; wait while another live process holds it
    (a claim left by a killed process, or one on another host not renewed within the lease time, is taken over)."""
    announced = False
    while (lease := leases.acquire(path)) is None:
        if (out / "config.json").exists():  # the holder has finished it: nothing to train
            break
        if not announced:
            log.info("another run is training this SFT stage (%s); waiting for it", path)
            announced = True
        time.sleep(1.0)
    try:
        yield
    finally:
        if lease is not None:
            lease.release()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":  # the child process of a distributed run's SFT stage: python -m align.sft SPEC.json
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.WARNING)
    print(sft_on_rows(spec["model"], spec["rows"], SFTStage(**spec["stage"]), Path(spec["root"]),
                      dtype=spec["dtype"], max_length=spec["max_length"], seed=spec["seed"]))
