"""``PreferenceTrainer``: everything the algorithms share, on top of ``transformers.Trainer``.

It owns the list dataset, the one-forward policy log-probs of all K responses, the reference log-probs (from a
:class:`~align.reference.ReferenceProvider`, filled before the first step on the engine-prepared model), exact
loss normalisation under gradient accumulation, and metrics. A subclass supplies only its loss's
:class:`~align.losses.LossSpec` as ``spec``: after the forward the base builds the batch's
:class:`~align.losses.ListScores` and calls ``spec.compute(scores, loss_config)``; ``spec.count`` is the item count
known before the forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from align.data.tokenize import TokenizedList
from align.distributed import gather_objects
from align.errors import ConfigError, DataError
from align.forward import PackingPlan, PolicyOutput, lists_forward, log_once, packing_plan
from align.losses import ListScores, LossOutput, LossSpec
from align.losses.reward_metrics import pair_logps_metrics
from align.ranking_metrics import list_metrics
from align.reference import CacheStats, ReferenceProvider, reference_for
from align.trainers.step import LossStepMixin

log = logging.getLogger("align")


class ListDataset(Dataset):
    """Tokenized lists with their reference log-probs (``None`` when the algorithm needs none)."""

    def __init__(self, lists: Sequence[TokenizedList], ref_logps: Sequence[Sequence[float]] | None = None):
        if ref_logps is not None and len(ref_logps) != len(lists):
            raise ValueError(f"{len(lists)} lists but {len(ref_logps)} reference entries")
        self.lists, self.ref_logps = list(lists), ref_logps

    def __len__(self) -> int:
        return len(self.lists)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ref = None if self.ref_logps is None else self.ref_logps[i]
        return {"list": self.lists[i], "ref_logps": ref, "index": i}

    @classmethod
    def from_rows(cls, rows: Any, tokenizer: Any, *, max_prompt_length: int = 512, max_response_length: int = 512,
                  format: str = "auto", columns: dict[str, str] | None = None) -> ListDataset:
        """Lists from rows in any format the loaders read (a ``datasets.Dataset``, a list of dicts): TRL's
        ``prompt``/``chosen``/``rejected``, HH dialogues, ranked lists, OASST trees. Bad rows are skipped and counted
        (``self.report``), as when a file is loaded."""
        from align.data.loaders import examples_from_rows
        from align.data.tokenize import tokenize_examples

        if tokenizer is None:
            raise ConfigError("a dataset of rows needs the tokenizer (processing_class) to become token lists")
        examples, report = examples_from_rows(rows, format=format, columns=columns, source_name="dataset")
        lists, truncation = tokenize_examples(examples, tokenizer, max_prompt_length=max_prompt_length,
                                              max_response_length=max_response_length)
        if not lists:
            raise DataError(f"no usable lists in the dataset (skipped: {dict(report.skipped) or 'none'})")
        ds = cls(lists)
        ds.report, ds.truncation = report, truncation
        return ds

    def with_reference(self, provider: ReferenceProvider) -> None:
        """Fill ``ref_logps`` from ``provider`` (every entry must be available or computable)."""
        self.ref_logps = provider.list_logps(self.lists)


class PreferenceTrainer(LossStepMixin, Trainer):
    """Base trainer for objectives over ranked lists; a subclass sets ``spec``, the loss it trains.

    ``needs_reference`` and ``token_level`` are the spec's (set on each subclass that sets a spec). A subclass
    without a spec overrides :meth:`objective` and :meth:`count_items`.

    Args:
        model: the policy (a causal LM, PEFT-wrapped or not).
        args: ``transformers.TrainingArguments``.
        loss_config: an instance of the spec's config dataclass (e.g. :class:`align.losses.DPOLossConfig`).
        train_dataset / eval_dataset: :class:`ListDataset`, or rows in any format the loaders read (a
            ``datasets.Dataset`` or a list of dicts, tokenized here with ``max_prompt_length`` and
            ``max_response_length``). When ``needs_reference`` and they carry no reference log-probs, they are filled
            from ``reference`` before the first step.
        processing_class: the tokenizer (saved with checkpoints; its pad id pads batches).
        reference: where reference log-probs come from; default: the policy's starting weights (a PEFT policy in
            reference mode) through the on-disk cache (:func:`align.reference.reference_for`).
        reference_is_policy: the reference is the policy's starting point, so step 0 checks that their log-probs
            agree (default: True when the trainer builds the default reference itself).
        on_non_finite: ``error`` (a NaN/inf loss or gradient stops the run, naming the step and rows) or ``skip``
            (skip and count it; see :mod:`align.trainers.guards`).
        packing: the shared-prompt packed forward (each list's prompt once, several lists per row, log-probs from
            the hidden states in chunks; :func:`align.forward.packing_plan`), where the model can take it; False:
            one padded row per response. A reward model always runs padded rows.
    """

    spec: ClassVar[LossSpec | None] = None
    needs_reference: ClassVar[bool] = True  # the spec's
    token_level: ClassVar[bool] = False  # the spec's: the forward keeps the logits for the loss
    model_kind: ClassVar[str] = "policy"  # "reward": a scalar-head model scored by forward_lists

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:  # what the loss needs is the loss's to say
            cls.needs_reference, cls.token_level = spec.needs_reference, spec.token_level

    def __init__(self, model, args, loss_config, train_dataset: ListDataset, eval_dataset: ListDataset | None = None,
                 processing_class=None, *, reference: ReferenceProvider | None = None,
                 reference_is_policy: bool | None = None, on_non_finite: str = "error",
                 max_prompt_length: int = 512, max_response_length: int = 512, packing: bool = True, **kwargs):
        # TRL-style construction: rows (a datasets.Dataset or a list of dicts) become token lists here
        train_dataset, eval_dataset = (
            d if d is None or isinstance(d, ListDataset) else
            ListDataset.from_rows(d, processing_class, max_prompt_length=max_prompt_length,
                                  max_response_length=max_response_length)
            for d in (train_dataset, eval_dataset))
        if self.spec is None and type(self).objective is PreferenceTrainer.objective:
            raise TypeError(f"{type(self).__name__} sets no loss spec and overrides no objective")
        if self.spec is not None and not isinstance(loss_config, self.spec.config):
            raise TypeError(f"{type(self).__name__} needs a {self.spec.config.__name__}, "
                            f"got {type(loss_config).__name__}")
        args.remove_unused_columns = False  # our items are lists, not model kwargs
        pad_id = getattr(processing_class, "pad_token_id", None) or 0
        self.packing: PackingPlan = self._packing_plan(model, packing)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=self.packing.collator(pad_id), processing_class=processing_class, **kwargs)
        self.loss_config = loss_config
        self._init_loss_step(on_non_finite)
        # The reference: given, or (built when first needed) the policy's own starting weights, cached on disk.
        self.reference = reference
        self._reference_is_policy_given = reference_is_policy
        self.reference_is_policy = bool(reference_is_policy)
        self.reference_stats = CacheStats()
        self.reference_check: dict[str, float] | None = None  # step 0: policy log-probs against the reference

    # --- the reference ---------------------------------------------------------------------------------------------
    def _datasets_missing_reference(self) -> list[ListDataset]:
        if not self.needs_reference:
            return []
        return [d for d in (self.train_dataset, self.eval_dataset) if d is not None and d.ref_logps is None]

    def prepare_reference(self) -> CacheStats:
        """Fill the datasets' reference log-probs (a no-op when they have them): read the cache, compute what is
        missing. Runs before the first step, on the engine-prepared model when the engine exists (ZeRO-3 gathers
        each layer itself), or before the checkpoint is loaded when resuming (the weights are still the start's).
        In a distributed run every rank calls it: the work is split and written once."""
        missing = self._datasets_missing_reference()
        if not missing:
            return self.reference_stats
        engine = self.is_deepspeed_enabled and getattr(self, "deepspeed", None) is not None
        if self.reference is None:
            self.reference = reference_for(self.model, self.processing_class, engine_managed=engine,
                                           progress=not self.args.disable_tqdm)
            if self._reference_is_policy_given is None:
                self.reference_is_policy = True
        self.reference.bind_engine(engine)
        self.reference_stats = self.reference.prefetch([t for d in missing for t in d.lists])
        for d in missing:
            d.with_reference(self.reference)
        self.reference.release(self.model)  # the policy may have been its own reference; from the first step on not
        if self.args.process_index == 0:
            log.info("reference cache %s: %d hits, %d computed in %.1fs", self.reference_stats.key,
                     self.reference_stats.hits, self.reference_stats.computed, self.reference_stats.seconds)
        return self.reference_stats

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint:
            # The checkpoint's weights are loaded inside Trainer.train: the reference must be taken before that.
            self.prepare_reference()
        return self._timed_train(super().train, resume_from_checkpoint, *args, **kwargs)

    def _prepare_for_training(self, *args, **kwargs):
        model, dataloader = super()._prepare_for_training(*args, **kwargs)
        self.prepare_reference()  # a fresh run: the engine exists, the weights are still the starting ones
        self._train_start = time.perf_counter()  # tokens/s counts training steps, not engine set-up or the reference
        return model, dataloader

    def evaluate(self, *args, **kwargs):
        self.prepare_reference()
        return super().evaluate(*args, **kwargs)

    def _check_step0(self, policy_logps: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
        """Before any update the policy is the reference: their log-probs must agree. Logged and recorded."""
        mask = inputs["list_mask"]
        diff = (policy_logps.detach() - inputs["ref_logps"]).abs()
        local = float(torch.where(mask, diff, 0).max()) if mask.any() else 0.0
        worst = max(gather_objects(local))
        tol = 1e-3 if policy_logps.dtype == torch.float32 else 1.0
        self.reference_check = {"step0_max_abs_diff": worst, "tolerance": tol}
        if self.args.process_index == 0:
            (log.warning if worst > tol else log.info)(
                "step 0: policy vs reference log-probs, max |difference| %.3g (tolerance %g)%s", worst, tol,
                "" if worst <= tol else ": the reference is NOT the starting policy")

    # --- the loss ----------------------------------------------------------------------------------------------
    def list_scores(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> ListScores:
        """The batch's :class:`ListScores` after the forward: ``[B, K]`` log-probs (a reward model: rewards),
        labels, mask, lengths, the reference log-probs when the loss needs them, and for a token-level loss the
        ``[N, L, V]`` logits with the ``[N, L]`` rows (input_ids, loss_mask) and their ``[N]`` (list, slot)."""
        ref = None
        if self.needs_reference:
            if "ref_logps" not in inputs:
                raise ValueError(f"{type(self).__name__} needs reference log-probs and the batch has none")
            ref = inputs["ref_logps"]
        padded = "loss_mask" in inputs  # a packed batch's input_ids are packed rows, not one row per response
        return ListScores(policy_logps=policy.logps, labels=inputs["labels"], mask=inputs["list_mask"],
                          lengths=inputs.get("lengths"), ref_logps=ref, logits=policy.logits,
                          input_ids=inputs["input_ids"] if padded else None, loss_mask=inputs.get("loss_mask"),
                          row_list=inputs.get("row_list"), row_slot=inputs.get("row_slot"),
                          response_logits=policy.response_logits)

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> LossOutput:
        """The loss of one batch: ``spec.compute`` on the batch's :class:`ListScores`."""
        return self.spec.compute(self.list_scores(policy, inputs), self.loss_config)

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        """Items the loss averages over in this batch, known before the forward: ``spec.count``."""
        return self.spec.count(inputs["labels"], inputs["list_mask"], self.loss_config)

    def _packing_plan(self, model: torch.nn.Module, packing: bool) -> PackingPlan:
        """The batch layout: packed where the model takes it (a logged line says why not, once)."""
        if self.model_kind == "reward":
            reason = ("a reward model's sequence-classification head pools one score per row, and a packed row "
                      "holds several responses")
            if packing:
                log_once(f"padded forward for the reward model: {reason}")
            return PackingPlan(False, reason=reason)
        return packing_plan(model, packing)

    def forward_lists(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> PolicyOutput:
        """The one forward over every response of the batch, in the batch's layout (default: summed response
        log-probs of a causal LM, with what a token-level loss reads; a reward model overrides it with its scalar
        rewards)."""
        return lists_forward(model, inputs, self.packing, keep_logits=self.token_level)

    # --- shared machinery ----------------------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        # The loss is a mean over *items* (pairs, lists) across all micro-batches of one optimizer step and all
        # ranks. Dividing each micro-batch's sum by that global count makes 8 x 1 and 2 x 4 the same update,
        # also when lists have different numbers of pairs (the mean of micro-batch means would not be).
        n = torch.tensor(sum(self.count_items(b) for b in batch_samples), device=device, dtype=torch.float32)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n).sum()
        return n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Policy forward over all responses, the objective, and its metrics."""
        mode = "train" if model.training else "eval"
        policy = self.forward_lists(model, inputs)  # logps (or rewards) [B, K]
        if (mode == "train" and self.reference_check is None and self.reference_is_policy
                and self.state.global_step == 0 and "ref_logps" in inputs):
            self._check_step0(policy.logps, inputs)
        out = self.objective(policy, inputs)
        rows = self.source_rows(inputs) if mode == "train" else None
        metrics = dict(out.metrics)
        if out.pairs is not None and self.model_kind == "policy":  # a reward model's scores are no log-probs
            metrics.update(pair_logps_metrics(out.pairs, policy.logps))
        # Ranking quality of the implicit reward (or of the log-prob without a reference) on this batch.
        with torch.no_grad():
            score = policy.logps.detach() - inputs["ref_logps"] if "ref_logps" in inputs else policy.logps.detach()
            for k, v in list_metrics(score, inputs["labels"], inputs["list_mask"]).items():
                if v == v and k != "n_lists_ranked":  # skip NaN (no list with a preference in this batch)
                    metrics[f"ranking/{k}"] = v
        loss = self.finish_loss(model, out, num_items_in_batch, metrics=metrics, rows=rows)
        if mode == "train":
            self.tokens.add_batch(inputs)
        return (loss, {"policy_logps": policy.logps.detach()}) if return_outputs else loss

    def source_rows(self, inputs: dict[str, torch.Tensor]) -> list[int]:
        """The data-file rows of a training batch's lists (for messages)."""
        ds = self.train_dataset
        return [ds.lists[int(i)].row for i in inputs.get("index", torch.zeros(0)).tolist()
                if 0 <= int(i) < len(getattr(ds, "lists", []))]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
