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

import copy
import dataclasses
import gc
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from align.config import Recipe, _check, from_dict, to_dict
from align.data.example import LoadReport
from align.data.prompts import TokenizedPrompt
from align.distributed import barrier, full_weights, gather_objects, is_main, is_zero3_partitioned, rank_world
from align.errors import ConfigError, DataError
from align.evaluation.sampling import score_samples
from align.io import write_json
from align.models.loading import load_policy, load_tokenizer, resolve_model_path
from align.online.engines import SharedPrefixEngine, stream_seed
from align.online.generation import Samples
from align.online.scoring import RewardSource, load_sources
from align.rewards.combine import combine
from align.rewards.grouping import rank_group
from align.runstate import _read_json, claim_output_dir, setting_changes

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


def load_iterate_prompts(recipe: Recipe, tokenizer: Any, search_dirs: tuple = ()
                         ) -> tuple[list[TokenizedPrompt], list[TokenizedPrompt], LoadReport]:
    """The training prompts (``iterate.prompts``, else ``data.train``) and at most ``iterate.eval_prompts`` held-out
    prompts: those of ``data.eval`` when it is set, else a ``data.eval_fraction`` split of the training prompts by
    prompt (:func:`align.online_run.load_prompt_data`, which reads ``data.columns`` / ``data.eval_columns``)."""
    from align.online_run import load_prompt_data

    it, d = recipe.iterate, recipe.data
    cap = it.eval_prompts if d.max_eval_examples is None else min(it.eval_prompts, d.max_eval_examples)
    data = dataclasses.replace(d, train=it.prompts or d.train, max_eval_examples=cap,
                               eval_fraction=d.eval_fraction if it.eval_prompts else 0.0)
    train, held, report, _ = load_prompt_data(dataclasses.replace(recipe, data=data), tokenizer, search_dirs)
    return train, held, report


def run_iterate(recipe: Recipe, output_dir: str | Path | None = None, *, resume: bool = False,
                search_dirs: tuple = (), progress: bool = True) -> dict[str, Any]:
    """Run ``recipe.iterate.rounds`` rounds (see the module docstring); returns and writes ``summary.json``.

    The output directory is checked and locked as a training run's is (:func:`align.runstate.claim_output_dir`).
    Under ``accelerate launch`` (DDP or DeepSpeed) every process runs this function: each samples its share of
    the prompts (gathered to all, the same samples as one process draws), the rounds' training is data parallel,
    and only the main process writes files. The current policy stays in memory from round to round; it is loaded
    from disk at most once a round (at the start, and after a round whose trained model is a DeepSpeed engine's
    or a PEFT wrapper's)."""
    out = Path(output_dir or recipe.output_dir)
    with claim_output_dir(out, kind="iterate"):
        return _run_rounds(recipe, out, resume=resume, search_dirs=search_dirs, progress=progress)


def _open_state(out: Path, recipe: Recipe, resume: bool) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``state.json`` (empty for a new run), the settings changed since the run began (listed, as ``align train
    --resume`` does), and the summary of a run with every round finished (``--resume`` of it does nothing)."""
    if not resume:
        if (out / "state.json").exists():
            raise ConfigError(f"{out} holds an earlier `align iterate` run: pass --resume to continue it, or another "
                             "--output-dir")
        if is_main():
            write_json(out / "recipe.json", to_dict(recipe))
        return {"rounds": {}}, {}, None
    state = _state(out)
    old = _read_json(out / "recipe.json")
    first_new = next((k for k in range(10**6) if str(k) not in state["rounds"]), 0)
    changes = setting_changes(old, to_dict(recipe)) if isinstance(old, dict) else {}
    for key, c in changes.items():
        c["effect"] = (f"takes effect from round {first_new} (a round already started keeps the settings in its "
                       "round-K/recipe.json)")
        log.warning("--resume: %s changed %r → %r: %s", key, c["old"], c["new"], c["effect"])
    summary = _read_json(out / "summary.json")
    done = all(state["rounds"].get(str(k), {}).get("finished") for k in range(recipe.iterate.rounds))
    if done and isinstance(summary, dict):
        log.warning("--resume: %s holds a finished run (%d rounds): nothing to do; its models and outputs are left "
                    "as they are", out, recipe.iterate.rounds)
        return state, changes, summary
    return state, changes, None


def _round_settings(rdir: Path, recipe: Recipe) -> Recipe:
    """The recipe round ``rdir`` runs with: the one recorded in ``rdir/recipe.json`` when the round started (a
    resumed round keeps it), else ``recipe``, recorded now."""
    old = _read_json(rdir / "recipe.json")
    if not isinstance(old, dict):
        if is_main():
            write_json(rdir / "recipe.json", to_dict(recipe))
        return recipe
    tree = copy.deepcopy(old)
    loss = tree.pop("loss", None) or {}
    kept = from_dict(Recipe, tree)
    from align.trainers import ALGORITHMS

    kept.loss = _check(ALGORITHMS[kept.algorithm].config, loss, "loss")
    return kept


def _run_rounds(recipe: Recipe, out: Path, *, resume: bool, search_dirs: tuple, progress: bool) -> dict[str, Any]:
    from align.online_run import completion_rows
    from align.pipeline import train_offline
    from align.run_setup import run_sft

    it = recipe.iterate
    device = process_device()  # under a launcher: the process group, before anything collective
    state, changes, finished = _open_state(out, recipe, resume)
    if finished is not None:
        return finished
    barrier()  # every process has read the state before the main one writes
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        resolve_model_path(recipe.model.name_or_path)  # builds the embedded model once, before the others read it
    barrier()
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    train_t, held_t, report = load_iterate_prompts(recipe, tokenizer, search_dirs)
    sources = load_sources(it.rewards, device=device)
    current = state.get("start_model")
    if current is None:
        current = resolve_model_path(recipe.model.name_or_path)
        if recipe.sft.enabled:
            current = run_sft(current, completion_rows(train_t), recipe)
        state["start_model"] = current
        _save_state(out, state)
    policy: torch.nn.Module | None = None  # the current policy in memory, loaded when first needed

    def model() -> torch.nn.Module:
        nonlocal policy
        if policy is None:
            policy = load_policy(current, recipe.model.dtype)
            policy = policy if is_zero3_partitioned(policy) else policy.to(device)
        return policy

    if "eval_initial" not in state and held_t:
        state["eval_initial"] = evaluate_spread(model(), tokenizer, held_t, sources, it, seed=recipe.train.seed)
        _save_state(out, state)
    for k in range(it.rounds):
        done = state["rounds"].get(str(k), {})
        rdir = out / f"round-{k}"
        if done.get("finished"):
            current, policy = done["model"], None
            if is_main() and not (rdir / "metrics.json").exists():  # killed between the state and its copy
                write_json(rdir / "metrics.json", done["metrics"])
            continue
        if is_main():
            rdir.mkdir(exist_ok=True)
        barrier()
        settings = _round_settings(rdir, recipe)
        if not done.get("sampled"):
            done.update(_sample_round(k, settings, model(), tokenizer, train_t, sources, rdir))
            state["rounds"][str(k)] = done
            _save_state(out, state)
        round_recipe = _round_recipe(settings, current, rdir / "data.jsonl", k)
        resume_training = bool(done.get("training_started"))
        done.update(training_started=True)
        _save_state(out, state)
        summary, policy = train_offline(round_recipe, rdir / "train", policy=model(), resume=resume_training,
                                        progress=progress)
        gc.collect()  # the round's trainer (optimizer state, DDP wrapper) before the next sampling
        metrics = {"round": k, "start_model": current, "samples": done["samples"],
                   "train": {key: summary.get(key) for key in ("steps", "train_loss_first", "train_loss_last",
                                                               "reference_cache", "train_seconds")}}
        current = summary["model_dir"]
        if held_t:
            metrics["eval"] = evaluate_spread(model(), tokenizer, held_t, sources, it, seed=recipe.train.seed)
        done.update(finished=True, model=current, metrics=metrics)
        state["rounds"][str(k)] = done
        _save_state(out, state)  # the round's result and its state: one atomic write
        if is_main():
            write_json(rdir / "metrics.json", metrics)  # a copy of the round's result, for reading
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
               "data": report.to_dict(), "world_size": rank_world()[1],
               "resume": {"resumed": resume, "changed_settings": changes}}
    if is_main():
        write_json(out / "summary.json", summary)
    barrier()
    return summary


def _save_state(out: Path, state: dict[str, Any]) -> None:
    """``state.json``, written by the main process (every process keeps the same state in memory)."""
    if is_main():
        write_json(out / "state.json", state)


def process_device() -> torch.device:
    """This process's device. Under ``accelerate launch`` / ``torchrun`` this sets up the process group (once; the
    rounds' trainers use the same one) and gives each process its own accelerator; else the visible GPU or the
    CPU."""
    from accelerate import PartialState

    return PartialState().device


def spread_sample(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[TokenizedPrompt], *, n: int,
                  max_new_tokens: int, temperature: float, top_p: float, batch_size: int, seed: int) -> Samples:
    """``n`` completions of every prompt, drawn across the processes and gathered to all.

    The prompts are cut into batches of ``batch_size`` whatever the number of processes; batch i is drawn on
    process i mod world, and prompt j's samples come from their own random streams, seeded by (``seed``, j)
    (:class:`~align.online.engines.SharedPrefixEngine`). So every process count draws the same samples, with the
    same arithmetic. Under ZeRO-3 the weights are gathered for the drawing.
    """
    rank, world = rank_world()
    t0 = time.perf_counter()
    engine = SharedPrefixEngine()
    mine: dict[int, Samples] = {}
    starts = range(0, len(prompts), batch_size)
    with full_weights(model, engine_managed=False):
        for i, start in enumerate(starts):
            if i % world != rank:
                continue
            chunk = prompts[start : start + batch_size]
            mine[i] = engine.generate(
                model, [p.prompt_ids for p in chunk], num_generations=n, max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id or 0, eos_token_id=tokenizer.eos_token_id,
                temperature=temperature, top_p=top_p, seeds=[stream_seed(seed, start + j) for j in range(len(chunk))],
                batch_size=batch_size, decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    parts: dict[int, Samples] = {}
    for d in gather_objects(mine):
        parts.update(d)
    ordered = [parts[i] for i in range(len(starts))]
    return Samples([p for s in ordered for p in s.prompt_ids], [c for s in ordered for c in s.completion_ids],
                   [t for s in ordered for t in s.texts],
                   torch.cat([s.truncated for s in ordered]) if ordered else torch.zeros(0, n, dtype=torch.bool),
                   time.perf_counter() - t0)


def evaluate_spread(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[TokenizedPrompt],
                    sources: Sequence[RewardSource], it: Any, *, seed: int) -> dict[str, Any]:
    """:func:`align.evaluation.sampling.evaluate_by_sampling`'s report, the drawing spread over the processes
    (:func:`spread_sample`): ``iterate.eval_samples`` completions of each held-out prompt, on the same streams
    before the first round and after every round."""
    samples = spread_sample(model, tokenizer, prompts, n=it.eval_samples, max_new_tokens=it.max_completion_length,
                            temperature=it.temperature, top_p=it.top_p, batch_size=it.sample_batch_size, seed=seed)
    report = score_samples(samples, prompts, sources, seed=seed)
    report.update(temperature=it.temperature, seconds=samples.seconds)
    return report


def _sample_round(k: int, recipe: Recipe, model: torch.nn.Module, tokenizer: Any, prompts: list[TokenizedPrompt],
                  sources: list[RewardSource], rdir: Path) -> dict[str, Any]:
    """Sample, score and write round ``k``'s lists (every process samples its share; the main one writes);
    returns what ``state.json`` keeps of it."""
    it = recipe.iterate
    n = len(prompts)
    start = (k * it.prompts_per_round) % max(n, 1)
    chosen = [prompts[(start + i) % n] for i in range(min(it.prompts_per_round, n))]
    random.seed(recipe.train.seed + k)  # for reward functions that draw
    samples = spread_sample(model, tokenizer, chosen, n=it.num_samples, max_new_tokens=it.max_completion_length,
                            temperature=it.temperature, top_p=it.top_p, batch_size=it.sample_batch_size,
                            seed=recipe.train.seed + 1000 * (k + 1))
    raw = {s.name: s([p.example for p in chosen], samples.texts) for s in sources}
    total = combine(raw, {s.name: s.weight for s in sources}).total
    rows, skipped = build_rows(chosen, samples.texts, total, it.build)
    if not rows:
        raise DataError(f"round {k}: no prompt gave samples with different rewards ({skipped}); raise "
                         "iterate.num_samples or the temperature")
    if is_main():
        rdir.mkdir(parents=True, exist_ok=True)
        with open(rdir / "samples.jsonl", "w") as f:
            for b, p in enumerate(chosen):
                f.write(json.dumps({"prompt": p.example.prompt, "completions": samples.texts[b],
                                    "rewards": {name: r[b].tolist() for name, r in raw.items()},
                                    "truncated": samples.truncated[b].tolist()}) + "\n")
        tmp = rdir / ".data.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(rdir / "data.jsonl")
    barrier()  # the round's training reads data.jsonl on every process
    stats = {"prompts": len(chosen), "lists": len(rows), "skipped": skipped, "reward_mean": float(total.mean()),
             "by_source": {name: float(torch.nan_to_num(r).mean()) for name, r in raw.items()},
             "sample_seconds": samples.seconds, "time": time.time()}
    return {"sampled": True, "samples": stats}


def _round_recipe(recipe: Recipe, start_model: str, data: Path, k: int) -> Recipe:
    """The recipe of round ``k``'s offline training: its data, starting from ``start_model``, no SFT. The round's
    lists are held out (``data.eval_fraction``) only for an evaluation (``eval.enabled``); else all are trained on."""
    held = recipe.data.eval_fraction if recipe.eval.enabled else 0.0
    r = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, name_or_path=start_model, reference=None),
                            data=dataclasses.replace(recipe.data, train=str(data), eval=None, format="ranked",
                                                     max_rows=None, columns={}, eval_columns=None,
                                                     eval_fraction=held),
                            sft=dataclasses.replace(recipe.sft, enabled=False),
                            train=dataclasses.replace(recipe.train, seed=recipe.train.seed + k))
    return r
