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


# The smallest effect that matters, declared per measure before any full-run seed (δ of the verdicts,
# :func:`align.study.stats.verdict`):
# - graded score 0.02: one position of three right is 0.33, so 0.02 is one more position right on 6% of sampled
#   answers, about a tenth of the gap between the SFT model (~0.5) and a perfect policy and below the gains the
#   papers report (several points of win rate or accuracy);
# - pass@k 0.02: two more prompts in a hundred solved within k samples, the scale of He et al.'s smallest reported
#   pass@k gains;
# - ECE 0.01: a hundredth of probability, a fifth of the bin width of a 10-bin reliability diagram; MMPO's
#   reported ECE reductions are several times larger;
# - ranking accuracy 0.02: one pair in fifty; Chen et al.'s gaps are tens of points, so a gap under 0.02 is no gap.
SMALLEST_EFFECT = {"score": 0.02, "pass@k": 0.02, "ece": 0.01, "ranking accuracy": 0.02}


def sweep_key(b: float, tau: float) -> str:
    """The claim key of one exploratory Pairwise Cringe setting."""
    return f"cringe-b{b:g}-tau{tau:g}"


def groups(settings: Any) -> list[str]:
    """The claim keys, in the order of ``docs/results.md``'s claims (a key may hold several claims)."""
    return ([f"lipo-k{k}" for k in settings.ks] + ["mmpo-ece", "mmpo-score", "chen-task", "chen-hh"]
            + [f"he-pass{k}" for k in settings.pass_ks] + ["xu"]
            + [sweep_key(b, t) for b, t in settings.cringe_sweep])


def collect_seed(study: Study, seed: int, keys: set[str] | None = None,
                 v: dict[str, dict[str, dict[int, list[float]]]] | None = None) -> dict[str, Any]:
    """Run the arms of the claims ``keys`` (all when None) for ``seed``, reusing finished runs, and add to ``v``:
    ``v[key][arm][seed]`` = that arm's values on the evaluation items (prompts, held-out lists or pairs; one item
    for an ECE). ``v["sft"]`` holds the shared SFT model's own numbers, ``v["distance"][arm][seed]`` each arm's
    per-prompt change of the true reward from the SFT model, ``v["stopped_at"][run][seed]`` the step the stopping
    rule chose for each trained run."""
    s = study.s
    keys = set(groups(s)) if keys is None else keys
    v = v if v is not None else defaultdict(lambda: defaultdict(dict))
    lipo = {"beta": s.beta, "loss_type": "lambda", "labels": "scores"}
    dpo = {"beta": s.beta}
    mmpo = {"beta": s.beta, "gamma": 1.0 / s.preference_temperature, "margins": "scores"}
    b, tau, alpha = s.cringe
    k0 = min(s.ks)
    data = study.lists(seed)
    sft = study.true_reward(study.sft, "sft", seed)  # the starting point every arm is measured against
    v["sft"]["score"][seed] = sft["per_prompt"]["score"]
    for k in s.pass_ks:
        v["sft"][f"pass@{k}"][seed] = sft["per_prompt"]["pass_at_k"][str(k)]

    def scored(model: str, run: str, arm: str) -> dict[str, Any]:
        r = study.true_reward(model, run, seed)
        v["distance"][arm][seed] = [a - b for a, b in zip(r["per_prompt"]["score"], sft["per_prompt"]["score"])]
        return r["per_prompt"]

    def trained(run: str, summary: dict[str, Any]) -> str:
        v["stopped_at"][run][seed] = summary["stopping"]["step"]  # the stopping rule's step, of the budget
        return summary["model_dir"]

    dpo_k0 = {"mmpo-ece", "mmpo-score", "chen-task"} & keys
    for k in s.ks:
        for arm, algorithm, loss, build in (("LiPO-λ", "lipo", lipo, "lists"),
                                            ("DPO best/worst", "dpo", dpo, "best_worst"),
                                            ("DPO all pairs", "dpo", dpo, "lists")):
            need = f"lipo-k{k}" in keys or (k == k0 and arm == "DPO all pairs" and dpo_k0)
            if not need:
                continue
            run = f"k{k}-{algorithm}-{build}"
            model = trained(run, study.offline(run, algorithm, loss, data[f"k{k}-{build}"], seed))
            v[f"lipo-k{k}"][arm][seed] = scored(model, run, f"{arm} K={k}")["score"]
            if k == k0 and arm == "DPO all pairs" and dpo_k0:  # MMPO's baseline and Chen et al.'s DPO policy
                rank = study.ranking(model, run, seed, s.beta)
                v["mmpo-score"]["DPO"][seed] = v[f"lipo-k{k}"][arm][seed]
                v["mmpo-ece"]["DPO"][seed] = [rank["ece"]]
                v["chen-task"]["idealized"][seed] = rank["per_list"]["idealized"]
                v["chen-task"]["observed"][seed] = rank["per_list"]["observed"]
    if {"mmpo-ece", "mmpo-score"} & keys:
        run = f"k{k0}-mmpo-lists"
        model = trained(run, study.offline(run, "mmpo", mmpo, data[f"k{k0}-lists"], seed))
        v["mmpo-score"]["MMPO"][seed] = scored(model, run, f"MMPO K={k0}")["score"]
        v["mmpo-ece"]["MMPO"][seed] = [study.ranking(model, run, seed, s.beta)["ece"]]
    if "chen-hh" in keys:
        hh = study.hh_ranking(study.hh_dpo(seed)["model_dir"], seed, 0.1)
        v["chen-hh"]["idealized"][seed] = hh["per_list"]["idealized"]
        v["chen-hh"]["observed"][seed] = hh["per_list"]["observed"]
    if any(f"he-pass{k}" in keys for k in s.pass_ks):
        for arm, u in (("GRPO + unlikeliness", s.unlikeliness), ("GRPO", 0.0)):
            run = "grpo-unlikely" if u else "grpo"
            r = scored(trained(run, study.grpo(run, u, seed)), run, arm)
            for k in s.pass_ks:
                v[f"he-pass{k}"][arm][seed] = r["pass_at_k"][str(k)]
    sweep = [(bb, tt) for bb, tt in s.cringe_sweep if sweep_key(bb, tt) in keys]
    if "xu" in keys or sweep:
        run = "iterate-dpo"
        dpo_scores = scored(study.iterate(run, "dpo", dpo, seed), run, "iterative DPO")["score"]
    if "xu" in keys:
        run = "iterate-cringe"
        v["xu"]["iterative DPO"][seed] = dpo_scores
        v["xu"]["iterative Pairwise Cringe"][seed] = scored(
            study.iterate(run, "cringe", {"b": b, "tau": tau, "alpha": alpha}, seed), run,
            "iterative Pairwise Cringe")["score"]
    for bb, tt in sweep:  # exploratory settings of Cringe, each against the same iterative DPO runs
        run, arm = f"iterate-cringe-b{bb:g}-tau{tt:g}", f"iterative Pairwise Cringe b={bb:g} τ={tt:g}"
        v[sweep_key(bb, tt)]["iterative DPO"][seed] = dpo_scores
        v[sweep_key(bb, tt)][arm][seed] = scored(
            study.iterate(run, "cringe", {"b": bb, "tau": tt, "alpha": alpha}, seed), run, arm)["score"]
    study.log(f"seed {seed} done ({', '.join(sorted(keys))})")
    return v


def collect(study: Study) -> dict[str, Any]:
    """Every arm for every seed of the settings (reusing finished runs): :func:`collect_seed`'s ``v``."""
    v: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    for seed in study.s.seeds:
        collect_seed(study, seed, None, v)
    return v


def _seeded(by_seed: dict[int, list[float]], seeds: list[int] | None) -> list[list[float]]:
    return [by_seed[s] for s in (sorted(by_seed) if seeds is None else seeds)]


def distances(values: dict[str, Any]) -> dict[str, Any]:
    """Each arm's distance from the SFT model it starts from: the change of the true reward (graded score, arm −
    SFT, paired by seed and evaluation prompt), with its hierarchical-bootstrap interval over the seeds run."""
    from align.study.stats import hierarchical_bootstrap

    return {arm: hierarchical_bootstrap(_seeded(by, None)) for arm, by in values.get("distance", {}).items()}


def context(values: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The shared SFT model's own numbers (every arm starts from it): true reward and pass@k, mean and interval."""
    from align.study.stats import hierarchical_bootstrap

    return {name: hierarchical_bootstrap(_seeded(v, None)) for name, v in values.get("sft", {}).items()}


def claims(values: dict[str, Any], settings: Any, seeds: dict[str, list[int]] | None = None) -> list[dict[str, Any]]:
    """The claim entries, in the order of ``docs/results.md``; ``values`` as :func:`collect_seed` builds them;
    ``seeds[key]`` the seeds each claim key is judged on (default: every seed its arms have)."""
    s, out = settings, []
    seeds = seeds or {}

    def arms(key: str, favoured: str, baseline: str) -> dict[str, list[list[float]]]:
        v, use = values[key], seeds.get(key)
        if use is None:
            use = sorted(set(v[favoured]) & set(v[baseline]))
        return {favoured: _seeded(v[favoured], use), baseline: _seeded(v[baseline], use)}

    def add(claim: str, paper: str, metric: str, key: str, pair: tuple[str, str], direction: int, effect: str,
            **extra: Any):
        out.append(compare(claim, paper, metric, arms(key, *pair), direction, SMALLEST_EFFECT[effect], key=key,
                           seed_list=seeds.get(key) or sorted(set(values[key][pair[0]]) & set(values[key][pair[1]])),
                           **extra))

    for k in s.ks:
        for base in ("DPO best/worst", "DPO all pairs"):
            add(f"LiPO-λ on K={k} lists beats {base} on the same lists", LIPO, TRUE_SCORE, f"lipo-k{k}",
                ("LiPO-λ", base), +1, "score")
    add(f"MMPO's σ(β·h) is better calibrated than DPO's (K={min(s.ks)} lists, graded labels)", MMPO,
        f"ECE of σ(β·h), β = {s.beta:g}, against the true P(a ≻ b) = σ((s_a − s_b)/{s.preference_temperature:g}) on "
        "held-out lists (one number per seed: the interval is over seeds)", "mmpo-ece", ("MMPO", "DPO"), -1, "ece")
    add("MMPO reaches a higher true reward than DPO on the same graded lists", MMPO, TRUE_SCORE, "mmpo-score",
        ("MMPO", "DPO"), +1, "score")
    add("DPO policies' ranking accuracy is far below the idealized accuracy R* (sort task)", CHEN,
        f"ranking accuracy (ties correct) on held-out K=4 lists: idealized R* (β = {s.beta:g}) vs observed "
        "π_θ(y_w) > π_θ(y_l); items: the held-out lists", "chen-task", ("idealized", "observed"), +1,
        "ranking accuracy")
    add("DPO policies' ranking accuracy is far below the idealized accuracy R* (held-out HH)", CHEN,
        "ranking accuracy (ties correct) on HH-RLHF harmless-base held-out split: idealized R* (β = 0.1) vs "
        "observed; items: the held-out pairs", "chen-hh", ("idealized", "observed"), +1, "ranking accuracy")
    for k in s.pass_ks:
        add(f"GRPO + unlikeliness reward (β_rank {s.unlikeliness:g}) raises pass@{k} over GRPO", HE,
            f"pass@{k} (exact sort) from {s.eval_samples} samples per held-out prompt", f"he-pass{k}",
            ("GRPO + unlikeliness", "GRPO"), +1, "pass@k")
    add("Iterative Pairwise Cringe (2 rounds) beats iterative DPO (2 rounds)", XU, TRUE_SCORE, "xu",
        ("iterative Pairwise Cringe", "iterative DPO"), +1, "score")
    for b, tau in s.cringe_sweep:
        add(f"Exploratory: iterative Pairwise Cringe with b = {b:g}, τ = {tau:g} (2 rounds) beats iterative DPO", XU,
            TRUE_SCORE, sweep_key(b, tau), (f"iterative Pairwise Cringe b={b:g} τ={tau:g}", "iterative DPO"), +1,
            "score", exploratory=True)
    return out
