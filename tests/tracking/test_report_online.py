"""`align report` on runs that learn from their own samples: a GRPO run (held-out rewards from sampling before and
after, reward curves from log_history.json, sample completions from completions.jsonl) and an `align iterate` run
(per-round table, held-out reward by round, the rounds' samples). The evaluations are made by the code that makes
them in a run (``score_samples``), on hand-written samples."""

from __future__ import annotations

import json

import matplotlib.image
import torch

from align.cli import main
from align.data.prompts import prompts_from_rows
from align.evaluation.sampling import score_samples
from align.online.completions import CompletionLog
from align.online.generation import Samples
from align.online.scoring import RewardSource


def exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def _eval(texts):
    prompts, _ = prompts_from_rows([{"prompt": f"Sort: {a}", "answer": a} for a in ("1 2", "1 3", "2 3")])
    ids = [[(1,) * len(t) for t in group] for group in texts]
    samples = Samples([(0,)] * 3, ids, texts, torch.zeros(3, len(texts[0]), dtype=torch.bool), 0.1)
    report = score_samples(samples, [type("P", (), {"example": p})() for p in prompts],
                           [RewardSource.from_function(exact)], ks=(1, 2), resamples=200)
    report["temperature"] = 1.0
    return report


BEFORE = _eval([["2 1", "1 2"], ["x", "y"], ["3 2", "3 2"]])  # 1 of 6 right
AFTER = _eval([["1 2", "1 2"], ["1 3", "y"], ["2 3", "3 2"]])  # 4 of 6 right


def _png_ok(path) -> bool:
    img = matplotlib.image.imread(path)
    return img.ndim == 3 and img.shape[0] > 100 and img.std() > 0


def test_report_of_a_grpo_run(tmp_path):
    run = tmp_path / "grpo"
    run.mkdir()
    summary = {"algorithm": "grpo", "steps": 4, "eval_before": BEFORE, "eval": AFTER, "reward_curve": [0.1, 0.5],
               "reward_mean_first": 0.1, "reward_mean_last": 0.5, "model_dir": str(run / "model")}
    (run / "summary.json").write_text(json.dumps(summary))
    history = [{"loss": 0.1, "reward/mean": 0.1, "reward/exact/mean": 0.1, "step": 2},
               {"loss": 0.05, "reward/mean": 0.5, "reward/exact/mean": 0.5, "step": 4}]
    (run / "log_history.json").write_text(json.dumps(history))
    log = CompletionLog(run, main=True, num_to_print=0)
    log.log(2, ["Sort: 2 1"], [["[0] > [0] > [1", "1 2"]], {"exact": [0.0, 1.0]}, [-0.7, 0.7])
    log.log(4, ["Sort: 3 1"], [["1 3", "1 3"]], {"exact": [1.0, 1.0]}, [0.0, 0.0])
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()

    assert "No held-out evaluation was run" not in text
    lo, hi = AFTER["reward_ci"]["exact"]
    assert (f"| exact | mean reward | {BEFORE['reward']['exact']:.3f} [" in text
            and f"| {AFTER['reward']['exact']:.3f} [{lo:.3f}, {hi:.3f}] |" in text)
    assert f"| exact | pass@2 | {BEFORE['pass_at_k']['exact']['2']:.3f} | {AFTER['pass_at_k']['exact']['2']:.3f} |" \
        in text
    assert "Held-out prompts: 3, 2 samples each" in text
    assert "](report_plots/eval.png)" in text and _png_ok(run / "report_plots" / "eval.png")
    assert "](report_plots/rewards.png)" in text and "](report_plots/reward_curve.png)" in text
    assert "## Sample completions" in text
    assert "Step 2 (first 2 of the step's completions, from `completions.jsonl`):" in text and "Step 4 (" in text
    assert "| Sort: 2 1 | [0] > [0] > [1 | 0.000 | -0.700 |" in text


def test_report_of_an_iterate_run(tmp_path):
    run = tmp_path / "iterate"
    run.mkdir()
    rounds = []
    for k, ev in enumerate((BEFORE, AFTER)):
        rounds.append({"round": k, "samples": {"lists": 5 + k, "reward_mean": 0.2 + 0.3 * k},
                       "train": {"train_loss_first": 0.69, "train_loss_last": 0.5 - 0.1 * k}, "eval": ev})
        (run / f"round-{k}").mkdir()
        (run / f"round-{k}" / "samples.jsonl").write_text(json.dumps(
            {"prompt": f"Sort: 2 {k}", "completions": [f"{k} 2", "2"], "rewards": {"exact": [1.0, 0.0]},
             "truncated": [False, False]}) + "\n")
    summary = {"algorithm": "iterate-dpo", "rounds": rounds, "eval_initial": BEFORE, "reward_curve": [0.2, 0.5],
               "eval_reward_curve": {"exact": [BEFORE["reward"]["exact"], BEFORE["reward"]["exact"],
                                               AFTER["reward"]["exact"]]}}
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "No held-out evaluation was run" not in text and "| exact | mean reward |" in text
    assert "after the last round" in text
    assert "## Rounds" in text
    assert "| round | lists | sample reward (mean) | train loss first → last | held-out exact |" in text
    assert f"| 1 | 6 | 0.500 | 0.6900 → 0.4000 | {AFTER['reward']['exact']:.3f} |" in text
    assert f"| before | — | — | — | {BEFORE['reward']['exact']:.3f} |" in text
    assert "](report_plots/eval_reward_curve.png)" in text and _png_ok(run / "report_plots" / "eval_reward_curve.png")
    assert "Round 0 (first 2 samples, from `round-0/samples.jsonl`):" in text and "Round 1 (" in text
    assert "| Sort: 2 1 | 1 2 | 1.000 |" in text
