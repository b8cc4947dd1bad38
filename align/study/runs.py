"""The runs behind each claim of ``docs/results.md``, on the built-in sort task, through the library's own entry points
(``align train``'s :func:`~align.pipeline.run_training`, ``align iterate``'s :func:`~align.iterate.run_iterate`,
``align eval``'s :func:`~align.evaluation.run.run_eval`): nothing here trains or scores by itself.

One SFT model (the embedded tiny model fine-tuned on correct answers) is built once and shared by every arm and seed:
it is the starting policy and the reference of the offline arms, it samples the preference lists, and GRPO and the
iterative runs start from it. Per seed s, the training lists are K samples of fresh prompts from it, ranked by the
true graded score (:mod:`align.tasks.preferences`); every arm of a comparison trains the same number of steps on the
same lists. Every trained policy is scored by sampling on one fixed set of evaluation prompts with the sampling seed
s (so arms of one seed see the same random stream): ``align eval --scorer task``.

Every run and evaluation is kept under the work folder and reused when present, so an interrupted study continues.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align.tasks.preferences import DEFAULT_TEMPERATURE

REPO = Path(__file__).resolve().parents[2]
HH = REPO.parent / "shared" / "data" / "hh_rlhf_harmless_base.jsonl.gz"
GRADED = {"function": "align.tasks.sort:reward_graded", "weight": 1.0}
EXACT = {"function": "align.tasks.sort:reward_exact", "weight": 1.0}


@dataclass(frozen=True)
class Settings:
    """Sizes and hyper-parameters of a study (fixed before any evaluation seed is run; see ``docs/results.md``)."""

    seeds: tuple[int, ...] = (1, 2, 3)
    base_model: str = "embedded:tiny"  # what the task SFT and the HH recipe start from
    task: str = "min_len=3&max_len=3&max_digit=5"  # the sort task's difficulty (as recipes/grpo_rank_tiny.yaml)
    sft_steps: int = 400
    sft_learning_rate: float = 3e-3
    sft_rows: int = 2000
    list_prompts: int = 128  # training prompts per seed; their K samples, ranked, are the lists
    ks: tuple[int, ...] = (4, 8)
    steps: int = 72  # step budget of every offline arm (the stopping rule may stop it earlier)
    batch_size: int = 8  # lists per step
    learning_rate: float = 5e-4
    beta: float = 0.1  # every offline arm (DPO, LiPO-λ, MMPO)
    preference_temperature: float = DEFAULT_TEMPERATURE  # T of the true P(a ≻ b) = σ((s_a − s_b) / T)
    max_new_tokens: int = 8
    eval_prompts: int = 48
    eval_samples: int = 16
    calibration_prompts: int = 48  # held-out K=4 lists for calibration and ranking accuracy
    grpo_steps: int = 24  # step budget of the GRPO arms
    grpo_prompts: int = 4  # prompts per GRPO step
    grpo_generations: int = 8
    grpo_learning_rate: float = 5e-4
    grpo_reward: str = "graded"  # graded or exact
    unlikeliness: float = 0.25  # He et al.'s β_rank
    pass_ks: tuple[int, ...] = (4, 8, 16)
    iterate_prompts: int = 48  # prompts per round
    iterate_steps: int = 6  # optimiser steps per round
    cringe: tuple[float, float, float] = (2.0, 1.0, 1.0)  # b, tau, alpha (recipes/iterate_cringe_tiny.yaml)
    # Exploratory: Pairwise Cringe at other (b, τ) around ``cringe``'s, declared before the run (the paper's values
    # are not checked here); each point is its own claim against iterative DPO, marked exploratory
    cringe_sweep: tuple[tuple[float, float], ...] = ((1.0, 0.5), (1.0, 2.0), (4.0, 0.5), (4.0, 2.0))
    windows: int = 6  # the stopping rule (align.study.stats.stopping_step): the budget in this many windows,
    patience: int = 2  # stop after this many windows in a row without improvement,
    min_improvement: float = 0.005  # an improvement: the window's mean training loss (reward) beats the best by this
    hh_sft_steps: int = 20
    hh_steps: int = 24
    hh_eval_rows: int | None = None  # rows of the HH file read for its held-out split (None: all)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = Settings(seeds=(1, 2), sft_steps=120, list_prompts=32, ks=(4,), steps=6, eval_prompts=16, eval_samples=8,
                 calibration_prompts=16, grpo_steps=3, grpo_prompts=4, pass_ks=(2, 4, 8), iterate_prompts=16,
                 iterate_steps=2, windows=3, patience=1, hh_sft_steps=5, hh_steps=6, hh_eval_rows=300,
                 cringe_sweep=())


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _train(recipe: str | Path, overrides: list[str], out: Path) -> dict[str, Any]:
    """``align.train(recipe, overrides, output_dir=out, overwrite=True, quiet=True)``, from the runs layer."""
    from align.config import load_recipe
    from align.console import quiet
    from align.pipeline import run_training

    with quiet():
        return run_training(load_recipe(recipe, overrides), out, overwrite=True, progress=False,
                            search_dirs=[Path(recipe).resolve().parent, Path.cwd()])


def _evaluate(model: str, data: str, **options: Any) -> dict[str, Any]:
    """``align.evaluate(model, data, quiet=True, **options)``, from the runs layer."""
    from align.console import quiet
    from align.evaluation.run import EvalRequest, run_eval

    with quiet():
        return run_eval(EvalRequest(model=str(model), data=str(data), progress=False, **options))


def _write(path: Path, obj: Any) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
    return obj


class Study:
    """The runs of one study under ``work``; ``log`` receives one line per finished step."""

    def __init__(self, work: str | Path, settings: Settings, log: Callable[[str], None] = print):
        self.work, self.s, self.log = Path(work), settings, log
        self.work.mkdir(parents=True, exist_ok=True)
        self._sft: str | None = None

    # ---- data -----------------------------------------------------------------------------------------------
    def task_spec(self, n: int, seed: int) -> str:
        """The sort task's source for ``n`` prompts drawn with ``seed``."""
        return f"task:sort?n={n}&seed={seed}&{self.s.task}"

    def eval_spec(self) -> str:
        """The evaluation prompts, one fixed set for every arm and seed."""
        return self.task_spec(self.s.eval_prompts, 99991)

    @property
    def sft(self) -> str:
        """The shared SFT model's directory (built on first use, cached under ``work/sft``)."""
        if self._sft is None:
            from align.config import SFTStage
            from align.models.loading import resolve_model_path
            from align.sft import run_sft
            from align.tasks import task_rows
            from align.tasks.sort import sft_rows

            s = self.s
            stage = SFTStage(enabled=True, max_steps=s.sft_steps, learning_rate=s.sft_learning_rate, batch_size=16,
                             warmup_steps=10)
            self._sft = run_sft(resolve_model_path(s.base_model), sft_rows(task_rows(self.task_spec(s.sft_rows, 100))),
                                stage, self.work / "sft", max_length=48, seed=0)
            self.log(f"SFT model: {self._sft}")
        return self._sft

    def _sample_lists(self, name: str, n: int, prompt_seed: int, k: int, sample_seed: int,
                      builds: dict[str, tuple[int, str]]) -> dict[str, Path]:
        """Sample ``k`` completions of ``n`` task prompts from the SFT model and write ranked lists: ``builds``
        maps a file stem to (the first K samples used, ``lists`` or ``best_worst``)."""
        from align.data.prompts import load_prompts, tokenize_prompts
        from align.models.loading import load_model, load_tokenizer
        from align.online.task_lists import prompt_rows, sample_texts
        from align.tasks.preferences import ranked_rows

        d = self.work / "data" / name
        files = {stem: d / f"{stem}.jsonl" for stem in builds}
        if (d / "stats.json").exists():
            return files
        tok = load_tokenizer(self.sft)
        prompts, _ = load_prompts(self.task_spec(n, prompt_seed))
        tp, _ = tokenize_prompts(prompts, tok, max_prompt_length=32)
        texts = sample_texts(load_model(self.sft), tok, tp, k, max_new_tokens=self.s.max_new_tokens, seed=sample_seed)
        stats = {}
        d.mkdir(parents=True, exist_ok=True)
        for stem, (kk, build) in builds.items():
            rows, skipped = ranked_rows(prompt_rows(tp), [t[:kk] for t in texts], "sort", build,
                                        self.s.preference_temperature)
            files[stem].write_text("".join(json.dumps(r) + "\n" for r in rows))
            stats[stem] = {"lists": len(rows), "skipped": dict(skipped),
                           "mean_responses": sum(len(r["responses"]) for r in rows) / max(len(rows), 1)}
        _write(d / "stats.json", stats)
        self.log(f"lists {name}: {stats}")
        return files

    def lists(self, seed: int) -> dict[str, Path]:
        """Seed ``seed``'s training lists: ``k{K}-lists`` and ``k{K}-best_worst`` for every K (the K=4 lists are the
        first 4 of the same samples the K=8 lists rank)."""
        builds = {f"k{k}-{b}": (k, b) for k in self.s.ks for b in ("lists", "best_worst")}
        return self._sample_lists(f"seed-{seed}", self.s.list_prompts, 1000 + seed, max(self.s.ks), seed, builds)

    def calibration_lists(self) -> Path:
        """Held-out K=4 lists (fixed prompts and samples) on which calibration and ranking accuracy are measured."""
        return self._sample_lists("calibration", self.s.calibration_prompts, 99992, 4, 0,
                                  {"k4-lists": (4, "lists")})["k4-lists"]

    # ---- training ---------------------------------------------------------------------------------------------
    def _recipe(self, name: str, recipe: dict[str, Any]) -> Path:
        path = self.work / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    def _base(self, algorithm: str, loss: dict[str, Any], steps: int, learning_rate: float) -> dict[str, Any]:
        return {"algorithm": algorithm, "model": {"name_or_path": self.sft},
                "data": {"eval_fraction": 0.0, "max_prompt_length": 32, "max_response_length": 16},
                "sft": {"enabled": False},
                "train": {"learning_rate": learning_rate, "per_device_train_batch_size": self.s.batch_size,
                          "max_steps": steps, "warmup_steps": 0, "logging_steps": max(steps // 4, 1),
                          "save_steps": 100000},
                "eval": {"enabled": False}, "loss": loss}

    def train(self, name: str, recipe: dict[str, Any], seed: int, signal: str | None = None,
              higher: bool = False) -> dict[str, Any]:
        """``align.train`` of ``recipe`` with ``train.seed=seed`` into ``work/runs/NAME/seed-S`` (reused when done).
        With ``signal`` (the logged training loss, or reward with ``higher``) the stopping rule of
        :func:`~align.study.stats.stopping_step` picks the policy: a checkpoint is kept at every window's end, and
        the summary's ``model_dir`` is the chosen one, its ``stopping`` the rule's record."""
        out = self.work / "runs" / name / f"seed-{seed}"
        budget = recipe["train"]["max_steps"]
        if signal:
            width = budget // self.s.windows
            recipe["train"] |= {"logging_steps": 1, "save_steps": width, "save_total_limit": self.s.windows + 1}
        summary = _json(out / "summary.json")
        if summary is None:
            summary = _train(self._recipe(name, recipe), [f"train.seed={seed}"], out)
            self.log(f"trained {name} seed {seed}: {summary['steps']} steps, loss {summary['train_loss_first']} → "
                     f"{summary['train_loss_last']}, {summary.get('train_seconds')} s")
        if signal:
            summary = {**summary, **self._stopped(out, summary, signal, higher, budget)}
        return summary

    def _stopped(self, out: Path, summary: dict[str, Any], signal: str, higher: bool, budget: int) -> dict[str, Any]:
        """The stopping rule's choice for the finished run ``out``: ``{"model_dir", "stopping"}``, kept in
        ``stop.json``; a chosen step before the budget is its checkpoint with the final model's tokenizer files."""
        import shutil

        from align.study.stats import stopping_step

        done = _json(out / "stop.json")
        if done is not None:
            return done
        s = self.s
        rule = stopping_step(_json(out / "log_history.json") or [], signal, higher, budget, s.windows, s.patience,
                             s.min_improvement)
        model = Path(summary["model_dir"])
        if rule["step"] < summary["steps"]:
            ckpt = out / "checkpoints" / f"checkpoint-{rule['step']}"
            if not (ckpt / "config.json").exists():
                raise FileNotFoundError(f"{out} has no checkpoint at step {rule['step']} (trained before the "
                                        "stopping rule?): use a fresh --work-dir")
            chosen = out / f"stopped-{rule['step']}"
            chosen.mkdir(exist_ok=True)
            for f in ckpt.iterdir():
                if f.name.endswith((".json", ".safetensors", ".jinja")) and f.name != "trainer_state.json":
                    shutil.copy2(f, chosen / f.name)
            for f in model.iterdir():  # tokenizer and align's model metadata, which checkpoints lack
                if f.is_file() and not (chosen / f.name).exists() and not f.name.endswith(".safetensors"):
                    shutil.copy2(f, chosen / f.name)
            model = chosen
        self.log(f"stopping rule {out.parent.name} {out.name}: step {rule['step']} of {budget} "
                 f"({signal} by window {[None if x is None else round(x, 4) for x in rule['windows']]})")
        return _write(out / "stop.json", {"model_dir": str(model), "stopping": rule})

    def offline(self, name: str, algorithm: str, loss: dict[str, Any], data: Path, seed: int) -> dict[str, Any]:
        """An offline arm: ``algorithm`` on the ranked lists ``data`` from the SFT model, within a budget of
        ``steps`` steps, stopped by the stopping rule on its own training loss."""
        recipe = self._base(algorithm, loss, self.s.steps, self.s.learning_rate)
        recipe["data"] |= {"train": str(data), "format": "ranked"}
        return self.train(name, recipe, seed, signal="loss")

    def grpo(self, name: str, unlikeliness: float, seed: int) -> dict[str, Any]:
        """GRPO from the SFT model on fresh task prompts, with the unlikeliness reward's β_rank (0: plain), within a
        budget of ``grpo_steps`` steps, stopped by the stopping rule on its own mean training reward."""
        s = self.s
        reward = GRADED if s.grpo_reward == "graded" else EXACT
        loss = {"num_generations": s.grpo_generations, "temperature": 1.0, "max_completion_length": s.max_new_tokens,
                "beta": 0.0, "loss_type": "dapo", "scale_rewards": "group", "unlikeliness": unlikeliness,
                "rewards": [reward]}
        recipe = self._base("grpo", loss, s.grpo_steps, s.grpo_learning_rate)
        recipe["data"] = {"train": self.task_spec(s.grpo_steps * s.grpo_prompts, 3000 + seed), "eval_fraction": 0.0,
                          "max_prompt_length": 32}
        recipe["train"]["per_device_train_batch_size"] = s.grpo_prompts
        return self.train(name, recipe, seed, signal="reward/mean", higher=True)

    def iterate(self, name: str, algorithm: str, loss: dict[str, Any], seed: int) -> str:
        """Two rounds of ``align iterate`` (best-vs-worst of 4 samples per prompt, graded reward) from the SFT
        model; returns the final policy."""
        from align.config import load_recipe
        from align.iterate import run_iterate

        out = self.work / "runs" / name / f"seed-{seed}"
        done = _json(out / "summary.json")
        if done is not None:
            return done["final_model"]
        s = self.s
        recipe = self._base(algorithm, loss, s.iterate_steps, s.learning_rate)
        recipe["data"]["train"] = self.task_spec(2 * s.iterate_prompts, 2000 + seed)
        recipe["iterate"] = {"rounds": 2, "prompts_per_round": s.iterate_prompts, "num_samples": 4,
                             "temperature": 1.0, "max_completion_length": s.max_new_tokens, "build": "best_worst",
                             "eval_prompts": 0, "rewards": [GRADED]}
        r = load_recipe(self._recipe(name, recipe), [f"train.seed={seed}"])
        summary = run_iterate(r, out, resume=(out / "state.json").exists(), progress=False)
        self.log(f"iterated {name} seed {seed}: sample reward by round {summary['reward_curve']}")
        return summary["final_model"]

    def hh_dpo(self, seed: int) -> dict[str, Any]:
        """``recipes/dpo_tiny.yaml`` (DPO on HH-RLHF) for ``hh_steps`` steps; its SFT stage is run once (first seed)
        and its model shared by the other seeds."""
        out = self.work / "runs" / "hh-dpo" / f"seed-{seed}"
        if (out / "summary.json").exists():
            return _json(out / "summary.json")
        shared = self.work / "runs" / "hh-dpo" / "sft_model.json"
        over = [f"train.seed={seed}", f"train.max_steps={self.s.hh_steps}", f"sft.max_steps={self.s.hh_sft_steps}",
                "eval.enabled=false", "train.save_steps=100000", f"data.train={HH}",
                f"data.max_train_examples={min(640, self.s.hh_steps * 8)}"]  # one pass at most, as the recipe
        if shared.exists():
            over += [f"model.name_or_path={_json(shared)['model']}", "sft.enabled=false"]
        else:
            over.append(f"model.name_or_path={self.s.base_model}")
        summary = _train(REPO / "recipes" / "dpo_tiny.yaml", over, out)
        if not shared.exists():
            _write(shared, {"model": summary["start_model"]})
        self.log(f"trained hh-dpo seed {seed}: {summary['steps']} steps, {summary.get('train_seconds')} s")
        return summary

    # ---- evaluation -------------------------------------------------------------------------------------------
    def true_reward(self, model: str, run: str, seed: int) -> dict[str, Any]:
        """``align eval --scorer task`` of ``model`` on the evaluation prompts (sampling seed ``seed``), with each
        prompt's own numbers kept (``per_prompt``: graded score and pass@k) for the bootstrap over prompts."""
        from align.data.prompts import load_prompts, tokenize_prompts
        from align.evaluation.sampling import evaluate_by_sampling
        from align.evaluation.task import PASS_KS, task_report, task_sources
        from align.models.loading import load_model, load_tokenizer
        from align.tasks.common import pass_at_k

        path = self.work / "evals" / run / f"seed-{seed}" / "true_reward.json"
        done = _json(path)
        if done is not None and "per_prompt" in done:
            return done
        s = self.s
        prompts, _ = load_prompts(self.eval_spec())
        tok = load_tokenizer(model)
        tp, _ = tokenize_prompts(prompts, tok, max_prompt_length=512)  # as align eval
        sampled = evaluate_by_sampling(load_model(model), tok, tp, task_sources(self.eval_spec()), n=s.eval_samples,
                                       max_new_tokens=s.max_new_tokens, batch_size=16, seed=seed, ks=PASS_KS,
                                       resamples=0)
        per = sampled["reward_per_prompt"]
        correct = [round(x * s.eval_samples) for x in per["exact_match"]]
        r = {**task_report(sampled), "n_prompts": sampled["n_prompts"], "samples_per_prompt": s.eval_samples,
             "per_prompt": {"score": per["score"], "pass_at_k": {
                 str(k): [pass_at_k(s.eval_samples, c, k) for c in correct] for k in s.pass_ks
                 if k <= s.eval_samples}}}
        self.log(f"true reward {run} seed {seed}: score {r['score']:.3f}, exact {r['exact_match']:.3f}, "
                 f"pass@k {r['pass_at_k']}")
        return _write(path, r)

    def ranking(self, model: str, run: str, seed: int, beta: float) -> dict[str, Any]:
        """Observed and idealized (β) ranking accuracy of a policy on the held-out task lists (π_ref = the SFT
        model), and the ECE of σ(β·h) against the true preference probability of each pair."""
        import torch

        from align.evaluation.calibration import ece_against
        from align.tasks.common import preference_probability

        path = self.work / "evals" / run / f"seed-{seed}" / "ranking.json"
        done = _json(path)
        if done is not None and "per_list" in done:
            return done
        per = path.with_name("per_example.jsonl")
        r = _evaluate(model, str(self.calibration_lists()), scorer="implicit", reference=self.sft,
                      betas=(beta,), resamples=0, per_example=str(per), max_prompt_length=32,
                      max_response_length=16)
        pred, true = [], []
        for line in per.read_text().splitlines():
            row = json.loads(line)
            labels, h = row["labels"], row["scores"]["implicit"]
            for i in range(len(labels)):
                for j in range(len(labels)):
                    if labels[i] > labels[j] and math.isfinite(h[i] - h[j]):
                        pred.append(1 / (1 + math.exp(-max(min(beta * (h[i] - h[j]), 700), -700))))
                        true.append(preference_probability(labels[i], labels[j], self.s.preference_temperature))
        out = {"observed": r["observed_ranking_accuracy"]["summed"],
               "idealized": r["idealized_ranking_accuracy"][f"{beta:g}"]["summed"],
               "implicit_accuracy": r["by_scorer"]["implicit"]["pairwise_accuracy"],
               "ece": ece_against(torch.tensor(pred), torch.tensor(true)), "pairs": len(pred), "beta": beta,
               "per_list": per_list_accuracy([json.loads(x) for x in per.read_text().splitlines()], beta)}
        self.log(f"ranking {run} seed {seed}: observed {out['observed']:.3f}, idealized {out['idealized']:.3f}, "
                 f"ECE {out['ece']:.3f}")
        return _write(path, out)

    def hh_ranking(self, model: str, seed: int, beta: float) -> dict[str, Any]:
        """Observed and idealized ranking accuracy of an HH DPO policy on HH's held-out split."""
        path = self.work / "evals" / "hh-dpo" / f"seed-{seed}" / "ranking.json"
        done = _json(path)
        if done is not None and "per_list" in done:
            return done
        per = path.with_name("per_example.jsonl")
        r = _evaluate(model, str(HH), split="eval", betas=(beta,), resamples=0, max_prompt_length=96,
                      max_response_length=64, max_rows=self.s.hh_eval_rows, per_example=str(per))
        out = {"observed": r["observed_ranking_accuracy"]["summed"],
               "idealized": r["idealized_ranking_accuracy"][f"{beta:g}"]["summed"], "lists": r["n_lists"],
               "beta": beta, "per_list": per_list_accuracy([json.loads(x) for x in per.read_text().splitlines()],
                                                           beta)}
        self.log(f"ranking hh-dpo seed {seed}: observed {out['observed']:.3f}, idealized {out['idealized']:.3f}")
        return _write(path, out)


def per_list_accuracy(rows: list[dict[str, Any]], beta: float) -> dict[str, list[float]]:
    """Each held-out list's share of the observed and the idealized ranking accuracy, from ``align eval
    --per-example`` rows: its correct pairs divided by the mean pairs per list, so that the mean over lists is the
    pooled accuracy ``align eval`` reports. Observed: the policy's summed log-prob orders the pair (ties correct,
    a non-finite score wrong). Idealized: R*(β) of the exact DPO optimum from π_ref, whose log-probs are the
    policy's minus its implicit reward (π_ref = the policy itself when no reference is recorded)."""
    import torch

    from align.evaluation.idealized import idealized_correct

    observed, idealized, pairs = [], [], []
    for row in rows:
        labels, sc = row["labels"], row["scores"]
        lp = [math.nan if x is None else float(x) for x in sc["logprob"]]
        imp = sc.get("implicit")
        ref = lp if imp is None else [a - (math.nan if b is None else float(b)) for a, b in zip(lp, imp)]
        n = ok = 0
        for i in range(len(labels)):
            for j in range(len(labels)):
                if labels[i] > labels[j]:
                    n += 1
                    ok += int(math.isfinite(lp[i] - lp[j]) and lp[i] >= lp[j])
        t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
        ideal = idealized_correct(t(ref), t(labels), torch.ones(1, len(labels), dtype=torch.bool), beta=beta)
        observed.append(ok)
        idealized.append(int(ideal[0]))
        pairs.append(n)
    mean_pairs = sum(pairs) / len(pairs) if pairs and sum(pairs) else 1.0
    return {"observed": [x / mean_pairs for x in observed], "idealized": [x / mean_pairs for x in idealized],
            "pairs": pairs}
