"""The cache in a 2-process (gloo, CPU) run: the missing entries are split across ranks, gathered on every rank
and written once by rank 0."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from align.data.tokenize import tokenize_examples
from align.forward import score_lists
from align.models.tiny import build_model, build_tokenizer
from tests.reference.conftest import SPEC, cached, corpus_text, make_examples


def _setup(tmp: Path):
    corpus = tmp / "corpus.jsonl"
    if not corpus.exists():
        corpus.write_text(corpus_text())
    tok = build_tokenizer([corpus], 512)
    lists, _ = tokenize_examples(make_examples(32), tok, max_prompt_length=32, max_response_length=16)
    return tok, build_model(tok, SPEC), lists


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        tok, model, lists = _setup(Path(tmp))
        cache = cached(Path(tmp) / "rc", model, tok, shard_size=8)
        stats = cache.prefetch(lists)
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({
            "computed": stats.computed, "here": stats.computed_here, "values": cache.list_logps(lists),
            "key": stats.key}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_split_the_work_and_rank0_writes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tok, model, lists = _setup(tmp_path)  # writes the corpus once, before the workers read it
    n = sum(len(t.response_ids) for t in lists)
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["computed"] == r1["computed"] == n and r0["key"] == r1["key"]
    assert r0["here"] + r1["here"] == n and r0["here"] > 0 and r1["here"] > 0
    assert r0["values"] == r1["values"]
    expected, _ = score_lists(model, lists, batch_size=8, pad_token_id=tok.pad_token_id)
    for i, v in enumerate(r0["values"]):
        torch.testing.assert_close(torch.tensor(v), expected[i, : len(v)], rtol=1e-5, atol=1e-5)
    # A later single-process run hits everything the two ranks computed.
    assert cached(tmp_path / "rc", model, tok, shard_size=8).prefetch(lists).computed == 0
