"""Shared fixtures: a very small model and tokenizer built offline, and an isolated $ALIGN_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED_DATA / "hh_rlhf_harmless_base.jsonl.gz"
OASST = SHARED_DATA / "oasst_en_trees.jsonl"
REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGN_DATA_DIR", str(SHARED_DATA))  # the embedded tokenizer's corpus (align.models.tiny)


# Test modules that run a whole recipe, example or benchmark (marked `slow`); everything under tests/distributed/ is
# marked `distributed`. `python -m pytest -m "not slow and not distributed"` is the fast subset.
SLOW_MODULES = ("test_grpo_recipe.py", "test_api.py", "test_bench_dpo.py", "test_bench_grpo.py", "test_bench_cache.py",
                "test_reproduce_pieces.py", "test_kill.py", "test_train_e2e.py", "test_iterate.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if "distributed" in path.parts:
            item.add_marker(pytest.mark.distributed)
        if path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def align_home(tmp_path_factory) -> Path:
    """Every test writes models, SFT checkpoints and caches under a temporary $ALIGN_HOME."""
    home = tmp_path_factory.mktemp("align_home")
    old = os.environ.get("ALIGN_HOME")
    os.environ["ALIGN_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("ALIGN_HOME", None)
    else:
        os.environ["ALIGN_HOME"] = old


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A ~0.1 M-parameter Llama and a 512-token BPE trained on the shipped data, saved once per session."""
    from align.models.tiny import TinyShape, build_model, build_tokenizer, corpus_files

    out = tmp_path_factory.mktemp("small_model")
    tok = build_tokenizer(corpus_files(), vocab_size=512)
    spec = TinyShape(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1, seed=0)
    build_model(tok, spec).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_tokenizer(small_model_dir):
    """The small model's tokenizer, loaded once."""
    from align.models import load_tokenizer

    return load_tokenizer(str(small_model_dir))


@pytest.fixture(scope="session")
def small_reward_model_dir(small_model_dir, small_tokenizer, tmp_path_factory) -> Path:
    """The small causal LM turned into a reward model once (seeded head) and saved, so every load is identical."""
    import torch

    from align.models.loading import load_reward_model

    out = tmp_path_factory.mktemp("small_reward_model")
    torch.manual_seed(0)
    load_reward_model(str(small_model_dir), tokenizer=small_tokenizer).save_pretrained(out)
    small_tokenizer.save_pretrained(out)
    return out
