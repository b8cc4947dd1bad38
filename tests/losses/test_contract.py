"""The loss contract (``align.losses.base``, docs/algorithms.md §0), checked on every registered loss.

On random padded batches of lists (ties, a list with one response, a list whose labels all tie) each spec's
``compute`` returns a :class:`LossOutput` whose ``losses.sum() / count`` equals the loss written out below pair by
pair or list by list in plain Python, straight from the formulas of docs/algorithms.md; ``spec.count`` (known before
the forward) counts the same items; a list without a pair adds exactly 0 and no NaN; each spec declares what it needs.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import (
    CringeLossConfig,
    DPOLossConfig,
    LiPOLossConfig,
    ListScores,
    LossOutput,
    MMPOLossConfig,
    RewardLossConfig,
    cringe_token_losses,
)
from align.trainers import ALGORITHMS

F64 = torch.float64
SIZES = (2, 3, 4, 1, 4, 3)  # valid slots per list; list 3 has one response, list 4's labels all tie
TIED = 4

CASES = {
    "dpo": [DPOLossConfig(beta=0.3), DPOLossConfig(beta=0.3, loss_type="ipo"),
            DPOLossConfig(beta=0.2, loss_type="hinge"), DPOLossConfig(beta=0.2, label_smoothing=0.2),
            DPOLossConfig(beta=0.2, loss_type="robust", label_smoothing=0.1),
            DPOLossConfig(beta=0.3, loss_type="sigmoid_norm")],
    "mmpo": [MMPOLossConfig(beta=0.3, gamma=0.7), MMPOLossConfig(beta=0.3, gamma=1.5, margins="ranks"),
             MMPOLossConfig(beta=0.3, gamma=float("inf")), MMPOLossConfig(beta=0.3, gamma=0.7, length_normalize=True)],
    "lipo": [LiPOLossConfig(beta=0.3), LiPOLossConfig(beta=0.3, length_normalize=True),
             LiPOLossConfig(beta=0.3, loss_type="list_mle", length_normalize=True),
             LiPOLossConfig(beta=0.3, normalization="rax"),
             LiPOLossConfig(beta=0.3, loss_type="pair_logistic", normalization="rax"),
             LiPOLossConfig(beta=0.3, loss_type="pair_hinge"),
             LiPOLossConfig(beta=0.3, loss_type="list_mle", labels="scores"),
             LiPOLossConfig(beta=0.3, loss_type="softmax")],
    "cringe": [CringeLossConfig(b=1.0, tau=2.0),
               CringeLossConfig(b=-0.5, tau=0.5, alpha=0.5, margin="mean", detach_gate=False)],
    "reward": [RewardLossConfig(), RewardLossConfig(center_rewards_coefficient=0.05),
               RewardLossConfig(loss_type="mmpo", gamma=0.7, center_rewards_coefficient=0.1),
               RewardLossConfig(loss_type="mmpo", margins="ranks"), RewardLossConfig(loss_type="list_mle"),
               RewardLossConfig(loss_type="lambda")],
}
ROLLOUT_LOSSES: set[str] = {"grpo"}  # losses over rollouts compute from their own record and are checked in their tests
PARAMS = [(name, i) for name, configs in CASES.items() for i in range(len(configs))]


def batch(seed: int, sizes=SIZES, K: int = 4, L: int = 8, V: int = 11) -> ListScores:
    """A random padded float64 batch; padded slots hold NaN log-probs and out-of-range labels."""
    g = torch.Generator().manual_seed(seed)
    B = len(sizes)
    mask = torch.arange(K)[None, :] < torch.tensor(sizes)[:, None]
    labels = torch.where(mask, torch.randint(0, 3, (B, K), generator=g).to(F64), 9.0)
    labels[TIED % B][mask[TIED % B]] = 1.0
    policy = torch.randn(B, K, generator=g, dtype=F64) * 3 - 10
    ref = policy + torch.randn(B, K, generator=g, dtype=F64)
    lengths = torch.where(mask, torch.randint(1, 6, (B, K), generator=g), 0)
    row_list, row_slot = mask.nonzero(as_tuple=True)
    N = row_list.numel()
    loss_mask = torch.zeros(N, L, dtype=torch.long)
    for r in range(N):
        loss_mask[r, 2 : 2 + int(lengths[row_list[r], row_slot[r]])] = 1
    return ListScores(torch.where(mask, policy, math.nan).requires_grad_(True), labels, mask, lengths=lengths,
                      ref_logps=ref, logits=torch.randn(N, L, V, generator=g, dtype=F64, requires_grad=True),
                      input_ids=torch.randint(0, V, (N, L), generator=g), loss_mask=loss_mask, row_list=row_list,
                      row_slot=row_slot)


def for_spec(name: str, x: ListScores) -> ListScores:
    """What the trainer hands the loss: no reference for losses without one, no logits for sequence-level ones."""
    spec = ALGORITHMS[name].spec
    return ListScores(x.policy_logps, x.labels, x.mask, lengths=x.lengths,
                      ref_logps=x.ref_logps if spec.needs_reference else None,
                      **({k: getattr(x, k) for k in ("logits", "input_ids", "loss_mask", "row_list", "row_slot")}
                         if spec.token_level else {}))


# --- the losses written out, item by item --------------------------------------------------------------------------


def nls(z: float) -> float:
    """-log σ(z)."""
    return math.log1p(math.exp(-z)) if z > -30 else -z


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def lists(x: ListScores):
    """Per list b: valid slots, labels, policy log-probs, log-ratios (policy alone without a reference), lengths."""
    for b in range(x.mask.shape[0]):
        v = [k for k in range(x.mask.shape[1]) if x.mask[b, k]]
        pol = [x.policy_logps[b, k].item() for k in v]
        r = pol if x.ref_logps is None else [p - x.ref_logps[b, k].item() for p, k in zip(pol, v)]
        yield v, [x.labels[b, k].item() for k in v], pol, r, [max(int(x.lengths[b, k]), 1) for k in v]


def pairs_of(lab):
    return [(i, j) for i in range(len(lab)) for j in range(len(lab)) if lab[i] > lab[j]]


def mid_ranks(lab):
    n = len(lab)
    return [(sum(lab[i] > lab[j] for j in range(n)) + 0.5 * sum(lab[i] == lab[j] for j in range(n) if j != i))
            / max(n - 1, 1) for i in range(n)]


def pair_reference(x: ListScores, kind: str, beta: float, c, center: float = 0.0) -> tuple[float, int]:
    """DPO (every loss type), MMPO and the reward model's pair losses, ``center``·(r_w + r_l)² added per pair:
    (sum over pairs, number of pairs)."""
    total, n = 0.0, 0
    for _, lab, pol, r, ln in lists(x):
        m = lab if getattr(c, "margins", "scores") == "scores" else mid_ranks(lab)
        if getattr(c, "length_normalize", False) or getattr(c, "loss_type", None) == "sigmoid_norm":
            r = [v / n for v, n in zip(r, ln)]  # per-token log-ratios
        for i, j in pairs_of(lab):
            z, eps = beta * (r[i] - r[j]), getattr(c, "label_smoothing", 0.0)
            if kind == "mmpo":
                p = 1.0 if math.isinf(c.gamma) else sig(c.gamma * (m[i] - m[j]))
                term = p * nls(z) + (1 - p) * nls(-z)
            elif c.loss_type in ("sigmoid", "sigmoid_norm"):
                term = (1 - eps) * nls(z) + eps * nls(-z)
            elif c.loss_type == "robust":
                term = ((1 - eps) * nls(z) - eps * nls(-z)) / (1 - 2 * eps)
            elif c.loss_type == "hinge":
                term = max(0.0, 1 - z)
            else:  # ipo, length-normalised
                term = (r[i] / ln[i] - r[j] / ln[j] - 1 / (2 * beta)) ** 2
            total += term + center * (pol[i] + pol[j]) ** 2
            n += 1
    return total, n


def psi_of(lab, source):
    n = len(lab)
    if source == "ranks":
        return [(sum(lab[i] > lab[j] for j in range(n)) + 0.5 * sum(lab[i] == lab[j] for j in range(n))) / n
                for i in range(n)]
    lo, hi = min(lab), max(lab)
    return [0.5 if hi == lo else (v - lo) / (hi - lo) for v in lab]


def list_reference(x: ListScores, beta: float, loss_type: str, normalization: str, source: str,
                   per_token: bool = False) -> tuple[float, int]:
    """LiPO and the reward model's list losses: (sum over lists, lists or pairs)."""
    total, count = 0.0, 0
    for _, lab, _, r, ln in lists(x):
        s, psi, n = [beta * v / (k if per_token else 1) for v, k in zip(r, ln)], psi_of(lab, source), len(lab)
        pairs = pairs_of(psi)
        count += len(pairs) if normalization == "rax" else int(n > 0)
        if not pairs:
            continue  # a list without a pair adds 0
        tau = {k: 1 + sum(s[j] > s[k] or (s[j] == s[k] and j < k) for j in range(n)) for k in range(n)}
        gain = [2 ** p - 1 for p in psi]
        if loss_type in ("lambda", "pair_logistic", "pair_hinge"):
            for i, j in pairs:
                w = 1.0
                if loss_type == "lambda":
                    w = abs(gain[i] - gain[j]) * abs(1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j]))
                    w *= n if normalization == "rax" else 1
                total += w * (max(0.0, 1 - (s[i] - s[j])) if loss_type == "pair_hinge" else nls(s[i] - s[j]))
        elif loss_type == "list_mle":
            order = sorted(range(n), key=lambda k: -psi[k])  # stable: ties by slot order
            total -= sum(s[order[k]] - math.log(sum(math.exp(s[j]) for j in order[k:])) for k in range(n))
        else:  # softmax (ListNet)
            lse = math.log(sum(math.exp(v) for v in s))
            total -= sum(psi[k] / sum(psi) * (s[k] - lse) for k in range(n))
    return total, count


def cringe_reference(x: ListScores, c: CringeLossConfig) -> tuple[float, int]:
    rows = {(int(b), int(k)): r for r, (b, k) in enumerate(zip(x.row_list, x.row_slot))}
    total, n = 0.0, 0
    for b, (v, lab, pol, _, ln) in enumerate(lists(x)):
        for i, j in pairs_of(lab):
            r = rows[(b, v[j])]
            ct = cringe_token_losses(x.logits[r : r + 1, :-1], x.input_ids[r : r + 1, 1:],
                                     x.loss_mask[r : r + 1, 1:].bool(), k=c.k).sum().item() / ln[j]
            m = pol[i] - pol[j] if c.margin == "sum" else pol[i] / ln[i] - pol[j] / ln[j]
            total += -pol[i] / ln[i] + c.alpha * sig((c.b - m) / c.tau) * ct
            n += 1
    return total, n


def reference(name: str, x: ListScores, c) -> tuple[float, int]:
    """(sum of the per-item losses, item count) of the batch, from the formulas."""
    if name in ("dpo", "mmpo"):
        return pair_reference(x, name, c.beta, c)
    if name == "lipo":
        return list_reference(x, c.beta, c.loss_type, c.normalization, c.labels, c.length_normalize)
    if name == "cringe":
        return cringe_reference(x, c)
    if c.loss_type == "bt":
        return pair_reference(x, "dpo", 1.0, DPOLossConfig(beta=1.0), c.center_rewards_coefficient)
    if c.loss_type == "mmpo":
        return pair_reference(x, "mmpo", 1.0, c, c.center_rewards_coefficient)
    return list_reference(x, 1.0, c.loss_type, "sum", "ranks")


# --- the contract ---------------------------------------------------------------------------------------------------


def test_every_registered_loss_is_checked():
    assert set(ALGORITHMS) == set(CASES) | ROLLOUT_LOSSES


@pytest.mark.parametrize(("name", "i"), PARAMS, ids=[f"{n}-{i}" for n, i in PARAMS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_is_the_loss_written_out_and_count_is_known_before_the_forward(name, i, seed):
    spec, config = ALGORITHMS[name].spec, CASES[name][i]
    x = for_spec(name, batch(seed))
    out = spec.compute(x, config)
    want, n = reference(name, x, config)
    assert isinstance(out, LossOutput) and out.losses.dim() == 1
    assert out.count == n == spec.count(x.labels, x.mask, config)
    assert out.count > 0 and torch.isfinite(out.losses).all()
    assert (out.losses.sum() / out.count).item() == pytest.approx(want / n, rel=1e-10, abs=1e-12)
    assert out.mean().item() == pytest.approx(want / n, rel=1e-10, abs=1e-12)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values())
    if spec.unit_of(config) == "pair":
        assert out.pairs is not None and len(out.pairs) == out.losses.numel() == out.count
    else:
        assert out.losses.numel() == x.mask.shape[0]  # one entry per list (rax: its sum over pairs)


@pytest.mark.parametrize(("name", "i"), PARAMS, ids=[f"{n}-{i}" for n, i in PARAMS])
def test_a_list_without_a_pair_adds_zero_and_no_nan(name, i):
    """Moving the tied list's log-probs and logits changes neither the loss nor any gradient elsewhere; its own
    gradient is exactly 0 and every gradient is finite (padded slots hold NaN)."""
    spec, config = ALGORITHMS[name].spec, CASES[name][i]
    x = for_spec(name, batch(3))
    moved = for_spec(name, batch(3))
    with torch.no_grad():
        moved.policy_logps[TIED] += 7.0
        if moved.logits is not None:
            moved.logits[moved.row_list == TIED] *= -3.0
    a, b = spec.compute(x, config), spec.compute(moved, config)
    assert a.losses.sum().item() == b.losses.sum().item() and a.count == b.count
    a.losses.sum().backward()
    grads = [x.policy_logps.grad] + ([x.logits.grad] if x.logits is not None else [])
    assert all(torch.isfinite(g).all() for g in grads)
    assert x.policy_logps.grad[TIED].abs().sum() == 0 and x.policy_logps.grad[~x.mask].abs().sum() == 0
    if x.logits is not None:
        assert x.logits.grad[x.row_list == TIED].abs().sum() == 0


@pytest.mark.parametrize(("name", "i"), PARAMS, ids=[f"{n}-{i}" for n, i in PARAMS])
def test_a_batch_with_nothing_to_learn_is_zero_not_nan(name, i):
    """Every list tied or a single response: losses sum to exactly 0; mean() is 0 whether count is 0 (pairs) or
    the number of lists (LiPO's ``sum`` normalisation and the reward model's list losses count every list)."""
    spec, config = ALGORITHMS[name].spec, CASES[name][i]
    x = for_spec(name, batch(4, sizes=(4, 1, 3)))
    x.labels[x.mask] = 2.0
    out = spec.compute(x, config)
    assert out.losses.sum().item() == 0.0 and out.mean().item() == 0.0
    assert out.count == spec.count(x.labels, x.mask, config) == reference(name, x, config)[1]
    counts_lists = spec.unit_of(config) == "list" and getattr(config, "normalization", "sum") == "sum"
    assert out.count == (3 if counts_lists else 0)


@pytest.mark.parametrize(("name", "needs_reference", "unit", "token_level", "model_kind"), [
    ("dpo", True, "pair", False, "policy"),
    ("lipo", True, "list", False, "policy"),
    ("mmpo", True, "pair", False, "policy"),
    ("cringe", False, "pair", True, "policy"),
    ("reward", False, "pair", False, "reward"),
])
def test_each_spec_declares_what_it_needs(name, needs_reference, unit, token_level, model_kind):
    algo = ALGORITHMS[name]
    assert algo.spec.name == name and isinstance(CASES[name][0], algo.config)
    assert (algo.needs_reference, algo.unit, algo.token_level, algo.model_kind) == (
        needs_reference, unit, token_level, model_kind)
    assert (algo.trainer.needs_reference, algo.trainer.token_level) == (needs_reference, token_level)


def test_the_unit_follows_the_config_where_it_depends_on_it():
    reward = ALGORITHMS["reward"]
    assert [reward.unit_of(RewardLossConfig(loss_type=t)) for t in ("bt", "mmpo", "list_mle", "lambda")] == [
        "pair", "pair", "list", "list"]
    assert ALGORITHMS["lipo"].unit_of(LiPOLossConfig(normalization="rax")) == "list"  # entries per list, pairs counted


# --- ListScores: where β is applied -------------------------------------------------------------------------------


def test_implicit_rewards_are_beta_times_the_log_ratio_and_zero_on_padding():
    """policy (-10, -12, NaN), ref (-11, -11, NaN), lengths (2, 4, 0), slot 2 padded, β = 0.5:
    β·r = (0.5, -0.5, 0); length-normalised β·r/n = (0.25, -0.125, 0); log_ratios (1, -1, 0); no reference: β·policy."""
    nan = math.nan
    policy = torch.tensor([[-10.0, -12.0, nan]], dtype=F64, requires_grad=True)
    x = ListScores(policy, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0]]),
                   lengths=torch.tensor([[2, 4, 0]]), ref_logps=torch.tensor([[-11.0, -11.0, nan]], dtype=F64))
    assert x.mask.dtype == torch.bool
    assert x.implicit_rewards(0.5).tolist() == [[0.5, -0.5, 0.0]]
    assert x.implicit_rewards(0.5, length_normalized=True).tolist() == [[0.25, -0.125, 0.0]]
    assert x.log_ratios().tolist() == [[1.0, -1.0, 0.0]]
    x.implicit_rewards(0.5).sum().backward()
    assert policy.grad.tolist() == [[0.5, 0.5, 0.0]]  # no NaN from the padded slot
    no_ref = ListScores(policy.detach(), x.labels, x.mask)
    assert no_ref.implicit_rewards(2.0).tolist() == [[-20.0, -24.0, 0.0]]
    for beta in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="beta"):
            x.implicit_rewards(beta)
    with pytest.raises(ValueError, match="lengths"):
        no_ref.implicit_rewards(1.0, length_normalized=True)


def test_list_scores_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        ListScores(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        ListScores(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool))


def test_a_token_level_loss_without_logits_says_what_is_missing():
    x = for_spec("dpo", batch(0))  # sequence-level record: no logits
    with pytest.raises(ValueError, match="logits"):
        ALGORITHMS["cringe"].spec.compute(x, CASES["cringe"][0])
