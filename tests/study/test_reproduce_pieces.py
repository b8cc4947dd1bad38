"""``scripts/reproduce.py``'s pieces end to end at a minuscule size: every arm trains a step or two, every policy is
scored by sampling, and the claims come out with the structure ``--output`` promises."""

from __future__ import annotations

import json

import pytest

from align.study.claims import claims, collect, distances
from align.study.results import environment, markdown
from align.study.runs import Settings, Study


def tiny(model: str) -> Settings:
    """Every size at its least; the conftest's ~0.1 M-parameter model as the base."""
    return Settings(seeds=(1,), base_model=model, sft_steps=60, sft_rows=200, list_prompts=8, ks=(2,), steps=2,
                    batch_size=4, eval_prompts=3, eval_samples=2, calibration_prompts=6, grpo_steps=2, grpo_prompts=2,
                    grpo_generations=2, pass_ks=(2,), iterate_prompts=6, iterate_steps=1, windows=2, patience=1,
                    hh_sft_steps=1, hh_steps=1, hh_eval_rows=60, cringe_sweep=((1.0, 0.5),))


def test_every_claim_runs_and_reports(tmp_path, small_model_dir):
    settings = tiny(str(small_model_dir))
    lines: list[str] = []
    study = Study(tmp_path, settings, log=lines.append)
    values = collect(study)
    out = claims(values, settings)
    keys = [c["key"] for c in out]
    assert keys == ["lipo-k2", "lipo-k2", "mmpo-ece", "mmpo-score", "chen-task", "chen-hh", "he-pass2", "xu",
                    "cringe-b1-tau0.5"]
    sweep = out[-1]  # the exploratory Cringe setting, against the same iterative DPO runs as the claim before it
    assert sweep["exploratory"] and sweep["claim"].startswith("Exploratory:")
    assert sweep["arms"]["iterative DPO"] == out[-2]["arms"]["iterative DPO"]
    assert "exploratory" not in out[-2]
    for c in out:
        assert {"claim", "paper", "metric", "arms", "verdict", "smallest_effect", "seeds"} <= set(c)
        assert len(c["arms"]) == 2 and all(set(a) >= {"mean", "ci"} for a in c["arms"].values())
        assert c["verdict"] == "undecided" and c["seeds"] == 1 and c["seeds_needed"] >= 2  # one seed: no interval
    lipo = out[0]["arms"]
    assert list(lipo) == ["LiPO-λ", "DPO best/worst"] and all(0 <= a["mean"] <= 1 for a in lipo.values())
    assert 0 <= out[2]["arms"]["MMPO"]["mean"] <= 0.5  # an ECE of probabilities in both orientations
    # the per-item values average to the numbers align eval reports
    assert out[0]["difference"]["items_per_seed"] == [3]  # the evaluation prompts
    ev = json.loads((tmp_path / "evals" / "k2-lipo-lists" / "seed-1" / "true_reward.json").read_text())
    assert sum(ev["per_prompt"]["score"]) / 3 == pytest.approx(ev["score"], abs=1e-5)
    assert sum(ev["per_prompt"]["pass_at_k"]["2"]) / 3 == pytest.approx(ev["pass_at_k"]["2"])
    rank = json.loads((tmp_path / "evals" / "k2-dpo-lists" / "seed-1" / "ranking.json").read_text())
    for kind in ("observed", "idealized"):
        assert sum(rank["per_list"][kind]) / len(rank["per_list"][kind]) == pytest.approx(rank[kind])
    assert set(distances(values)) >= {"LiPO-λ K=2", "GRPO", "iterative DPO"}
    # the stopping rule chose a step within the budget for every trained arm, and its policy is what was scored
    assert set(values["stopped_at"]) == {"k2-lipo-lists", "k2-dpo-best_worst", "k2-dpo-lists", "k2-mmpo-lists",
                                         "grpo-unlikely", "grpo"}
    for run, by in values["stopped_at"].items():
        stop = json.loads((tmp_path / "runs" / run / "seed-1" / "stop.json").read_text())
        assert by[1] == stop["stopping"]["step"] in (1, 2)
        assert (tmp_path / stop["model_dir"] / "config.json").exists()
    result = {"quick": True, "command": "test", "settings": settings.to_dict(), "environment": environment(),
              "wall_seconds": 1.0, "claims": out}
    json.dumps(result)  # what --output writes
    assert markdown(result).count("**Verdict: undecided**") == len(out)
    # a second pass reuses every run and evaluation instead of training again
    n = len(lines)
    assert claims(collect(Study(tmp_path, settings, log=lines.append)), settings) == out
    assert all("trained" not in line and "true reward" not in line for line in lines[n:])
