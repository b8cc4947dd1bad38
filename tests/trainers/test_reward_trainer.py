"""RewardModelTrainer on a small scalar-head model: loss identities, the [B, K] reward layout, exact gradient
accumulation on mixed-size lists, and learning a training set end to end."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers import TrainingArguments

from align.data.collate import ListCollator
from align.data.example import RankedExample
from align.data.tokenize import tokenize_examples
from align.evaluation import evaluate_reward_model
from align.forward import PolicyOutput, reward_forward, reward_scores
from align.models import load_tokenizer
from align.models.loading import is_reward_model, load_reward_model, read_model_info
from align.trainers import ListDataset, RewardLossConfig, RewardModelTrainer


def _lists(tok, n=8, ks=(2, 3)):
    """``n`` distinct lists of K in ``ks`` (cycled); response j is ranked j-th and is j·2 tokens of ' zz' longer."""
    exs = []
    for i in range(n):
        k = ks[i % len(ks)]
        exs.append(RankedExample([{"role": "user", "content": f"Question {i}: how do cats sleep?"}],
                                 tuple(f"answer {j} to {i}" + " zz" * (2 * j) for j in range(k)),
                                 tuple(float(-j) for j in range(k)), "rank", i))
    lists, _ = tokenize_examples(exs, tok, max_prompt_length=64, max_response_length=32)
    assert len(lists) == n
    return lists


def _fit_lists(tok, n=8):
    """Like :func:`_lists`, but quality is in a word ("great" > "fine" > "awful") and length is shuffled against
    it, so a fresh head does not already rank them and a model must learn the word."""
    words, exs = ("great", "fine", "awful"), []
    for i in range(n):
        k = 2 + i % 2
        exs.append(RankedExample([{"role": "user", "content": f"Question {i}: how do cats sleep?"}],
                                 tuple(f"{words[j]} answer to {i}" + " zz" * (2 * ((i + j) % k)) for j in range(k)),
                                 tuple(float(-j) for j in range(k)), "rank", i))
    lists, _ = tokenize_examples(exs, tok, max_prompt_length=64, max_response_length=32)
    assert len(lists) == n
    return lists


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The model is tiny: one intra-op thread is as fast, and with other processes busy on a 2-core machine two
    threads spin-wait on each other (the training test went from ~1 s to over 60 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok(small_tokenizer):
    return small_tokenizer


@pytest.fixture(scope="module")
def rm_dir(small_reward_model_dir):
    return small_reward_model_dir


def _rm(rm_dir, tok):
    return load_reward_model(str(rm_dir), tokenizer=tok)


@pytest.fixture(scope="module")
def trainer(rm_dir, tok, tmp_path_factory):
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("rm_trainer")), use_cpu=True, report_to="none")
    return RewardModelTrainer(_rm(rm_dir, tok), args, RewardLossConfig(), ListDataset(_lists(tok, 2)),
                              processing_class=tok)


def _objective(trainer, config, r, labels, mask=None):
    """The trainer's objective on fake rewards; also checks the GA normaliser agrees with the objective's count."""
    r, labels = torch.tensor(r), torch.tensor(labels)
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.tensor(mask)
    trainer.loss_config = config
    inputs = {"labels": labels, "list_mask": mask}
    out = trainer.objective(PolicyOutput(logps=r), inputs)
    assert out.count == trainer.count_items(inputs), "count_items (the GA normaliser) != objective count"
    return out


def _nls(x: float) -> float:
    """-log σ(x)."""
    return math.log1p(math.exp(-x))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- 1. loss identities ---------------------------------------------------------------------------------------


def test_bt_pair_loss_matches_hand(trainer):
    r = [[1.3, -0.4], [0.2, 0.9]]
    out = _objective(trainer, RewardLossConfig(loss_type="bt"), r, [[1.0, 0.0], [0.0, 1.0]])
    assert out.count == 2
    assert out.losses.sum().item() == pytest.approx(_nls(1.3 + 0.4) + _nls(0.9 - 0.2), rel=1e-6)
    assert out.metrics["rewards/accuracies"] == 1.0


def test_bt_every_labelled_pair_is_a_term_and_ties_and_padding_form_none(trainer):
    r = [[0.5, -1.0, 2.0], [0.3, 0.1, -0.7], [1.1, -0.2, 50.0]]
    labels = [[3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 5.0]]  # list 1: slots 0, 1 tied; list 2: slot 2 padded
    mask = [[True, True, True], [True, True, True], [True, True, False]]
    out = _objective(trainer, RewardLossConfig(loss_type="bt"), r, labels, mask)
    expected_pairs = [(0, 0, 1), (0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2), (2, 0, 1)]
    assert out.count == len(expected_pairs) == 6
    want = sum(_nls(r[b][i] - r[b][j]) for b, i, j in expected_pairs)
    assert out.losses.sum().item() == pytest.approx(want, rel=1e-6)


def test_mmpo_gamma_inf_is_bt(trainer):
    cfg = RewardLossConfig(loss_type="mmpo", gamma=float("inf"))  # accepted: γ = ∞ is DPO / Bradley–Terry
    r = [[0.5, -1.0, 2.0], [0.3, 0.1, -0.7]]
    labels = [[3.0, 2.5, 1.0], [1.0, 1.0, 0.0]]
    mmpo = _objective(trainer, cfg, r, labels)
    bt = _objective(trainer, RewardLossConfig(loss_type="bt"), r, labels)
    assert mmpo.count == bt.count == 5
    assert mmpo.losses.sum().item() == pytest.approx(bt.losses.sum().item(), rel=1e-6)
    finite = _objective(trainer, RewardLossConfig(loss_type="mmpo", gamma=1.0), r, labels)
    assert abs(finite.losses.sum().item() - bt.losses.sum().item()) > 1e-3  # a finite γ is a different loss


@pytest.mark.parametrize("margins", ["scores", "ranks"])
def test_mmpo_soft_targets_match_hand(trainer, margins):
    r = [[0.4, 0.9, -0.5]]
    scores = [2.0, 0.5, -1.0]
    out = _objective(trainer, RewardLossConfig(loss_type="mmpo", gamma=0.7, margins=margins), r, [scores])
    m = scores if margins == "scores" else [1.0, 0.5, 0.0]  # mid-rank margins of a 3-list on [0, 1]
    want = 0.0
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        p, h = _sig(0.7 * (m[i] - m[j])), r[0][i] - r[0][j]
        want += p * _nls(h) + (1 - p) * _nls(-h)
    assert out.count == 3
    assert out.losses.sum().item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("loss_type", ["bt", "mmpo"])
def test_center_rewards_adds_squared_sum_per_pair(trainer, loss_type):
    c = 0.3
    r = [[1.5, 0.7, -0.2], [2.0, 1.0, 0.0]]
    labels = [[2.0, 1.0, 0.0], [1.0, 0.0, 9.0]]
    mask = [[True, True, True], [True, True, False]]
    plain = _objective(trainer, RewardLossConfig(loss_type=loss_type, gamma=1.0), r, labels, mask)
    centred = _objective(trainer, RewardLossConfig(loss_type=loss_type, gamma=1.0, center_rewards_coefficient=c),
                         r, labels, mask)
    pairs = [(0, 0, 1), (0, 0, 2), (0, 1, 2), (1, 0, 1)]
    extra = c * sum((r[b][i] + r[b][j]) ** 2 for b, i, j in pairs)
    assert centred.count == plain.count == len(pairs)
    assert centred.losses.sum().item() == pytest.approx(plain.losses.sum().item() + extra, rel=1e-6)


def test_list_mle_on_two_items_is_bt(trainer):
    r = [[1.3, -0.4], [0.2, 0.9], [-2.0, 0.5], [0.0, 0.0]]
    labels = [[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [5.0, 3.0]]
    mle = _objective(trainer, RewardLossConfig(loss_type="list_mle"), r, labels)
    bt = _objective(trainer, RewardLossConfig(loss_type="bt"), r, labels)
    assert mle.count == bt.count == 4  # one pair per list, one list per pair
    assert mle.losses.sum().item() == pytest.approx(bt.losses.sum().item(), rel=1e-6)


def test_list_mle_is_plackett_luce_with_padding(trainer):
    r = [[0.4, 0.9, -0.5], [1.0, -1.0, 123.0]]
    labels = [[0.0, 2.0, 1.0], [0.0, 1.0, 7.0]]  # order of list 0: slot 1, 2, 0; list 1 is a padded 2-list
    mask = [[True, True, True], [True, True, False]]
    out = _objective(trainer, RewardLossConfig(loss_type="list_mle"), r, labels, mask)
    a, b, c = r[0][1], r[0][2], r[0][0]
    pl3 = -(a - math.log(math.exp(a) + math.exp(b) + math.exp(c))) - (b - math.log(math.exp(b) + math.exp(c)))
    assert out.count == 2
    assert out.losses.sum().item() == pytest.approx(pl3 + _nls(-1.0 - 1.0), rel=1e-6)
    assert out.metrics["rewards/best"] == pytest.approx((a + (-1.0)) / 2, rel=1e-6)


def test_lambda_on_two_items_matches_hand(trainer):
    r = [[0.2, 0.9]]
    out = _objective(trainer, RewardLossConfig(loss_type="lambda"), r, [[1.0, 0.0]])
    # ψ = (0.75, 0.25); the model ranks slot 1 first, so |1/D(τ_0) - 1/D(τ_1)| = 1 - 1/log2(3).
    delta = abs((2**0.75 - 1) - (2**0.25 - 1)) * (1 - 1 / math.log2(3))
    assert out.count == 1
    assert out.losses.sum().item() == pytest.approx(delta * _nls(0.2 - 0.9), rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": -1.0}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
    ({"center_rewards_coefficient": -0.1}, "center_rewards_coefficient"),
    ({"loss_type": "list_mle", "center_rewards_coefficient": 0.1}, "center_rewards_coefficient"),
    ({"loss_type": "lambda", "center_rewards_coefficient": 0.1}, "center_rewards_coefficient"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RewardLossConfig(**kwargs)


def test_config_accepts_valid_settings():
    assert RewardLossConfig(loss_type="mmpo", gamma=float("inf")).gamma == float("inf")
    assert RewardLossConfig(loss_type="mmpo", center_rewards_coefficient=0.01).center_rewards_coefficient == 0.01
    assert RewardLossConfig(loss_type="list_mle", center_rewards_coefficient=0.0).loss_type == "list_mle"


def test_reward_trainer_needs_no_reference(trainer):
    assert RewardModelTrainer.needs_reference is False and RewardModelTrainer.model_kind == "reward"
    assert trainer.train_dataset.ref_logps is None


# --- 2. the reward-model shape ------------------------------------------------------------------------------------


def _mixed_length_lists(tok):
    exs = [
        RankedExample("Say something.", ("ok", "a much longer answer that keeps going" + " on and on" * 6), (1.0, 0.0),
                      "pair", 0),
        RankedExample("Name a colour.", ("red", "blue is a colour too", "green"), (0.0, -1.0, -2.0), "rank", 1),
    ]
    lists, _ = tokenize_examples(exs, tok, max_prompt_length=64, max_response_length=64)
    return lists


def test_reward_forward_is_one_score_per_response_without_padding_effects(rm_dir, tok):
    model = _rm(rm_dir, tok).eval()
    lists = _mixed_length_lists(tok)
    batch = ListCollator(tok.pad_token_id)([{"list": t} for t in lists])
    assert (batch["attention_mask"] == 0).any()  # some rows really are padded
    with torch.no_grad():
        r = reward_forward(model, batch).logps
        assert r.shape == (2, 3)
        assert r[0, 2].item() == 0.0 and not batch["list_mask"][0, 2]  # padded slot
        for b, t in enumerate(lists):
            for k, resp in enumerate(t.response_ids):
                alone = model(input_ids=torch.tensor([t.prompt_ids + resp])).logits
                assert alone.shape == (1, 1)
                torch.testing.assert_close(r[b, k], alone[0, 0], rtol=0, atol=1e-5, msg=f"list {b} slot {k}")
    valid = r[batch["list_mask"]]
    assert len(set(valid.tolist())) == valid.numel()  # distinct responses, distinct rewards
    # reward_scores (evaluation) agrees with the training forward, NaN on the empty slot
    scores = reward_scores(model, lists, pad_token_id=tok.pad_token_id, batch_size=2)
    assert math.isnan(scores[0, 2].item())
    torch.testing.assert_close(scores[batch["list_mask"]], valid, rtol=0, atol=1e-5)


def test_pooling_reads_the_pad_id_set_by_load_reward_model(rm_dir, tok, small_model_dir, caplog):
    eos_pad = load_tokenizer(str(small_model_dir))
    eos_pad.pad_token = eos_pad.eos_token
    assert eos_pad.pad_token_id != tok.pad_token_id
    with caplog.at_level(logging.WARNING, logger="align"):
        m = load_reward_model(str(rm_dir), tokenizer=eos_pad)
    assert m.config.pad_token_id == eos_pad.eos_token_id
    assert "pad token = eos token" in caplog.text

    model = _rm(rm_dir, tok).eval()
    assert model.config.pad_token_id == tok.pad_token_id
    lists = _mixed_length_lists(tok)
    batch = ListCollator(tok.pad_token_id)([{"list": t} for t in lists])
    with torch.no_grad():
        right = reward_forward(model, batch).logps
        model.config.pad_token_id = tok.vocab_size - 1  # an id never in the batch: pooling reads the last column
        assert not (batch["input_ids"] == model.config.pad_token_id).any()
        wrong = reward_forward(model, batch).logps
    short = batch["attention_mask"].sum(-1) < batch["attention_mask"].shape[1]  # rows that end in padding
    short_slots = torch.zeros_like(batch["list_mask"])
    short_slots[batch["row_list"][short], batch["row_slot"][short]] = True
    assert (right[short_slots] - wrong[short_slots]).abs().min() > 1e-4
    long_slots = batch["list_mask"] & ~short_slots
    torch.testing.assert_close(right[long_slots], wrong[long_slots], rtol=0, atol=1e-6)


def test_reward_forward_rejects_a_multi_output_head(small_model_dir, tok):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(small_model_dir), num_labels=2)
    model.config.pad_token_id = tok.pad_token_id
    batch = ListCollator(tok.pad_token_id)([{"list": t} for t in _mixed_length_lists(tok)])
    with pytest.raises(ValueError, match="one score per sequence"):
        reward_forward(model, batch)


# --- 3. exact gradient accumulation ---------------------------------------------------------------------------


GA_CASES = {
    "bt": RewardLossConfig(loss_type="bt"),
    "list_mle": RewardLossConfig(loss_type="list_mle"),
    "mmpo_ranks_centred": RewardLossConfig(loss_type="mmpo", gamma=1.0, margins="ranks",
                                           center_rewards_coefficient=0.1),
}


def _step(rm_dir, tok, config, lists, out, batch, accum):
    model = _rm(rm_dir, tok)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                             max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
                             max_grad_norm=0.0, report_to="none", use_cpu=True, save_strategy="no", seed=0)
    trainer = RewardModelTrainer(model, args, config, ListDataset(lists), processing_class=tok)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    return model


def _hand_mean_loss(r: torch.Tensor, lists, loss_type: str) -> torch.Tensor:
    """Mean over all pairs (bt) or all lists (list_mle) of the batch, written out per list."""
    terms = []
    for b, t in enumerate(lists):
        k = len(t.response_ids)
        if loss_type == "bt":
            terms += [-torch.nn.functional.logsigmoid(r[b, i] - r[b, j])
                      for i in range(k) for j in range(k) if t.labels[i] > t.labels[j]]
        else:  # Plackett–Luce of the labelled order (labels are distinct here)
            s = r[b, sorted(range(k), key=lambda i: -t.labels[i])]
            terms.append(-sum(s[i] - torch.logsumexp(s[i:], 0) for i in range(k)))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("case", sorted(GA_CASES))
def test_gradient_accumulation_invariance(case, rm_dir, tok, tmp_path):
    config = GA_CASES[case]
    lists = _lists(tok)  # K = 2, 3, 2, 3, ...: 1 or 3 pairs a list
    start = _rm(rm_dir, tok)
    a = _step(rm_dir, tok, config, lists, tmp_path / "a", 8, 1)
    b = _step(rm_dir, tok, config, lists, tmp_path / "b", 2, 4)
    manual = None
    if case in ("bt", "list_mle"):  # the expected update without the Trainer: one SGD step on the global mean
        manual = _rm(rm_dir, tok).train()
        batch = ListCollator(tok.pad_token_id)([{"list": t} for t in lists])
        _hand_mean_loss(reward_forward(manual, batch).logps, lists, case).backward()
        with torch.no_grad():
            for p in manual.parameters():
                p.sub_(0.5 * p.grad)
    moved = 0.0
    for name, pa in a.named_parameters():
        pb, p0 = b.get_parameter(name), start.get_parameter(name)
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=f"{case}: 8x1 vs 2x4 differ at {name}")
        if manual is not None:
            torch.testing.assert_close(pa, manual.get_parameter(name), rtol=1e-4, atol=1e-6,
                                       msg=f"{case}: trainer vs manual step differ at {name}")
        moved = max(moved, (pa - p0).abs().max().item())
    assert moved > 1e-5  # the step really moved the weights
    assert (a.score.weight - start.score.weight).abs().max() > 1e-5  # the head itself is trained


# --- 4. training works, and the saved model reloads ------------------------------------------------------------


def test_training_fits_the_training_set_and_saved_model_reloads(rm_dir, tok, tmp_path):
    lists = _fit_lists(tok)
    model = _rm(rm_dir, tok)
    before = evaluate_reward_model(model, lists, pad_token_id=tok.pad_token_id, progress=False, resamples=0)
    assert before["n_pairs"] == 16 and before["pairwise_accuracy"] < 1.0
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, max_steps=30,
                             per_device_eval_batch_size=8, learning_rate=3e-3, lr_scheduler_type="constant",
                             warmup_steps=0, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                             seed=0)
    trainer = RewardModelTrainer(model, args, RewardLossConfig(loss_type="bt"), ListDataset(lists),
                                 eval_dataset=ListDataset(lists), processing_class=tok)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30 and losses[-1] < 0.1 * losses[0]
    after = evaluate_reward_model(model, lists, pad_token_id=tok.pad_token_id, progress=False, resamples=0)
    assert after["scorer"] == "reward-model" and after["pairwise_accuracy"] == 1.0
    # evaluation runs the same objective: one batch of all 8 lists gives the mean BT loss over all 16 pairs
    r = reward_scores(model, lists, pad_token_id=tok.pad_token_id)
    pair_losses = [_nls((r[b, i] - r[b, j]).item()) for b, t in enumerate(lists)
                   for i in range(len(t.labels)) for j in range(len(t.labels)) if t.labels[i] > t.labels[j]]
    assert len(pair_losses) == 16
    assert trainer.evaluate()["eval_loss"] == pytest.approx(sum(pair_losses) / 16, rel=1e-4, abs=1e-7)

    out = tmp_path / "saved"
    trainer.save_model(str(out))
    assert is_reward_model(str(out))
    assert read_model_info(str(out)) == {}  # only `align train` writes align_model.json
    reloaded = load_reward_model(str(out), tokenizer=tok)
    assert reloaded.config.num_labels == 1 and reloaded.config.pad_token_id == tok.pad_token_id
    want = reward_scores(model, lists, pad_token_id=tok.pad_token_id)
    got = reward_scores(reloaded, lists, pad_token_id=tok.pad_token_id)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5, equal_nan=True)
