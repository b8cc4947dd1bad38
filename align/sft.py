"""A short SFT on the preferred responses, through TRL's ``SFTTrainer``; the result is cached by content."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from align.config import SFTStage
from align.data.example import RankedExample
from align.models.loading import load_model, load_tokenizer
from align.reference.fingerprint import weights_fingerprint

log = logging.getLogger("align.sft")


def sft_rows(examples: list[RankedExample]) -> list[dict]:
    """TRL prompt-completion rows: each list's best response (conversational when the prompt is messages)."""
    rows = []
    for ex in examples:
        best = ex.responses[max(range(len(ex.scores)), key=ex.scores.__getitem__)]
        if isinstance(ex.prompt, list):
            rows.append({"prompt": ex.prompt, "completion": [{"role": "assistant", "content": best}]})
        else:
            rows.append({"prompt": ex.prompt, "completion": best})
    return rows


def run_sft(model_name: str, examples: list[RankedExample], stage: SFTStage, root: Path, *, dtype: str = "float32",
            max_length: int = 1024, seed: int = 42) -> str:
    """SFT ``model_name`` on the best response of each example; returns the saved directory.

    The directory is keyed by the base weights, the SFT rows and the settings, so a second run (and the
    reference cache behind it) reuses the same weights instead of training new, slightly different ones.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = sft_rows(examples)
    model = load_model(model_name, dtype)
    tokenizer = load_tokenizer(model_name)
    key = hashlib.sha256(json.dumps({"weights": weights_fingerprint(model), "rows": rows, "max_length": max_length,
                                     "seed": seed, "stage": stage.__dict__}, sort_keys=True).encode()).hexdigest()[:16]
    out = root / f"sft-{key}"
    if (out / "config.json").exists():
        log.info("reusing SFT model %s", out)
        return str(out)
    tmp = root / f".sft-{key}.{os.getpid()}.tmp"
    # activation_checkpointing (transformers 5's name): through the old gradient_checkpointing, whose TRL default
    # is set, transformers warns on every construction
    args = SFTConfig(output_dir=str(tmp / "trainer"), max_steps=stage.max_steps, learning_rate=stage.learning_rate,
                     per_device_train_batch_size=stage.batch_size, warmup_steps=stage.warmup_steps,
                     lr_scheduler_type="cosine", logging_steps=max(stage.max_steps // 5, 1), save_strategy="no",
                     report_to="none", bf16=False, use_cpu=not _has_gpu(), max_length=max_length, seed=seed,
                     activation_checkpointing=False, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    if not out.exists():
        tmp.replace(out)
    return str(out)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
