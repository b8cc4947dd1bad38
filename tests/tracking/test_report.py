"""`align report` on a real finished run: the page, its table and its plots, from the checkpoint's
trainer_state.json or from log_history.json (preferred), GRPO-style reward keys, and a clear error."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import pytest

from align.cli import main
from align.run_report import curves, group_of, load_log_history
from tests.tracking.conftest import STEPS


def _png_ok(path) -> bool:
    img = matplotlib.image.imread(path)
    return img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0  # not a blank canvas


def test_report_from_checkpoint_history(finished_run, tmp_path, capsys):
    src, summary = finished_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "log_history.json").unlink()  # the run writes it; without it the last checkpoint's history is read
    assert main(["report", str(run)]) == 0
    page = run / "report.md"
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()

    plots = {p.name for p in (run / "report_plots").iterdir()}
    assert plots == {"eval.png", "loss.png", "rewards.png", "ranking.png", "training.png"}
    for name in plots:
        assert f"](report_plots/{name})" in text, name
        assert _png_ok(run / "report_plots" / name), name

    # The before/after table with CIs, as the summary has it.
    ev = summary["eval"]
    lo, hi = ev["ci"]["pairwise_accuracy"]
    assert (f"| implicit reward log π − log π_ref | pairwise accuracy | — | {ev['pairwise_accuracy']:.3f} "
            f"[{lo:.3f}, {hi:.3f}] |") in text
    b = summary["eval_before"]["by_scorer"]["logprob"]
    assert f"| summed log-prob | pairwise accuracy | {b['pairwise_accuracy']:.3f} [" in text
    assert f"From `checkpoints/checkpoint-{STEPS}/trainer_state.json`." in text
    assert f"| computed (lists scored) | {summary['reference_cache']['computed']} |" in text
    assert f"| rows read | {summary['data']['rows_read']} |" in text
    assert "time: training (s)" in text and "```yaml\nalgorithm: lipo" in text

    # The curves are the logged values, one point per step.
    history, source = load_log_history(run)
    state = json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert source == run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json"
    c = curves(history)
    assert c["loss"] == (list(range(1, STEPS + 1)), [h["loss"] for h in state["log_history"] if "loss" in h])
    assert c["loss"][1][0] == summary["train_loss_first"] and c["loss"][1][-1] == summary["train_loss_last"]
    assert {"rewards/mean", "rewards/best"} <= set(c) and any(k.startswith("ranking/") for k in c)


def test_report_prefers_log_history_json_and_plots_grpo_rewards(finished_run, tmp_path):
    src, summary = finished_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    # What a GRPO run will log (reward/mean-style keys) and keep in its summary, plus the trainer's last entry.
    history = [{"loss": 0.1 * s, "reward/mean": 0.2 * s, "reward/std": 1.0, "step": s} for s in (1, 2, 3)]
    history.append({"train_runtime": 1.0, "train_loss": 0.2, "step": 3})
    (run / "log_history.json").write_text(json.dumps(history))
    s = dict(summary, reward_mean_first=0.2, reward_mean_last=0.6, reward_curve=[0.2, 0.4, 0.6])
    (run / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "elsewhere" / "r.md"
    assert main(["report", str(run), "--output", str(out)]) == 0
    text = out.read_text()
    assert "From `log_history.json`." in text
    assert "](../run/report_plots/rewards.png)" in text and "](../run/report_plots/reward_curve.png)" in text
    assert "| mean reward first → last | 0.2000 → 0.6000 |" in text
    c = curves(load_log_history(run)[0])
    assert set(c) == {"loss", "reward/mean", "reward/std"}  # train_runtime / train_loss are not curves
    assert c["reward/mean"] == ([1, 2, 3], [0.2, 0.4, 0.6000000000000001])
    assert not (run / "report_plots" / "ranking.png").exists()


def test_group_of():
    assert group_of("loss") == group_of("eval_loss") == "loss"
    for k in ("rewards/chosen", "eval_rewards/margins", "reward/mean", "reward_std", "reward"):
        assert group_of(k) == "rewards", k
    assert group_of("ranking/ndcg") == group_of("eval_ranking/ndcg") == "ranking"
    assert group_of("grad_norm") == group_of("logps/chosen") == "training"


def test_report_needs_a_finished_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"align report: error: {tmp_path}: no summary.json, so not a finished align run " \
                  "(`align train` writes it when the run ends)"
    (tmp_path / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json: not valid JSON" in capsys.readouterr().err


def test_report_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "RUN_DIR" in capsys.readouterr().out
