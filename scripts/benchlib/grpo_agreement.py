"""scripts/bench_grpo.py's objective check: align's and TRL's first-step GRPO loss on one fixed batch.

One batch of completions (half sampled once, seeded; half prefixes of the correct answer) is fed to both trainers in
place of their own sampling; both score it with the same reward function, so both compute the same advantages from
the same rewards, and both compute the loss through their own training forward (TRL's ``compute_loss`` on the batch
its ``_generate_and_score_completions`` builds, align's ``compute_loss`` on the micro-batch its
``get_batch_samples`` returns). Before the loss, both policies get the same small seeded perturbation after the
trainers took their reference (TRL loads it from the saved weights, align copies the starting weights), so that with
β > 0 the KL term is not zero and the loss depends on both sides' log-probs. The parameters' gradients are compared
too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from benchlib.grpo_worker import (
    align_config,
    load_prompt_set,
    prompt_dataset_class,
    reward_graded,
    training_kwargs,
    trl_config,
)

PERTURBATION = 0.02  # std of the seeded noise added to every policy weight


def fixed_completions(model, tokenizer, prompts, n: int, max_new_tokens: int, seed: int) -> list[list[tuple]]:
    """``n`` completions of each prompt (``[B][n]`` ids): the odd ones sampled from ``model`` (seeded, cut after the
    first end token), the even ones prefixes of growing length of the correct answer (with the end token), so that
    the group's rewards differ and the advantages are not all zero."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id or 0
    rows = [list(p.prompt_ids) for p in prompts for _ in range(n)]
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.eval().generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                    temperature=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                    eos_token_id=eos)
    sampled = [tuple(r[: r.index(eos) + 1] if eos in r else r) for r in out[:, width:].tolist()]
    groups = []
    for b, p in enumerate(prompts):
        digits = str(p.example.columns["answer"]).split()
        group = []
        for g in range(n):
            if g % 2:
                group.append(sampled[b * n + g])
                continue
            k = 1 + g * len(digits) // (2 * n)
            text = tokenizer(" ".join(digits[:k]), add_special_tokens=False)["input_ids"][: max_new_tokens - 1]
            group.append(tuple(text) + (eos,))
        groups.append(group)
    return groups


def perturb(model: torch.nn.Module, seed: int, scale: float = PERTURBATION) -> None:
    """Add the same seeded noise to every parameter (in name order), on either side alike."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda x: x[0]):
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p) * scale)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def trl_loss(spec, beta, model_dir, tokenizer, rows, completions, work: Path):
    """TRL's loss and gradients on the fixed completions (its sampling replaced by them)."""
    import datasets
    from trl import GRPOTrainer

    from align.models.loading import load_model

    datasets.disable_progress_bars()
    g = spec["num_generations"]
    trainer = GRPOTrainer(model=load_model(model_dir), reward_funcs=[reward_graded],
                          args=trl_config(spec, beta, str(work / f"trl-{beta:g}")),
                          train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
    perturb(trainer.model, spec["seed"])
    flat = [list(c) for group in completions for c in group]  # TRL's order: each prompt's G samples in a row
    trainer._generate_single_turn = lambda *a, **kw: ([list(c) for c in flat], None)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by the loss normaliser
    inputs = trainer._generate_and_score_completions([r for r in rows for _ in range(g)])
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return float(loss.detach()), _grads(trainer.model), inputs["advantages"].tolist()


def fixed_engine():
    """A generation engine that returns its ``samples`` (the fixed batch, set before the rollout) instead of
    sampling: the trainer's own rollout then scores, advantages and forwards exactly those completions."""
    from align.online.engines import GenerationEngine

    class Fixed(GenerationEngine):
        name = "fixed"
        samples = None

        def generate(self, model, prompt_ids, **kwargs):
            return self.samples

    return Fixed()


def align_loss(spec, beta, model_dir, tokenizer, prompts, completions, work: Path):
    """align's loss and gradients on the fixed completions, through its trainer's rollout and training forward."""
    from transformers import TrainingArguments

    from align.models.loading import load_model
    from align.online.generation import Samples
    from align.trainers import GRPOTrainer

    PromptDataset = prompt_dataset_class()

    args = TrainingArguments(**training_kwargs(spec, str(work / f"align-{beta:g}"), spec["batch_prompts"]))
    trainer = GRPOTrainer(load_model(model_dir), args, align_config(spec, beta), PromptDataset(prompts),
                          processing_class=tokenizer, engine=(engine := fixed_engine()))
    perturb(trainer.model, spec["seed"])
    eos = tokenizer.eos_token_id
    engine.samples = Samples([tuple(p.prompt_ids) for p in prompts], [list(g) for g in completions],
                      [[tokenizer.decode(c, skip_special_tokens=True) for c in g] for g in completions],
                      torch.tensor([[not c or c[-1] != eos for c in g] for g in completions]), 0.0)
    trainer.model.train()
    batches, count = trainer.get_batch_samples(iter([[{"prompt": p, "index": i} for i, p in enumerate(prompts)]]),
                                               1, args.device)
    loss = sum(trainer.compute_loss(trainer.model, b, num_items_in_batch=count) for b in batches)
    loss.backward()
    adv = [b["advantages"].tolist() for b in batches if "advantages" in b]
    return float(loss.detach()), _grads(trainer.model), adv


def loss_agreement(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Both sides' first-step loss (and gradients) on one fixed batch, for each β of ``spec["betas"]``."""
    from align.models.loading import load_model, load_tokenizer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    tokenizer = load_tokenizer(spec["model_dir"])
    prompts, rows = load_prompt_set(spec, tokenizer)
    b = spec["batch_prompts"]
    prompts, rows = prompts[:b], rows[:b]
    completions = fixed_completions(load_model(spec["model_dir"]), tokenizer, prompts, spec["num_generations"],
                                    spec["max_completion_length"], spec["seed"])
    by_beta, worst, worst_grad = {}, 0.0, 0.0
    for beta in spec["betas"]:
        lt, gt, _ = trl_loss(spec, beta, spec["model_dir"], tokenizer, rows, completions, work)
        la, ga, _ = align_loss(spec, beta, spec["model_dir"], tokenizer, prompts, completions, work)
        common = sorted(set(gt) & set(ga))
        grad = max((float((gt[n] - ga[n]).abs().max()) for n in common), default=math.inf)
        scale = max((float(gt[n].abs().max()) for n in common), default=0.0)
        by_beta[f"{beta:g}"] = {"trl": lt, "align": la, "abs_diff": abs(lt - la), "grad_max_abs_diff": grad,
                                "grad_max_abs": scale, "parameters_compared": len(common),
                                "parameters_with_grad": {"trl": len(gt), "align": len(ga)}}
        worst, worst_grad = max(worst, abs(lt - la)), max(worst_grad, grad)
    lengths = [len(c) for g in completions for c in g]
    return {"max_abs_diff": worst, "grad_max_abs_diff": worst_grad, "by_beta": by_beta, "prompts": b,
            "completions": len(lengths), "completion_tokens": sum(lengths), "perturbation": PERTURBATION}
