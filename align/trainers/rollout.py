"""``RolloutTrainer``: the base of trainers that learn from their own samples (GRPO), beside
:class:`~align.trainers.base.PreferenceTrainer` (ranked lists from a file); both share
:class:`~align.trainers.step.LossStepMixin`.

Per gradient-accumulation window the trainer samples G completions of each of the window's prompts (a
:class:`~align.online.engines.GenerationEngine`), scores them with the reward sources, turns the rewards into
per-completion advantages (the subclass's :meth:`RolloutTrainer.advantages`), and buffers the window: the loss
normaliser of the whole step is known right after sampling, and with ``num_iterations`` μ > 1 the same samples
serve μ optimizer steps against π_old. Every forward over the samples (the policy with gradients, π_old, the live
reference) is the group-packed one of :mod:`align.group_forward`: each prompt once, log-probs at completion
positions only. A subclass sets ``spec`` (its loss) and :meth:`advantages`.
"""

from __future__ import annotations

import abc
import copy
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, Sampler
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from align.data.prompts import TokenizedPrompt
from align.distributed import gather_objects, is_zero3_partitioned
from align.forward import PackingPlan, packing_plan
from align.group_forward import CompletionLogps, collate_groups, completion_logps
from align.losses import LossSpec
from align.losses.grpo import RolloutScores, grpo_count
from align.online.advantages import RolloutRewards
from align.online.completions import CompletionLog
from align.online.engines import GenerationEngine, make_engine, stream_seed
from align.online.generation import Samples
from align.online.scoring import RewardSource, load_sources
from align.reference import LiveReference
from align.reference.build import reference_adapter
from align.rewards import combine
from align.trainers.step import LossStepMixin

log = logging.getLogger("align")


class PromptDataset(Dataset):
    """Tokenized prompts; an item is ``{"prompt": TokenizedPrompt, "index": i}``."""

    def __init__(self, prompts: Sequence[TokenizedPrompt]):
        self.prompts = list(prompts)

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
    """The buffered samples of one gradient-accumulation window: one micro-batch of groups per prompt batch.

    Attributes:
        batches: collated micro-batches (:func:`align.group_forward.collate_groups` keys plus, in the completion
            layout, ``advantages [N]``, ``completion_mask [N, T]`` and, when needed, ``old_logps`` /
            ``ref_token_logps [N, T]``).
        count: the item count of the whole step on this process (sequences or tokens, by the loss).
        metrics: sampling and reward metrics of the window.
        key: the prompt indices it was sampled for.
        samples: the window's samples (prompts, completions, texts), with ``rewards`` / ``advantages`` ``[B, G]``.
        uses: optimizer steps taken on it so far.
    """

    batches: list[dict[str, torch.Tensor]]
    count: float
    metrics: dict[str, float]
    key: tuple[int, ...]
    samples: Samples | None = None
    rewards: dict[str, torch.Tensor] | None = None
    advantages: torch.Tensor | None = None
    uses: int = 0

    def save(self, directory: Path, rank: int) -> None:
        """Write the window (its micro-batches' tensors, count, metrics, key, uses) into a checkpoint directory,
        as safetensors and JSON (nothing pickled), one pair of files per process."""
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"{i}/{k}": v.contiguous() for i, b in enumerate(self.batches) for k, v in b.items()}
        save_file(tensors, str(directory / f"rollout-{rank}.safetensors"))
        meta = {"count": self.count, "metrics": self.metrics, "key": list(self.key), "uses": self.uses,
                "batches": len(self.batches)}
        (directory / f"rollout-{rank}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, rank: int) -> Rollout | None:
        """The window saved in ``directory`` by this process, or None when it holds none."""
        meta_path = directory / f"rollout-{rank}.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(directory / f"rollout-{rank}.safetensors"))
        batches: list[dict[str, torch.Tensor]] = [{} for _ in range(meta["batches"])]
        for name, value in tensors.items():
            i, k = name.split("/", 1)
            batches[int(i)][k] = value
        return cls(batches, meta["count"], meta["metrics"], tuple(meta["key"]), uses=meta["uses"])


class RolloutTrainer(LossStepMixin, Trainer, metaclass=abc.ABCMeta):
    """Base trainer for objectives over the policy's own samples of prompts; a subclass sets ``spec`` and
    :meth:`advantages`.

    Args:
        model: the policy (a causal LM, PEFT-wrapped or not).
        args: ``transformers.TrainingArguments``.
        loss_config: the spec's config (sampling settings, reward sources, loss options).
        train_dataset: a :class:`PromptDataset`.
        processing_class: the tokenizer (its pad/end ids; decodes completions for the rewards).
        rewards: loaded reward sources (default: from ``loss_config.rewards``).
        reference: the live reference for β > 0 (default: the PEFT base with adapters disabled, or a frozen copy of
            the starting weights; under ZeRO-3 a second, partitioned copy loaded from the policy's own path).
        engine: the generation engine (default: ``loss_config.generation_engine``).
        packing: the group-packed forward where the model takes it (else padded rows, with one logged line).
        on_non_finite: ``error`` or ``skip`` (see :mod:`align.trainers.guards`).
        run_dir: where ``completions.jsonl`` is written (``log_completions``); default: the run directory above
            ``args.output_dir``'s ``checkpoints`` folder, else ``args.output_dir``.
    """

    spec: ClassVar[LossSpec]

    def __init__(self, model, args, loss_config, train_dataset: PromptDataset, eval_dataset=None,
                 processing_class=None, *, rewards: Sequence[RewardSource] | None = None,
                 reference: LiveReference | None = None, engine: GenerationEngine | None = None,
                 packing: bool = True, on_non_finite: str = "error", run_dir: str | Path | None = None, **kwargs):
        if not isinstance(loss_config, self.spec.config):
            raise TypeError(f"{type(self).__name__} needs a {self.spec.config.__name__}, "
                            f"got {type(loss_config).__name__}")
        args.remove_unused_columns = False  # items are prompts, not model kwargs
        self.plan: PackingPlan = packing_plan(model, packing)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=_prompt_batch, processing_class=processing_class, **kwargs)
        self.loss_config = c = loss_config
        self._init_loss_step(on_non_finite)
        self.tokenizer = processing_class
        self.pad_token_id = getattr(processing_class, "pad_token_id", None) or 0
        self.sources = list(rewards) if rewards is not None else load_sources(c.rewards, device=args.device)
        self.engine = engine or make_engine(getattr(c, "generation_engine", "shared_prefix"))
        self.live_reference = reference
        if getattr(c, "beta", 0.0) > 0 and reference is None:
            self.live_reference = self._default_reference(model, processing_class)
        self._rollout: Rollout | None = None
        # completions.jsonl goes to the run directory (the checkpoints live in its checkpoints/ folder)
        out = Path(args.output_dir)
        self.completion_log = CompletionLog(run_dir or (out.parent if out.name == "checkpoints" else out),
                                            num_to_print=getattr(c, "num_completions_to_print", 8))
        self.generation_seconds = 0.0
        self.reference_seconds = 0.0
        self.windows = 0

    def _default_reference(self, model: torch.nn.Module, tokenizer: Any) -> LiveReference:
        adapter = reference_adapter(model)
        if hasattr(model, "peft_config"):  # the base with the adapter disabled (or the frozen start adapter)
            return LiveReference(model, tokenizer, adapter=adapter, per_token=True)
        if is_zero3_partitioned(model):
            # A partitioned model cannot be copied (its parameters are shards); load the starting weights again,
            # partitioned the same way, and gather them while the reference scores.
            from align.models.loading import load_policy

            path = getattr(model, "name_or_path", None) or model.config._name_or_path
            frozen = load_policy(path, str(next(model.parameters()).dtype).removeprefix("torch."))
        else:  # the policy moves: the reference is a frozen copy of its starting weights
            frozen = copy.deepcopy(model)
        frozen.eval().requires_grad_(False)
        return LiveReference(frozen, tokenizer, per_token=True)

    # --- what a subclass supplies -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def advantages(self, raw: dict[str, torch.Tensor], mean_logps: torch.Tensor | None) -> RolloutRewards:
        """The window's advantages from each reward source's raw ``[B, G]`` rewards (NaN = unscored), with the
        reward metrics; ``mean_logps`` ``[B, G]`` are π_old's mean token log-probs (when :attr:`needs_old_logps`).
        In a multi-process run ``raw`` holds every process's groups (see :meth:`_make_rollout`). A subclass
        without it cannot be constructed."""

    @property
    def needs_old_logps(self) -> bool:
        """π_old's per-token values are kept (μ > 1, or the advantages read them)."""
        return self.loss_config.num_iterations > 1

    # --- data ---------------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, *args, **kwargs):
        window = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return RepeatWindows(len(self.train_dataset), window, self.loss_config.num_iterations, self.args.seed)

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
        c = self.loss_config
        if self._rollout is None or self._rollout.key != key or self._rollout.uses >= c.num_iterations:
            self._rollout = self._make_rollout(prompt_batches)
        self._rollout.uses += 1
        self.record_metrics(self._rollout.metrics)
        count = torch.tensor(self._rollout.count, device=device, dtype=torch.float32)
        if self.args.world_size > 1 and c.loss_type != "bnpo":
            count = self.accelerator.gather(count).sum()
        return [{k: v.to(device) for k, v in b.items()} for b in self._rollout.batches], count

    # --- sampling, rewards, advantages --------------------------------------------------------------------------------
    def sample(self, prompts: Sequence[TokenizedPrompt], indices: Sequence[int], n: int, *, window: int,
               greedy: bool = False) -> Samples:
        """``n`` completions of each prompt from the current policy; prompt ``indices[i]`` draws from the stream
        seeded by (run seed, ``window``, index), so samples do not depend on batching or the process layout."""
        from trl.models.utils import unwrap_model_for_generation

        c, tok = self.loss_config, self.tokenizer
        seeds = [stream_seed(self.args.seed, window, i) for i in indices]
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
            return self.engine.generate(unwrapped, [p.prompt_ids for p in prompts], num_generations=n,
                                        max_new_tokens=c.max_completion_length, pad_token_id=self.pad_token_id,
                                        eos_token_id=tok.eos_token_id, temperature=c.temperature, top_p=c.top_p,
                                        top_k=getattr(c, "top_k", 0), do_sample=not greedy, seeds=seeds,
                                        batch_size=c.generation_batch_size,
                                        decode=lambda ids: tok.decode(ids, skip_special_tokens=True))

    def _make_rollout(self, prompt_batches: list[list[dict[str, Any]]]) -> Rollout:
        c = self.loss_config
        prompts = [it["prompt"] for b in prompt_batches for it in b]
        key = tuple(it["index"] for b in prompt_batches for it in b)
        window = self.state.global_step // c.num_iterations
        samples = self.sample(prompts, key, c.num_generations, window=window)
        self.generation_seconds += samples.seconds
        self.windows += 1
        t0 = time.perf_counter()
        examples = [p.example for p in prompts]
        raw = {s.name: s(examples, samples.texts, completion_ids=samples.completion_ids, trainer_state=self.state)
               for s in self.sources}  # [B, G] each
        score_seconds = time.perf_counter() - t0
        rewards = combine(raw, {s.name: s.weight for s in self.sources}).total
        groups = samples.lists(rewards)
        sizes = [len(b) for b in prompt_batches]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        batches = [collate_groups(groups[s : s + n], self.plan, self.pad_token_id) for s, n in zip(starts, sizes)]
        mean_logps = torch.full(rewards.shape, math.nan)
        t0 = time.perf_counter()
        for batch, s in zip(batches, starts):
            if self.needs_old_logps:  # π_old's per-token values, computed once, before any update on these samples
                old = self._no_grad_logps(self.model, batch)
                batch["old_logps"] = old.logps
                per_row = old.logps.sum(-1) / old.mask.sum(-1).clamp(min=1)
                mean_logps[s + batch["row_list"], batch["row_slot"]] = per_row
        old_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.live_reference is not None:
            for batch in batches:
                batch["ref_token_logps"] = self._reference_logps(batch)
        ref_seconds = time.perf_counter() - t0
        self.reference_seconds += ref_seconds
        scored = self._window_advantages(raw, mean_logps if self.needs_old_logps else None)
        adv, zero, metrics = scored.advantages, scored.zero_std, dict(scored.metrics)
        metrics["reward/unscored"] = float(scored.unscored.sum())
        count = 0.0
        for batch, s in zip(batches, starts):
            rows = s + batch["row_list"], batch["row_slot"]
            lengths = batch["completion_lengths"]
            mask = (torch.arange(max(int(lengths.max()), 1))[None, :] < lengths[:, None]).float()
            if getattr(c, "mask_truncated_completions", False):
                mask[samples.truncated[rows]] = 0
            if getattr(c, "drop_zero_variance_groups", False):
                mask[zero[rows[0]]] = 0
            batch["advantages"], batch["completion_mask"] = adv[rows].float(), mask
            count += grpo_count(mask, c.loss_type, c.max_completion_length)
        lengths = torch.tensor([len(x) for g in samples.completion_ids for x in g], dtype=torch.float32)
        metrics.update({"completions/mean_length": float(lengths.mean()),
                        "completions/min_length": float(lengths.min()),
                        "completions/max_length": float(lengths.max()),
                        "completions/clipped_ratio": float(samples.truncated.float().mean()),
                        "timing/generation_seconds": samples.seconds,
                        "timing/scoring_seconds": score_seconds,
                        "timing/old_logps_seconds": old_seconds})
        if self.live_reference is not None:
            metrics["timing/reference_seconds"] = ref_seconds
        rollout = Rollout(batches, count, metrics, key, samples, raw, adv)
        self._log_completions(rollout, prompts)
        return rollout

    def _window_advantages(self, raw: dict[str, torch.Tensor], mean_logps: torch.Tensor | None) -> RolloutRewards:
        """:meth:`advantages` of this process's groups. When the advantages normalise over the whole batch
        (``scale_rewards: batch``, ``normalize_then_sum``), every process's rewards are gathered first and each
        process keeps its own rows, as in one process."""
        c = self.loss_config
        batch_wide = c.scale_rewards == "batch" or getattr(c, "multi_objective_aggregation", "") == "normalize_then_sum"
        if self.args.world_size == 1 or not batch_wide:
            return self.advantages(raw, mean_logps)
        parts = gather_objects((raw, mean_logps))
        start = sum(next(iter(r.values())).shape[0] for r, _ in parts[: self.args.process_index])
        n = next(iter(raw.values())).shape[0]
        every = {k: torch.cat([r[k] for r, _ in parts]) for k in raw}
        logps = torch.cat([m for _, m in parts]) if mean_logps is not None else None
        out = self.advantages(every, logps)
        return RolloutRewards(out.advantages[start : start + n], out.reward[start : start + n],
                              out.zero_std[start : start + n], out.unscored[start : start + n], out.metrics)

    def _log_completions(self, rollout: Rollout, prompts: Sequence[TokenizedPrompt]) -> None:
        """The window's completion table (``log_completions``), on the logging steps; every process's rows."""
        c = self.loss_config
        step = self.state.global_step + 1
        every = max(int(self.args.logging_steps), 1) if self.args.logging_steps >= 1 else 1
        if not getattr(c, "log_completions", False) or (step % every and step != 1):
            return
        s = rollout.samples
        mine = ([p.example.prompt for p in prompts], s.texts, {k: v.tolist() for k, v in rollout.rewards.items()},
                rollout.advantages.tolist())
        parts = gather_objects(mine) if self.args.world_size > 1 else [mine]
        texts = [t for _, tx, _, _ in parts for group in tx for t in group]
        rewards = {k: [v for _, _, r, _ in parts for group in r[k] for v in group] for k in mine[2]}
        adv = [v for _, _, _, a in parts for group in a for v in group]
        group_prompts = [p for ps, _, _, _ in parts for p in ps]
        self.completion_log.log(step, group_prompts, texts, rewards, adv, writer=CompletionLog.writer_of(self))

    # --- forwards over the samples ------------------------------------------------------------------------------------
    def _no_grad_logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> CompletionLogps:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                out = completion_logps(model, {k: v.to(device) for k, v in batch.items()}, self.plan)
                return CompletionLogps(out.logps.cpu(), out.mask.cpu())
        finally:
            model.train(was)

    def _reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ref = self.live_reference
        t0 = time.perf_counter()
        with ref.session():
            values = self._no_grad_logps(ref.model, batch).logps
        ref.record(int(batch["row_list"].numel()), time.perf_counter() - t0)  # one per (prompt, completion)
        return values

    # --- the loss -----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Policy forward over the micro-batch's groups (completion positions only), the objective, its metrics."""
        c = self.loss_config
        out = completion_logps(model, inputs, self.plan, entropy=model.training)
        res = self.spec.compute(RolloutScores(out.logps, inputs["advantages"], inputs["completion_mask"],
                                              inputs.get("old_logps"), inputs.get("ref_token_logps")), c)
        metrics = dict(res.metrics)
        if out.entropy is not None:
            m = inputs["completion_mask"]
            metrics["entropy"] = float((out.entropy * m).sum() / m.sum().clamp(min=1))
        loss = self.finish_loss(model, res, num_items_in_batch, metrics=metrics,
                                rescale=c.loss_type != "bnpo")
        if model.training:
            self.tokens.add_batch(inputs)
        return (loss, {"completion_logps": out.logps.detach()}) if return_outputs else loss

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint:
            path = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                    else resume_from_checkpoint)
            # a window that outlived the checkpoint continues on the same samples and π_old values
            self._rollout = Rollout.load(Path(path), self.args.process_index) if path else None
        return self._timed_train(super().train, resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        r = self._rollout
        if r is not None and r.uses < self.loss_config.num_iterations:  # written before the checkpoint is whole
            r.save(Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
                   self.args.process_index)
        return super()._save_checkpoint(model, trial)

    def _prepare_for_training(self, *args, **kwargs):
        out = super()._prepare_for_training(*args, **kwargs)
        self._train_start = time.perf_counter()  # tokens/s counts training steps, not engine set-up
        return out

    def evaluate(self, *args, **kwargs):
        """Held-out prompts are scored by sampling after training
        (:func:`align.evaluation.sampling.evaluate_by_sampling`); the trainer's own evaluation loop has no labelled
        batches to run."""
        return {}

    def generated_samples(self, prompts: Sequence[TokenizedPrompt], n: int, *, greedy: bool = False) -> Samples:
        """``n`` completions of each prompt from the current policy (for evaluation)."""
        return self.sample(prompts, range(len(prompts)), n, window=-1 - self.state.global_step, greedy=greedy)


def gathered_rewards(values: list[float]) -> list[float]:
    """Every rank's values, concatenated (a no-op in one process)."""
    return [v for part in gather_objects(values) for v in part]
