"""Shared fixtures for the reference-cache tests: a very small tokenizer/model pair and ~40 tokenized lists."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from align.data.example import RankedExample
from align.data.tokenize import TokenizedList, tokenize_examples
from align.models.tiny import TinyShape, build_model, build_tokenizer
from align.reference import CachedReference, LiveReference

SPEC = TinyShape(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, seed=0)
SHARD = 8

_WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches "
          "please answer the question about rivers mountains bread coffee music history science "
          "i think that is a good idea but maybe we should ask someone else first thank you").split()


def corpus_text() -> str:
    """JSON lines (build_tokenizer reads JSONL and skips anything else)."""
    lines = []
    for i in range(300):
        text = " ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(5 + i % 11))
        lines.append(json.dumps({"text": text}))
    return "\n".join(lines) + "\n"


def make_examples(n: int = 42) -> list[RankedExample]:
    """``n`` examples: K = 2, 3 or 4; chat-message prompts and plain string prompts; varied lengths."""
    out = []
    for i in range(n):
        k = (2, 3, 2, 4)[i % 4]
        words = [_WORDS[(i * 5 + j) % len(_WORDS)] for j in range(2 + i % 6)]
        if i % 3 == 0:
            prompt: str | list[dict[str, str]] = " ".join(words) + "?"
        elif i % 3 == 1:
            prompt = [{"role": "user", "content": " ".join(words)}]
        else:
            prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": " ".join(words)},
                      {"role": "assistant", "content": "which one"}, {"role": "user", "content": words[0]}]
        responses = tuple(
            " ".join(_WORDS[(i * 3 + j * 11 + m) % len(_WORDS)] for m in range(1 + (i + 2 * j) % 7)) + f" {j}"
            for j in range(k)
        )
        out.append(RankedExample(prompt, responses, tuple(float(-j) for j in range(k)), "rank", i))
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The model is tiny: one intra-op thread is ~20x faster than two on a busy 2-core machine. Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text(corpus_text())
    return path


@pytest.fixture(scope="module")
def tok(corpus):
    return build_tokenizer([corpus], 512)


@pytest.fixture(scope="module")
def model(tok):
    m = build_model(tok, SPEC)
    m.eval()
    return m


@pytest.fixture(scope="module")
def examples() -> list[RankedExample]:
    return make_examples()


@pytest.fixture(scope="module")
def lists(examples, tok) -> list[TokenizedList]:
    out, report = tokenize_examples(examples, tok)
    assert len(out) == len(examples) and not report.dropped
    return out


def cached(root, model, tok, *, shard_size: int = SHARD, per_token: bool = False, **kw) -> CachedReference:
    """A cached reference of ``model`` under ``root`` whose misses ``model`` computes."""
    live = LiveReference(model, tok, batch_size=5, per_token=per_token)
    return CachedReference.for_model(root, live, shard_size=shard_size, progress=False, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, tok, lists):
    """One complete cache (8 entries a shard), built once per module. Read-only: copy it to change it."""
    root = tmp_path_factory.mktemp("built")
    cache = cached(root, model, tok)
    stats = cache.prefetch(lists)
    return cache, copy.deepcopy(stats)


@pytest.fixture
def built_copy(built, tmp_path):
    """A private copy of the built cache directory under ``tmp_path``; returns (root, key dir)."""
    cache, _ = built
    root = tmp_path / "cache"
    shutil.copytree(cache.store.dir, root / cache.store.key)
    return root, root / cache.store.key


def naive_logps(model, t: TokenizedList) -> list[torch.Tensor]:
    """Per-token response log-probs of each response of ``t``, one unpadded forward per response."""
    out = []
    with torch.no_grad():
        for r in t.response_ids:
            ids = torch.tensor([list(t.prompt_ids) + list(r)])
            logits = model(input_ids=ids).logits.double()
            lp = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            out.append(lp[len(t.prompt_ids) - 1 :])
    return out
