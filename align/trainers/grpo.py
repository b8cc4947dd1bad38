"""GRPO with ranking rewards (Shao et al. 2024, DeepSeekMath §4.1) on the shared ``PreferenceTrainer``.

Per prompt, G completions are sampled from the policy, scored by the recipe's reward sources, and form a ranked
list (the rewards are its labels). Group-relative advantages drive the clipped per-token objective with the k3 KL
to the reference (``align.losses.grpo``; formulas in ``docs/algorithms.md``, GRPO). Generation happens once per
gradient-accumulation window, for all its micro-batches, and is buffered: the loss normaliser of the whole step
is known right after it. With ``num_iterations`` μ > 1 the same samples serve μ optimizer steps against π_old.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from align.data.collate import ListCollator
from align.data.prompts import TokenizedPrompt
from align.data.tokenize import TokenizedList
from align.distributed import gather_objects
from align.forward import PolicyOutput
from align.losses import LossOutput
from align.losses.grpo import GRPO, GRPOLossConfig, RolloutScores, grpo_count
from align.online.generation import Samples, sample
from align.online.scoring import RewardSource, load_sources
from align.reference import LiveReference
from align.reference.build import reference_adapter
from align.rewards import combine, group_advantages, rank_normalize, unlikeliness
from align.trainers.base import PreferenceTrainer

log = logging.getLogger("align")


class PromptDataset(Dataset):
    """Tokenized prompts; an item is ``{"prompt": TokenizedPrompt, "index": i}``."""

    def __init__(self, prompts: Sequence[TokenizedPrompt]):
        self.prompts = list(prompts)
        self.lists: list[TokenizedList] = []  # no offline lists: nothing for the reference cache to fill
        self.ref_logps = None

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"prompt": self.prompts[i], "index": i}


def _prompt_batch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items  # prompts stay Python objects until their completions are sampled


class RepeatWindows(Sampler[int]):
    """A seeded permutation of the prompts, each window of ``window`` indices yielded ``repeats`` times in a row, so
    that with μ = ``repeats`` the same prompts (and their buffered samples) serve μ optimizer steps."""

    def __init__(self, n: int, window: int, repeats: int, seed: int):
        self.n, self.window, self.repeats, self.seed, self.epoch = n, window, repeats, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n * self.repeats

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for start in range(0, self.n, self.window):
            for _ in range(self.repeats):
                yield from order[start : start + self.window]


@dataclass
class Rollout:
    """The buffered samples of one gradient-accumulation window: one micro-batch of lists per prompt batch.

    Attributes:
        batches: collated micro-batches (``ListCollator`` rows plus ``advantages [N]``, ``completion_mask
            [N, L-1]`` and, when needed, ``old_logps`` / ``ref_token_logps`` ``[N, L-1]``).
        count: the item count of the whole step (sequences or tokens, by ``loss_type``).
        metrics: generation and reward metrics of the window.
        uses: optimizer steps taken on it so far.
        key: the prompt indices it was sampled for.
    """

    batches: list[dict[str, torch.Tensor]]
    count: float
    metrics: dict[str, float]
    key: tuple[int, ...]
    uses: int = 0


class GRPOTrainer(PreferenceTrainer):
    """GRPO on prompts; the reference (β > 0) is live: the PEFT base with the adapter disabled, or a frozen copy of
    the starting weights.

    >>> # trainer = GRPOTrainer(model, TrainingArguments(...), GRPOLossConfig(rewards=[...]), PromptDataset(p), ...)
    """

    spec = GRPO  # needs no cached reference: with β > 0 the reference scores the samples live
    online = True

    def __init__(self, model, args, loss_config: GRPOLossConfig, train_dataset: PromptDataset,
                 eval_dataset: PromptDataset | None = None, processing_class=None, *,
                 rewards: Sequence[RewardSource] | None = None, reference: LiveReference | None = None, **kwargs):
        super().__init__(model, args, loss_config, train_dataset, eval_dataset, processing_class, **kwargs)
        self.data_collator = _prompt_batch
        c = loss_config
        self.tokenizer = processing_class
        self.sources = list(rewards) if rewards is not None else load_sources(c.rewards, device=args.device)
        self.live_reference = reference
        if c.beta > 0 and reference is None:
            adapter = reference_adapter(model)
            if hasattr(model, "peft_config"):  # the base with the adapter disabled (or the frozen start adapter)
                self.live_reference = LiveReference(model, processing_class, adapter=adapter, per_token=True)
            else:  # the policy moves: the reference is a frozen copy of its starting weights
                frozen = copy.deepcopy(model).eval()
                frozen.requires_grad_(False)
                self.live_reference = LiveReference(frozen, processing_class, per_token=True)
        self._rollout: Rollout | None = None
        self.generation_seconds = 0.0
        self.windows = 0

    # --- data -----------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, *args, **kwargs):
        c: GRPOLossConfig = self.loss_config
        window = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return RepeatWindows(len(self.train_dataset), window, c.num_iterations, self.args.seed)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """Fetch the window's prompt batches, sample (or reuse the buffered samples), and return the micro-batches
        with the item count of the whole step."""
        prompt_batches = []
        for _ in range(num_batches):
            try:
                prompt_batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not prompt_batches:
            return [], None
        key = tuple(it["index"] for b in prompt_batches for it in b)
        c: GRPOLossConfig = self.loss_config
        if self._rollout is None or self._rollout.key != key or self._rollout.uses >= c.num_iterations:
            self._rollout = self._make_rollout(prompt_batches)
        self._rollout.uses += 1
        for k, v in self._rollout.metrics.items():
            self._metrics["train"][k].append(v)
        count = torch.tensor(self._rollout.count, device=device, dtype=torch.float32)
        if self.args.world_size > 1 and c.loss_type != "bnpo":
            count = self.accelerator.gather(count).sum()
        return [{k: v.to(device) for k, v in b.items()} for b in self._rollout.batches], count

    # --- sampling and rewards -------------------------------------------------------------------------------------
    def _make_rollout(self, prompt_batches: list[list[dict[str, Any]]]) -> Rollout:
        from trl.models.utils import unwrap_model_for_generation

        c: GRPOLossConfig = self.loss_config
        tok = self.tokenizer
        prompts = [it["prompt"] for b in prompt_batches for it in b]
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
            samples = sample(unwrapped, [p.prompt_ids for p in prompts], pad_token_id=tok.pad_token_id or 0,
                             eos_token_id=tok.eos_token_id, num_generations=c.num_generations,
                             max_new_tokens=c.max_completion_length, temperature=c.temperature, top_p=c.top_p,
                             batch_size=c.generation_batch_size,
                             decode=lambda ids: tok.decode(ids, skip_special_tokens=True))
        self.generation_seconds += samples.seconds
        self.windows += 1
        t0 = time.perf_counter()
        raw = {s.name: s([p.example for p in prompts], samples.texts) for s in self.sources}  # [B, G] each
        rewards, metrics = self._combine(raw)
        lists = samples.lists(rewards)
        batches, offset = [], 0
        for b in prompt_batches:
            batches.append(ListCollator(tok.pad_token_id or 0)([{"list": t} for t in lists[offset: offset + len(b)]]))
            offset += len(b)
        need_old = c.num_iterations > 1 or c.unlikeliness > 0
        mean_logps = torch.full(rewards.shape, math.nan)
        for i, batch in enumerate(batches):
            if need_old:  # π_old's per-token values, computed once, before any update on these samples
                old = self._token_logps(self.model, batch)
                batch["old_logps"] = old
                mask = batch["loss_mask"][:, 1:].float()
                per_row = (old * mask).sum(-1) / mask.sum(-1).clamp(min=1)
                start = sum(len(x) for x in prompt_batches[:i])
                mean_logps[start + batch["row_list"], batch["row_slot"]] = per_row.cpu()
            if c.beta > 0:
                batch["ref_token_logps"] = self._reference_token_logps(batch)
        if c.unlikeliness > 0:
            rewards = unlikeliness(rewards, mean_logps, None, beta_rank=c.unlikeliness)
        grouped = group_advantages(rewards, None, scale=c.scale_rewards)
        adv, zero = grouped.advantages, grouped.zero_std
        count = 0.0
        offset = 0
        for batch, b in zip(batches, prompt_batches):
            group = adv[offset: offset + len(b)]
            rows_adv = group[batch["row_list"], batch["row_slot"]]
            mask = batch["loss_mask"][:, 1:].clone()
            trunc = samples.truncated[offset: offset + len(b)][batch["row_list"], batch["row_slot"]]
            if c.mask_truncated_completions:
                mask[trunc] = 0
            if c.drop_zero_variance_groups:
                flat = zero[offset: offset + len(b)][batch["row_list"]]
                mask[flat] = 0
            batch["advantages"], batch["completion_mask"] = rows_adv, mask
            count += grpo_count(mask, c.loss_type, c.max_completion_length)
            offset += len(b)
        lengths = torch.tensor([len(x) for g in samples.completion_ids for x in g], dtype=torch.float32)
        metrics.update({"frac_reward_zero_std": float(zero.float().mean()),
                        "completions/mean_length": float(lengths.mean()),
                        "completions/min_length": float(lengths.min()),
                        "completions/max_length": float(lengths.max()),
                        "completions/clipped_ratio": float(samples.truncated.float().mean()),
                        "timing/generation_seconds": samples.seconds,
                        "timing/scoring_seconds": time.perf_counter() - t0})
        return Rollout(batches, count, metrics, tuple(it["index"] for b in prompt_batches for it in b))

    def _combine(self, raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of the sources' rewards (after their transforms; NaN skipped), and their metrics.
        ``reward/mean`` is of the untransformed weighted sum: the reward the task defines."""
        metrics: dict[str, float] = {}
        weights = {s.name: s.weight for s in self.sources}
        used = {}
        for s in self.sources:
            r = raw[s.name]
            valid = r[~torch.isnan(r)]
            metrics[f"reward/{s.name}/mean"] = float(valid.mean()) if valid.numel() else math.nan
            metrics[f"reward/{s.name}/std"] = float(valid.std()) if valid.numel() > 1 else 0.0
            used[s.name] = rank_normalize(r, ~torch.isnan(r)) if s.transform == "rank" else r
        total, plain = combine(used, weights).total, combine(raw, weights).total
        metrics["reward/mean"] = float(plain.mean())
        metrics["reward/std"] = float(plain.std()) if plain.numel() > 1 else 0.0
        return total, metrics

    def _token_logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from align.logprobs import token_logprobs

        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                            use_cache=False)
                return (token_logprobs(out.logits, batch["input_ids"].to(device))
                        * batch["loss_mask"][:, 1:].to(device)).cpu()
        finally:
            model.train(was)

    def _reference_token_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ref = self.live_reference
        t0 = time.perf_counter()
        with ref.session():
            values = self._token_logps(ref.model, batch)
        ref.record(int(batch["input_ids"].shape[0]), time.perf_counter() - t0)  # one per (prompt, completion)
        return values

    # --- the loss -------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from align.logprobs import token_logprobs

        c: GRPOLossConfig = self.loss_config
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        logps = token_logprobs(out.logits, inputs["input_ids"])  # [N, L-1]
        res = self.spec.compute(RolloutScores(logps, inputs["advantages"], inputs["completion_mask"],
                                              inputs.get("old_logps"), inputs.get("ref_token_logps")), c)
        # a step whose every token is masked (all groups dropped or truncated) has count 0: its loss is 0, not 0/0
        n = num_items_in_batch.clamp(min=1) if torch.is_tensor(num_items_in_batch) else max(res.count, 1.0)
        loss = res.losses.sum() / n
        if model.training and self.args.world_size > 1 and c.loss_type != "bnpo":
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo it
        if model.training:
            loss = self.guard.check_loss(loss, model, self.state.global_step + 1, [])
        for k, v in res.metrics.items():
            self._metrics["train" if model.training else "eval"][k].append(v)
        if model.training:
            self._tokens_seen += int(inputs["attention_mask"].sum())
        return (loss, {"policy_logps": logps.detach()}) if return_outputs else loss

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> LossOutput:
        raise RuntimeError("GRPOTrainer computes its loss from rollouts in compute_loss")

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        c: GRPOLossConfig = self.loss_config
        return int(grpo_count(inputs["completion_mask"], c.loss_type, c.max_completion_length))

    def evaluate(self, *args, **kwargs):  # held-out prompts are scored by sampling (align.online.evaluate)
        return {}

    def generated_samples(self, prompts: Sequence[TokenizedPrompt], n: int, *, greedy: bool = False) -> Samples:
        """``n`` completions of each prompt from the current policy (for evaluation)."""
        from trl.models.utils import unwrap_model_for_generation

        c: GRPOLossConfig = self.loss_config
        tok = self.tokenizer
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
            return sample(unwrapped, [p.prompt_ids for p in prompts], pad_token_id=tok.pad_token_id or 0,
                          eos_token_id=tok.eos_token_id, num_generations=n, do_sample=not greedy,
                          max_new_tokens=c.max_completion_length, temperature=c.temperature, top_p=c.top_p,
                          batch_size=c.generation_batch_size,
                          decode=lambda ids: tok.decode(ids, skip_special_tokens=True))


def gathered_rewards(values: list[float]) -> list[float]:
    """Every rank's values, concatenated (a no-op in one process)."""
    return [v for part in gather_objects(values) for v in part]
