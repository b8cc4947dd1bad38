"""``align iterate RECIPE``: rounds of on-policy preference optimisation.

Each round: sample N completions per prompt from the current policy → score them with the recipe's reward sources
→ build the best-vs-worst pair of each prompt, or the whole list ranked by reward → train the recipe's offline
algorithm on it (DPO: iterative DPO; Cringe: Pairwise Cringe Optimization, Xu et al. 2023, arXiv 2312.16682;
LiPO: on-policy LiPO) → continue from the new policy. The reference of a round is its starting policy, read
through the shared cache like any offline run's.

Everything a round makes is saved under ``OUTPUT_DIR/round-K/``: ``samples.jsonl`` (prompts, completions,
rewards), ``data.jsonl`` (the ranked lists it trains on), the round's training run (``summary.json``, model,
checkpoints) and ``metrics.json``. ``OUTPUT_DIR/state.json`` records what is finished, so a killed run resumes at
the round and, inside a round's training, at the step where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch

from align.config import Recipe, to_dict
from align.data.loaders import split_examples
from align.data.prompts import TokenizedPrompt, load_prompts, tokenize_prompts
from align.errors import ConfigError, DataError
from align.evaluation.sampling import evaluate_by_sampling
from align.io import write_json
from align.models.loading import load_model, load_tokenizer, resolve_model_path
from align.online.generation import sample
from align.online.scoring import RewardSource, load_sources
from align.rewards.combine import combine
from align.rewards.grouping import rank_group

log = logging.getLogger("align")


def _state(out: Path) -> dict[str, Any]:
    path = out / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"rounds": {}}


def build_rows(prompts: list[TokenizedPrompt], texts: list[list[str]], rewards: torch.Tensor, build: str
               ) -> tuple[list[dict], dict[str, int]]:
    """Ranked rows (``prompt``, ``responses``, ``scores``) from each prompt's samples (:func:`rank_group`); groups
    that carry no preference (all rewards equal, or fewer than two distinct completions) are counted and left out."""
    rows, skipped = [], {"all rewards equal": 0, "fewer than 2 distinct completions": 0}
    for p, group, r in zip(prompts, texts, rewards.tolist()):
        ranked, reason = rank_group(group, r, build)
        if ranked is None:
            skipped[reason] += 1
            continue
        rows.append({"prompt": p.example.prompt, "responses": [t for t, _ in ranked], "scores": [v for _, v in ranked]})
    return rows, skipped


def run_iterate(recipe: Recipe, output_dir: str | Path | None = None, *, resume: bool = False,
                search_dirs: tuple = (), progress: bool = True) -> dict[str, Any]:
    """Run ``recipe.iterate.rounds`` rounds (see the module docstring); returns and writes ``summary.json``."""
    from align.online_run import completion_rows
    from align.pipeline import run_training
    from align.run_setup import resolve_path, run_sft

    it = recipe.iterate
    out = Path(output_dir or recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _state(out) if resume else {"rounds": {}}
    if not resume and (out / "state.json").exists():
        raise ConfigError(f"{out} holds an earlier `align iterate` run: pass --resume to continue it, or another "
                         "--output-dir")
    write_json(out / "recipe.json", to_dict(recipe))
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    source = it.prompts or recipe.data.train
    source = source if source.startswith("task:") else resolve_path(source, search_dirs)
    prompts, report = load_prompts(source, split=recipe.data.split, columns=recipe.data.columns,
                                   max_rows=recipe.data.max_rows)
    train, held = split_examples(prompts, recipe.data.eval_fraction if it.eval_prompts else 0.0)
    train_t, _ = tokenize_prompts(train, tokenizer, max_prompt_length=recipe.data.max_prompt_length)
    held_t, _ = tokenize_prompts(held[: it.eval_prompts], tokenizer, max_prompt_length=recipe.data.max_prompt_length)
    sources = load_sources(it.rewards)
    current = state.get("start_model")
    if current is None:
        current = resolve_model_path(recipe.model.name_or_path)
        if recipe.sft.enabled:
            current = run_sft(current, completion_rows(train_t), recipe)
        state["start_model"] = current
        write_json(out / "state.json", state)
    eval_kw = {"n": it.eval_samples, "max_new_tokens": it.max_completion_length, "temperature": it.temperature,
               "top_p": it.top_p, "batch_size": it.sample_batch_size, "seed": recipe.train.seed}
    if "eval_initial" not in state and held_t:
        state["eval_initial"] = evaluate_by_sampling(load_model(current), tokenizer, held_t, sources, **eval_kw)
        write_json(out / "state.json", state)
    for k in range(it.rounds):
        done = state["rounds"].get(str(k), {})
        if done.get("finished"):
            current = done["model"]
            continue
        rdir = out / f"round-{k}"
        rdir.mkdir(exist_ok=True)
        if not done.get("sampled"):
            done.update(_sample_round(k, recipe, current, tokenizer, train_t, sources, rdir))
            state["rounds"][str(k)] = done
            write_json(out / "state.json", state)
        round_recipe = _round_recipe(recipe, current, rdir / "data.jsonl", k)
        resume_training = bool(done.get("training_started"))
        done.update(training_started=True)
        write_json(out / "state.json", state)
        summary = run_training(round_recipe, rdir / "train", resume=resume_training, progress=progress)
        metrics = {"round": k, "start_model": current, "samples": done["samples"],
                   "train": {key: summary.get(key) for key in ("steps", "train_loss_first", "train_loss_last",
                                                               "reference_cache", "train_seconds")}}
        current = summary["model_dir"]
        if held_t:
            metrics["eval"] = evaluate_by_sampling(load_model(current), tokenizer, held_t, sources, **eval_kw)
        write_json(rdir / "metrics.json", metrics)
        done.update(finished=True, model=current, metrics=metrics)
        state["rounds"][str(k)] = done
        write_json(out / "state.json", state)
    rounds = [state["rounds"][str(k)]["metrics"] for k in range(it.rounds)]
    evals = [state.get("eval_initial")] + [r.get("eval") for r in rounds]
    summary = {"algorithm": f"iterate-{recipe.algorithm}", "rounds": rounds, "final_model": current,
               "eval_initial": state.get("eval_initial"),
               "sample_reward_first": rounds[0]["samples"]["reward_mean"] if rounds else None,
               # the weighted reward of each round's own samples (what that round trained on)
               "reward_curve": [r["samples"]["reward_mean"] for r in rounds],
               # each source's mean reward on the held-out prompts: before round 0, then after every round
               "eval_reward_curve": {s.name: [e["reward"].get(s.name) if e else None for e in evals]
                                     for s in sources},
               "data": report.to_dict()}
    write_json(out / "summary.json", summary)
    return summary


def _sample_round(k: int, recipe: Recipe, model_name: str, tokenizer: Any, prompts: list[TokenizedPrompt],
                  sources: list[RewardSource], rdir: Path) -> dict[str, Any]:
    """Sample, score and write round ``k``'s lists; returns what ``state.json`` keeps of it."""
    it = recipe.iterate
    n = len(prompts)
    start = (k * it.prompts_per_round) % max(n, 1)
    chosen = [prompts[(start + i) % n] for i in range(min(it.prompts_per_round, n))]
    torch.manual_seed(recipe.train.seed + 1000 * (k + 1))
    random.seed(recipe.train.seed + k)
    model = load_model(model_name)
    if torch.cuda.is_available():
        model = model.cuda()
    samples = sample(model, [p.prompt_ids for p in chosen], pad_token_id=tokenizer.pad_token_id or 0,
                     eos_token_id=tokenizer.eos_token_id, num_generations=it.num_samples,
                     max_new_tokens=it.max_completion_length, temperature=it.temperature, top_p=it.top_p,
                     batch_size=it.sample_batch_size,
                     decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    del model
    raw = {s.name: s([p.example for p in chosen], samples.texts) for s in sources}
    total = combine(raw, {s.name: s.weight for s in sources}).total
    with open(rdir / "samples.jsonl", "w") as f:
        for b, p in enumerate(chosen):
            f.write(json.dumps({"prompt": p.example.prompt, "completions": samples.texts[b],
                                "rewards": {name: r[b].tolist() for name, r in raw.items()},
                                "truncated": samples.truncated[b].tolist()}) + "\n")
    rows, skipped = build_rows(chosen, samples.texts, total, it.build)
    if not rows:
        raise DataError(f"round {k}: no prompt gave samples with different rewards ({skipped}); raise "
                         "iterate.num_samples or the temperature")
    tmp = rdir / ".data.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(rdir / "data.jsonl")
    stats = {"prompts": len(chosen), "lists": len(rows), "skipped": skipped, "reward_mean": float(total.mean()),
             "by_source": {name: float(torch.nan_to_num(r).mean()) for name, r in raw.items()},
             "sample_seconds": samples.seconds, "time": time.time()}
    return {"sampled": True, "samples": stats}


def _round_recipe(recipe: Recipe, start_model: str, data: Path, k: int) -> Recipe:
    """The recipe of round ``k``'s offline training: its data, starting from ``start_model``, no SFT."""
    r = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, name_or_path=start_model, reference=None),
                            data=dataclasses.replace(recipe.data, train=str(data), eval=None, format="ranked",
                                                     max_rows=None, columns={}),
                            sft=dataclasses.replace(recipe.sft, enabled=False),
                            train=dataclasses.replace(recipe.train, seed=recipe.train.seed + k))
    return r
