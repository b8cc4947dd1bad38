"""The five comparisons of ``docs/results.md``: which arms each trains, which number each arm is judged by, and the
claim entries (:func:`align.study.stats.compare`) built from the per-seed values."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from align.study.runs import Study
from align.study.stats import compare

LIPO = "Liu et al. 2024, LiPO: Listwise Preference Optimization through Learning-to-Rank (arXiv 2402.01878)"
MMPO = "Kim et al. 2024, Margin Matching Preference Optimization (arXiv 2410.03145)"
CHEN = "Chen et al. 2024, Preference Learning Algorithms Do Not Learn Preference Rankings (arXiv 2405.19534)"
HE = "He, Fried & Welleck 2025, Rewarding the Unlikely (arXiv 2506.02355)"
XU = "Xu et al. 2023, Some things are more CRINGE than others (arXiv 2312.16682)"
TRUE_SCORE = "true reward: mean graded score of sampled completions on the fixed evaluation prompts"


def collect(study: Study) -> dict[str, dict[str, list[float]]]:
    """Run every arm for every seed (reusing finished runs) and return ``values[key][arm]`` = per-seed numbers in
    seed order."""
    s = study.s
    v: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    lipo = {"beta": s.beta, "loss_type": "lambda", "labels": "scores"}
    dpo = {"beta": s.beta}
    mmpo = {"beta": s.beta, "gamma": 1.0 / s.preference_temperature, "margins": "scores"}
    b, tau, alpha = s.cringe
    k0 = min(s.ks)
    for seed in s.seeds:
        data = study.lists(seed)
        sft = study.true_reward(study.sft, "sft", seed)  # the starting point every arm is measured against
        v["sft"]["score"].append(sft["score"])
        for k in s.pass_ks:
            v["sft"][f"pass@{k}"].append(sft["pass_at_k"][str(k)])
        for k in s.ks:
            for arm, algorithm, loss, build in (("LiPO-λ", "lipo", lipo, "lists"),
                                                ("DPO best/worst", "dpo", dpo, "best_worst"),
                                                ("DPO all pairs", "dpo", dpo, "lists")):
                run = f"k{k}-{algorithm}-{build}"
                model = study.offline(run, algorithm, loss, data[f"k{k}-{build}"], seed)["model_dir"]
                v[f"lipo-k{k}"][arm].append(study.true_reward(model, run, seed)["score"])
                if k == k0 and arm == "DPO all pairs":  # MMPO's baseline and Chen et al.'s DPO policy
                    rank = study.ranking(model, run, seed, s.beta)
                    v["mmpo-score"]["DPO"].append(v[f"lipo-k{k}"][arm][-1])
                    v["mmpo-ece"]["DPO"].append(rank["ece"])
                    v["chen-task"]["idealized"].append(rank["idealized"])
                    v["chen-task"]["observed"].append(rank["observed"])
        run = f"k{k0}-mmpo-lists"
        model = study.offline(run, "mmpo", mmpo, data[f"k{k0}-lists"], seed)["model_dir"]
        v["mmpo-score"]["MMPO"].append(study.true_reward(model, run, seed)["score"])
        v["mmpo-ece"]["MMPO"].append(study.ranking(model, run, seed, s.beta)["ece"])

        hh = study.hh_ranking(study.hh_dpo(seed)["model_dir"], seed, 0.1)
        v["chen-hh"]["idealized"].append(hh["idealized"])
        v["chen-hh"]["observed"].append(hh["observed"])

        for arm, u in (("GRPO + unlikeliness", s.unlikeliness), ("GRPO", 0.0)):
            run = "grpo-unlikely" if u else "grpo"
            r = study.true_reward(study.grpo(run, u, seed)["model_dir"], run, seed)
            for k in s.pass_ks:
                v[f"he-pass{k}"][arm].append(r["pass_at_k"][str(k)])

        for arm, algorithm, loss in (("iterative Pairwise Cringe", "cringe", {"b": b, "tau": tau, "alpha": alpha}),
                                     ("iterative DPO", "dpo", dpo)):
            run = f"iterate-{algorithm}"
            v["xu"][arm].append(study.true_reward(study.iterate(run, algorithm, loss, seed), run, seed)["score"])
        study.log(f"seed {seed} done")
    return v


def context(values: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The shared SFT model's own numbers (every arm starts from it): true reward and pass@k, mean and interval."""
    from align.study.stats import mean_ci

    return {name: mean_ci(v) for name, v in values.get("sft", {}).items()}


def _arms(v: dict[str, list[float]], favoured: str, baseline: str) -> dict[str, list[float]]:
    return {favoured: v[favoured], baseline: v[baseline]}


def claims(values: dict[str, dict[str, list[float]]], settings: Any) -> list[dict[str, Any]]:
    """The claim entries, in the order of ``docs/results.md``; ``values`` as :func:`collect` returns."""
    s, out = settings, []
    for k in s.ks:
        v = values[f"lipo-k{k}"]
        for base in ("DPO best/worst", "DPO all pairs"):
            out.append(compare(f"LiPO-λ on K={k} lists beats {base} on the same lists", LIPO, TRUE_SCORE,
                               {"LiPO-λ": v["LiPO-λ"], base: v[base]}, +1, key=f"lipo-k{k}"))
    out.append(compare(f"MMPO's σ(β·h) is better calibrated than DPO's (K={min(s.ks)} lists, graded labels)", MMPO,
                       f"ECE of σ(β·h), β = {s.beta:g}, against the true P(a ≻ b) = "
                       f"σ((s_a − s_b)/{s.preference_temperature:g}) on held-out lists",
                       _arms(values["mmpo-ece"], "MMPO", "DPO"), -1, key="mmpo-ece"))
    out.append(compare("MMPO reaches a higher true reward than DPO on the same graded lists", MMPO, TRUE_SCORE,
                       _arms(values["mmpo-score"], "MMPO", "DPO"), +1, key="mmpo-score"))
    out.append(compare("DPO policies' ranking accuracy is far below the idealized accuracy R* (sort task)", CHEN,
                       f"ranking accuracy (ties correct) on held-out K=4 lists: idealized R* (β = {s.beta:g}) vs "
                       "observed π_θ(y_w) > π_θ(y_l)", _arms(values["chen-task"], "idealized", "observed"), +1,
                       key="chen-task"))
    out.append(compare("DPO policies' ranking accuracy is far below the idealized accuracy R* (held-out HH)", CHEN,
                       "ranking accuracy (ties correct) on HH-RLHF harmless-base held-out split: idealized R* "
                       "(β = 0.1) vs observed", _arms(values["chen-hh"], "idealized", "observed"), +1, key="chen-hh"))
    for k in s.pass_ks:
        out.append(compare(f"GRPO + unlikeliness reward (β_rank {s.unlikeliness:g}) raises pass@{k} over GRPO", HE,
                           f"pass@{k} (exact sort) from {s.eval_samples} samples per held-out prompt",
                           _arms(values[f"he-pass{k}"], "GRPO + unlikeliness", "GRPO"), +1, key=f"he-pass{k}"))
    out.append(compare("Iterative Pairwise Cringe (2 rounds) beats iterative DPO (2 rounds)", XU, TRUE_SCORE,
                       _arms(values["xu"], "iterative Pairwise Cringe", "iterative DPO"), +1, key="xu"))
    return out
