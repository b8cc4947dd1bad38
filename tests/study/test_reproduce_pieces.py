"""``scripts/reproduce.py``'s pieces end to end at a minuscule size: every arm trains a step or two, every policy is
scored by sampling, and the claims come out with the structure ``--output`` promises."""

from __future__ import annotations

import json

from align.study.claims import claims, collect
from align.study.results import environment, markdown
from align.study.runs import Settings, Study


def tiny(model: str) -> Settings:
    """Every size at its least; the conftest's ~0.1 M-parameter model as the base."""
    return Settings(seeds=(1,), base_model=model, sft_steps=60, sft_rows=200, list_prompts=8, ks=(2,), steps=1,
                    batch_size=4, eval_prompts=3, eval_samples=2, calibration_prompts=6, grpo_steps=1, grpo_prompts=2,
                    grpo_generations=2, pass_ks=(2,), iterate_prompts=6, iterate_steps=1, hh_sft_steps=1, hh_steps=1,
                    hh_eval_rows=60)


def test_every_claim_runs_and_reports(tmp_path, small_model_dir):
    settings = tiny(str(small_model_dir))
    lines: list[str] = []
    study = Study(tmp_path, settings, log=lines.append)
    values = collect(study)
    out = claims(values, settings)
    keys = [c["key"] for c in out]
    assert keys == ["lipo-k2", "lipo-k2", "mmpo-ece", "mmpo-score", "chen-task", "chen-hh", "he-pass2", "xu"]
    for c in out:
        assert {"claim", "paper", "metric", "arms", "verdict"} <= set(c)
        assert len(c["arms"]) == 2 and all(set(a) >= {"mean", "ci"} for a in c["arms"].values())
        assert c["verdict"] == "inconclusive"  # one seed: no interval, never a verdict
    lipo = out[0]["arms"]
    assert list(lipo) == ["LiPO-λ", "DPO best/worst"] and all(0 <= a["mean"] <= 1 for a in lipo.values())
    assert 0 <= out[2]["arms"]["MMPO"]["mean"] <= 0.5  # an ECE of probabilities in both orientations
    result = {"quick": True, "command": "test", "settings": settings.to_dict(), "environment": environment(),
              "wall_seconds": 1.0, "claims": out}
    json.dumps(result)  # what --output writes
    assert markdown(result).count("**Verdict: inconclusive**") == len(out)
    # a second pass reuses every run and evaluation instead of training again
    n = len(lines)
    assert claims(collect(Study(tmp_path, settings, log=lines.append)), settings) == out
    assert all("trained" not in line and "true reward" not in line for line in lines[n:])
