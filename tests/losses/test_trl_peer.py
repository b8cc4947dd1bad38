"""Peer oracle (docs/algorithms.md §1): TRL's ``DPOTrainer`` and ``align`` compute the same DPO loss on the same batch.

A tiny Llama (random weights) is the reference; the policy is the same model with every weight perturbed, so the
log-ratios, and h, are not zero. TRL stacks a batch of B pairs as 2B rows, all chosen rows first, then all
rejected rows, scores them with its fused LM head (``model(..., labels=..., fused_lm_head=True).log_probs``,
summed over ``completion_mask``) and averages the per-pair loss over the batch. We feed the *same* ``input_ids``
through a plain forward and ``align.logprobs.sequence_logprobs`` with ``loss_mask = completion_mask``, reshape to
``[B, 2]`` (chosen, rejected) and call ``align.losses.dpo_loss``.

Tokenization. On the rows below (conversational, and plain prompts that end on a token boundary such as "?" with
responses starting with a space) ``align.data.tokenize.tokenize_examples`` produces exactly TRL's token ids, so the
whole align path (tokenize → ``ListCollator`` → ``align.forward.list_logprobs`` → ``dpo_loss``) is compared too.
Where the two differ for plain-text rows, see ``test_plain_text_boundary_merges_differ_only_in_where_the_cut_is``
and ``test_response_already_ending_in_eos_gets_no_second_eos``:
  * TRL tokenizes ``prompt + response`` as ONE string and starts the completion where that and the tokenized
    prompt first diverge (``trl.data_utils.common_prefix_length``). When BPE merges across the boundary
    ("...: hel" + "lo" → " hello"), TRL moves the merged prompt tail into the completion: prompt ids
    [..., ":"], completion [" hello", eos]. align tokenizes prompt and response separately: prompt
    [..., ":", " hel"], response ["lo", eos]. Same text, different ids and a different scored span, so the
    log-probs differ on such rows.
  * TRL appends eos to a plain response only if the text does not already end with it (``add_eos``);
    ``align.data.tokenize.render`` appends it unconditionally, so "... done<|im_end|>" gets two eos tokens.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from trl import DPOConfig, DPOTrainer  # noqa: E402

from align.data.collate import ListCollator  # noqa: E402
from align.data.example import RankedExample  # noqa: E402
from align.data.tokenize import tokenize_examples  # noqa: E402
from align.forward import list_logprobs  # noqa: E402
from align.logprobs import sequence_logprobs  # noqa: E402
from align.losses import DPOLossConfig, ListScores, dpo_loss  # noqa: E402
from align.models.tiny import TinyShape, build_model, build_tokenizer  # noqa: E402

BETA = 0.1
SPEC = TinyShape(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1,
)  # fmt: skip

# Plain prompts end on a pre-tokenizer boundary ("?", ".", ":") and responses start with a space, so tokenizing
# prompt + response in one go (TRL) and separately (align) gives the same ids.
ROWS = [
    {"prompt": "What is the capital of France?", "chosen": " Paris is the capital.", "rejected": " Lyon, I think."},
    {"prompt": "Name a primary colour.", "chosen": " Red.", "rejected": " Purple is a primary colour of light."},
    {"prompt": "How many legs does a spider have?", "chosen": " Eight.", "rejected": " Six, like an insect."},
    {"prompt": "Say hello politely.", "chosen": " Hello, it is nice to meet you.", "rejected": " Go away."},
    {"prompt": "What is 2 + 2?", "chosen": " 4", "rejected": " 22, obviously."},
    {"prompt": "Is water wet:", "chosen": " Water makes other things wet.", "rejected": " No."},
]
# Rows on which the two tokenizations legitimately differ (see the module docstring).
MERGE_ROWS = [
    {"prompt": "Finish the word: hel", "chosen": "lo", "rejected": "p"},
    {"prompt": "Trailing space ", "chosen": "hello world", "rejected": "Go"},
]
EOS_ROW = {"prompt": "End with eos.", "chosen": " done<|im_end|>", "rejected": " not done"}


def _conversational(row: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def _examples(rows: list[dict]) -> list[RankedExample]:
    """The same rows as align's type: responses (chosen, rejected) with labels (1, 0)."""
    out = []
    for i, r in enumerate(rows):
        chosen, rejected = (r["chosen"], r["rejected"])
        if isinstance(chosen, list):  # conversational: the assistant turn's text
            chosen, rejected = chosen[0]["content"], rejected[0]["content"]
        out.append(RankedExample(r["prompt"], (chosen, rejected), (1.0, 0.0), row=i))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_peer")
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in [*ROWS, *MERGE_ROWS, EOS_ROW]) + "\n")
    tok = build_tokenizer([corpus], SPEC.vocab_size)  # BPE merges learnt from these rows (" hello", " capital", ...)
    ref = build_model(tok, SPEC).eval()
    policy = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return SimpleNamespace(tok=tok, policy=policy, ref=ref, root=root, trainers={})


def trainer_for(tiny, rows: list[dict], loss_type: str = "sigmoid", name: str = "plain") -> DPOTrainer:
    """A TRL DPOTrainer over deep copies of the fixture's models (TRL patches their forward with its fused head)."""
    key = (name, loss_type)
    if key not in tiny.trainers:
        args = DPOConfig(
            output_dir=str(tiny.root / f"{name}-{loss_type}"),
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            beta=BETA,
            loss_type=loss_type,
            report_to="none",
            per_device_train_batch_size=len(rows),
            max_length=256,
            precompute_ref_log_probs=False,
            disable_tqdm=True,
        )
        tiny.trainers[key] = DPOTrainer(
            model=copy.deepcopy(tiny.policy),
            ref_model=copy.deepcopy(tiny.ref),
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tiny.tok,
        )
    return tiny.trainers[key]


@torch.no_grad()
def our_pair_logps(model, batch) -> torch.Tensor:
    """``[B, 2]`` (chosen, rejected) summed log-probs of TRL's batch, via align's log-prob gathering."""
    ids = batch["input_ids"]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], use_cache=False).logits
    sums = sequence_logprobs(logits, ids, batch["completion_mask"])
    return sums.view(2, -1).T  # TRL's rows: [chosen_0 .. chosen_{B-1}, rejected_0 .. rejected_{B-1}]


def trl_metrics(trainer) -> dict[str, float]:
    mode = "train" if trainer.model.training else "eval"
    return {k: v[-1] for k, v in trainer._metrics[mode].items()}


# ---------------------------------------------------------------------------------------------------------------
# The loss, on TRL's own batch
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "sigmoid_norm"])
def test_dpo_loss_equals_trl_on_the_same_batch(tiny, loss_type):
    trainer = trainer_for(tiny, ROWS, loss_type)
    batch = next(iter(trainer.get_train_dataloader()))
    B = len(ROWS)
    assert batch["input_ids"].shape[0] == 2 * B
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
    metrics = trl_metrics(trainer)

    policy, ref = our_pair_logps(tiny.policy, batch), our_pair_logps(tiny.ref, batch)
    # TRL's IPO and sigmoid_norm divide each log-ratio by its completion token count (completion_mask.sum, at least 1).
    lengths = batch["completion_mask"].sum(1).view(2, -1).T
    scores = ListScores(policy, torch.tensor([[1.0, 0.0]] * B), torch.ones(B, 2, dtype=torch.bool), lengths=lengths,
                        ref_logps=ref)
    out = dpo_loss(scores, DPOLossConfig(beta=BETA, loss_type=loss_type))
    assert len(out.pairs) == B
    assert out.pairs.winner.tolist() == [0] * B  # one pair per row, chosen (slot 0) over rejected (slot 1)
    ours = out.losses.mean().item()

    # Not a trivial agreement: the policy really differs from the reference on every pair.
    h = (policy - ref)[:, 0] - (policy - ref)[:, 1]
    assert (h.abs() > 1e-2).all(), h
    assert ours == pytest.approx(trl_loss, rel=1e-5)

    # TRL's logged metrics are batch means of the same quantities.
    m = out.metrics
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert m[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    assert m["rewards/accuracies"] == pytest.approx(metrics["rewards/accuracies"])
    assert policy[:, 0].mean().item() == pytest.approx(metrics["logps/chosen"], rel=1e-5)
    assert policy[:, 1].mean().item() == pytest.approx(metrics["logps/rejected"], rel=1e-5)


def test_per_sequence_logps_equal_trl(tiny):
    """TRL's fused-head per-sequence sums (``compute_ref_log_probs`` works for any model) equal align's gather."""
    trainer = trainer_for(tiny, ROWS)
    batch = next(iter(trainer.get_train_dataloader()))
    for ours_model, trl_model in ((tiny.policy, trainer.model), (tiny.ref, trainer.ref_model)):
        chosen, rejected = trainer.compute_ref_log_probs(trl_model, batch)
        ours = our_pair_logps(ours_model, batch)
        torch.testing.assert_close(ours[:, 0], chosen.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[:, 1], rejected.float(), rtol=1e-5, atol=1e-5)
    # and the two models really are different
    assert not torch.allclose(our_pair_logps(tiny.policy, batch), our_pair_logps(tiny.ref, batch), atol=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# align's whole path: tokenize_examples → ListCollator → list_logprobs → dpo_loss
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["plain", "conversational"])
def test_tokenization_and_full_path_equal_trl(tiny, fmt):
    rows = ROWS if fmt == "plain" else [_conversational(r) for r in ROWS]
    trainer = trainer_for(tiny, rows, name=fmt)
    lists, report = tokenize_examples(_examples(rows), tiny.tok)
    assert len(lists) == len(rows) and not report.dropped

    # 1. Token ids: identical prompt, chosen and rejected ids, row by row.
    trl_rows = [trainer.train_dataset[i] for i in range(len(rows))]
    for t, ours in zip(trl_rows, lists):
        assert ours.prompt_ids == tuple(t["prompt_ids"])
        assert ours.response_ids == (tuple(t["chosen_ids"]), tuple(t["rejected_ids"]))
        assert ours.response_ids[0][-1 if fmt == "plain" else -2] == tiny.tok.eos_token_id

    # 2. Log-probs: align's collated forward vs TRL's collated fused-head forward, same row order.
    ours_batch = ListCollator(pad_token_id=tiny.tok.pad_token_id)([{"list": t} for t in lists])
    trl_batch = trainer.data_collator(
        [{k: t[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for t in trl_rows]
    )
    with torch.no_grad():
        pol, ref = list_logprobs(tiny.policy, ours_batch), list_logprobs(tiny.ref, ours_batch)
    for ours, trl_model in ((pol, trainer.model), (ref, trainer.ref_model)):
        chosen, rejected = trainer.compute_ref_log_probs(trl_model, trl_batch)
        torch.testing.assert_close(ours, torch.stack([chosen, rejected], 1).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_batch["lengths"], trl_batch["completion_mask"].sum(1).view(2, -1).T)

    # 3. The loss.
    scores = ListScores(pol, ours_batch["labels"], ours_batch["list_mask"], ref_logps=ref)
    out = dpo_loss(scores, DPOLossConfig(beta=BETA))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, trl_batch).item()
    assert out.losses.mean().item() == pytest.approx(trl_loss, rel=1e-5)


def test_plain_text_boundary_merges_differ_only_in_where_the_cut_is(tiny):
    """Documented difference (module docstring): on a prompt/response boundary inside a BPE merge, TRL and align
    cut the same text at different tokens. What IS the same, and asserted: the full text, and (since TRL's prompt is
    the common prefix) TRL's prompt ids are a prefix of align's. align's prompt is the prompt tokenized alone.
    """
    trainer = trainer_for(tiny, MERGE_ROWS, name="merge")
    lists, _ = tokenize_examples(_examples(MERGE_ROWS), tiny.tok)
    tok = tiny.tok
    differs = 0
    for row, t, ours in zip(MERGE_ROWS, trainer.train_dataset, lists):
        assert ours.prompt_ids == tuple(tok(row["prompt"], add_special_tokens=False)["input_ids"])
        assert ours.prompt_ids[: len(t["prompt_ids"])] == tuple(t["prompt_ids"])
        for ours_r, trl_r in zip(ours.response_ids, (t["chosen_ids"], t["rejected_ids"])):
            assert tok.decode(ours.prompt_ids + ours_r) == tok.decode(t["prompt_ids"] + trl_r)
        differs += ours.prompt_ids != tuple(t["prompt_ids"])
    assert differs >= 1  # the rows do exercise a merge across the boundary, for this tokenizer


def test_response_already_ending_in_eos_gets_no_second_eos(tiny):
    # As TRL's add_eos: a response that already ends with eos is not given a second one.
    trainer = trainer_for(tiny, [EOS_ROW], name="eos")
    (ours,), _ = tokenize_examples(_examples([EOS_ROW]), tiny.tok)
    t = trainer.train_dataset[0]
    assert ours.response_ids == (tuple(t["chosen_ids"]), tuple(t["rejected_ids"]))
